//! The HTTP API (SPEC §4) as warp filters. Each handler is a plain function
//! of the app and the request's parts, so the routes read as a table.

// Handlers answer refusals early with `Err(response)`; boxing every
// response only to satisfy the lint would cost an allocation per request.
#![allow(clippy::result_large_err)]

mod access;
pub(super) use access::origin_allowed;
mod admin;
mod body;
mod info;
mod publish;

use std::sync::Arc;

use http::StatusCode;
use serde_json::{json, Value};
use warp::{Filter, Rejection};

use super::Peer;
use crate::app::App;

/// A warp response.
pub type Reply = warp::reply::Response;

/// A JSON response.
pub fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut response = Reply::new(body.to_string().into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// An error response in the `{"error":{"code","message",…}}` shape.
pub fn error_reply(status: StatusCode, code: &str, message: &str, extra: Value) -> Reply {
    json_reply(status, &super::reply::error_body(code, message, extra))
}

fn with_app(
    app: Arc<App>,
) -> impl Filter<Extract = (Arc<App>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// The request parts the access rules need.
fn parts() -> impl Filter<Extract = (Peer, http::HeaderMap), Error = Rejection> + Clone {
    warp::ext::get::<Peer>().and(warp::header::headers_cloned())
}

/// Paths served here, for 405 versus 404.
const KNOWN: [&str; 10] = [
    "/api/admin/disconnect",
    "/api/websocket/coverage",
    "/health",
    "/metrics",
    "/health/live",
    "/api/websocket/capabilities",
    "/api/events",
    "/api/admin/reload",
    "/api/admin/config",
    "/api/websocket/connections",
];

/// Every route.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (Reply,), Error = std::convert::Infallible> + Clone {
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| info::health(&app));
    let live = warp::path!("health" / "live")
        .and(warp::get())
        .map(|| json_reply(StatusCode::OK, &json!({"status": "live"})));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| info::metrics(&app));
    let coverage = warp::path!("api" / "websocket" / "coverage")
        .and(warp::get())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| json_reply(StatusCode::OK, &app.router.coverage_report()));
    let capabilities = warp::path!("api" / "websocket" / "capabilities")
        .and(warp::get())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| info::capabilities(&app));
    let events = warp::path!("api" / "events")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(parts())
        .and(warp::body::stream())
        .then(publish::handle);
    let reload = warp::path!("api" / "admin" / "reload")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(parts())
        .then(admin::reload);
    let disconnect = warp::path!("api" / "admin" / "disconnect")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(parts())
        .and(warp::body::stream())
        .then(admin::disconnect);
    let config = warp::path!("api" / "admin" / "config")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and(parts())
        .map(admin::config);
    let connections = warp::path!("api" / "websocket" / "connections")
        .and(warp::get())
        .and(with_app(app))
        .and(parts())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .map(admin::connections);
    let fallback = warp::method().and(warp::path::full()).map(
        |method: http::Method, path: warp::path::FullPath| {
            if KNOWN.contains(&path.as_str()) {
                error_reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!("{method} is not allowed on {}", path.as_str()),
                    json!({}),
                )
            } else {
                error_reply(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    &format!(
                        "nothing at {}; see /api/websocket/capabilities",
                        path.as_str()
                    ),
                    json!({}),
                )
            }
        },
    );
    health
        .or(live)
        .unify()
        .or(metrics)
        .unify()
        .or(capabilities)
        .unify()
        .or(coverage)
        .unify()
        .or(events)
        .unify()
        .or(reload)
        .unify()
        .or(config)
        .unify()
        .or(disconnect)
        .unify()
        .or(connections)
        .unify()
        .or(fallback)
        .unify()
}
