//! The [`Plugin`] trait a plugin author implements.

use serde_json::Value;

use crate::{EventTypeDecl, Host, PluginError};

/// What a plugin does with events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Emits events.
    Producer,
    /// Receives routed events.
    Sink,
    /// Both.
    Both,
}

/// A plugin's static self-description: the library's descriptor.
#[derive(Clone, Debug)]
pub struct PluginInfo {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Producer, sink or both.
    pub role: Role,
    /// The default event types of every instance.
    pub event_types: Vec<EventTypeDecl>,
}

impl PluginInfo {
    /// A description with no event types yet.
    pub fn new(name: &str, version: &str, role: Role) -> PluginInfo {
        PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            role,
            event_types: Vec::new(),
        }
    }

    /// Adds a default event type.
    pub fn event_type(mut self, decl: EventTypeDecl) -> PluginInfo {
        self.event_types.push(decl);
        self
    }
}

/// A plugin, written in safe Rust, before it starts: its validated config.
///
/// The lifecycle is in the types (see docs/plugins.md, "The lifecycle"):
/// [`Plugin::create`] makes the stopped value, [`Plugin::start`] consumes it
/// and returns the [`Running`] value, whose [`Running::stop`] consumes that
/// in turn. So a plugin cannot be started twice, nor receive events before
/// it starts, and it needs no "already started" checks of its own. The
/// router never makes two calls on one instance at once. A panic in any of
/// them is caught and marks the instance failed.
pub trait Plugin: Sized + Send + 'static {
    /// The started instance: what [`Plugin::start`] acquired.
    type Running: Running;

    /// Describes the library: name, version, role and default event types.
    fn info() -> PluginInfo;

    /// Parses and validates the instance's `[plugins.config]` table. No side
    /// effects: no threads, sockets or files (`switchyard check` calls this).
    fn create(config: Value) -> Result<Self, PluginError>;

    /// This instance's own event types, replacing [`PluginInfo::event_types`]
    /// (e.g. when the config selects which types it emits).
    fn event_types(&self) -> Option<Vec<EventTypeDecl>> {
        None
    }

    /// Acquires resources and starts work; returns promptly (spawn threads
    /// with [`Host::spawn`]). `host` is valid for the life of the process.
    fn start(self, host: Host) -> Result<Self::Running, PluginError>;
}

/// A started plugin: it receives routed events until it is stopped.
pub trait Running: Send + 'static {
    /// Receives one routed event (the client envelope, JSON) — sinks only.
    /// Called on one router thread per instance; may take its time.
    fn deliver(&mut self, _event: &str) -> Result<(), PluginError> {
        Ok(())
    }

    /// Stops work and releases what `start` acquired, within `stop_timeout_s`.
    fn stop(self);
}
