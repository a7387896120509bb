//! `GET /console`: the operator's web console (docs/operations.md,
//! "Console"). Its files are built into the binary, so a router serves it
//! with no Node and no files beside it; the page uses the same public routes
//! as everyone else, and the admin key it is given stays in its memory.

use http::StatusCode;
use serde_json::json;

use super::{error_reply, Reply};

/// The console's files: path under `/console/`, content type, body.
const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../../console/index.html"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../console/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../console/console.js"),
    ),
    // @switchyard/client, built by clients/typescript/scripts/console-copy.mjs
    // (its tests fail when this copy is not the current build).
    (
        "client.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../console/client.js"),
    ),
];

/// What the page may load and connect to: only this router.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// The file at `tail` (after `/console/`; empty for the page itself), or 404.
pub fn file(tail: &str) -> Reply {
    let name = if tail.is_empty() { "index.html" } else { tail };
    let Some((_, content_type, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return error_reply(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("nothing at /console/{tail}; the console is at /console"),
            json!({}),
        );
    };
    let mut reply = Reply::new(body.to_vec().into());
    let headers = reply.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(CSP),
    );
    reply
}
