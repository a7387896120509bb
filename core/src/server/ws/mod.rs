//! The WebSocket transport: the upgrade (with every check that must happen
//! before a socket is opened), then one connection task per client
//! ([`task`]) reading client frames ([`frames`]) from its socket and
//! writing the outbox ([`writer`]), or, for an idle connection, its
//! thread's mailbox drainer writing it without waking the task
//! ([`inline`]). Who may connect once the socket is open is decided by
//! [`admission`] and the router.

mod frames;
mod inline;
mod task;
mod watchdog;
mod writer;

use std::sync::Arc;

pub(super) use inline::write as write_inline;

use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::admission::{self, bad_request, Refusal};
use super::lanes::Lanes;
use super::{Peer, Response};
use crate::app::App;

/// Answers an upgrade request: 101 and a connection task on one of
/// `lanes`, or an HTTP error. Refusals listed in
/// `switchyard_upgrades_refused_total` are counted there.
pub fn upgrade(app: Arc<App>, lanes: &Lanes, peer: Peer, req: http::Request<Incoming>) -> Response {
    open(&app, lanes, peer, req).unwrap_or_else(|refused| refused.counted(&app))
}

// A refusal is answered at once, like the `Ok` response beside it; boxing
// it would only add an allocation (as in the API handlers).
#[allow(clippy::result_large_err)]
fn open(
    app: &Arc<App>,
    lanes: &Lanes,
    peer: Peer,
    mut req: http::Request<Incoming>,
) -> Result<Response, Refusal> {
    let snap = app.router.snapshot();
    let path = req.uri().path().to_owned();
    tracing::debug!(peer = %peer.0, uri = %crate::auth::jwt::redact(&req.uri().to_string()), "upgrade requested");
    let Some(endpoint) = snap.endpoint(&path) else {
        return Err(admission::unknown_endpoint(app, &snap, &path));
    };
    let Some(accept) = accept_key(&req) else {
        return Err(bad_request(
            "invalid_upgrade",
            "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
        ));
    };
    let opening = admission::before_opening(app, &snap, req.headers())?;
    let admission = admission::admit(app, &snap, endpoint, peer, &req)
        .map_err(|message| bad_request("invalid_query", &message))?;
    let bearer = admission.bearer_subprotocol;
    let on_upgrade = hyper::upgrade::on(&mut req);
    lanes.spawn(task::run(app.clone(), on_upgrade, admission, opening));
    Ok(switching_protocols(&accept, bearer))
}

/// `Sec-WebSocket-Accept` for a valid version-13 upgrade request.
fn accept_key(req: &http::Request<Incoming>) -> Option<String> {
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = req.headers().get("sec-websocket-key")?;
    version_ok.then(|| derive_accept_key(key.as_bytes()))
}

fn switching_protocols(accept: &str, bearer: bool) -> Response {
    let mut response = http::Response::new(
        http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|e| match e {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        headers.insert("sec-websocket-accept", v);
    }
    if bearer {
        headers.insert("sec-websocket-protocol", HeaderValue::from_static("bearer"));
    }
    response
}
