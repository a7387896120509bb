//! One WebSocket connection, served by one task: it reads client messages
//! into [`crate::session`], writes the outbox with [`Writer`] and keeps the
//! [`Watchdog`]'s clocks. One task (not a reader and a writer) because an
//! idle connection's memory is the budget: a second task, the lock that
//! splitting a socket needs and a write buffer cost more than the rest of
//! the connection.
//!
//! Reads go through tungstenite (unmasking, fragments, control frames,
//! limits); writes bypass it so that events need no per-connection framing.
//! Tungstenite itself writes only the replies to a client's Ping or Close;
//! those are flushed only between our batches, so frames never interleave.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{Sink, Stream};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::admission::Admission;
use super::watchdog::{Due, Watchdog};
use super::writer::{Flushed, Writer};
use crate::app::App;
use crate::connection::ConnRef;
use crate::session::{Context as SessionContext, Outcome, Session};

/// Read buffer per connection: small, because idle connections are the
/// common case, client messages are small, and memory per connection is a
/// budget (4096 here cost 3.4 KiB more per idle connection: BENCHMARKS.md).
const READ_BUFFER_BYTES: usize = 512;
/// How long a closing connection may take to write what is left, and how
/// long the client then has to answer the close.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Steps taken before yielding to other tasks, so that one busy client
/// cannot hold a worker thread.
const STEPS_PER_POLL: usize = 32;

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How serving a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The client went away (or closed first): nothing more to send.
    Gone,
    /// Our close frame is written: wait briefly for the client's answer.
    Closed,
    /// The client did not take what was left within [`CLOSE_GRACE`].
    Abandoned,
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
    let max_message = app.router.snapshot().config.server.max_message_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
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
    let registered = Registered { app, conn };
    let end = serve(&registered.app, &registered.conn, &mut socket).await;
    drop(registered);
    if end == End::Closed {
        linger(socket.get_mut()).await;
    }
}

/// Removes the connection from the router however its task ends (even by
/// a panic or the runtime shutting down).
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

/// After our close frame: half-close, then read until the client closes
/// too, so that its unread bytes do not turn our FIN into a reset that
/// could destroy the close frame before the client reads it.
async fn linger(io: &mut TokioIo<hyper::upgrade::Upgraded>) {
    let drain = async {
        io.shutdown().await?;
        let mut scrap = [0u8; 256];
        while io.read(&mut scrap).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
}

/// Drives the connection until it ends.
async fn serve(app: &App, conn: &ConnRef, socket: &mut Socket) -> End {
    let snap = app.router.snapshot();
    let heartbeat = Duration::from_secs(snap.config.server.heartbeat_interval_s);
    let leeway = snap.config.auth.jwt.leeway_s;
    drop(snap);
    let now = Instant::now();
    let mut served = Served {
        app,
        conn,
        socket,
        writer: Writer::default(),
        session: Session::new(&app.router),
        watchdog: Watchdog::new(heartbeat, leeway, now),
        reading: true,
        replying: false,
        peer_closed: false,
        deadline: None,
        rearm: false,
    };
    let mut timer = pin!(tokio::time::sleep_until(served.next_wake(now).into()));
    poll_fn(|cx| served.poll(cx, timer.as_mut())).await
}

/// One connection's state while it is served.
struct Served<'a> {
    app: &'a App,
    conn: &'a ConnRef,
    socket: &'a mut Socket,
    writer: Writer,
    session: Session,
    watchdog: Watchdog,
    /// Whether client messages are still read.
    reading: bool,
    /// Tungstenite holds a reply (Pong or Close) of its own to write.
    replying: bool,
    /// The client sent Close: end once the reply is written.
    peer_closed: bool,
    /// When a closing connection is given up.
    deadline: Option<Instant>,
    /// The timer must be set again (a deadline appeared).
    rearm: bool,
}

impl Served<'_> {
    fn poll(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<End> {
        for _ in 0..STEPS_PER_POLL {
            if timer.as_mut().poll(cx).is_ready() {
                if let Some(end) = self.on_timer() {
                    return Poll::Ready(end);
                }
                self.rearm = true;
            }
            let stepped = self.step(cx);
            if let Poll::Ready(Some(end)) = stepped {
                return Poll::Ready(end);
            }
            if std::mem::take(&mut self.rearm) {
                // A timer that is reset must be polled again to be registered.
                timer.as_mut().reset(self.next_wake(Instant::now()).into());
                continue;
            }
            if stepped.is_pending() {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// One round of writing and reading: `Ready(None)` when something
    /// happened (go round again), `Pending` when everything waits.
    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        let mut progressed = false;
        if self.replying && self.writer.is_idle() {
            match Pin::new(&mut *self.socket).poll_flush(cx) {
                Poll::Ready(Ok(())) if self.peer_closed => return Poll::Ready(Some(End::Gone)),
                Poll::Ready(Ok(())) => {
                    self.replying = false;
                    progressed = true;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Some(End::Gone)),
                Poll::Pending => {}
            }
        }
        if self.writer.is_idle() && !self.replying && !self.writer.is_closing() {
            if let Poll::Ready(batch) = self.conn.outbox.poll_batch(cx) {
                self.writer.load(batch);
                if self.writer.is_closing() {
                    self.close_within_grace();
                }
            }
        }
        if !self.writer.is_idle() {
            let metrics = self.app.router.metrics();
            match self.writer.poll_write(cx, self.socket.get_mut(), metrics) {
                Poll::Ready(Ok(Flushed::Closed)) => return Poll::Ready(Some(End::Closed)),
                Poll::Ready(Ok(Flushed::Batch)) => progressed = true,
                Poll::Ready(Err(_)) => return Poll::Ready(Some(End::Gone)),
                Poll::Pending => {}
            }
        }
        if self.reading && !self.replying {
            if let Poll::Ready(message) = Pin::new(&mut *self.socket).poll_next(cx) {
                if let Some(end) = self.on_message(message) {
                    return Poll::Ready(Some(end));
                }
                progressed = true;
            }
        }
        if progressed {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// Handles one read result; `Some` when the connection is over.
    fn on_message(&mut self, message: Option<Result<Message, WsError>>) -> Option<End> {
        self.watchdog.heard(Instant::now());
        let outcome = match message {
            Some(Ok(Message::Text(text))) => {
                let verifier = self.app.verifier.load();
                let cx = SessionContext {
                    router: &self.app.router,
                    verifier: &verifier,
                };
                self.session.handle_text(&cx, self.conn, &text)
            }
            Some(Ok(Message::Binary(_))) => self.session.handle_binary(&self.app.router, self.conn),
            Some(Ok(Message::Ping(_))) => {
                self.replying = true;
                Outcome::Continue
            }
            Some(Ok(Message::Close(_))) => {
                self.replying = true;
                self.peer_closed = true;
                self.reading = false;
                self.close_within_grace();
                Outcome::Continue
            }
            Some(Ok(_)) => Outcome::Continue,
            Some(Err(WsError::Capacity(_))) => Outcome::Close(1009, "message too big"),
            Some(Err(e)) => {
                tracing::debug!(connection = %self.conn.public_id, "read failed: {e}");
                return Some(End::Gone);
            }
            None => return Some(End::Gone),
        };
        if let Outcome::Close(code, reason) = outcome {
            self.reading = false;
            self.conn.close(code, reason);
        }
        None
    }

    /// The timer fired: ping, close for silence or expiry, or give up a
    /// close that takes too long.
    fn on_timer(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Some(End::Abandoned);
        }
        let unix_now = chrono::Utc::now().timestamp();
        let (code, reason) = match self.watchdog.check(now, self.conn.expires_at(), unix_now) {
            Due::Nothing => return None,
            Due::Ping => {
                self.conn.outbox.request_ping();
                return None;
            }
            Due::Silent => (4000, "heartbeat timeout"),
            Due::Expired => (4001, "token expired"),
        };
        self.conn.close(code, reason);
        self.close_within_grace();
        None
    }

    /// When the timer should fire next: the watchdog's next due time, or,
    /// once the connection is closing, only the deadline.
    fn next_wake(&self, now: Instant) -> Instant {
        self.deadline.unwrap_or_else(|| {
            let unix_now = chrono::Utc::now().timestamp();
            self.watchdog
                .next_due(now, self.conn.expires_at(), unix_now)
        })
    }

    fn close_within_grace(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + CLOSE_GRACE);
            self.rearm = true;
        }
    }
}

fn close_frame(code: u16, reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: reason.chars().take(120).collect::<String>().into(),
    }
}
