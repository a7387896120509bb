//! The WebSocket transport: the upgrade, then one reader and one writer per
//! connection. The reader hands each text frame to [`crate::session`]; the
//! writer drains the connection's outbox and writes everything queued with
//! a single flush.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::{reply, Peer, Response};
use crate::app::App;
use crate::auth::client_addr;
use crate::connection::outbox::EventMeta;
use crate::connection::{ConnRef, Frame};
use crate::metrics::{ChannelLabel, Metrics};
use crate::names;
use crate::protocol::{self, Position};
use crate::router::ConnectRequest;
use crate::session;

/// Read buffer per connection: small, because idle connections are the
/// common case and memory per connection is a budget.
const READ_BUFFER_BYTES: usize = 4096;
/// How long the writer may take to flush a closing connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// What the client asked for in the query string.
struct Query {
    events: Option<Vec<String>>,
    since: Option<BTreeMap<String, Position>>,
}

fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let mut out = Query {
        events: None,
        since: None,
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "events" => {
                out.events = Some(
                    value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                );
            }
            "since" => out.since = Some(protocol::parse_since_param(&value)?),
            _ => {}
        }
    }
    Ok(out)
}

/// Answers an upgrade request: 101 and a connection task, or an error.
pub fn upgrade(app: Arc<App>, peer: Peer, mut req: http::Request<Incoming>) -> Response {
    let snap = app.router.snapshot();
    let path = req.uri().path().to_owned();
    if snap.endpoint(&path).is_none() {
        app.router.coverage().unknown_endpoint(&path);
        return unknown_endpoint(&snap, &path);
    }
    let key = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()));
    let version_ok = req
        .headers()
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(accept) = key.filter(|_| version_ok) else {
        return reply::error(
            StatusCode::BAD_REQUEST,
            "invalid_upgrade",
            "a WebSocket upgrade needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            json!({}),
        );
    };
    if app.router.connection_count() >= snap.config.server.max_connections {
        return reply::retry_after(
            reply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                "the router holds its maximum number of WebSocket connections; retry later",
                json!({}),
            ),
            5,
        );
    }
    let query = match parse_query(req.uri().query()) {
        Ok(q) => q,
        Err(message) => {
            return reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                &message,
                json!({}),
            )
        }
    };
    let client = client_addr(
        peer.0.ip(),
        req.headers(),
        &snap.config.server.trusted_proxies,
    );
    let connect = ConnectRequest {
        endpoint: path,
        user: None,
        ip: client.ip,
        expires_at: None,
        events: query.events,
        since: query.since,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(run(app, on_upgrade, connect));
    let mut response = http::Response::new(
        http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|e| match e {})
            .boxed(),
    );
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", v);
    }
    response
}

fn unknown_endpoint(snap: &crate::router::Snapshot, path: &str) -> Response {
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

/// Why the reader stopped.
enum ReadEnd {
    /// The client closed, or the socket failed.
    Gone,
    /// The client sent a message over `server.max_message_bytes`.
    TooBig,
}

async fn run(app: Arc<App>, on_upgrade: OnUpgrade, connect: ConnectRequest) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let max_message = app.router.snapshot().config.server.max_message_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let conn = match app.router.connect(connect) {
        Ok(conn) => conn,
        Err(e) => {
            let _ = socket.close(Some(close_frame(1001, &e.to_string()))).await;
            return;
        }
    };
    tracing::debug!(connection = %conn.public_id, endpoint = %conn.endpoint, "connected");
    let (sink, stream) = socket.split();
    let mut writer = tokio::spawn(write_loop(conn.clone(), sink, app.router.metrics().clone()));
    tokio::select! {
        end = read_loop(&app, &conn, stream) => {
            match end {
                ReadEnd::TooBig => conn.close(1009, "message too big"),
                ReadEnd::Gone => conn.outbox.close(crate::connection::Close { code: 1000, reason: String::new(), flush: false }),
            }
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
        }
        _ = &mut writer => {}
    }
    writer.abort();
    app.router.disconnect(&conn);
    tracing::debug!(connection = %conn.public_id, "disconnected");
}

async fn read_loop(
    app: &App,
    conn: &ConnRef,
    mut stream: futures_util::stream::SplitStream<Socket>,
) -> ReadEnd {
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Text(text)) => session::handle_text(&app.router, conn, &text),
            Ok(Message::Binary(_)) => session::handle_binary(conn),
            Ok(Message::Close(_)) => return ReadEnd::Gone,
            Ok(_) => {}
            Err(WsError::Capacity(_)) => return ReadEnd::TooBig,
            Err(e) => {
                tracing::debug!(connection = %conn.public_id, "read failed: {e}");
                return ReadEnd::Gone;
            }
        }
    }
    ReadEnd::Gone
}

async fn write_loop(
    conn: ConnRef,
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    metrics: Arc<Metrics>,
) {
    loop {
        let batch = conn.outbox.next_batch().await;
        let mut written = Vec::with_capacity(batch.frames.len());
        for Frame { text, event } in batch.frames {
            if sink.feed(Message::Text(text)).await.is_err() {
                return;
            }
            written.extend(event);
        }
        if let Some(close) = batch.close {
            if close.code != 1000 || !close.reason.is_empty() {
                let _ = sink
                    .send(Message::Close(Some(close_frame(close.code, &close.reason))))
                    .await;
            }
            let _ = sink.close().await;
            return;
        }
        if sink.flush().await.is_err() {
            return;
        }
        record_deliveries(&metrics, &written);
    }
}

/// Counts events written to the socket, per channel, and their latency.
fn record_deliveries(metrics: &Metrics, written: &[EventMeta]) {
    let mut per_channel: Vec<(&Arc<str>, u64)> = Vec::new();
    for meta in written {
        metrics
            .latency
            .observe(meta.accepted.elapsed().as_secs_f64());
        match per_channel.iter_mut().find(|(c, _)| **c == meta.channel) {
            Some((_, n)) => *n += 1,
            None => per_channel.push((&meta.channel, 1)),
        }
    }
    for (channel, n) in per_channel {
        metrics
            .deliveries
            .get_or_create(&ChannelLabel {
                channel: channel.to_string(),
            })
            .inc_by(n);
    }
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }
}
