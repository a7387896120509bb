//! Switchyard's routing engine: everything that decides, and nothing that
//! carries bytes. It has no async runtime and no transport (no tokio, hyper,
//! warp or tungstenite: `tests/dependencies.rs` fails if one appears), so
//! routing can be tested without a socket and a new transport or cluster
//! engine is a module beside the others, not a rewrite.
//!
//! How an event is decided, module by module:
//! - [`config`] reads `config.toml` into a checked model, and [`registry`]
//!   is built from it: event types, their payload schemas, channels;
//! - [`router`] checks an event against the registry, stamps its channel's
//!   sequence, keeps it in history and pushes it into the bounded queue
//!   ([`connection`]) of every connection whose [`subscriptions`] match,
//!   and to the sinks whose routes match;
//! - [`protocol`] builds every message the router sends (clients' own
//!   messages are read by the transport); [`names`] holds the naming and pattern rules; [`metrics`] the
//!   counters; [`ratelimit`] the token buckets; [`files`] how files are read.
//!
//! The transport (the `switchyard` crate) takes frames out of each
//! connection's [`connection::Outbox`] and writes them; see
//! `ARCHITECTURE.md`.

pub mod config;
pub mod connection;
pub mod contracts;
pub mod files;
pub mod json_depth;
pub mod metrics;
pub mod moment;
pub mod names;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod router;
pub mod subscriptions;
pub mod text;
