//! One WebSocket connection's task: a reader feeding [`crate::session`], a
//! writer draining the outbox with one flush per batch, and a watchdog for
//! keep-alive pings, the heartbeat timeout (4000) and token expiry (4001).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::admission::Admission;
use crate::app::App;
use crate::connection::outbox::EventMeta;
use crate::connection::{Close, ConnRef, Frame};
use crate::metrics::{ChannelLabel, Metrics};
use crate::session::{Context, Outcome, Session};

/// Read buffer per connection: small, because idle connections are the
/// common case, client messages are small, and memory per connection is a
/// budget (4096 here cost 3.4 KiB more per idle connection: BENCHMARKS.md).
const READ_BUFFER_BYTES: usize = 512;
/// How long the writer may take to flush a closing connection.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Why the reader stopped.
enum ReadEnd {
    /// The client closed, or the socket failed.
    Gone,
    /// The client sent a message over `server.max_message_bytes`.
    TooBig,
    /// The session asked to close (rate limit).
    Policy(u16, &'static str),
}

/// Serves one upgraded connection until it closes.
pub async fn run(app: Arc<App>, on_upgrade: OnUpgrade, admission: Admission) {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return;
        }
    };
    let server = app.router.snapshot().config.server.clone();
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(server.max_message_bytes))
        .max_frame_size(Some(server.max_message_bytes));
    let mut socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let connected = admission
        .verdict
        .and_then(|request| app.router.connect(request).map_err(|e| e.to_string()));
    let conn = match connected {
        Ok(conn) => conn,
        Err(reason) => {
            tracing::debug!("connection refused: {reason}");
            let _ = socket.close(Some(close_frame(1008, &reason))).await;
            return;
        }
    };
    tracing::debug!(connection = %conn.public_id, endpoint = %conn.endpoint, user = ?conn.user, "connected");
    let (sink, stream) = socket.split();
    let last_seen = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writer = tokio::spawn(write_loop(conn.clone(), sink, app.router.metrics().clone()));
    let heartbeat = Duration::from_secs(server.heartbeat_interval_s);
    let leeway = app.router.snapshot().config.auth.jwt.leeway_s;
    let _registered = Registered {
        app: app.clone(),
        conn: conn.clone(),
    };
    let ended = tokio::select! {
        end = read_loop(&app, &conn, stream, &last_seen, started) => Some(end),
        () = watchdog(&conn, heartbeat, leeway, &last_seen, started) => None,
        _ = &mut writer => return,
    };
    match ended {
        Some(ReadEnd::TooBig) => conn.close(1009, "message too big"),
        Some(ReadEnd::Policy(code, reason)) => conn.close(code, reason),
        Some(ReadEnd::Gone) => conn.outbox.close(Close {
            code: 1000,
            reason: String::new(),
            flush: false,
        }),
        None => {}
    }
    if tokio::time::timeout(CLOSE_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// Removes the connection from the router however its task ends.
struct Registered {
    app: Arc<App>,
    conn: ConnRef,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.app.router.disconnect(&self.conn);
        tracing::debug!(connection = %self.conn.public_id, "disconnected");
    }
}

/// Milliseconds since `started`, for the last-seen clock.
fn millis_since(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

async fn read_loop(
    app: &App,
    conn: &ConnRef,
    mut stream: SplitStream<Socket>,
    last_seen: &AtomicU64,
    started: Instant,
) -> ReadEnd {
    let mut session = Session::new(&app.router);
    while let Some(message) = stream.next().await {
        last_seen.store(millis_since(started), Ordering::Relaxed);
        let outcome = match message {
            Ok(Message::Text(text)) => {
                let verifier = app.verifier.load();
                let cx = Context {
                    router: &app.router,
                    verifier: &verifier,
                };
                session.handle_text(&cx, conn, &text)
            }
            Ok(Message::Binary(_)) => session.handle_binary(&app.router, conn),
            Ok(Message::Close(_)) => return ReadEnd::Gone,
            Ok(_) => Outcome::Continue,
            Err(WsError::Capacity(_)) => return ReadEnd::TooBig,
            Err(e) => {
                tracing::debug!(connection = %conn.public_id, "read failed: {e}");
                return ReadEnd::Gone;
            }
        };
        if let Outcome::Close(code, reason) = outcome {
            return ReadEnd::Policy(code, reason);
        }
    }
    ReadEnd::Gone
}

/// Pings every `heartbeat`; closes with 4000 after two silent intervals and
/// with 4001 when the token expires (plus leeway) without a refresh.
async fn watchdog(
    conn: &ConnRef,
    heartbeat: Duration,
    leeway_s: u64,
    last_seen: &AtomicU64,
    started: Instant,
) {
    let mut next_ping = Instant::now() + heartbeat;
    loop {
        let silent_until =
            started + Duration::from_millis(last_seen.load(Ordering::Relaxed)) + heartbeat * 2;
        let expires = conn.expires_at().map(|exp| {
            let now_s = chrono::Utc::now().timestamp();
            let left = (exp + leeway_s as i64 - now_s).max(0) as u64;
            Instant::now() + Duration::from_secs(left)
        });
        let wake = [Some(next_ping), Some(silent_until), expires]
            .into_iter()
            .flatten()
            .min()
            .expect("non-empty");
        tokio::time::sleep_until(wake.into()).await;
        let now = Instant::now();
        let silent_until =
            started + Duration::from_millis(last_seen.load(Ordering::Relaxed)) + heartbeat * 2;
        if now >= silent_until {
            conn.close(4000, "heartbeat timeout");
            return;
        }
        let expired = conn
            .expires_at()
            .is_some_and(|exp| chrono::Utc::now().timestamp() >= exp + leeway_s as i64);
        if expired {
            conn.close(4001, "token expired");
            return;
        }
        if now >= next_ping {
            conn.outbox.request_ping();
            next_ping = now + heartbeat;
        }
    }
}

async fn write_loop(conn: ConnRef, mut sink: SplitSink<Socket, Message>, metrics: Arc<Metrics>) {
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
        if batch.ping && sink.feed(Message::Ping(Default::default())).await.is_err() {
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
        let label = ChannelLabel {
            channel: channel.to_string(),
        };
        metrics.deliveries.get_or_create(&label).inc_by(n);
    }
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.chars().take(120).collect::<String>().into(),
    }
}
