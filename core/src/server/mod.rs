//! The network edge: one listener serving HTTP (the API, through warp),
//! WebSocket upgrades and event streams on the configured endpoints.
//!
//! The accept loop is ours rather than warp's so that every socket gets
//! `TCP_NODELAY`, handshakes are bounded in time and number, and upgrades
//! are done with a small read buffer (warp's own WebSocket filter costs
//! ~137 KiB per connection). WebSockets and event streams take their socket
//! back from hyper once their request is answered, and are then served on
//! [`lanes`], one thread each, so that a fan-out is written by all at once.

mod admission;
mod api;
mod delivered;
mod expiry;
mod head_limit;
pub mod lanes;
mod readiness;
mod reply;
mod socket;
mod sse;
mod steps;
#[cfg(test)]
mod trickle;
mod unwaited;
mod ws;

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::either::Either;
use tower_service::Service;

use crate::app::App;
use crate::connection::Connection;
use crate::metrics::Metrics;
pub use lanes::Lanes;
use socket::Socket;

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response this server sends.
pub type Response = http::Response<BoxBody<Bytes, BoxError>>;

/// The TCP peer of a request, handed to the API filters.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// The mailbox drainers' inline writer (see
/// [`crate::connection::inline`]): an event stream's, for a stream served
/// on the drainer's thread, else a WebSocket's.
fn write_inline(conn: &Connection, metrics: &Metrics) {
    if !sse::write_inline(conn, metrics) {
        ws::write_inline(conn, metrics);
    }
}

/// Serves `listener` until `shutdown` completes, with WebSocket connections
/// on `lanes`, which stop with it (once no HTTP connection still being
/// served may hand them one).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    lanes: Lanes,
    shutdown: impl Future<Output = ()>,
) {
    app.router.write_inline_with(write_inline);
    lanes.drain_mailboxes(&app.router);
    let api = warp::service(api::routes(app.clone()));
    let lanes = Arc::new(lanes);
    // A TLS stream cannot be moved to another runtime's reactor (tokio-rustls
    // does not rebuild one from its parts), so TLS connections stay here.
    let here = Arc::new(Lanes::default());
    let pending = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let server = app.router.snapshot().config.server.clone();
        if pending.load(Ordering::Relaxed) >= server.max_pending_handshakes {
            // Nothing is read from it, so it may or may not be an upgrade;
            // it is counted with the upgrades refused before opening.
            drop(stream);
            app.router.metrics().refuse_upgrade("too_many_pending");
            continue;
        }
        let _ = stream.set_nodelay(true);
        limit_send_buffer(&stream, server.socket_send_buffer);
        let guard = PendingGuard::new(pending.clone());
        let tls = app.tls.load_full();
        let lanes = if tls.is_none() { &lanes } else { &here }.clone();
        let (app, api) = (app.clone(), api.clone());
        tokio::spawn(async move {
            let handshake = Duration::from_secs(server.handshake_timeout_s);
            let limits = Limits {
                handshake,
                max_header_bytes: server.max_header_bytes,
            };
            let edge = Edge {
                app,
                lanes,
                peer: Peer(peer),
            };
            match tls.as_ref() {
                None => serve_io(edge, api, Either::Left(stream), limits).await,
                Some(acceptor) => {
                    let mut stream = stream;
                    let accepted = tokio::time::timeout(handshake, async {
                        if refuse_plain_http(&mut stream).await {
                            return None;
                        }
                        Some(acceptor.accept(stream).await)
                    });
                    match accepted.await {
                        Ok(Some(Ok(stream))) => {
                            let socket = Either::Right(Box::new(stream));
                            serve_io(edge, api, socket, limits).await;
                        }
                        Ok(Some(Err(e))) => {
                            tracing::debug!(peer = %peer, "TLS handshake failed: {e}")
                        }
                        Ok(None) => tracing::debug!(peer = %peer, "plain HTTP on the TLS port"),
                        Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(guard);
        });
    }
}

/// Answers a plain HTTP request on the TLS port in plain HTTP, `400
/// tls_required`, and says whether it did. A TLS client's first byte is
/// 22 (a handshake record); a request line starts with a letter. Without
/// this answer curl reports "Received HTTP/0.9" and a browser shows bytes.
async fn refuse_plain_http(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 1];
    if !matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_alphabetic()) {
        return false;
    }
    let answer = reply::error_bytes(
        http::StatusCode::BAD_REQUEST,
        "tls_required",
        "this port speaks TLS: use https:// (wss:// for a WebSocket)",
        serde_json::json!({}),
    );
    let _ = stream.write_all(&answer).await;
    let _ = stream.shutdown().await;
    true
}

/// What the requests of one accepted connection are served with.
#[derive(Clone)]
struct Edge {
    app: Arc<App>,
    /// Where its WebSocket connection, if it becomes one, is served.
    lanes: Arc<Lanes>,
    peer: Peer,
}

/// The `[server]` bounds of one accepted connection.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// `handshake_timeout_s`: for the request head.
    handshake: Duration,
    /// `max_header_bytes`: request line plus headers.
    max_header_bytes: usize,
}

/// hyper's read buffer bound: a backstop for head bytes [`head_limit`]
/// cannot count, a little above the bound it enforces so that its JSON 431
/// comes first; never below 8192, which hyper refuses.
fn hyper_buffer(max_header_bytes: usize) -> usize {
    max_header_bytes.saturating_add(8192)
}

/// How a request is answered.
enum Answer {
    /// By hyper, with this response.
    Response(Response),
    /// By an event stream, written on the socket taken back from hyper.
    Stream(sse::Handoff),
}

/// Serves HTTP/1.1 (with upgrades) on one accepted connection, until it
/// ends or an event stream takes its socket.
async fn serve_io<S>(edge: Edge, api: S, io: Socket, limits: Limits)
where
    S: Service<http::Request<Incoming>, Response = warp::reply::Response, Error = Infallible>
        + Clone
        + Send
        + Unpin
        + 'static,
    S::Future: Send,
{
    let (io, gate) = head_limit::limit(io, limits.max_header_bytes);
    let (metrics_app, peer, lanes) = (edge.app.clone(), edge.peer, edge.lanes.clone());
    let service_gate = gate.clone();
    let handoff: Arc<parking_lot::Mutex<Option<sse::Handoff>>> = Arc::default();
    let service_handoff = handoff.clone();
    let service = service_fn(move |req| {
        let answer = dispatch(edge.clone(), api.clone(), req);
        let gate = service_gate.clone();
        let handoff = service_handoff.clone();
        async move {
            match answer.await {
                Answer::Response(response) => {
                    let upgraded = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                    gate.response_ready(upgraded);
                    Ok::<_, Infallible>(response)
                }
                Answer::Stream(stream) => {
                    // hyper never gets an answer: serve_io takes the socket.
                    gate.response_ready(true);
                    *handoff.lock() = Some(stream);
                    std::future::pending().await
                }
            }
        }
    });
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.handshake)
        .max_buf_size(hyper_buffer(limits.max_header_bytes))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    // An event stream's request is the last on its connection (its body
    // never ends), so its socket is taken back, and hyper with its buffers
    // dropped, as soon as the service has it. hyper holds nothing unwritten
    // then: it reads a request only once the response before it is flushed
    // (tests/it/sse.rs, a stream pipelined behind unread responses).
    let ended = poll_fn(|cx| match Pin::new(&mut conn).poll(cx) {
        Poll::Ready(ended) => Poll::Ready(Ok(ended)),
        Poll::Pending => handoff
            .lock()
            .take()
            .map_or(Poll::Pending, |stream| Poll::Ready(Err(stream))),
    })
    .await;
    match ended {
        Err(stream) => {
            let Some(parts) = conn.into_parts() else {
                unreachable!("a connection with a request under way is not upgraded");
            };
            sse::serve(parts.io.into_inner().into_inner(), stream, &lanes);
            return;
        }
        Ok(Err(e)) => tracing::debug!(peer = %peer.0, "HTTP connection ended: {e}"),
        Ok(Ok(())) => {}
    }
    if let Some(what) = gate.refused() {
        tracing::debug!(peer = %peer.0, "request head over server.max_header_bytes: answered 431");
        if what != head_limit::Refused::Request {
            metrics_app
                .router
                .metrics()
                .refuse_upgrade("header_too_large");
        }
    }
}

/// Caps the kernel's send buffer of a client socket (`server.socket_send_buffer`,
/// 0 = leave it to the kernel). Autotuning would let a client that stops
/// reading park megabytes in the kernel, out of sight of the send queue's
/// bounds and of the slow-consumer policy (docs/protocol.md, "Slow consumers").
fn limit_send_buffer(stream: &tokio::net::TcpStream, bytes: usize) {
    if bytes > 0 {
        if let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(bytes) {
            tracing::debug!("setting SO_SNDBUF to {bytes} failed: {e}");
        }
    }
}

/// Counts a TCP connection as pending until its HTTP task ends.
struct PendingGuard(Arc<AtomicUsize>);

impl PendingGuard {
    fn new(counter: Arc<AtomicUsize>) -> PendingGuard {
        counter.fetch_add(1, Ordering::Relaxed);
        PendingGuard(counter)
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn is_upgrade(req: &http::Request<Incoming>) -> bool {
    // RFC 6455 upgrades a GET only; another method with these headers is
    // a wrong method on the endpoint's path (405), as without them.
    req.method() == http::Method::GET
        && req
            .headers()
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A `GET` that is not an upgrade, of an endpoint path or asking for an
/// event stream: the stream (404 `unknown_endpoint` where there is no
/// endpoint, as for an upgrade), or 426 naming both ways to connect.
/// `None` for any other request.
async fn endpoint_get(
    app: &Arc<App>,
    peer: Peer,
    method: &http::Method,
    req: &http::Request<Incoming>,
) -> Option<Answer> {
    let path = req.uri().path();
    let is_get = method == http::Method::GET || method == http::Method::HEAD;
    // A route of the API is served as one whatever its `Accept`.
    let wants_stream = sse::wants_stream(req.headers()) && !api::is_route(path);
    if !is_get || !wants_stream && app.router.snapshot().endpoint(path).is_none() {
        return None;
    }
    let cors = api::cors_origin(app, req.headers());
    let mut response = if wants_stream {
        match sse::stream(app.clone(), peer, req).await {
            Ok(stream) => {
                let mut headers = sse::headers();
                if let Some(origin) = cors {
                    api::add_cors(&mut headers, origin);
                }
                return Some(Answer::Stream(sse::hand_off(
                    req.version(),
                    &headers,
                    stream,
                )));
            }
            Err(response) => response,
        }
    } else {
        sse::upgrade_required(path)
    };
    if let Some(origin) = cors {
        api::add_cors(response.headers_mut(), origin);
    }
    Some(Answer::Response(response))
}

async fn dispatch<S>(edge: Edge, mut api: S, mut req: http::Request<Incoming>) -> Answer
where
    S: Service<http::Request<Incoming>, Response = warp::reply::Response, Error = Infallible>,
{
    let Edge { app, lanes, peer } = edge;
    if is_upgrade(&req) {
        return Answer::Response(ws::upgrade(app, &lanes, peer, req));
    }
    if let Some(answer) = endpoint_get(&app, peer, req.method(), &req).await {
        return answer;
    }
    if app.is_shutting_down() && !req.uri().path().starts_with("/health") {
        return Answer::Response(reply::error(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the router is shutting down; retry on another node or shortly",
            serde_json::json!({}),
        ));
    }
    req.extensions_mut().insert(peer);
    let cors = api::cors_origin(&app, req.headers());
    let Ok(mut response) = api.call(req).await;
    if let Some(origin) = cors {
        api::add_cors(response.headers_mut(), origin);
    }
    Answer::Response(response.map(|body| body.map_err(BoxError::from).boxed()))
}
