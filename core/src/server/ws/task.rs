//! One WebSocket connection, served by one task: it reads client frames
//! (through its worker's shared buffer, [`socket`]) into
//! [`crate::session`], writes the outbox with [`Writer`] and keeps the
//! [`Watchdog`]'s clocks. One task (not a reader and a writer) because an
//! idle connection's memory is the budget: a second task, the lock that
//! splitting a socket needs and a buffer cost more than the rest of the
//! connection.
//!
//! Frames are decoded by [`Decoder`] and written by [`Writer`], which also
//! answers Pings; no per-connection framing state survives between frames.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::ready;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::upgrade::OnUpgrade;
use tokio::io::AsyncWriteExt;
use tokio_util::either::Either;

use super::frames::{Decoder, Flow, Message};
use super::watchdog::{Due, Watchdog};
use super::writer::{self, Flushed, Writer};
use crate::app::App;
use crate::connection::outbox::Written;
use crate::connection::{inline, Clock, Close, ConnRef};
use crate::server::admission::{self, Admission, Opening};
use crate::server::expiry;
use crate::server::lanes;
use crate::server::readiness::poll_read;
use crate::server::socket::{self, Socket, CLOSE_GRACE};
use crate::server::steps::{self, Steps};
use crate::session::{Context as SessionContext, Outcome, Session};

/// How serving a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::server) enum End {
    /// The client went away (or closed first): nothing more to send.
    Gone,
    /// Our close frame is written: wait briefly for the client's answer.
    Closed,
    /// The client did not take what was left within [`CLOSE_GRACE`].
    Abandoned,
}

/// Serves one upgraded connection until it closes: the connection's task.
pub fn run(app: Arc<App>, on_upgrade: OnUpgrade, admission: Admission, opening: Opening) -> Task {
    Task::Admitting(Box::pin(admit(app, on_upgrade, admission, opening)))
}

/// A connection's task, written as a state machine by hand rather than as
/// an `async fn`: an `async fn` keeps a copy of every large value it moves
/// (the socket, the connection state), and this task is most of an idle
/// connection's memory. The short-lived handshake is boxed, so an
/// established connection holds only [`Served`].
pub enum Task {
    /// Upgrading and asking the router to take the connection.
    Admitting(Pin<Box<dyn Future<Output = Option<Served>> + Send>>),
    /// Open: reading, writing, keeping the clocks; then, once our close
    /// frame is out and the router has forgotten the connection, waiting
    /// briefly for the client's. One variant for both, so that the enum
    /// needs no tag of its own beside the connection's fields.
    Serving(Served),
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
                Task::Serving(served) if !served.left => {
                    let end = ready!(steps::poll(served, cx));
                    tracing::debug!(connection = %served.conn.public_id, ?end, "ended");
                    served.leave();
                    if end == End::Closed {
                        served.start_linger();
                    } else {
                        *task = Task::Done;
                    }
                }
                Task::Serving(lingering) => {
                    let _ = ready!(lingering.poll_linger(cx));
                    *task = Task::Done;
                }
                Task::Done => return Poll::Ready(()),
            }
        }
    }
}

/// Waits for the upgrade, takes the socket back from hyper and asks the
/// router to take the connection; a refused connection is closed with 1008.
async fn admit(
    app: Arc<App>,
    on_upgrade: OnUpgrade,
    admission: Admission,
    opening: Opening,
) -> Option<Served> {
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!("upgrade failed: {e}");
            return None;
        }
    };
    let Ok((socket, early)) = socket::from_upgraded(upgraded) else {
        tracing::error!("an upgraded connection of an unknown kind was dropped");
        return None;
    };
    let mut socket = match socket::adopt(socket) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!("an upgraded connection could not be moved to its lane: {e}");
            return None;
        }
    };
    match admission::enter(&app, admission.verdict, opening).await {
        Ok(conn) => {
            let mut served = Served::new(app, conn, socket);
            served.on_input(&mut early.to_vec());
            Some(served)
        }
        Err(reason) => {
            tracing::debug!("connection refused: {reason}");
            let _ = socket.write_all(&writer::close_frame(1008, &reason)).await;
            let _ = socket.shutdown().await;
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
    /// Unfinished client frames (nothing, between frames).
    decoder: Decoder,
    /// The batch under way, if any: boxed, and let go between batches,
    /// because an idle connection writes nothing and its task is its
    /// memory (BENCHMARKS.md, "Idle connections").
    writer: Option<Box<Writer>>,
    session: Session,
    watchdog: Watchdog,
    /// Whether client messages are still read.
    reading: bool,
    /// When a closing connection is given up.
    deadline: Option<Instant>,
    /// The router's clock must be asked for a new alarm (one rang, or a
    /// deadline appeared).
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
        if let (Either::Left(stream), true) = (&socket, lanes::polled_here_alone()) {
            inline::serve(&conn.outbox, stream.as_raw_fd());
        }
        // The first alarm is asked for by the first poll: `rearm`.
        Served {
            app,
            conn,
            socket,
            decoder: Decoder::default(),
            writer: None,
            session,
            watchdog: Watchdog::new(heartbeat, leeway, now),
            reading: true,
            deadline: None,
            rearm: true,
            left: false,
        }
    }

    /// Removes the connection from the router (once).
    fn leave(&mut self) {
        if !std::mem::replace(&mut self.left, true) {
            self.conn.outbox.stop_inline();
            admission::leave(&self.app, &self.conn);
            tracing::debug!(connection = %self.conn.public_id, "disconnected");
        }
    }

    /// Gives the client [`CLOSE_GRACE`] to answer our close.
    fn start_linger(&mut self) {
        let deadline = Instant::now() + CLOSE_GRACE;
        self.deadline = Some(deadline);
        self.app.router.clock().wake_at(&self.conn, deadline);
    }

    /// After our close frame: waits for the client's (see
    /// [`socket::poll_linger`]).
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        socket::poll_linger(&mut self.socket, &self.conn, self.deadline, cx)
    }

    /// Handles bytes the client sent: each complete message, or the close
    /// that answers a violation of the protocol.
    fn on_input(&mut self, bytes: &mut [u8]) {
        if bytes.is_empty() {
            return;
        }
        let max_message = self.app.router.snapshot().config.server.max_message_bytes;
        let mut decoder = std::mem::take(&mut self.decoder);
        let fed = decoder.feed(bytes, max_message, |message| self.on_message(message));
        self.decoder = decoder;
        if let Err(violation) = fed {
            tracing::debug!(connection = %self.conn.public_id, ?violation, "client frames refused");
            let (code, reason) = violation.close();
            self.reading = false;
            self.conn.close(code, reason);
        }
    }

    /// Handles one client message. Only a whole one shows the client
    /// alive: a frame trickled in a byte at a time, never finished, does not
    /// hold its connection (and its partial frame) open.
    fn on_message(&mut self, message: Message<'_>) -> Flow {
        self.watchdog.heard(Instant::now());
        let outcome = match message {
            Message::Text(text) => {
                let verifier = self.app.verifier.load();
                let cx = SessionContext {
                    router: &self.app.router,
                    verifier: &verifier,
                };
                self.session.handle_text(&cx, &self.conn, text)
            }
            Message::Binary => self.session.handle_binary(&self.app.router, &self.conn),
            Message::Ping(payload) => {
                self.writer.get_or_insert_default().pong(payload);
                Outcome::Continue
            }
            Message::Pong => Outcome::Continue,
            Message::Close(frame) => {
                // RFC 6455 §5.5.1: answer with a Close (echoing the code) at
                // once, without what is still queued.
                self.reading = false;
                self.conn.outbox.close(Close {
                    code: frame.map_or(1000, |(code, _)| code),
                    reason: String::new(),
                    flush: false,
                });
                return Flow::Stop;
            }
        };
        match outcome {
            Outcome::Continue => Flow::Continue,
            Outcome::Close(code, reason) => {
                self.reading = false;
                self.conn.close(code, reason);
                Flow::Stop
            }
        }
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

impl Steps for Served {
    type End = End;

    fn conn(&self) -> &ConnRef {
        &self.conn
    }

    fn clock(&self) -> &Clock {
        self.app.router.clock()
    }

    /// The timer fired: ping, close for silence or expiry, or give up a
    /// close that takes too long.
    fn on_alarm(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Some(End::Abandoned);
        }
        let unix_now_ms = expiry::unix_now_ms();
        let (code, reason) = match self
            .watchdog
            .check(now, self.conn.expires_at(), unix_now_ms)
        {
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

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        let mut progressed = false;
        if self.writer.is_none() {
            if let Some(batch) = self.conn.outbox.take_batch() {
                let writer = self.writer.insert(Box::default());
                writer.load(batch);
                if writer.is_closing() {
                    self.close_within_grace();
                }
            }
        }
        if let Some(writer) = self.writer.as_mut() {
            let metrics = self.app.router.metrics();
            let mut written = Written::default();
            let wrote = writer.poll_write(cx, &mut self.socket, metrics, &mut written);
            if let Poll::Ready(Ok(Flushed::Batch)) = wrote {
                self.conn.outbox.finish(written, writer.take_frames());
                self.writer = None;
                progressed = true;
            } else {
                self.conn.outbox.release(written);
                match wrote {
                    Poll::Ready(Ok(_)) => return Poll::Ready(Some(End::Closed)),
                    Poll::Ready(Err(_)) => return Poll::Ready(Some(End::Gone)),
                    Poll::Pending => self.closing_while_blocked(),
                }
            }
        }
        if self.reading {
            match poll_read(&self.conn, &mut self.socket) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Some(End::Gone)),
                Poll::Ready(Ok(n)) => {
                    socket::with_read(n, |bytes| self.on_input(bytes));
                    progressed = true;
                }
                Poll::Pending => {}
            }
        }
        // After the read, which may have given the writer a Pong: should
        // the task yield before writing it, an inline write must not put a
        // batch on the socket under it (a frame it left half written would
        // then have the Pong in its middle).
        self.conn.outbox.set_writing(self.writer.is_some());
        if progressed {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    fn take_rearm(&mut self) -> bool {
        std::mem::take(&mut self.rearm)
    }

    /// When the timer should fire next: the watchdog's next due time, or,
    /// once the connection is closing, only the deadline.
    fn next_wake(&self, now: Instant) -> Instant {
        self.deadline.unwrap_or_else(|| {
            self.watchdog
                .next_due(now, self.conn.expires_at(), expiry::unix_now_ms())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The task is most of an idle connection's memory (BENCHMARKS.md,
    /// "Idle connections"): this fails when a change makes it grow, e.g.
    /// by holding the socket across an `.await` again (which made it twice
    /// as large).
    /// tokio allocates a task in 128-byte steps, 104 bytes of its own
    /// around the future (tokio 1.54, x86_64): up to 152 bytes here keeps
    /// it at 256. Hence the writer and decoder held only while busy, the
    /// [`Moment`](switchyard_engine::moment::Moment)s in the clocks, and
    /// one variant for serving and lingering.
    #[test]
    fn an_established_connection_task_stays_small() {
        let task = std::mem::size_of::<Task>();
        assert!(task <= 152, "task {task} B");
    }
}
