//! The Server-Sent Events transport: a `GET` of an endpoint path with
//! `Accept: text/event-stream` gets, as a stream, exactly what a WebSocket
//! on that endpoint would receive (docs/clients.md, "Server-Sent Events").
//!
//! The same checks, admission, queue and router as the WebSocket transport;
//! what differs is only how bytes leave: each message is `id: <cursor>` and
//! `data: <JSON>`, a `: ping` comment keeps the stream alive, and where a
//! WebSocket would be closed with a code the stream ends after a last
//! `connection.closed` message. The cursor ([`cursor`]) lets a browser's
//! `EventSource` recover every channel with `Last-Event-ID`.

mod body;
pub mod cursor;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::admission::{self, bad_request, Refusal};
use super::{reply, BoxError, Peer, Response};
use crate::app::App;
use crate::protocol;

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

/// Answers a `GET` of an endpoint path: the stream, or an HTTP refusal.
/// Refusals listed in `switchyard_upgrades_refused_total` are counted there.
pub async fn stream(app: Arc<App>, peer: Peer, req: &http::Request<Incoming>) -> Response {
    match open(&app, peer, req).await {
        Ok(response) => response,
        Err(refused) => refused.counted(&app),
    }
}

#[allow(clippy::result_large_err)]
async fn open(
    app: &Arc<App>,
    peer: Peer,
    req: &http::Request<Incoming>,
) -> Result<Response, Refusal> {
    let snap = app.router.snapshot();
    let Some(endpoint) = snap.endpoint(req.uri().path()) else {
        return Err(bad_request("unknown_endpoint", "no endpoint at this path"));
    };
    admission::before_opening(app, &snap, req.headers())?;
    let mut admitted = admission::admit(app, &snap, endpoint, peer, req)
        .map_err(|message| bad_request("invalid_query", &message))?;
    if let Ok(request) = &mut admitted.verdict {
        if request.since.is_none() {
            request.since = cursor::from_last_event_id(req.headers())
                .map_err(|message| bad_request("invalid_last_event_id", &message))?;
        }
    }
    let heartbeat = std::time::Duration::from_secs(snap.config.server.heartbeat_interval_s);
    let leeway = snap.config.auth.jwt.leeway_s;
    let start = cursor::Cursor::starting_at(
        admitted
            .verdict
            .as_ref()
            .ok()
            .and_then(|request| request.since.as_ref()),
    );
    Ok(match admission::enter(app, admitted.verdict).await {
        Ok(conn) => {
            let stream = body::Stream::new(app.clone(), conn, start, heartbeat, leeway);
            event_stream(stream.boxed())
        }
        Err(reason) => {
            tracing::debug!("stream refused: {reason}");
            let last = body::message(&[], &protocol::closed(1008, &reason));
            event_stream(Full::new(Bytes::from(last)).map_err(|e| match e {}).boxed())
        }
    })
}

/// A 200 `text/event-stream` response with `body`.
fn event_stream(body: http_body_util::combinators::BoxBody<Bytes, BoxError>) -> Response {
    let mut response = http::Response::new(body);
    let headers = response.headers_mut();
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
    response
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
