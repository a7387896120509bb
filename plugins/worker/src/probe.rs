//! One health check over the network: a TCP connect, or an HTTP/1.1 `GET`
//! whose status line is read (2xx = healthy). Blocking std sockets, every
//! step bounded by the check's deadline; the engine runs it on a short-lived
//! thread so that a slow name lookup cannot hold the worker up either.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::config::Check;
use crate::machine::Outcome;

/// The most of a response read to find its status line.
const MAX_HEAD: usize = 8192;
/// Longest `error` text put in an event.
const MAX_ERROR: usize = 256;

/// Runs one check with `timeout` for the whole of it.
pub(crate) fn run(check: &Check, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let result = match check {
        Check::Tcp { host, port } => connect(host, *port, deadline, timeout).map(drop),
        Check::Http { host, port, target } => http_get(host, *port, target, deadline, timeout),
    };
    match result {
        Ok(()) => Outcome::Healthy,
        Err(why) => Outcome::Failed(truncate(why)),
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {} ms", timeout.as_millis())
}

fn remaining(deadline: Instant, timeout: Duration) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(timed_out(timeout))
    } else {
        Ok(left)
    }
}

fn connect(
    host: &str,
    port: u16,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    let mut last = String::new();
    for addr in addrs {
        let left = remaining(deadline, timeout)?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) if is_timeout(&e) => return Err(timed_out(timeout)),
            Err(e) => last = format!("connect to {addr}: {e}"),
        }
    }
    Err(last)
}

fn http_get(
    host: &str,
    port: u16,
    target: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let mut stream = connect(host, port, deadline, timeout)?;
    let host_header = match (host.contains(':'), port) {
        (true, 80) => format!("[{host}]"),
        (true, _) => format!("[{host}]:{port}"),
        (false, 80) => host.to_owned(),
        (false, _) => format!("{host}:{port}"),
    };
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: switchyard-worker/{}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let io_err = |e: io::Error, what: &str| {
        if is_timeout(&e) {
            timed_out(timeout)
        } else {
            format!("{what}: {e}")
        }
    };
    stream
        .set_write_timeout(Some(remaining(deadline, timeout)?))
        .map_err(|e| io_err(e, "socket"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io_err(e, "sending the request"))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        if head.len() >= MAX_HEAD {
            return Err("no HTTP status line in the first 8 KiB of the response".into());
        }
        stream
            .set_read_timeout(Some(remaining(deadline, timeout)?))
            .map_err(|e| io_err(e, "socket"))?;
        match stream.read(&mut buf) {
            Ok(0) if head.is_empty() => {
                return Err("the connection closed without a response".into())
            }
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e, "reading the response")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default().trim();
    let status = parse_status_line(line)
        .ok_or_else(|| format!("not an HTTP response: {:?}", truncate(line.to_owned())))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!(
            "HTTP {}",
            line.split_once(' ').map_or(line, |(_, s)| s)
        ))
    }
}

/// The status code of `HTTP/1.x NNN reason`.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/") || code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR {
        let mut cut = MAX_ERROR;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A one-connection server answering `response` after reading the request head.
    fn serve_once(response: &'static str) -> Check {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(req.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{req}");
            assert!(
                req.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
                "{req}"
            );
            let _ = s.write_all(response.as_bytes());
            // Hold the connection a moment: the check must not need EOF.
            thread::sleep(Duration::from_millis(300));
        });
        Check::parse(&format!("http://127.0.0.1:{port}/health?x=1")).unwrap()
    }

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn http_2xx_is_healthy_and_other_codes_fail() {
        let check = serve_once("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(run(&check, T), Outcome::Healthy);
        let check = serve_once("HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            run(&check, T),
            Outcome::Failed("HTTP 503 Service Unavailable".into())
        );
        let check = serve_once("HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n");
        assert_eq!(run(&check, T), Outcome::Failed("HTTP 301 Moved".into()));
        let check = serve_once("SSH-2.0-OpenSSH\r\n");
        let Outcome::Failed(why) = run(&check, T) else {
            panic!("not HTTP")
        };
        assert!(why.starts_with("not an HTTP response"), "{why}");
    }

    #[test]
    fn a_silent_server_times_out_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let check = Check::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let started = Instant::now();
        let outcome = run(&check, Duration::from_millis(200));
        assert_eq!(outcome, Outcome::Failed("timed out after 200 ms".into()));
        assert!(started.elapsed() < Duration::from_millis(1000));
        drop(listener);
    }

    #[test]
    fn tcp_connect_is_healthy_and_refused_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let check = Check::parse(&format!("tcp://127.0.0.1:{port}")).unwrap();
        assert_eq!(run(&check, T), Outcome::Healthy);
        drop(listener);
        let Outcome::Failed(why) = run(&check, T) else {
            panic!("the port is closed")
        };
        assert!(
            why.starts_with(&format!("connect to 127.0.0.1:{port}")),
            "{why}"
        );
        let http = Check::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        assert!(matches!(run(&http, T), Outcome::Failed(_)));
    }

    #[test]
    fn status_lines_and_truncation() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status_line("HTTP/2 404 Not Found"), Some(404));
        assert_eq!(parse_status_line("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line("HTTX/1.1 200 OK"), None);
        let long = truncate("é".repeat(300));
        assert!(long.len() <= MAX_ERROR + '…'.len_utf8());
        assert!(long.ends_with('…'));
    }
}
