//! The HTTP API (docs/protocol.md, "Publishing over HTTP" and "Endpoints
//! and discovery"; docs/operations.md, "Health probes", "Metrics" and
//! "Admin routes") as warp filters. Each handler is a plain function of the
//! app and the request's parts, so the routes read as a table.

// Handlers answer refusals early with `Err(response)`; boxing every
// response only to satisfy the lint would cost an allocation per request.
#![allow(clippy::result_large_err)]

mod access;
pub(super) use access::{admit_origin, cors_origin};
mod admin;
mod body;
mod console;
mod contracts;
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

/// What a GET route answers (`HEAD` alike, `OPTIONS` for CORS).
const GET_METHODS: &str = "GET, HEAD, OPTIONS";
/// What a POST route answers.
const POST_METHODS: &str = "POST, OPTIONS";

/// Every path served here with the methods it answers: for 405 (and its
/// `Allow`) versus 404, and for CORS preflights.
const ROUTES: [(&str, &str); 14] = [
    ("/console", GET_METHODS),
    ("/console/", GET_METHODS),
    ("/health", GET_METHODS),
    ("/health/live", GET_METHODS),
    ("/metrics", GET_METHODS),
    ("/api/websocket/capabilities", GET_METHODS),
    ("/api/websocket/asyncapi.json", GET_METHODS),
    ("/api/websocket/types.ts", GET_METHODS),
    ("/api/websocket/coverage", GET_METHODS),
    ("/api/websocket/connections", GET_METHODS),
    ("/api/admin/config", GET_METHODS),
    ("/api/events", POST_METHODS),
    ("/api/admin/reload", POST_METHODS),
    ("/api/admin/disconnect", POST_METHODS),
];

/// The methods `path` answers, if it is one of the routes served here.
fn route_methods(path: &str) -> Option<&'static str> {
    ROUTES.iter().find(|(p, _)| *p == path).map(|(_, m)| *m)
}

/// Whether `path` is one of the routes served here (not an endpoint).
pub(super) fn is_route(path: &str) -> bool {
    route_methods(path).is_some()
}

/// The methods `path` answers, if it is a route or a configured
/// endpoint (whose `GET` is answered before these routes: an upgrade or an
/// event stream).
fn methods(app: &App, path: &str) -> Option<&'static str> {
    route_methods(path).or_else(|| app.router.snapshot().endpoint(path).map(|_| GET_METHODS))
}

/// Request headers a browser may send cross-origin (docs/protocol.md,
/// "Browsers (CORS) and methods").
const CORS_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";

/// Marks `headers` as answering `origin` (docs/protocol.md,
/// "Browsers (CORS) and methods").
///
/// Marking it twice (a preflight answered here, then the response on its
/// way out) adds `Vary: Origin` once.
pub(super) fn add_cors(headers: &mut http::HeaderMap, origin: http::HeaderValue) {
    headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    let varies = headers
        .get_all(http::header::VARY)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"origin"));
    if !varies {
        headers.append(http::header::VARY, http::HeaderValue::from_static("Origin"));
    }
}

/// `GET`, and `HEAD` answered alike (hyper leaves the body out).
fn get_or_head() -> impl Filter<Extract = (), Error = Rejection> + Copy {
    warp::get().or(warp::head()).unify()
}

/// `OPTIONS` on a route: a CORS preflight from an allowed origin gets its
/// `Access-Control-*` answer, a refused origin 403, anyone else `Allow`.
fn options(app: &App, allow: &'static str, headers: &http::HeaderMap) -> Reply {
    let mut reply = Reply::new(String::new().into());
    *reply.status_mut() = StatusCode::NO_CONTENT;
    let out = reply.headers_mut();
    out.insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    if let Some(origin) = cors_origin(app, headers) {
        add_cors(out, origin);
        out.insert(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            http::HeaderValue::from_static(allow),
        );
        out.insert(
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            http::HeaderValue::from_static(CORS_HEADERS),
        );
        out.insert(
            http::header::ACCESS_CONTROL_MAX_AGE,
            http::HeaderValue::from_static("600"),
        );
    } else if !admit_origin(app, headers) {
        return access::forbidden_origin().reply;
    }
    reply
}

/// What is not a route: 405 with `Allow` for a known path, 404 otherwise.
fn fallback(app: &App, method: &http::Method, path: &str, headers: &http::HeaderMap) -> Reply {
    let Some(allow) = methods(app, path) else {
        return error_reply(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("nothing at {path}; see /api/websocket/capabilities"),
            json!({}),
        );
    };
    if method == http::Method::OPTIONS {
        return options(app, allow, headers);
    }
    let mut reply = error_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{method} is not allowed on {path}; use {allow}"),
        json!({ "allow": allow }),
    );
    reply
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    reply
}

/// Every route.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (Reply,), Error = std::convert::Infallible> + Clone {
    let health = warp::path!("health")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| info::health(&app));
    let live = warp::path!("health" / "live")
        .and(get_or_head())
        .map(|| json_reply(StatusCode::OK, &json!({"status": "live"})));
    let metrics = warp::path!("metrics")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| info::metrics(&app));
    let coverage = warp::path!("api" / "websocket" / "coverage")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .then(info::coverage);
    let capabilities = warp::path!("api" / "websocket" / "capabilities")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| info::capabilities(&app));
    let asyncapi = warp::path!("api" / "websocket" / "asyncapi.json")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .and(warp::header::headers_cloned())
        .map(|app: Arc<App>, headers: http::HeaderMap| contracts::asyncapi(&app, &headers));
    let types_ts = warp::path!("api" / "websocket" / "types.ts")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .map(|app: Arc<App>| contracts::types_ts(&app));
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
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(warp::body::stream())
        .then(admin::reload);
    let disconnect = warp::path!("api" / "admin" / "disconnect")
        .and(warp::post())
        .and(with_app(app.clone()))
        .and(parts())
        .and(warp::body::stream())
        .then(admin::disconnect);
    let config = warp::path!("api" / "admin" / "config")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .and(parts())
        .map(admin::config);
    let connections = warp::path!("api" / "websocket" / "connections")
        .and(get_or_head())
        .and(with_app(app.clone()))
        .and(parts())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .then(admin::connections);
    let console_page = warp::path!("console")
        .and(get_or_head())
        .map(|| console::file(""));
    let console_files = warp::path("console")
        .and(warp::path::tail())
        .and(get_or_head())
        .map(|tail: warp::path::Tail| console::file(tail.as_str()));
    let fallback = warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and(with_app(app))
        .map(
            |method: http::Method,
             path: warp::path::FullPath,
             headers: http::HeaderMap,
             app: Arc<App>| fallback(&app, &method, path.as_str(), &headers),
        );
    health
        .or(live)
        .unify()
        .or(metrics)
        .unify()
        .or(capabilities)
        .unify()
        .or(asyncapi)
        .unify()
        .or(types_ts)
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
        .or(console_page)
        .unify()
        .or(console_files)
        .unify()
        .or(fallback)
        .unify()
}
