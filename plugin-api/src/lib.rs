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
//! - the SDK ([`Plugin`], [`Host`], [`export_plugin!`]): safe Rust on top of
//!   the ABI. A plugin author implements [`Plugin`] and invokes
//!   [`export_plugin!`] once; they write no `unsafe`.
//! - helpers plugins share: the [`Emitter`] seam over [`Host`] (with
//!   [`bump`], [`worth_logging`], [`bump_and_log`], [`emit_counted`], [`count_emit`], [`spawn_thread`] and
//!   [`join_until`]); [`counters!`] for a service's counters and their
//!   snapshot; [`bind_polled`] for an input's listener; [`timestamp`], the
//!   one time format of events; and [`config`], for reading a
//!   `[plugins.config]` table with uniform error messages.
//!
//! ```no_run
//! use switchyard_plugin_api::{export_plugin, EventTypeDecl, Field, Host, Plugin, PluginInfo, Role};
//!
//! struct Hello { host: Option<Host> }
//!
//! impl Plugin for Hello {
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("hello", env!("CARGO_PKG_VERSION"), Role::Producer).event_type(
//!             EventTypeDecl::new("hello.said", "greetings", "A greeting")
//!                 .field("text", Field::string().required()),
//!         )
//!     }
//!     fn create(_config: serde_json::Value) -> Result<Self, String> {
//!         Ok(Hello { host: None })
//!     }
//!     fn start(&mut self, host: Host) -> Result<(), String> {
//!         let _ = host.emit("hello.said", &serde_json::json!({"text": "hi"}), None);
//!         self.host = Some(host);
//!         Ok(())
//!     }
//!     fn stop(&mut self) {}
//! }
//!
//! export_plugin!(Hello);
//! ```

pub mod abi;
pub mod config;
mod counters;
mod decl;
mod emitter;
#[doc(hidden)]
pub mod export;
mod host;
mod net;
mod panic;
mod plugin;
mod time;

pub use decl::{EventTypeDecl, Field, FieldType};
pub use emitter::{
    bump, bump_and_log, count_emit, emit_counted, join_until, spawn_thread, worth_logging,
    EmitCounters, Emitter, RouterStopped,
};
pub use host::{EmitError, Host, LogLevel};
pub use net::bind_polled;
pub use plugin::{Plugin, PluginInfo, Role};
pub use time::timestamp;

/// Re-exported so that plugins and the export macro agree on one `serde_json`.
pub use serde_json;
