//! The WebSocket transport: the upgrade (with every check that must happen
//! before a socket is opened), then one connection task per client
//! ([`connection`]). Who may connect once the socket is open is decided by
//! [`admission`] and the router.

mod admission;
mod connection;
mod readiness;
mod watchdog;
mod writer;

use std::sync::Arc;

use http::{HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::{reply, Peer, Response};
use crate::app::App;
use crate::names;
use crate::router::Snapshot;

/// Answers an upgrade request: 101 and a connection task, or an HTTP error.
pub fn upgrade(app: Arc<App>, peer: Peer, mut req: http::Request<Incoming>) -> Response {
    let snap = app.router.snapshot();
    let path = req.uri().path().to_owned();
    tracing::debug!(peer = %peer.0, uri = %crate::auth::jwt::redact(&req.uri().to_string()), "upgrade requested");
    let Some(endpoint) = snap.endpoint(&path) else {
        app.router.coverage().unknown_endpoint(&path);
        return unknown_endpoint(&snap, &path);
    };
    if app.is_shutting_down() {
        return reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the router is shutting down; reconnect to another node or retry shortly",
            json!({}),
        );
    }
    if !super::api::origin_allowed(&snap.config.auth.allowed_origins, req.headers()) {
        return reply::error(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "this Origin is not in auth.allowed_origins",
            json!({}),
        );
    }
    let Some(accept) = accept_key(&req) else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "invalid_upgrade",
            "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            json!({}),
        );
    };
    if app.router.connection_count() >= snap.config.server.max_connections {
        let refused = reply::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the router holds its maximum number of WebSocket connections; retry later",
            json!({}),
        );
        return reply::retry_after(refused, 5);
    }
    let admission = match admission::admit(&app, &snap, endpoint, peer, &req) {
        Ok(admission) => admission,
        Err(message) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                &message,
                json!({}),
            )
        }
    };
    let bearer = admission.bearer_subprotocol;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(connection::run(app, on_upgrade, admission));
    switching_protocols(&accept, bearer)
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

fn unknown_endpoint(snap: &Snapshot, path: &str) -> Response {
    let endpoints: Vec<&str> = snap
        .config
        .endpoints
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    let mut extra = json!({ "endpoints": endpoints });
    if let Some(close) = names::did_you_mean(path, endpoints.iter().copied()) {
        extra["did_you_mean"] = json!(close);
    }
    reply::error(
        StatusCode::NOT_FOUND,
        "unknown_endpoint",
        &format!("no WebSocket endpoint at {path}"),
        extra,
    )
}
