//! The Server-Sent Events transport: a `GET` of an endpoint path with
//! `Accept: text/event-stream` gets, as a stream, exactly what a WebSocket
//! on that endpoint would receive (docs/clients.md, "Server-Sent Events").
//!
//! The same checks, admission, queue and router as the WebSocket transport;
//! what differs is only how bytes leave: each message is `id: <cursor>` and
//! `data: <JSON>` ([`output`]), a `: ping` comment keeps the stream alive,
//! and where a WebSocket would be closed with a code the stream ends after a
//! last `connection.closed` message. The cursor ([`cursor`]) lets a
//! browser's `EventSource` recover every channel with `Last-Event-ID`.
//!
//! hyper reads the request and answers refusals (and a `HEAD`, checked as
//! a `GET` is and then answered with the headers alone); an admitted
//! `GET`'s response is written by a task of its own ([`task`]), on the
//! socket taken back from hyper (`serve_io` in the parent module), and an
//! idle stream's events by its lane's mailbox drainer ([`inline`]).

pub mod cursor;
mod inline;
mod output;
mod stream;
mod task;

pub(super) use inline::write as write_inline;
pub use stream::Stream;
pub use task::Handoff;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::admission::{self, bad_request, Refusal};
use super::lanes::Lanes;
use super::socket::Socket;
use super::{reply, BoxError, Peer, Response};
use crate::app::App;
use crate::protocol;
use cursor::Cursor;
use output::Output;

/// An admitted stream, and the positions its messages' ids start from.
pub struct Opened {
    stream: Stream,
    cursor: Cursor,
}

/// Whether a request asks for an event stream.
pub fn wants_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().starts_with("text/event-stream"))
        })
}

/// Opens the stream a `GET` of an endpoint path asks for, or answers it:
/// an HTTP refusal (those listed in `switchyard_upgrades_refused_total`
/// are counted there), or a stream of one last `connection.closed` when
/// the router refuses the connection.
pub async fn stream(
    app: Arc<App>,
    peer: Peer,
    req: &http::Request<Incoming>,
) -> Result<Opened, Response> {
    match open(&app, peer, req).await {
        Ok(opened) => opened,
        Err(refused) => Err(refused.counted(&app)),
    }
}

#[allow(clippy::result_large_err)]
async fn open(
    app: &Arc<App>,
    peer: Peer,
    req: &http::Request<Incoming>,
) -> Result<Result<Opened, Response>, Refusal> {
    let snap = app.router.snapshot();
    let Some(endpoint) = snap.endpoint(req.uri().path()) else {
        return Err(admission::unknown_endpoint(app, &snap, req.uri().path()));
    };
    let opening = admission::before_opening(app, &snap, req.headers())?;
    let mut admitted = admission::admit(app, &snap, endpoint, peer, req)
        .map_err(|message| bad_request("invalid_query", &message))?;
    if let Ok(request) = &mut admitted.verdict {
        if request.since.is_none() {
            request.since = cursor::from_last_event_id(req.headers())
                .map_err(|message| bad_request("invalid_last_event_id", &message))?;
        }
    }
    if req.method() == http::Method::HEAD {
        // Checked as a `GET` is, but nothing is opened: a `HEAD` must not
        // enter the router (and so replace a user's stream, or replay).
        return Ok(Err(head_only(headers())));
    }
    let heartbeat = std::time::Duration::from_secs(snap.config.server.heartbeat_interval_s);
    let leeway = snap.config.auth.jwt.leeway_s;
    let cursor = Cursor::starting_at(
        admitted
            .verdict
            .as_ref()
            .ok()
            .and_then(|request| request.since.as_ref()),
    );
    Ok(
        match admission::enter(app, admitted.verdict, opening).await {
            Ok(conn) => Ok(Opened {
                stream: Stream::new(app.clone(), conn, heartbeat, leeway),
                cursor,
            }),
            Err(reason) => {
                tracing::debug!("stream refused: {reason}");
                let mut last = Vec::new();
                output::message(&mut last, |_| {}, &protocol::closed(1008, &reason));
                Err(event_stream(
                    headers(),
                    Full::new(Bytes::from(last)).map_err(|e| match e {}).boxed(),
                ))
            }
        },
    )
}

/// The headers of an event stream's response.
pub fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    // Proxies that buffer responses (nginx) would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers
}

/// A 200 `text/event-stream` response with `headers` and `body`.
fn event_stream(
    headers: HeaderMap,
    body: http_body_util::combinators::BoxBody<Bytes, BoxError>,
) -> Response {
    let mut response = http::Response::new(body);
    *response.headers_mut() = headers;
    response
}

/// The answer to a `HEAD` of a stream: its headers and no body.
fn head_only(headers: HeaderMap) -> Response {
    event_stream(headers, Empty::new().map_err(|e| match e {}).boxed())
}

/// `opened`, to be written on the socket of the `version` request that
/// opened it, with `headers`: the response head is written as hyper would
/// have (a `date`, chunked for HTTP/1.1), and says that the connection ends
/// with the stream.
pub fn hand_off(version: Version, headers: &HeaderMap, opened: Opened) -> Handoff {
    let chunked = version != Version::HTTP_10;
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(if chunked {
        b"HTTP/1.1 200 OK\r\n"
    } else {
        b"HTTP/1.0 200 OK\r\n"
    });
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\nconnection: close\r\n");
    }
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    head.extend_from_slice(format!("date: {date}\r\n\r\n").as_bytes());
    Handoff::new(Output::new(head, chunked, opened.cursor), opened.stream)
}

/// Serves a handed-off stream on its socket, in a task of its own on one of
/// `lanes`.
pub fn serve(socket: Socket, handoff: Handoff, lanes: &Lanes) {
    lanes.spawn(task::run(socket, handoff));
}

/// 426 for a plain `GET` of an endpoint: how to connect instead.
pub fn upgrade_required(path: &str) -> Response {
    let mut response = reply::error(
        StatusCode::UPGRADE_REQUIRED,
        "upgrade_required",
        &format!(
            "{path} is a real-time endpoint: open a WebSocket on it, \
             or GET it with `Accept: text/event-stream` for Server-Sent Events"
        ),
        json!({"ways": ["websocket", "text/event-stream"]}),
    );
    response
        .headers_mut()
        .insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    response
}
