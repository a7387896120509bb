//! Handling one client's messages, independent of the transport: the
//! WebSocket module (or any other) feeds frames in, and every reply is
//! queued on the connection's outbox, in order, before the next message is
//! read. A session also enforces the client rate limit and token refresh.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::auth::jwt::Verifier;
use crate::client_message::{self, ClientMessage};
use crate::connection::{ConnRef, Frame};
use crate::protocol;
use crate::ratelimit::TokenBucket;
use crate::router::Router;

/// `rate_limited` errors tolerated within [`REFUSAL_WINDOW`] before closing.
const MAX_REFUSALS: usize = 10;
/// The sliding window for [`MAX_REFUSALS`].
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// What the transport should do after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Keep reading.
    Continue,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    bucket: TokenBucket,
    /// Refusals in the last minute. Boxed (8 bytes, not a `VecDeque`'s 32)
    /// because most clients are never refused and a connection's task is
    /// its memory (BENCHMARKS.md, "Idle connections").
    #[allow(clippy::box_collection)]
    refusals: Option<Box<VecDeque<Instant>>>,
}

/// What a session needs from the router's state.
pub struct Context<'a> {
    /// The router.
    pub router: &'a Router,
    /// The JWT keys in force, for `refresh`.
    pub verifier: &'a Verifier,
}

impl Session {
    /// A session with a full rate-limit bucket.
    pub fn new(router: &Router) -> Session {
        let limit = router.snapshot().config.server.client_rate_limit;
        Session {
            bucket: TokenBucket::full(limit.burst),
            refusals: None,
        }
    }

    /// Handles one text frame from the client.
    pub fn handle_text(&mut self, cx: &Context<'_>, conn: &ConnRef, text: &str) -> Outcome {
        if let Some(outcome) = self.rate_limited(cx.router, conn, text) {
            return outcome;
        }
        let max_depth = cx.router.snapshot().config.server.max_json_depth;
        let request = match client_message::parse(text, max_depth) {
            Ok(request) => request,
            Err(refusal) => {
                reply(
                    conn,
                    protocol::error(refusal.code, &refusal.message, &refusal.id),
                );
                return Outcome::Continue;
            }
        };
        let id = &request.id;
        match request.message {
            ClientMessage::Subscribe { events, since } => {
                cx.router.subscribe(conn, &events, since.as_ref(), id)
            }
            ClientMessage::Unsubscribe { events } => {
                cx.router.unsubscribe(conn, events.as_deref(), id)
            }
            ClientMessage::Ping => reply(conn, protocol::pong(id)),
            ClientMessage::Refresh { token } => refresh(cx.verifier, conn, &token, id),
        }
        Outcome::Continue
    }

    /// Handles a binary frame: the protocol is JSON text only.
    pub fn handle_binary(&mut self, router: &Router, conn: &ConnRef) -> Outcome {
        if let Some(outcome) = self.rate_limited(router, conn, "") {
            return outcome;
        }
        reply(
            conn,
            protocol::error(
                "invalid_json",
                "binary frames are not accepted: send JSON text frames",
                &None,
            ),
        );
        Outcome::Continue
    }

    /// Refuses a message over `server.client_rate_limit`; closes after too
    /// many refusals within a minute.
    fn rate_limited(&mut self, router: &Router, conn: &ConnRef, text: &str) -> Option<Outcome> {
        let limit = router.snapshot().config.server.client_rate_limit;
        if self.bucket.take(limit.messages_per_s, limit.burst) {
            return None;
        }
        let now = Instant::now();
        let refusals = self.refusals.get_or_insert_with(Box::default);
        while refusals
            .front()
            .is_some_and(|t| now.duration_since(*t) > REFUSAL_WINDOW)
        {
            refusals.pop_front();
        }
        refusals.push_back(now);
        if refusals.len() > MAX_REFUSALS {
            return Some(Outcome::Close(1008, "rate limit exceeded"));
        }
        let message = format!(
            "more than {} messages per second (burst {}): this message was not handled",
            limit.messages_per_s, limit.burst
        );
        reply(
            conn,
            protocol::error("rate_limited", &message, &client_message::request_id(text)),
        );
        Some(Outcome::Continue)
    }
}

/// `refresh`: a valid token for the same user moves the expiry.
fn refresh(verifier: &Verifier, conn: &ConnRef, token: &str, id: &Option<Value>) {
    let Some(user) = conn.user.as_deref() else {
        reply(
            conn,
            protocol::error(
                "invalid_token",
                "an anonymous connection cannot refresh a token",
                id,
            ),
        );
        return;
    };
    match verifier.verify(token) {
        Ok(claims) if claims.sub == user => {
            conn.refreshed(claims.exp);
            reply(
                conn,
                protocol::refreshed(&protocol::unix_timestamp(claims.exp), id),
            );
        }
        Ok(_) => reply(
            conn,
            protocol::error("invalid_token", "the token is for another user", id),
        ),
        Err(e) => reply(conn, protocol::error("invalid_token", &e.to_string(), id)),
    }
}

fn reply(conn: &ConnRef, text: String) {
    conn.outbox.push_control(Frame::control(text));
}
