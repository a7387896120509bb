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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::ready;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{Sink, Stream};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::readiness::poll_read;
use super::watchdog::{Due, Watchdog};
use super::writer::{close_reason, Flushed, Writer};
use crate::app::App;
use crate::connection::outbox::Written;
use crate::connection::ConnRef;
use crate::server::admission::{self, Admission};
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

/// Serves one upgraded connection until it closes: the connection's task.
pub fn run(app: Arc<App>, on_upgrade: OnUpgrade, admission: Admission) -> Task {
    Task::Admitting(Box::pin(admit(app, on_upgrade, admission)))
}

/// A connection's task, written as a state machine by hand rather than as
/// an `async fn`: an `async fn` keeps a copy of every large value it moves
/// (the socket, the connection state), and this task is most of an idle
/// connection's memory. The short-lived handshake is boxed, so an
/// established connection holds only [`Served`].
pub enum Task {
    /// Upgrading and asking the router to take the connection.
    Admitting(Pin<Box<dyn Future<Output = Option<Served>> + Send>>),
    /// Open: reading, writing, keeping the clocks.
    Serving(Served),
    /// Our close frame is out; waiting briefly for the client's.
    Lingering(Served),
    /// Over.
    Done,
}

impl Future for Task {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = self.get_mut();
        loop {
            match task {
                Task::Admitting(admitting) => match ready!(admitting.as_mut().poll(cx)) {
                    Some(served) => *task = Task::Serving(served),
                    None => *task = Task::Done,
                },
                Task::Serving(served) => {
                    let end = ready!(served.poll(cx));
                    tracing::debug!(connection = %served.conn.public_id, ?end, "ended");
                    served.leave();
                    let Task::Serving(mut served) = std::mem::replace(task, Task::Done) else {
                        unreachable!("matched above");
                    };
                    if end == End::Closed {
                        served.start_linger();
                        *task = Task::Lingering(served);
                    }
                }
                Task::Lingering(served) => {
                    let _ = ready!(served.poll_linger(cx));
                    *task = Task::Done;
                }
                Task::Done => return Poll::Ready(()),
            }
        }
    }
}

/// Waits for the upgrade, wraps the connection in a WebSocket and asks the
/// router to take it; a refused connection is closed with 1008.
async fn admit(app: Arc<App>, on_upgrade: OnUpgrade, admission: Admission) -> Option<Served> {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return None;
        }
    };
    let max_message = app.router.snapshot().config.server.max_message_bytes;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let io = TokioIo::new(upgraded);
    let mut socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    match admission::enter(&app, admission.verdict).await {
        Ok(conn) => Some(Served::new(app, conn, socket)),
        Err(reason) => {
            tracing::debug!("connection refused: {reason}");
            let _ = socket.close(Some(close_frame(1008, &reason))).await;
            None
        }
    }
}

/// One admitted connection: everything its task holds.
///
/// Built synchronously and driven by `poll` rather than written as nested
/// `async fn`s, because moving a socket between async frames keeps a copy
/// of it in each, and this task is most of an idle connection's memory.
pub struct Served {
    app: Arc<App>,
    conn: ConnRef,
    socket: Socket,
    writer: Writer,
    session: Session,
    watchdog: Watchdog,
    /// The watchdog's (or, once closing, the deadline's) timer; boxed so
    /// that the whole state can move freely until it is polled.
    timer: Pin<Box<Sleep>>,
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
    /// Whether the router has forgotten the connection.
    left: bool,
}

impl Drop for Served {
    /// Removes the connection from the router however its task ends (even
    /// by a panic or the runtime shutting down).
    fn drop(&mut self) {
        self.leave();
    }
}

impl Served {
    fn new(app: Arc<App>, conn: ConnRef, socket: Socket) -> Served {
        tracing::debug!(connection = %conn.public_id, endpoint = %conn.endpoint, user = conn.user.as_deref().unwrap_or("anonymous"), "connected");
        let snap = app.router.snapshot();
        let heartbeat = Duration::from_secs(snap.config.server.heartbeat_interval_s);
        let leeway = snap.config.auth.jwt.leeway_s;
        drop(snap);
        let now = Instant::now();
        let session = Session::new(&app.router);
        // The timer is set (and registered) by the first poll: `rearm`.
        Served {
            app,
            conn,
            socket,
            writer: Writer::default(),
            session,
            watchdog: Watchdog::new(heartbeat, leeway, now),
            timer: Box::pin(tokio::time::sleep_until(now.into())),
            reading: true,
            replying: false,
            peer_closed: false,
            deadline: None,
            rearm: true,
            left: false,
        }
    }

    /// Removes the connection from the router (once).
    fn leave(&mut self) {
        if !std::mem::replace(&mut self.left, true) {
            admission::leave(&self.app, &self.conn);
            tracing::debug!(connection = %self.conn.public_id, "disconnected");
        }
    }

    /// Gives the client [`CLOSE_GRACE`] to answer our close.
    fn start_linger(&mut self) {
        let deadline = Instant::now() + CLOSE_GRACE;
        self.deadline = Some(deadline);
        self.timer.as_mut().reset(deadline.into());
    }

    /// After our close frame: half-close, then read until the client
    /// closes too (or the deadline), so that its unread bytes do not turn
    /// our FIN into a reset that could destroy the close frame before the
    /// client reads it.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let io = Pin::new(self.socket.get_mut());
        ready!(io.poll_shutdown(cx))?;
        let mut scrap = [0u8; 256];
        loop {
            let mut buf = ReadBuf::new(&mut scrap);
            ready!(Pin::new(self.socket.get_mut()).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        for _ in 0..STEPS_PER_POLL {
            if self.timer.is_elapsed() {
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
                // Polled only when set: a registered timer stays registered,
                // and polling it on every wake-up is not free.
                let wake = self.next_wake(Instant::now());
                self.timer.as_mut().reset(wake.into());
                let _ = self.timer.as_mut().poll(cx);
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
            match Pin::new(&mut self.socket).poll_flush(cx) {
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
            let mut written = Written::default();
            let wrote = self
                .writer
                .poll_write(cx, self.socket.get_mut(), metrics, &mut written);
            self.conn.outbox.release(written);
            match wrote {
                Poll::Ready(Ok(Flushed::Closed)) => return Poll::Ready(Some(End::Closed)),
                Poll::Ready(Ok(Flushed::Batch)) => progressed = true,
                Poll::Ready(Err(_)) => return Poll::Ready(Some(End::Gone)),
                Poll::Pending => self.closing_while_blocked(),
            }
        }
        if self.reading && !self.replying {
            let socket = &mut self.socket;
            let read = poll_read(&self.conn, cx, |rcx| Pin::new(socket).poll_next(rcx));
            if let Poll::Ready(message) = read {
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
                self.session.handle_text(&cx, &self.conn, &text)
            }
            Some(Ok(Message::Binary(_))) => {
                self.session.handle_binary(&self.app.router, &self.conn)
            }
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
            // RFC 6455 §7.1.7: a violation is answered with a close frame
            // saying so (1007 for text that is not UTF-8), not a dropped socket.
            Some(Err(WsError::Utf8(_))) => Outcome::Close(1007, "invalid UTF-8 in a text message"),
            Some(Err(WsError::Protocol(e))) => {
                tracing::debug!(connection = %self.conn.public_id, "protocol error: {e}");
                Outcome::Close(1002, "protocol error")
            }
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

    /// The socket is full and the outbox was closed meanwhile (4008: the
    /// client does not read what it asks for): stop reading, and give the
    /// batch under way [`CLOSE_GRACE`] to go out before the close frame, so
    /// that a client that never reads is let go.
    fn closing_while_blocked(&mut self) {
        if self.deadline.is_none() && self.conn.outbox.is_closing() {
            self.reading = false;
            self.close_within_grace();
        }
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
        reason: close_reason(reason).to_owned().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task is most of an idle connection's memory (BENCHMARKS.md):
    /// this fails when a change makes it grow, e.g. by holding the socket
    /// across an `.await` again (which made it twice as large).
    #[test]
    fn an_established_connection_task_stays_small() {
        let task = std::mem::size_of::<Task>();
        let socket = std::mem::size_of::<Socket>();
        assert!(task <= socket + 300, "task {task} B, socket {socket} B");
    }
}
