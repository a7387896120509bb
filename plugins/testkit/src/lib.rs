//! A plugin for Switchyard's own tests. It is a real cdylib loaded through
//! the real ABI; its config decides what it does, including misbehaving:
//!
//! | key | meaning |
//! | --- | --- |
//! | `channel` (`"testkit"`) | channel of its types; when set, `create` returns its own type list |
//! | `emit_on_start` (0) | events `testkit.tick` emitted from a plugin thread right after start |
//! | `emit_every_ms` (0 = off) | keep emitting `testkit.tick` at this interval |
//! | `probe_undeclared` (false) | try to emit `alert.created` (not declared) and report the status as `testkit.status` |
//! | `emit_json_on_start` | emit this text as a `testkit.tick` payload (`emit_json`, unchecked) and report the status as `testkit.status` |
//! | `panic_in` | `create`, `start`, `emit` (the emitting thread panics), `deliver` or `stop` |
//! | `panic_once_file` | with `panic_in`: panic only while this file does not exist (it is created first), so a restarted instance works |
//! | `fail_start` | `start` returns this error |
//! | `create_delay_ms` (0) | `create` sleeps this long first (a slow create, before the router listens) |
//! | `start_delay_ms` (0) | `start` sleeps this long first (a slow start) |
//! | `stop_delay_ms` (0) | `stop` sleeps this long (to test abandonment) |
//! | `record_to` | a sink: append each delivered event to this file, one per line |
//! | `deliver_delay_ms` (0) | a sink: `deliver` sleeps this long first (a slow sink) |

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use switchyard_plugin_api::{
    export_plugin, spawn_thread, EmitError, EventTypeDecl, Field, Host, Plugin, PluginError,
    PluginInfo, Role, Running,
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
    emit_json_on_start: Option<String>,
    panic_in: Option<String>,
    panic_once_file: Option<String>,
    fail_start: Option<String>,
    #[serde(default)]
    create_delay_ms: u64,
    #[serde(default)]
    start_delay_ms: u64,
    #[serde(default)]
    stop_delay_ms: u64,
    record_to: Option<String>,
    #[serde(default)]
    deliver_delay_ms: u64,
}

/// One instance, before it starts.
pub struct Testkit {
    config: Config,
    name: String,
}

/// One started instance: its emitting thread and the flag that ends it.
pub struct Started {
    testkit: Testkit,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
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
    type Running = Started;

    fn info() -> PluginInfo {
        let mut info = PluginInfo::new("testkit", env!("CARGO_PKG_VERSION"), Role::Both);
        info.event_types = types("testkit");
        info
    }

    fn create(config: Value) -> Result<Self, PluginError> {
        let config: Config = serde_json::from_value(config)
            .map_err(|e| PluginError::config(format!("bad testkit config: {e}")))?;
        if config.panic_in.as_deref() == Some("create") {
            panic!("testkit was told to panic in create");
        }
        std::thread::sleep(Duration::from_millis(config.create_delay_ms));
        Ok(Testkit {
            name: config.channel.clone().unwrap_or_else(|| "testkit".into()),
            config,
        })
    }

    fn event_types(&self) -> Option<Vec<EventTypeDecl>> {
        self.config.channel.as_deref().map(types)
    }

    fn start(self, host: Host) -> Result<Started, PluginError> {
        if self.panics_in("start") {
            panic!("testkit was told to panic in start");
        }
        std::thread::sleep(Duration::from_millis(self.config.start_delay_ms));
        if let Some(message) = &self.config.fail_start {
            return Err(PluginError::Start(message.clone()));
        }
        let (burst, every) = (self.config.emit_on_start, self.config.emit_every_ms);
        let (probe, panic_in_emit) = (self.config.probe_undeclared, self.panics_in("emit"));
        let raw = self.config.emit_json_on_start.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (stopped, name) = (Arc::clone(&stop), self.name.clone());
        let thread = spawn_thread(&host, "testkit", move || {
            if let Some(raw) = raw {
                let result = host.emit_json("testkit.tick", &raw, None);
                let _ = host.emit(
                    "testkit.status",
                    &json!({"attempt": "emit_json", "status": status_name(&result)}),
                    None,
                );
            }
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
            while n < burst || (every > 0 && !stopped.load(Ordering::SeqCst)) {
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
        })?;
        Ok(Started {
            testkit: self,
            stop,
            thread,
        })
    }
}

impl Running for Started {
    fn deliver(&mut self, event: &str) -> Result<(), PluginError> {
        let config = &self.testkit.config;
        if self.testkit.panics_in("deliver") {
            panic!("testkit was told to panic in deliver");
        }
        std::thread::sleep(Duration::from_millis(config.deliver_delay_ms));
        if let Some(path) = &config.record_to {
            record(Path::new(path), event)?;
        }
        Ok(())
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        if self.testkit.panics_in("stop") {
            panic!("testkit was told to panic in stop");
        }
        std::thread::sleep(Duration::from_millis(self.testkit.config.stop_delay_ms));
    }
}

/// Appends `event` as one line to the file at `path`.
fn record(path: &Path, event: &str) -> Result<(), PluginError> {
    let failed = |action| {
        move |source| PluginError::File {
            plugin: "testkit",
            action,
            path: path.to_owned(),
            source,
        }
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(failed("open"))?;
    writeln!(file, "{event}").map_err(failed("write to"))
}

export_plugin!(Testkit);
