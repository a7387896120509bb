//! A producer plugin: emits `heartbeat.beat` with a counter every `interval_ms`.
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;
use switchyard_plugin_api::serde_json::{json, Value};
use switchyard_plugin_api::{export_plugin, EventTypeDecl, Field, Host, Plugin, PluginInfo, Role};

pub struct Heartbeat {
    every: Duration,
    stop: Option<Sender<()>>, // dropping it wakes the thread, which then ends
}

impl Plugin for Heartbeat {
    fn info() -> PluginInfo {
        let beat = EventTypeDecl::new("heartbeat.beat", "heartbeat", "The plugin is alive");
        PluginInfo::new("heartbeat", env!("CARGO_PKG_VERSION"), Role::Producer)
            .event_type(beat.field("n", Field::integer().required()))
    }
    fn create(config: Value) -> Result<Self, String> {
        // Parse and validate only: no threads, sockets or files here.
        let Some(ms @ 1..) = config.get("interval_ms").map_or(Some(1000), Value::as_u64) else {
            return Err("interval_ms must be a positive integer".into());
        };
        let every = Duration::from_millis(ms);
        Ok(Heartbeat { every, stop: None })
    }
    fn start(&mut self, host: Host) -> Result<(), String> {
        let (every, (stop, stopped)) = (self.every, channel());
        host.spawn("heartbeat", move || {
            let mut n = 0u64;
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                n += 1;
                let _ = host.emit("heartbeat.beat", &json!({ "n": n }), None);
            }
        })
        .map_err(|e| e.to_string())?;
        self.stop = Some(stop);
        Ok(())
    }
    fn stop(&mut self) {
        self.stop = None;
    }
}

export_plugin!(Heartbeat);
