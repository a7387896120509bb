//! One open event stream, as the response body hyper writes: everything
//! queued for the connection at once, a `: ping` every heartbeat interval,
//! and the last `connection.closed` message. hyper asks for more only as
//! the socket takes it, so the connection's bounded queue is what bounds a
//! slow reader, as for a WebSocket. Dropping the body (the client went
//! away) takes the connection out of the router.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame as BodyFrame};
use tokio::time::{Instant, Sleep};

use super::cursor::Cursor;
use crate::app::App;
use crate::connection::outbox::{Batch, Written};
use crate::connection::ConnRef;
use crate::protocol;
use crate::server::admission;
use crate::server::BoxError;

/// One `id:` + `data:` message (without `id:` when `id` is empty).
pub fn message(id: &[u8], json: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + id.len() + 16);
    if !id.is_empty() {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id);
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

/// The body of an open event stream.
pub struct Stream {
    app: Arc<App>,
    conn: ConnRef,
    cursor: Cursor,
    heartbeat: Duration,
    /// Seconds a token may outlive its expiry (`auth.jwt.leeway_s`).
    leeway_s: i64,
    ping: Pin<Box<Sleep>>,
    ended: bool,
}

impl Stream {
    /// The stream of `conn`, writing a `: ping` every `heartbeat`; its
    /// cursor starts at the positions it recovers from.
    pub fn new(
        app: Arc<App>,
        conn: ConnRef,
        cursor: Cursor,
        heartbeat: Duration,
        leeway_s: u64,
    ) -> Stream {
        Stream {
            app,
            conn,
            cursor,
            heartbeat,
            leeway_s: i64::try_from(leeway_s).unwrap_or(i64::MAX),
            ping: Box::pin(tokio::time::sleep(heartbeat)),
            ended: false,
        }
    }

    /// The batch as stream messages; the last one when it closes.
    fn write(&mut self, batch: Batch) -> Vec<u8> {
        let mut out = Vec::new();
        for frame in &batch.frames {
            self.cursor.saw(frame);
            let id = self.cursor.render().unwrap_or_default();
            out.extend(message(id.as_bytes(), frame.text()));
        }
        self.conn.outbox.release(Written::all(&batch.frames));
        if let Some(close) = batch.close {
            let id = self.cursor.render().unwrap_or_default();
            out.extend(message(
                id.as_bytes(),
                &protocol::closed(close.code, &close.reason),
            ));
            self.ended = true;
        }
        out
    }

    /// Whether the client's token has run out (with leeway) unrefreshed:
    /// a stream cannot be refreshed, so it ends as a WebSocket would, 4001.
    fn expired(&self) -> bool {
        let now = chrono::Utc::now().timestamp();
        self.conn
            .expires_at()
            .is_some_and(|exp| now >= exp.saturating_add(self.leeway_s))
    }
}

impl Body for Stream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, BoxError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(batch) = self.conn.outbox.poll_batch(cx) {
            let out = self.write(batch);
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(BodyFrame::data(Bytes::from(out)))));
            }
        }
        if self.ping.as_mut().poll(cx).is_ready() {
            if self.expired() {
                self.conn.close(4001, "token expired");
                cx.waker().wake_by_ref();
            }
            let next = Instant::now() + self.heartbeat;
            self.ping.as_mut().reset(next);
            let _ = self.ping.as_mut().poll(cx);
            return Poll::Ready(Some(Ok(BodyFrame::data(Bytes::from_static(b": ping\n\n")))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        admission::leave(&self.app, &self.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_its_cursor_then_its_json() {
        assert_eq!(
            message(b"alerts:E:4", "{\"a\":1}"),
            b"id: alerts:E:4\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(message(b"", "{}"), b"data: {}\n\n");
    }
}
