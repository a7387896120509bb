//! The integration tests of `switchyard`, as one test binary (the layout
//! ripgrep uses): each module below was a test file of its own, and they all
//! share [`support`]. One binary links the router once, compiles the helpers
//! once and builds the plugin libraries once per run, instead of once per
//! file.
//!
//! Run one module with a filter: `cargo test -p switchyard --test it reload::`.

mod support;

mod auth_and_limits;
mod binary;
mod cli_tools;
mod cluster;
mod console;
mod contracts;
mod deploy;
mod fuzz;
mod http_api;
mod inline;
mod observability;
mod plugin_audit_log;
mod plugin_guide;
mod plugin_prometheus;
mod plugin_summary;
mod plugin_worker;
mod plugins;
mod preview;
mod properties;
mod reload;
mod routing;
mod shipped_config;
mod slow_consumers;
mod sse;
mod tls;
mod ws_protocol;
