//! Handling one client's messages, independent of the transport: the
//! WebSocket module (or any other) feeds text frames in, and every reply is
//! queued on the connection's outbox, in order, before the next message is
//! read.

use crate::connection::{ConnRef, Frame};
use crate::protocol::{self, ClientMessage};
use crate::router::Router;

/// Handles one text frame from the client.
pub fn handle_text(router: &Router, conn: &ConnRef, text: &str) {
    let max_depth = router.snapshot().config.server.max_json_depth;
    let request = match protocol::parse(text, max_depth) {
        Ok(request) => request,
        Err(refusal) => {
            reply(
                conn,
                protocol::error(refusal.code, &refusal.message, &refusal.id),
            );
            return;
        }
    };
    let id = &request.id;
    match request.message {
        ClientMessage::Subscribe { events, since } => {
            router.subscribe(conn, &events, since.as_ref(), id)
        }
        ClientMessage::Unsubscribe { events } => router.unsubscribe(conn, events.as_deref(), id),
        ClientMessage::Ping => reply(conn, protocol::pong(id)),
        ClientMessage::Refresh { .. } => reply(
            conn,
            protocol::error(
                "invalid_token",
                "this connection cannot refresh a token: it did not authenticate with one",
                id,
            ),
        ),
    }
}

/// Handles a binary frame: the protocol is JSON text only.
pub fn handle_binary(conn: &ConnRef) {
    reply(
        conn,
        protocol::error(
            "invalid_json",
            "binary frames are not accepted: send JSON text frames",
            &None,
        ),
    );
}

fn reply(conn: &ConnRef, text: String) {
    conn.outbox.push_control(Frame::control(text));
}
