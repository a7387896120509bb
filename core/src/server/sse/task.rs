//! An event stream once hyper has read its request: a task of its own
//! writes the response head and then the stream straight to the socket
//! (chunked for HTTP/1.1, up to the close for HTTP/1.0), and reads only to
//! notice the client leaving. Once the response head is written no other
//! request can follow on the connection, so nothing of hyper's is kept: its
//! buffers and connection state were most of an idle stream's memory
//! (BENCHMARKS.md, "An idle Server-Sent Events stream").
//!
//! Written by hand as a state machine, as the WebSocket task is, so that an
//! idle stream's task holds only [`Served`]. It runs on one of the server's
//! lanes, as a WebSocket does, and moves its socket there first. There, an
//! idle stream's events are written by the lane's mailbox drainer
//! ([`inline`]), through the [`Output`] they share: the task
//! is woken only for what the socket did not take, a ping, the token's
//! expiry, the close, or the client leaving.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use parking_lot::Mutex;
use tokio_util::either::Either;

use super::inline::{self, Shared};
use super::output::Output;
use super::stream::Stream;
use crate::connection::{Clock, ConnRef};
use crate::server::lanes;
use crate::server::readiness::poll_read;
use crate::server::socket::{self, Socket, CLOSE_GRACE};
use crate::server::steps::{self, Steps};

/// An admitted stream and its output (the response head first), waiting
/// for hyper to give up the socket.
pub struct Handoff {
    output: Output,
    stream: Stream,
}

impl Handoff {
    /// `stream`, to be written through `output`.
    pub fn new(output: Output, stream: Stream) -> Handoff {
        Handoff { output, stream }
    }
}

/// How serving a stream ended.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::server) enum End {
    /// Everything, the last message included, is written.
    Finished,
    /// The client went away.
    Gone,
    /// The client did not take what was left within [`CLOSE_GRACE`].
    Abandoned,
}

/// Serves the stream on `socket` until it ends: the stream's task.
pub fn run(socket: Socket, handoff: Handoff) -> Task {
    Task::Arriving(Some(Box::new((socket, handoff))))
}

/// A stream's task.
pub enum Task {
    /// Not yet polled: its socket is registered with the runtime that
    /// polls it first (boxed: this lasts one poll).
    Arriving(Option<Box<(Socket, Handoff)>>),
    /// Writing the stream.
    Streaming(Served),
    /// Out of the router, its last bytes written: waiting briefly for the
    /// client to close.
    Lingering {
        /// The socket, half-closed.
        socket: Socket,
        /// The connection, for its alarm.
        conn: ConnRef,
        /// When the client is given up.
        deadline: Instant,
    },
    /// Over.
    Done,
}

impl Future for Task {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = self.get_mut();
        loop {
            match task {
                Task::Arriving(arrival) => {
                    let Some((socket, handoff)) = arrival.take().map(|a| *a) else {
                        unreachable!("an arriving task becomes another at its first poll");
                    };
                    *task = match socket::adopt(socket) {
                        Ok(socket) => Task::Streaming(Served::new(socket, handoff)),
                        Err(e) => {
                            tracing::warn!("an event stream could not be moved to its lane: {e}");
                            Task::Done
                        }
                    };
                }
                Task::Streaming(served) => {
                    let end = ready!(steps::poll(served, cx));
                    tracing::debug!(connection = %served.stream.conn().public_id, ?end, "stream ended");
                    let Task::Streaming(served) = std::mem::replace(task, Task::Done) else {
                        unreachable!("matched above");
                    };
                    if end == End::Finished {
                        let deadline = Instant::now() + CLOSE_GRACE;
                        let conn = served.stream.conn().clone();
                        served.stream.app().router.clock().wake_at(&conn, deadline);
                        // The stream leaves the router here, not after the linger.
                        drop(served.stream);
                        *task = Task::Lingering {
                            socket: served.socket,
                            conn,
                            deadline,
                        };
                    }
                }
                Task::Lingering {
                    socket,
                    conn,
                    deadline,
                } => {
                    let _ = ready!(socket::poll_linger(socket, conn, Some(*deadline), cx));
                    *task = Task::Done;
                }
                Task::Done => return Poll::Ready(()),
            }
        }
    }
}

/// One open stream: everything its task holds.
pub struct Served {
    /// Dropped first, before the socket closes: it stops inline writes.
    stream: Stream,
    socket: Socket,
    /// What is rendered and not yet written, shared with the drainer.
    output: Shared,
    /// When a closing stream that the client does not read is given up.
    deadline: Option<Instant>,
    /// The router's clock must be asked for a new alarm (one rang, or a
    /// deadline appeared).
    rearm: bool,
}

impl Served {
    fn new(socket: Socket, handoff: Handoff) -> Served {
        let output = Arc::new(Mutex::new(handoff.output));
        if let (Either::Left(tcp), true) = (&socket, lanes::polled_here_alone()) {
            inline::serve(handoff.stream.conn(), &output, tcp.as_raw_fd());
        }
        Served {
            stream: handoff.stream,
            socket,
            output,
            deadline: None,
            rearm: true,
        }
    }

    /// Writes what is loaded, after loading the next batch if nothing is:
    /// `Ready` with whether the stream's last message is out, or `None`
    /// when there was nothing to write.
    fn poll_output(&mut self, cx: &mut Context<'_>) -> Option<Poll<std::io::Result<bool>>> {
        let mut output = self.output.lock();
        let outbox = &self.stream.conn().outbox;
        if output.takes_more() {
            if let Some(batch) = outbox.take_batch() {
                output.load(outbox, batch, self.stream.app().router.metrics());
            }
        }
        if !output.has_bytes() {
            return None;
        }
        let ended = output.ended();
        Some(
            output
                .poll_write(cx, &mut self.socket, outbox)
                .map_ok(|()| ended),
        )
    }

    /// The socket is full and the stream was closed meanwhile (4008: the
    /// client does not read what it asks for): what is under way gets
    /// [`CLOSE_GRACE`] to go out, so that a client that never reads is let
    /// go, as a WebSocket is.
    fn closing_while_blocked(&mut self) {
        if self.deadline.is_none() && self.stream.conn().outbox.is_closing() {
            self.deadline = Some(Instant::now() + CLOSE_GRACE);
            self.rearm = true;
        }
    }
}

impl Steps for Served {
    type End = End;

    fn conn(&self) -> &ConnRef {
        self.stream.conn()
    }

    fn clock(&self) -> &Clock {
        self.stream.app().router.clock()
    }

    /// The clock rang: a ping may be due, or the deadline passed.
    fn on_alarm(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Some(End::Abandoned);
        }
        self.stream.close_if_expired();
        // A stream with bytes still under way needs no ping to look alive.
        if self.stream.ping_due(now) {
            self.stream.conn().outbox.shrink();
            let mut output = self.output.lock();
            if output.takes_more() {
                output.ping();
            }
        }
        None
    }

    fn step(&mut self, cx: &mut Context<'_>) -> Poll<Option<End>> {
        let mut progressed = false;
        match self.poll_output(cx) {
            None => {}
            Some(Poll::Ready(Ok(true))) => return Poll::Ready(Some(End::Finished)),
            Some(Poll::Ready(Ok(false))) => progressed = true,
            Some(Poll::Ready(Err(_))) => return Poll::Ready(Some(End::Gone)),
            Some(Poll::Pending) => self.closing_while_blocked(),
        }
        let (socket, conn) = (&mut self.socket, self.stream.conn());
        // A stream takes no messages: what the client sends is read only
        // to notice it closing, and dropped.
        match poll_read(conn, socket) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Some(End::Gone)),
            Poll::Ready(Ok(_)) => progressed = true,
            Poll::Pending => {}
        }
        if progressed {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    fn take_rearm(&mut self) -> bool {
        std::mem::take(&mut self.rearm)
    }

    /// The next ping, or the token's end or the deadline if one comes
    /// first.
    fn next_wake(&self, now: Instant) -> Instant {
        [
            Some(self.stream.next_ping()),
            self.stream.token_runs_out(now),
            self.deadline,
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("the next ping is always there")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle stream's task is what its memory is, beside its connection:
    /// this fails when a change makes it grow. tokio allocates a task in
    /// 128-byte steps, about 100 bytes of its own around the future: up to
    /// 280 bytes here keeps it at 384.
    #[test]
    fn an_open_stream_task_stays_small() {
        let task = std::mem::size_of::<Task>();
        assert!(task <= 280, "task {task} B");
    }
}
