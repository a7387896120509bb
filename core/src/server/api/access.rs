//! Who may call the publish and admin routes (docs/operations.md, "API
//! keys and the loopback-only rule"): API keys, the loopback-only rule
//! where no key is configured, and `allowed_origins` (docs/protocol.md,
//! "Browsers (CORS) and methods").

use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::{error_reply, Reply};
use crate::app::App;
use crate::auth::{client_addr, KeyCheck};
use crate::config::AuthMode;
use crate::server::Peer;

/// A request refused at the door: the metric reason and the answer.
pub struct Denied {
    /// The refused-events reason (`unauthorized`, `forbidden`, …).
    pub reason: &'static str,
    /// The HTTP answer.
    pub reply: Reply,
}

impl From<Denied> for Reply {
    fn from(d: Denied) -> Reply {
        d.reply
    }
}

/// Refuses with `code` (also the metric reason).
pub fn deny(status: StatusCode, code: &'static str, message: &str) -> Denied {
    Denied {
        reason: code,
        reply: error_reply(status, code, message, json!({})),
    }
}

/// Which key a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A publish (or admin) key.
    Publish,
    /// An admin key.
    Admin,
}

/// Lets the request through (with the key's name, if one was used) or
/// answers it with 401 / 403.
pub fn authorize(
    app: &App,
    need: Need,
    peer: Peer,
    headers: &HeaderMap,
) -> Result<Option<String>, Denied> {
    let snap = app.router.snapshot();
    let client = client_addr(peer.0.ip(), headers, &snap.config.server.trusted_proxies);
    let keys = app.keys.load();
    let loopback_only = match (snap.config.auth.mode, need) {
        (AuthMode::None, Need::Publish) => return Ok(None),
        (AuthMode::None, Need::Admin) => true,
        (_, Need::Publish) => keys.publish.is_empty() && keys.admin.is_empty(),
        (_, Need::Admin) => keys.admin.is_empty(),
    };
    if loopback_only {
        return if client.loopback {
            Ok(None)
        } else {
            Err(deny(
                StatusCode::FORBIDDEN,
                "forbidden",
                "no API key is configured, so this route answers only clients on this host",
            ))
        };
    }
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match keys.check(authorization, need == Need::Publish) {
        KeyCheck::Valid(name) => Ok(Some(name)),
        KeyCheck::Missing => Err(unauthorized(
            "send an API key as `Authorization: Bearer <key>`",
        )),
        KeyCheck::Wrong => Err(unauthorized("the API key is not valid for this route")),
    }
}

fn unauthorized(message: &str) -> Denied {
    deny(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The client address of a request (through trusted proxies).
pub fn client_ip(app: &App, peer: Peer, headers: &HeaderMap) -> std::net::IpAddr {
    let proxies = &app.router.snapshot().config.server.trusted_proxies;
    client_addr(peer.0.ip(), headers, proxies).ip
}

/// Refuses a POST without `Content-Type: application/json` (415) or from an
/// `Origin` that `allowed_origins` does not allow (403).
pub fn check_post(app: &App, headers: &HeaderMap) -> Result<(), Denied> {
    if !content_type_is(headers, "application/json") {
        return Err(deny(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    check_origin(app, headers)
}

/// Whether the request's `Content-Type` is `media` (parameters ignored).
pub fn content_type_is(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media))
}

/// 403 unless the `Origin`, if any, is allowed.
pub fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), Denied> {
    if !admit_origin(app, headers) {
        return Err(forbidden_origin());
    }
    Ok(())
}

/// 403 `forbidden_origin`.
pub fn forbidden_origin() -> Denied {
    deny(
        StatusCode::FORBIDDEN,
        "forbidden_origin",
        "this Origin is not in auth.allowed_origins",
    )
}

fn header(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `allowed_origins`: empty means same origin only, `*` any; a request
/// without `Origin` (not a browser) is allowed. Scheme and host are
/// compared case-insensitively, as browsers treat them.
pub fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = header(headers, http::header::ORIGIN) else {
        return true;
    };
    let origin = origin.trim_end_matches('/');
    // The router's own origin is always its own: the pages it serves
    // (`/console`) work whatever else the list allows.
    let host = header(headers, http::header::HOST);
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    if matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o)) {
        return true;
    }
    allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Longest part of a refused `Origin` written to the log, in characters.
const MAX_ORIGIN_IN_LOG: usize = 200;

/// [`origin_allowed`] under the configuration in force; a refusal is
/// logged at info, naming the origin and what is allowed, at most once a
/// minute per origin.
pub fn admit_origin(app: &App, headers: &HeaderMap) -> bool {
    let snap = app.router.snapshot();
    let allowed = &snap.config.auth.allowed_origins;
    if origin_allowed(allowed, headers) {
        return true;
    }
    let origin: String = header(headers, http::header::ORIGIN)
        .unwrap_or_default()
        .chars()
        .take(MAX_ORIGIN_IN_LOG)
        .collect();
    if app.refused_origins.allow(&origin.to_ascii_lowercase()) {
        let allows = if allowed.is_empty() {
            format!(
                "only the same origin as the Host header ({})",
                header(headers, http::header::HOST).unwrap_or("none sent")
            )
        } else {
            allowed.join(", ")
        };
        tracing::info!(
            "refused Origin {origin}: auth.allowed_origins allows {allows} (logged at most once a minute per origin)"
        );
    }
    false
}

/// The `Origin` to answer with CORS headers: one that `allowed_origins`
/// lists (or `*`). With `allowed_origins = []` (same origin only) none is.
pub fn cors_origin(app: &App, headers: &HeaderMap) -> Option<http::HeaderValue> {
    let origin = headers.get(http::header::ORIGIN)?;
    let snap = app.router.snapshot();
    let allowed = &snap.config.auth.allowed_origins;
    (!allowed.is_empty() && origin_allowed(allowed, headers)).then(|| origin.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins() {
        let none: Vec<String> = Vec::new();
        assert!(origin_allowed(&none, &headers(&[])));
        assert!(origin_allowed(
            &none,
            &headers(&[
                ("origin", "http://localhost:8080"),
                ("host", "localhost:8080")
            ])
        ));
        assert!(!origin_allowed(
            &none,
            &headers(&[
                ("origin", "http://evil.example"),
                ("host", "localhost:8080")
            ])
        ));
        let any = vec!["*".to_owned()];
        assert!(origin_allowed(
            &any,
            &headers(&[("origin", "http://evil.example")])
        ));
        let listed = vec!["https://dash.example.com".to_owned()];
        assert!(origin_allowed(
            &listed,
            &headers(&[("origin", "https://dash.example.com")])
        ));
        assert!(!origin_allowed(
            &listed,
            &headers(&[("origin", "https://other.example.com")])
        ));
    }

    #[test]
    fn origins_compare_scheme_and_host_case_insensitively() {
        let listed = vec!["https://Dash.Example.com".to_owned()];
        for origin in ["HTTPS://dash.example.COM", "https://dash.example.com/"] {
            assert!(
                origin_allowed(&listed, &headers(&[("origin", origin)])),
                "{origin}"
            );
        }
        assert!(!origin_allowed(
            &listed,
            &headers(&[("origin", "https://dash.example.com:8443")])
        ));
        let none: Vec<String> = Vec::new();
        assert!(origin_allowed(
            &none,
            &headers(&[
                ("origin", "HTTP://LocalHost:8080"),
                ("host", "localhost:8080")
            ])
        ));
    }
}
