//! Switchyard: a real-time event router. This crate carries bytes: the
//! listener, HTTP and WebSocket, the plugin host, auth, reload and the
//! binary. What is decided — registry, subscriptions, routing, history,
//! queues, the configuration model — is `switchyard-engine`'s, re-exported
//! here under the same names (ARCHITECTURE.md).
//!
//! How an event travels, module by module:
//! - it enters through a plugin ([`plugin_host`]) or `POST /api/events`
//!   ([`server`]);
//! - [`router`] checks it against the [`registry`] (built from [`config`]),
//!   stamps its channel's sequence, keeps it in history, and pushes it into
//!   the bounded queue ([`connection`]) of every connection whose
//!   [`subscriptions`] match;
//! - the transport ([`server`]) writes each queue to its WebSocket; the
//!   client's own messages are read by [`client_message`] and handled by
//!   [`session`], whose replies [`protocol`] builds.
//!
//! [`reload`] builds a configuration and swaps it in while all of this runs;
//! [`runtime`] binds the listener, watches the file and shuts down.

pub use switchyard_engine::{
    config, connection, files, json_depth, metrics, names, protocol, ratelimit, registry, router,
    subscriptions, text,
};

pub mod app;
pub mod auth;
pub mod check;
pub mod client_message;
pub mod cluster;
pub mod log_limit;
pub mod logging;
pub mod plugin_host;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod session;
pub mod tls;
pub mod tools;
