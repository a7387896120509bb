//! The Switchyard plugin API.
//!
//! Two layers live here:
//!
//! - [`abi`]: the stable C ABI. A plugin is a shared library that exports one
//!   function, [`abi::ENTRY_SYMBOL`], returning a `#[repr(C)]`
//!   [`abi::PluginDescriptor`]. Only C types cross the boundary and data is
//!   borrowed for the length of one call, so the host and the plugin may be
//!   built by different compilers (or be written in C: see
//!   `include/switchyard_plugin.h`).
//! - the SDK ([`Plugin`], [`Running`], [`PluginError`], [`Host`],
//!   [`export_plugin!`]): safe Rust on top of the ABI. A plugin author
//!   implements [`Plugin`] (the stopped value, whose `start` consumes it) and
//!   [`Running`] (the started value, whose `stop` consumes it) and invokes
//!   [`export_plugin!`] once; they write no `unsafe`.
//! - helpers plugins share: the [`Emitter`] seam over [`Host`] (with
//!   [`bump`], [`worth_logging`], [`bump_and_log`], [`emit_counted`], [`count_emit`], [`spawn_thread`] and
//!   [`join_until`]); [`counters!`] for a service's counters and their
//!   snapshot; [`bind_polled`] for an input's listener; [`timestamp`], the
//!   one time format of events; and [`config`], for reading a
//!   `[plugins.config]` table with uniform error messages; and [`payload`],
//!   the router's payload rules ([`EventTypeDecl::check_payload`]) for a
//!   plugin's tests.
//!
//! ```no_run
//! use switchyard_plugin_api::serde_json::{json, Value};
//! use switchyard_plugin_api::{
//!     export_plugin, EventTypeDecl, Field, Host, Plugin, PluginError, PluginInfo, Role, Running,
//! };
//!
//! struct Hello;
//! struct Greeted;
//!
//! impl Plugin for Hello {
//!     type Running = Greeted;
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("hello", env!("CARGO_PKG_VERSION"), Role::Producer).event_type(
//!             EventTypeDecl::new("hello.said", "greetings", "A greeting")
//!                 .field("text", Field::string().required()),
//!         )
//!     }
//!     fn create(_config: Value) -> Result<Self, PluginError> {
//!         Ok(Hello)
//!     }
//!     fn start(self, host: Host) -> Result<Greeted, PluginError> {
//!         let _ = host.emit("hello.said", &json!({"text": "hi"}), None);
//!         Ok(Greeted)
//!     }
//! }
//!
//! impl Running for Greeted {
//!     fn stop(self) {}
//! }
//!
//! export_plugin!(Hello);
//! ```

pub mod abi;
pub mod config;
mod counters;
mod decl;
mod emitter;
mod error;
#[doc(hidden)]
pub mod export;
mod host;
mod net;
mod panic;
pub mod payload;
mod plugin;
mod time;

pub use decl::{EventTypeDecl, Field, FieldType};
pub use emitter::{
    bump, bump_and_log, count_emit, emit_counted, join_until, spawn_thread, worth_logging,
    EmitCounters, Emitter, RouterStopped,
};
pub use error::PluginError;
pub use host::{EmitError, Host, LogLevel};
pub use net::bind_polled;
pub use plugin::{Plugin, PluginInfo, Role, Running};
pub use time::timestamp;

/// Re-exported so that plugins and the export macro agree on one `serde_json`.
pub use serde_json;
