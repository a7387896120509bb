//! The admin routes: reload, the config record and the connections list.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;

use super::access::{self, Need};
use super::{error_reply, json_reply, Reply};
use crate::app::App;
use crate::cluster::ask::{self, Question, Unanswered};
use crate::protocol::timestamp;
use crate::reload;
use crate::server::Peer;

/// The largest candidate configuration a reload preview reads.
const CANDIDATE_BYTES: usize = crate::files::MAX_CONFIG_BYTES as usize;

/// `POST /api/admin/reload`: applies the file on disk, or, with
/// `?dry_run=true`, says what it (or the TOML body, sent as
/// `Content-Type: application/toml`) would do without applying it.
pub async fn reload<S, B>(
    app: Arc<App>,
    peer: Peer,
    headers: HeaderMap,
    q: HashMap<String, String>,
    body: S,
) -> Reply
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    // `None`: no `dry_run`; `Some(None)`: a value that is neither yes nor
    // no, refused once the caller is known to be allowed.
    let asked = q.get("dry_run").map(String::as_str).map(dry_run_value);
    let dry_run = matches!(asked, Some(Some(true) | None));
    let toml = dry_run && access::content_type_is(&headers, "application/toml");
    let checked = if toml {
        access::check_origin(&app, &headers)
    } else {
        access::check_post(&app, &headers)
    };
    if let Err(denied) = checked {
        return denied.reply;
    }
    let key = match access::authorize(&app, Need::Admin, peer, &headers) {
        Ok(key) => key,
        Err(denied) => return denied.reply,
    };
    if asked == Some(None) {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "dry_run must be true or false; nothing was applied",
            json!({}),
        );
    }
    let outcome = if dry_run {
        let mut server = app.router.snapshot().config.server.clone();
        server.max_publish_bytes = CANDIDATE_BYTES;
        let candidate = if toml {
            match super::body::read(body, &headers, CANDIDATE_BYTES, &server).await {
                Ok(bytes) => match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => Some(text),
                    Err(_) => {
                        return error_reply(
                            StatusCode::BAD_REQUEST,
                            "invalid_toml",
                            "the candidate configuration is not UTF-8 text",
                            json!({}),
                        )
                    }
                },
                Err(denied) => return denied.reply,
            }
        } else {
            None
        };
        reload::preview(&app, candidate).await
    } else {
        tracing::info!(
            key = key.as_deref().unwrap_or("loopback"),
            "reload requested over HTTP"
        );
        reload::reload(&app).await
    };
    match outcome {
        Ok(report) => json_reply(StatusCode::OK, &report.to_json()),
        Err(e) if dry_run => error_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            &format!("the configuration would be refused ({e}); nothing was applied"),
            json!({"errors": e.problems()}),
        ),
        Err(e) => error_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            &format!("the configuration was refused ({e}); the previous one keeps serving"),
            json!({"errors": e.problems()}),
        ),
    }
}

/// The `dry_run` query value: `true`, `1`, `yes` or a bare `?dry_run`
/// ask for a preview, `false`, `0` or `no` for a reload (any case, as
/// clients write booleans: Python sends `True`); `None` for anything else,
/// which is refused rather than taken for "apply".
fn dry_run_value(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
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

/// `GET /api/websocket/connections`: paged by connection id, every node's
/// in a cluster.
pub async fn connections(
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
    // One more than a page, so that a next page shows.
    let question = Question::Connections {
        user: q.get("user").cloned(),
        endpoint: q.get("endpoint").cloned(),
        after: q.get("after").cloned(),
        limit: limit + 1,
    };
    let (answers, unanswered) = ask_every_node(&app, question).await;
    let mut all: Vec<Value> = answers
        .into_iter()
        .flat_map(|a| match a {
            Value::Array(list) => list,
            _ => Vec::new(),
        })
        .collect();
    all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let more = all.len() > limit;
    all.truncate(limit);
    let next = more.then(|| all.last().map(|c| c["id"].clone())).flatten();
    let mut body = json!({"connections": all, "next": next});
    unanswered.note(&mut body);
    json_reply(StatusCode::OK, &body)
}

/// This node's answer to `question` (first) and, in a cluster, every other
/// live node's; with who did not answer.
pub(super) async fn ask_every_node(app: &App, question: Question) -> (Vec<Value>, Unanswered) {
    let Some(cluster) = &app.cluster else {
        let answer = ask::answer(&app.router, None, &question);
        return (vec![answer], Unanswered::default());
    };
    let shared = &cluster.shared;
    let mut answers = vec![ask::answer(&app.router, Some(&shared.node), &question)];
    let others = ask::ask_others(shared, question).await;
    answers.extend(others.answers.into_iter().map(|(_, answer)| answer));
    (answers, others.unanswered)
}

/// The largest `POST /api/admin/disconnect` body: a connection id or a user.
const DISCONNECT_BODY_BYTES: usize = 64 * 1024;

/// `POST /api/admin/disconnect`: `{"connection_id"}` or `{"user"}`; closes
/// those connections, on whichever node, with 1008 "disconnected by
/// operator".
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
    let target: Value = match serde_json::from_slice(&body) {
        Ok(target) => target,
        // Where it broke, as every HTTP `invalid_json` says.
        Err(e) => {
            return error_reply(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!("the body is not valid JSON: {e}"),
                json!({"line": e.line(), "column": e.column()}),
            )
        }
    };
    let (id, user) = (target["connection_id"].as_str(), target["user"].as_str());
    if id.is_none() == user.is_none() {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "send {\"connection_id\": \"…\"} or {\"user\": \"…\"}",
            json!({}),
        );
    }
    let question = Question::Disconnect {
        connection_id: id.map(str::to_owned),
        user: user.map(str::to_owned),
    };
    let (answers, unanswered) = ask_every_node(&app, question).await;
    let closed: u64 = answers.iter().filter_map(Value::as_u64).sum();
    tracing::info!(
        key = key.as_deref().unwrap_or("loopback"),
        closed,
        "operator disconnect"
    );
    let mut body = json!({ "closed": closed });
    unanswered.note(&mut body);
    json_reply(StatusCode::OK, &body)
}
