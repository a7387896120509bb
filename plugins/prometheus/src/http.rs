//! The alert input: a small blocking HTTP/1.1 server for
//! `POST /api/v2/alerts`, one thread per connection (at most
//! `max_connections`), one request per connection (`Connection: close`).
//!
//! Written on `httparse` rather than a server crate so the bounds are exact:
//! a body over `max_body_bytes` is refused from its `Content-Length` before
//! it is read (or while reading a chunked body) and is never buffered, every
//! read has a timeout, and a connection lives at most [`REQUEST_DEADLINE`].
//! (`tiny_http` 0.12, the obvious candidate, sets no read timeouts and, when
//! a request is dropped unread, drains the rest of its body into a buffer as
//! large as the declared `Content-Length`.)

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_plugin_api::{bump, EmitError, Emitter, LogLevel};

use crate::alerts::{parse_body, Shape};
use crate::engine::{emit, Counters};
use crate::events::INFRASTRUCTURE_ALERT;

/// The one path served.
pub const ALERTS_PATH: &str = "/api/v2/alerts";
/// Longest request line plus headers.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 64;
/// Longest wait for any one read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a connection may take from accept to the end of its request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// How often the accept loop looks at the shutdown flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// After answering early, how much unread request is read and thrown away
/// so that the client sees the answer rather than a reset.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(1);

/// The input's bounds.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: usize,
    pub(crate) max_connections: usize,
    pub(crate) token: Option<String>,
}

/// What every connection thread shares.
pub(crate) struct Shared<E: Emitter> {
    pub(crate) emitter: E,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) limits: Limits,
}

/// Accepts connections until shutdown; each gets its own thread.
pub(crate) fn serve<E: Emitter>(listener: TcpListener, shared: Arc<Shared<E>>) {
    let active = Arc::new(AtomicUsize::new(0));
    while !shared.shutdown.load(Ordering::SeqCst) {
        let (stream, _peer) = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) => {
                // E.g. out of file descriptors: wait a little rather than spin.
                shared.emitter.log(
                    LogLevel::Warn,
                    &format!("prometheus: accepting a connection failed: {e}"),
                );
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        if active.load(Ordering::SeqCst) >= shared.limits.max_connections {
            bump(&shared.counters.refused_connections);
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = respond(
                &mut stream,
                503,
                &json!({"error": "too_many_connections",
                        "message": "too many connections to the alert input; retry later"}),
                &[("Retry-After", "1")],
            );
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let guard = ActiveGuard(Arc::clone(&active));
        let conn_shared = Arc::clone(&shared);
        let spawned = shared.emitter.spawn("prometheus-http-conn", move || {
            let _guard = guard;
            handle(stream, &conn_shared);
        });
        if let Err(e) = spawned {
            // The closure (and the guard inside it) was dropped: the count is back.
            bump(&shared.counters.refused_connections);
            shared.emitter.log(
                LogLevel::Warn,
                &format!("prometheus: cannot start a connection thread: {e}"),
            );
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's buffered reader with an overall deadline.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    deadline: Instant,
}

impl Conn {
    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "request deadline passed",
            ));
        }
        self.stream.set_read_timeout(Some(left.min(IO_TIMEOUT)))?;
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// A line ending in CRLF (or LF), without it; at most `max` bytes.
    fn line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.available().iter().position(|b| *b == b'\n') {
                let mut line = self.available()[..i].to_vec();
                self.pos += i + 1;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.available().len() > max {
                return Err(io::Error::new(ErrorKind::InvalidData, "line too long"));
            }
            if self.fill()? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Appends exactly `n` bytes to `out`.
    fn take(&mut self, mut n: usize, out: &mut Vec<u8>) -> io::Result<()> {
        while n > 0 {
            if self.available().is_empty() && self.fill()? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            let k = n.min(self.available().len());
            out.extend_from_slice(&self.available()[..k]);
            self.pos += k;
            n -= k;
        }
        Ok(())
    }
}

/// What a request was refused for, as an HTTP answer.
struct Refusal {
    status: u16,
    error: &'static str,
    message: String,
}

fn refuse(status: u16, error: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error,
        message: message.into(),
    }
}

/// The parts of a request head that matter here.
struct Head {
    method: String,
    path: String,
    content_length: Option<usize>,
    chunked: bool,
    expect_continue: bool,
    authorization: Option<String>,
}

fn handle<E: Emitter>(stream: TcpStream, shared: &Shared<E>) {
    let mut conn = Conn {
        stream,
        buf: Vec::with_capacity(4096),
        pos: 0,
        deadline: Instant::now() + REQUEST_DEADLINE,
    };
    let head = match read_head(&mut conn) {
        Ok(Some(head)) => head,
        Ok(None) => return, // closed, timed out or broke before a request: nothing to answer
        Err(refusal) => {
            bump(&shared.counters.bad_requests);
            finish(conn, &refusal, shared);
            return;
        }
    };
    let (status, body) = match answer(&mut conn, &head, shared) {
        Ok(ok) => ok,
        Err(refusal) => {
            let counter = match refusal.status {
                401 => Some(&shared.counters.unauthorized),
                404 => Some(&shared.counters.not_found),
                413 => Some(&shared.counters.too_large),
                400 | 405 | 411 | 431 | 501 => Some(&shared.counters.bad_requests),
                // 422 / 503: the refused emit was counted by `emit`.
                _ => None,
            };
            if let Some(counter) = counter {
                bump(counter);
            }
            finish(conn, &refusal, shared);
            return;
        }
    };
    bump(&shared.counters.requests);
    let _ = respond(&mut conn.stream, status, &body, &[]);
    let _ = conn.stream.shutdown(Shutdown::Write);
}

/// Reads and parses the request head; `Ok(None)` when the peer went away first.
fn read_head(conn: &mut Conn) -> Result<Option<Head>, Refusal> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(conn.available()) {
            Ok(httparse::Status::Complete(len)) => {
                let head = head_of(&req)?;
                conn.pos += len;
                return Ok(Some(head));
            }
            Ok(httparse::Status::Partial) => {
                if conn.available().len() >= MAX_HEAD_BYTES {
                    return Err(refuse(
                        431,
                        "headers_too_large",
                        format!("the request head is over {MAX_HEAD_BYTES} bytes"),
                    ));
                }
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(refuse(
                    431,
                    "headers_too_large",
                    format!("more than {MAX_HEADERS} headers"),
                ))
            }
            Err(e) => {
                return Err(refuse(
                    400,
                    "bad_request",
                    format!("malformed request: {e}"),
                ))
            }
        }
        match conn.fill() {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

fn head_of(req: &httparse::Request<'_, '_>) -> Result<Head, Refusal> {
    let mut head = Head {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        content_length: None,
        chunked: false,
        expect_continue: false,
        authorization: None,
    };
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| refuse(400, "bad_request", format!("bad Content-Length {value:?}")))?;
            if head.content_length.is_some_and(|m| m != n) {
                return Err(refuse(
                    400,
                    "bad_request",
                    "conflicting Content-Length headers",
                ));
            }
            head.content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(refuse(
                    501,
                    "not_implemented",
                    format!("Transfer-Encoding {value:?} is not supported (use chunked or Content-Length)"),
                ));
            }
            head.chunked = true;
        } else if h.name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(value.to_owned());
        }
    }
    if head.chunked && head.content_length.is_some() {
        return Err(refuse(
            400,
            "bad_request",
            "both Content-Length and Transfer-Encoding are set",
        ));
    }
    Ok(head)
}

/// Routes, authenticates, reads the body and emits the alerts.
fn answer<E: Emitter>(
    conn: &mut Conn,
    head: &Head,
    shared: &Shared<E>,
) -> Result<(u16, Value), Refusal> {
    let path = head.path.split(['?', '#']).next().unwrap_or_default();
    if path != ALERTS_PATH {
        return Err(refuse(
            404,
            "not_found",
            format!("no such path; alerts are POSTed to {ALERTS_PATH}"),
        ));
    }
    if head.method != "POST" {
        return Err(refuse(
            405,
            "method_not_allowed",
            format!("{ALERTS_PATH} takes POST"),
        ));
    }
    if let Some(token) = &shared.limits.token {
        let given = head.authorization.as_deref().and_then(|a| {
            let (scheme, rest) = a.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return Err(refuse(
                401,
                "unauthorized",
                "a valid `Authorization: Bearer <token>` header is required",
            ));
        }
    }
    let max = shared.limits.max_body_bytes;
    let too_large = || {
        refuse(
            413,
            "too_large",
            format!("the body is over max_body_bytes ({max} bytes)"),
        )
    };
    if !head.chunked && head.content_length.is_none() {
        return Err(refuse(
            411,
            "length_required",
            "a Content-Length (or chunked Transfer-Encoding) is required",
        ));
    }
    if head.content_length.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    if head.expect_continue {
        let _ = conn.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let body = read_body(conn, head, max).map_err(|e| match e {
        BodyError::TooLarge => too_large(),
        BodyError::Bad(why) => refuse(400, "bad_request", why),
    })?;
    let now = chrono::Utc::now();
    let (shape, alerts) =
        parse_body(&body, now).map_err(|why| refuse(400, "invalid_alerts", why))?;
    let mut accepted = 0usize;
    let mut refused = Vec::new();
    for (index, alert) in alerts.iter().enumerate() {
        match emit(
            &shared.emitter,
            &shared.counters,
            INFRASTRUCTURE_ALERT,
            alert,
        ) {
            Ok(()) => {
                accepted += 1;
                bump(&shared.counters.alerts);
            }
            Err(EmitError::Backpressure | EmitError::Stopped) => {
                return Err(refuse(
                    503,
                    "unavailable",
                    format!(
                        "the router cannot take more alerts right now ({accepted} of {} taken); retry",
                        alerts.len()
                    ),
                ));
            }
            // Refused for what it is: sending it again would not help.
            Err(e) => refused.push((index, e)),
        }
    }
    if !refused.is_empty() {
        return Err(refused_alerts(&refused, accepted, alerts.len()));
    }
    let shape = match shape {
        Shape::Webhook => "alertmanager_webhook",
        Shape::Postable => "postable_alerts",
    };
    Ok((
        200,
        json!({"status": "success", "accepted": accepted, "format": shape}),
    ))
}

/// The answer when the router refused some alerts for what they are:
/// 413 when one was too large (`server.max_event_bytes`), 422 otherwise —
/// a 4xx, so that Alertmanager does not retry what can never be taken.
fn refused_alerts(refused: &[(usize, EmitError)], accepted: usize, total: usize) -> Refusal {
    let too_large = refused.iter().any(|(_, e)| *e == EmitError::TooLarge);
    let (status, error) = if too_large {
        (413, "too_large")
    } else {
        (422, "invalid_alert")
    };
    let which: Vec<String> = refused
        .iter()
        .map(|(index, e)| format!("alert {index}: {e}"))
        .collect();
    refuse(
        status,
        error,
        format!(
            "the router refused {} of {total} alert(s) ({}); the other {accepted} were taken",
            refused.len(),
            which.join("; ")
        ),
    )
}

enum BodyError {
    TooLarge,
    Bad(String),
}

fn read_body(conn: &mut Conn, head: &Head, max: usize) -> Result<Vec<u8>, BodyError> {
    let io_bad = |e: io::Error| BodyError::Bad(format!("reading the body failed: {e}"));
    let mut body = Vec::new();
    if let Some(n) = head.content_length {
        body.reserve(n);
        conn.take(n, &mut body).map_err(io_bad)?;
        return Ok(body);
    }
    // Chunked: size line, data, CRLF … a zero size, trailers, an empty line.
    loop {
        let line = conn.line(1024).map_err(io_bad)?;
        let size_text = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| BodyError::Bad(format!("bad chunk size {size_text:?}")))?;
        if size == 0 {
            loop {
                if conn.line(MAX_HEAD_BYTES).map_err(io_bad)?.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len().saturating_add(size) > max {
            return Err(BodyError::TooLarge);
        }
        conn.take(size, &mut body).map_err(io_bad)?;
        if !conn.line(2).map_err(io_bad)?.is_empty() {
            return Err(BodyError::Bad("a chunk is longer than its size".into()));
        }
    }
}

/// Answers a refusal, then reads and discards a bounded amount of what the
/// client is still sending, so it sees the answer rather than a reset.
fn finish<E: Emitter>(mut conn: Conn, refusal: &Refusal, shared: &Shared<E>) {
    bump(&shared.counters.requests);
    let mut extra: Vec<(&str, &str)> = Vec::new();
    match refusal.status {
        401 => extra.push(("WWW-Authenticate", "Bearer")),
        405 => extra.push(("Allow", "POST")),
        503 => extra.push(("Retry-After", "1")),
        _ => {}
    }
    let body = json!({"error": refusal.error, "message": refusal.message});
    if respond(&mut conn.stream, refusal.status, &body, &extra).is_err() {
        return;
    }
    let _ = conn.stream.shutdown(Shutdown::Write);
    let until = Instant::now() + LINGER_TIME;
    let _ = conn
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 8192];
    let mut read = 0;
    while read < LINGER_BYTES && Instant::now() < until {
        match conn.stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    body: &Value,
    extra: &[(&str, &str)],
) -> io::Result<()> {
    let body = body.to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&body);
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Compares without an early exit, so timing does not reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
