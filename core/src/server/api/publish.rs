//! `POST /api/events`: one event or an array, validated all or nothing,
//! stamped in array order.

use std::sync::Arc;

use bytes::Buf;
use futures_util::Stream;
use http::{HeaderMap, StatusCode};
use serde_json::{json, Value};

use super::access::{self, deny, Denied, Need};
use super::body;
use super::{error_reply, json_reply, Reply};
use crate::app::App;
use crate::json_depth;
use crate::router::{Incoming, Origin, PublishError};
use crate::server::reply::retry_after;
use crate::server::Peer;

/// Handles one publish request.
pub async fn handle<S, B>(app: Arc<App>, peer: Peer, headers: HeaderMap, body: S) -> Reply
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    match publish(&app, peer, &headers, body).await {
        Ok(reply) => reply,
        Err(denied) => {
            app.router.metrics().refuse(denied.reason);
            denied.reply
        }
    }
}

/// A refusal with extra fields in its error body.
fn denied(status: StatusCode, reason: &'static str, message: &str, extra: Value) -> Denied {
    Denied {
        reason,
        reply: error_reply(status, reason, message, extra),
    }
}

/// `Ok` is the answer — including refusals by the router, which counts
/// them itself; `Err` is a refusal at the door, counted by the caller.
async fn publish<S, B>(app: &App, peer: Peer, headers: &HeaderMap, body: S) -> Result<Reply, Denied>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    access::check_post(app, headers)?;
    let key = access::authorize(app, Need::Publish, peer, headers)?;
    let who = key.unwrap_or_else(|| access::client_ip(app, peer, headers).to_string());
    if let Err(wait_s) = app.publish_allowed(&who) {
        let mut denied = deny(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "over server.publish_rate_limit for this key (or address); retry after the time in Retry-After",
        );
        denied
            .reply
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(wait_s));
        return Err(denied);
    }
    let server = app.router.snapshot().config.server.clone();
    let bytes = body::read(body, headers, server.max_publish_bytes, &server).await?;
    json_depth::check_depth(&bytes, server.max_json_depth).map_err(|e| {
        denied(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &e.to_string(),
            json!({"line": e.line, "column": e.column}),
        )
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        denied(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &format!("the body is not valid JSON: {e}"),
            json!({"line": e.line(), "column": e.column()}),
        )
    })?;
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    let events = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| Incoming::from_json(v, i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Denied {
            reason: e.reason(),
            reply: refused(&e),
        })?;
    Ok(match app.router.publish(events, &Origin::Http).await {
        Ok(stamps) => json_reply(
            StatusCode::ACCEPTED,
            &json!({"accepted": stamps.len(), "sequences": stamps}),
        ),
        Err(e) => refused(&e),
    })
}

/// The HTTP answer to a refused publish.
fn refused(e: &PublishError) -> Reply {
    let message = e.to_string();
    match e {
        PublishError::Malformed { index, .. } => error_reply(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &message,
            json!({"index": index}),
        ),
        PublishError::UnknownType { did_you_mean, .. } => {
            let extra = did_you_mean
                .as_ref()
                .map_or_else(|| json!({}), |d| json!({"did_you_mean": d}));
            error_reply(StatusCode::NOT_FOUND, "unknown_event_type", &message, extra)
        }
        PublishError::Forbidden { .. } => {
            error_reply(StatusCode::FORBIDDEN, "forbidden", &message, json!({}))
        }
        PublishError::Invalid { fields } => error_reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
            &message,
            json!({"fields": fields}),
        ),
        PublishError::TooLarge { index, .. } => error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &message,
            json!({"index": index}),
        ),
        PublishError::Overloaded => retry_after(
            error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                &message,
                json!({}),
            ),
            1,
        ),
        // The accepted ones keep their sequences; the client retries the rest.
        PublishError::Unavailable { accepted, .. } => retry_after(
            error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                &message,
                json!({"accepted": accepted.len(), "sequences": accepted}),
            ),
            1,
        ),
    }
}
