//! A plugin for Switchyard's own tests. It is a real cdylib loaded through
//! the real ABI; its config decides what it does, including misbehaving:
//!
//! | key | meaning |
//! | --- | --- |
//! | `channel` (`"testkit"`) | channel of its types; when set, `create` returns its own type list |
//! | `emit_on_start` (0) | events `testkit.tick` emitted from a plugin thread right after start |
//! | `emit_every_ms` (0 = off) | keep emitting `testkit.tick` at this interval |
//! | `probe_undeclared` (false) | try to emit `alert.created` (not declared) and report the status as `testkit.status` |
//! | `panic_in` | `create`, `start`, `emit` (the emitting thread panics), `deliver` or `stop` |
//! | `panic_once_file` | with `panic_in`: panic only while this file does not exist (it is created first), so a restarted instance works |
//! | `fail_start` | `start` returns this error |
//! | `stop_delay_ms` (0) | `stop` sleeps this long (to test abandonment) |
//! | `record_to` | a sink: append each delivered event to this file, one per line |
//! | `deliver_delay_ms` (0) | a sink: `deliver` sleeps this long first (a slow sink) |

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{
    export_plugin, EmitError, EventTypeDecl, Field, Host, Plugin, PluginInfo, Role,
};

/// The test plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    channel: Option<String>,
    #[serde(default)]
    emit_on_start: u64,
    #[serde(default)]
    emit_every_ms: u64,
    #[serde(default)]
    probe_undeclared: bool,
    panic_in: Option<String>,
    panic_once_file: Option<String>,
    fail_start: Option<String>,
    #[serde(default)]
    stop_delay_ms: u64,
    record_to: Option<String>,
    #[serde(default)]
    deliver_delay_ms: u64,
}

/// One instance.
pub struct Testkit {
    config: Config,
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn types(channel: &str) -> Vec<EventTypeDecl> {
    vec![
        EventTypeDecl::new("testkit.tick", channel, "A numbered test event")
            .field("n", Field::integer().required())
            .field("instance", Field::string().required()),
        EventTypeDecl::new(
            "testkit.status",
            channel,
            "What the router answered to a probe",
        )
        .field("attempt", Field::string().required())
        .field("status", Field::string().required()),
    ]
}

fn status_name(result: &Result<(), EmitError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(EmitError::UnknownType) => "unknown_type".into(),
        Err(EmitError::InvalidPayload) => "invalid_payload".into(),
        Err(EmitError::TooLarge) => "too_large".into(),
        Err(EmitError::Backpressure) => "backpressure".into(),
        Err(EmitError::Stopped) => "stopped".into(),
        Err(EmitError::Other(code)) => format!("status {code}"),
    }
}

/// Whether to panic now: always, or once per `panic_once_file`.
fn should_panic(panic_in: Option<&str>, once_file: Option<&str>, step: &str) -> bool {
    if panic_in != Some(step) {
        return false;
    }
    match once_file {
        None => true,
        Some(path) => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .is_ok(),
    }
}

impl Testkit {
    fn panics_in(&self, step: &str) -> bool {
        should_panic(
            self.config.panic_in.as_deref(),
            self.config.panic_once_file.as_deref(),
            step,
        )
    }
}

impl Plugin for Testkit {
    fn info() -> PluginInfo {
        let mut info = PluginInfo::new("testkit", env!("CARGO_PKG_VERSION"), Role::Both);
        info.event_types = types("testkit");
        info
    }

    fn create(config: Value) -> Result<Self, String> {
        let config: Config =
            serde_json::from_value(config).map_err(|e| format!("bad testkit config: {e}"))?;
        if config.panic_in.as_deref() == Some("create") {
            panic!("testkit was told to panic in create");
        }
        Ok(Testkit {
            name: config.channel.clone().unwrap_or_else(|| "testkit".into()),
            config,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        })
    }

    fn event_types(&self) -> Option<Vec<EventTypeDecl>> {
        self.config.channel.as_deref().map(types)
    }

    fn start(&mut self, host: Host) -> Result<(), String> {
        if self.panics_in("start") {
            panic!("testkit was told to panic in start");
        }
        if let Some(message) = &self.config.fail_start {
            return Err(message.clone());
        }
        let (burst, every) = (self.config.emit_on_start, self.config.emit_every_ms);
        let (probe, panic_in_emit) = (self.config.probe_undeclared, self.panics_in("emit"));
        let (stop, name) = (self.stop.clone(), self.name.clone());
        let thread = host
            .spawn("testkit", move || {
                if probe {
                    let result = host.emit(
                        "alert.created",
                        &json!({"id": "x", "severity": "low"}),
                        None,
                    );
                    let _ = host.emit(
                        "testkit.status",
                        &json!({"attempt": "alert.created", "status": status_name(&result)}),
                        None,
                    );
                }
                let mut n = 0;
                while n < burst || (every > 0 && !stop.load(Ordering::SeqCst)) {
                    n += 1;
                    if panic_in_emit {
                        panic!("testkit was told to panic while emitting");
                    }
                    if host.emit("testkit.tick", &json!({"n": n, "instance": name}), None)
                        == Err(EmitError::Stopped)
                    {
                        return;
                    }
                    if n >= burst && every > 0 {
                        std::thread::sleep(Duration::from_millis(every));
                    }
                }
            })
            .map_err(|e| e.to_string())?;
        self.thread = Some(thread);
        Ok(())
    }

    fn deliver(&mut self, event: &str) -> Result<(), String> {
        if self.panics_in("deliver") {
            panic!("testkit was told to panic in deliver");
        }
        std::thread::sleep(Duration::from_millis(self.config.deliver_delay_ms));
        if let Some(path) = &self.config.record_to {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| e.to_string())?;
            writeln!(file, "{event}").map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if self.panics_in("stop") {
            panic!("testkit was told to panic in stop");
        }
        std::thread::sleep(Duration::from_millis(self.config.stop_delay_ms));
    }
}

export_plugin!(Testkit);
