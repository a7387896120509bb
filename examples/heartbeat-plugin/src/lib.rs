//! A producer plugin: emits `heartbeat.beat` with a counter every `interval_ms`.
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;
use switchyard_plugin_api::serde_json::{json, Value};
use switchyard_plugin_api::{export_plugin, spawn_thread, EventTypeDecl, Field, Host};
use switchyard_plugin_api::{Plugin, PluginError, PluginInfo, Role, Running};

/// Before it starts: the validated interval.
pub struct Heartbeat(Duration);
/// Started: dropping `_stop` wakes the thread, which then ends.
pub struct Beating {
    _stop: Sender<()>,
}

impl Plugin for Heartbeat {
    type Running = Beating;
    fn info() -> PluginInfo {
        let beat = EventTypeDecl::new("heartbeat.beat", "heartbeat", "The plugin is alive");
        PluginInfo::new("heartbeat", env!("CARGO_PKG_VERSION"), Role::Producer)
            .event_type(beat.field("n", Field::integer().required()))
    }
    fn create(config: Value) -> Result<Self, PluginError> {
        // Parse and validate only: no threads, sockets or files here.
        let Some(ms @ 1..) = config.get("interval_ms").map_or(Some(1000), Value::as_u64) else {
            return Err(PluginError::config("interval_ms must be a positive integer"));
        };
        Ok(Heartbeat(Duration::from_millis(ms)))
    }
    fn start(self, host: Host) -> Result<Beating, PluginError> {
        let (every, (stop, stopped)) = (self.0, channel());
        spawn_thread(&host, "heartbeat", move || {
            let mut n = 0u64;
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                n += 1;
                let _ = host.emit("heartbeat.beat", &json!({ "n": n }), None);
            }
        })?;
        Ok(Beating { _stop: stop })
    }
}

impl Running for Beating {
    fn stop(self) {} // drops `_stop`
}

export_plugin!(Heartbeat);
