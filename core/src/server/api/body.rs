//! Reading a request body: bounded in size — a declared `Content-Length`
//! over the bound is refused before a byte of the body is read — and in
//! time by `server.handshake_timeout_s` (docs/configuration.md, `[server]`),
//! so that a client trickling a body cannot hold a connection open.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};

use super::access::{deny, Denied};
use crate::config::ServerConfig;

/// The whole body, or a refusal: 413 when `Content-Length` or the body
/// passes `max` bytes, 408 when it has not all arrived within
/// `server.handshake_timeout_s`.
pub async fn read<S, B>(
    body: S,
    headers: &HeaderMap,
    max: usize,
    server: &ServerConfig,
) -> Result<BytesMut, Denied>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let within = Duration::from_secs(server.handshake_timeout_s);
    tokio::time::timeout(within, read_all(body, max))
        .await
        .unwrap_or_else(|_| {
            Err(deny(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                &format!(
                    "the request body did not arrive within server.handshake_timeout_s ({} s)",
                    server.handshake_timeout_s
                ),
            ))
        })
}

/// Reads the body, refusing it (413) as soon as it passes `max` bytes.
async fn read_all<S, B>(mut body: S, max: usize) -> Result<BytesMut, Denied>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let mut bytes = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            deny(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                &format!("the body could not be read: {e}"),
            )
        })?;
        if bytes.len() + chunk.remaining() > max {
            return Err(too_large(max));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            bytes.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(bytes)
}

/// 413 `too_large`.
fn too_large(max: usize) -> Denied {
    deny(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("the body is over {max} bytes (server.max_publish_bytes for publishing)"),
    )
}
