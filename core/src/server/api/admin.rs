//! The admin routes: reload, the config record and the connections list.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;

use super::access::{self, Need};
use super::{error_reply, json_reply, Reply};
use crate::app::App;
use crate::protocol::timestamp;
use crate::reload;
use crate::server::Peer;

/// `POST /api/admin/reload`.
pub async fn reload(app: Arc<App>, peer: Peer, headers: HeaderMap) -> Reply {
    if let Err(denied) = access::check_post(&app, &headers) {
        return denied.reply;
    }
    let key = match access::authorize(&app, Need::Admin, peer, &headers) {
        Ok(key) => key,
        Err(denied) => return denied.reply,
    };
    tracing::info!(
        key = key.as_deref().unwrap_or("loopback"),
        "reload requested over HTTP"
    );
    match reload::reload(&app).await {
        Ok(report) => json_reply(StatusCode::OK, &report.to_json()),
        Err(e) => error_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            &format!("the configuration was refused ({e}); the previous one keeps serving"),
            json!({"errors": e.problems()}),
        ),
    }
}

/// `GET /api/admin/config`.
pub fn config(app: Arc<App>, peer: Peer, headers: HeaderMap) -> Reply {
    if let Err(denied) = access::authorize(&app, Need::Admin, peer, &headers) {
        return denied.reply;
    }
    let snap = app.router.snapshot();
    let last = app.last_reload.lock().clone().map(|r| {
        json!({
            "at": timestamp(r.at),
            "result": if r.applied { "applied" } else { "refused" },
            "errors": r.errors,
        })
    });
    json_reply(
        StatusCode::OK,
        &json!({
            "config_version": snap.version,
            "loaded_at": timestamp(snap.loaded_at),
            "source": snap.config.source.display().to_string(),
            "last_reload": last,
            "warnings": snap.warnings,
        }),
    )
}

/// Most entries in one page.
const MAX_PAGE: usize = 1000;

/// `GET /api/websocket/connections`: paged by connection id.
pub fn connections(
    app: Arc<App>,
    peer: Peer,
    headers: HeaderMap,
    q: HashMap<String, String>,
) -> Reply {
    if let Err(denied) = access::authorize(&app, Need::Admin, peer, &headers) {
        return denied.reply;
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => MAX_PAGE,
        Some(Ok(n)) if n >= 1 => n.min(MAX_PAGE),
        Some(_) => {
            return error_reply(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                json!({}),
            )
        }
    };
    let (user, endpoint, after) = (q.get("user"), q.get("endpoint"), q.get("after"));
    let mut all = app.router.connections();
    all.retain(|(c, _)| {
        user.is_none_or(|u| c.user.as_ref() == Some(u))
            && endpoint.is_none_or(|e| *c.endpoint == **e)
            && after.is_none_or(|a| c.public_id > *a)
    });
    all.sort_by(|a, b| a.0.public_id.cmp(&b.0.public_id));
    let more = all.len() > limit;
    all.truncate(limit);
    let next = more
        .then(|| all.last().map(|(c, _)| c.public_id.clone()))
        .flatten();
    let list: Vec<Value> = all
        .iter()
        .map(|(c, patterns)| {
            let (queue_depth, dropped) = c.outbox.depth();
            json!({
                "id": c.public_id,
                "endpoint": &*c.endpoint,
                "user": c.user,
                "ip": c.ip.to_string(),
                "patterns": patterns,
                "queue_depth": queue_depth,
                "dropped": dropped,
                "connected_at": timestamp(c.connected_at),
            })
        })
        .collect();
    json_reply(StatusCode::OK, &json!({"connections": list, "next": next}))
}

/// The largest `POST /api/admin/disconnect` body: a connection id or a user.
const DISCONNECT_BODY_BYTES: usize = 64 * 1024;

/// `POST /api/admin/disconnect`: `{"connection_id"}` or `{"user"}`; closes
/// those connections with 1008 "disconnected by operator".
pub async fn disconnect<S, B>(app: Arc<App>, peer: Peer, headers: HeaderMap, body: S) -> Reply
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    if let Err(denied) = access::check_post(&app, &headers) {
        return denied.reply;
    }
    let key = match access::authorize(&app, Need::Admin, peer, &headers) {
        Ok(key) => key,
        Err(denied) => return denied.reply,
    };
    let server = app.router.snapshot().config.server.clone();
    let body = match super::body::read(body, &headers, DISCONNECT_BODY_BYTES, &server).await {
        Ok(body) => body,
        Err(denied) => return denied.reply,
    };
    let target: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (id, user) = (target["connection_id"].as_str(), target["user"].as_str());
    if id.is_none() == user.is_none() {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "send {\"connection_id\": \"…\"} or {\"user\": \"…\"}",
            json!({}),
        );
    }
    let closed = app
        .router
        .connections()
        .into_iter()
        .filter(|(c, _)| {
            id.is_some_and(|id| c.public_id == id)
                || user.is_some_and(|u| c.user.as_deref() == Some(u))
        })
        .inspect(|(c, _)| c.close(1008, "disconnected by operator"))
        .count();
    tracing::info!(
        key = key.as_deref().unwrap_or("loopback"),
        closed,
        "operator disconnect"
    );
    json_reply(StatusCode::OK, &json!({ "closed": closed }))
}
