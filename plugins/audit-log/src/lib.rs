//! `audit-log`: a Switchyard sink plugin (library stem
//! `switchyard_audit_log`) that appends every event routed to it to a
//! rotating JSON-lines file.
//!
//! # Configuration (`[plugins.config]`)
//!
//! | key | default | meaning |
//! |-----|---------|---------|
//! | `path` | required | The live file, e.g. `"var/audit/audit.log"`. Missing parent folders are created. |
//! | `max_bytes` | `104857600` | Rotate before a line would take the live file past this size (a line longer than that gets a file of its own). |
//! | `keep` | `5` | Rotated files kept besides the live one (0 … 1000): `audit.log.1` is the newest, `audit.log.5` the oldest; older ones are deleted. With `0` a rotation just starts the live file afresh. |
//! | `fsync` | `"interval"` | `"always"`: fsync after every line. `"interval"`: fsync from the write path when `fsync_interval_ms` has passed since the last one, before each rotation, and at stop. `"never"`: leave write-back to the operating system. |
//! | `fsync_interval_ms` | `1000` | The interval of `fsync = "interval"`. |
//!
//! An unknown key or a bad value is refused by `create` with a message
//! naming the key. `create` touches no file; `start` creates the folders and
//! opens the live file, and fails (the router marks the instance failed and
//! retries with backoff) when it cannot.
//!
//! **Relative paths.** The router hands `[plugins.config]` to the plugin
//! verbatim, so a relative `path` is used as given: relative to the
//! router's working directory (logged as an absolute path at start). The
//! README's run command starts the router from the project folder, where
//! `config.toml` lives, so `var/audit/audit.log` lands in the project's
//! git-ignored `var/`. Use an absolute path when the router runs elsewhere.
//!
//! What it records is chosen by `[[routes]]`:
//!
//! ```toml
//! [[plugins]]
//! name = "audit-log"
//! library = "switchyard_audit_log"
//! [plugins.config]
//! path = "var/audit/audit.log"
//! max_bytes = 104857600
//! keep = 5
//! fsync = "interval"
//!
//! [[routes]]
//! sink = "audit-log"
//! events = ["alert.*", "worker.*"]
//! ```
//!
//! # The file
//!
//! One line per delivered event: the client envelope exactly as the router
//! delivered it (`{"type":…,"payload":…,"timestamp":…,"channel":…,
//! "sequence":…}`), followed by `\n`, in delivery order (per channel in
//! sequence order). Lines are written with one `write` call each and no
//! user-space buffer, so a crash of the process loses nothing the call
//! returned for; `fsync` decides what survives a crash of the machine. With
//! `fsync = "interval"`, lines written less than an interval before the
//! last event may wait for the next event (or stop) to be synced.
//!
//! Rotation renames `audit.log.{n}` to `audit.log.{n+1}` (deleting
//! `audit.log.{keep}`), the live file to `audit.log.1`, and opens a new live
//! file; a file may thus be smaller than `max_bytes` but never larger
//! (except for a single line over it). A restart appends to the existing
//! live file, counting its size; a torn last line (a crash mid-write) is
//! ended with a newline first, so later lines stay parseable.
//!
//! A failed open, write, rotation or fsync is returned from `deliver` (the
//! router logs and counts it) and closes the file; the next event reopens it
//! and carries on. The event whose write failed is not retried.
//!
//! The plugin emits no events.

mod config;
mod writer;

use std::time::Instant;

use serde_json::Value;
use switchyard_plugin_api::{
    export_plugin, Host, LogLevel, Plugin, PluginError, PluginInfo, Role, Running,
};

pub use config::{
    Config, Fsync, DEFAULT_FSYNC_INTERVAL_MS, DEFAULT_KEEP, DEFAULT_MAX_BYTES, MAX_KEEP,
};
pub use writer::{rotated_path, AuditLog, Stats};

/// The plugin before it starts: the validated configuration. Starting it
/// opens the log and gives the running [`Appending`].
pub struct AuditLogPlugin {
    config: Config,
}

/// A started instance: the open log and the router to report to.
pub struct Appending {
    log: AuditLog,
    host: Host,
}

impl Plugin for AuditLogPlugin {
    type Running = Appending;

    fn info() -> PluginInfo {
        PluginInfo::new("audit-log", env!("CARGO_PKG_VERSION"), Role::Sink)
    }

    fn create(config: Value) -> Result<Self, PluginError> {
        let config = Config::from_value(config).map_err(PluginError::Config)?;
        Ok(AuditLogPlugin { config })
    }

    fn start(self, host: Host) -> Result<Appending, PluginError> {
        // A relative `path` is relative to the config file's folder
        // (docs/configuration.md, "audit-log").
        let mut config = self.config;
        config.path = host.resolve(&config.path);
        let mut log = AuditLog::new(config.clone());
        log.open(Instant::now())
            .map_err(|source| PluginError::File {
                plugin: "audit-log",
                action: "open",
                path: config.path.clone(),
                source,
            })?;
        let shown = std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone());
        host.info(&format!(
            "audit-log: appending routed events to {} (rotating at {} bytes, keeping {}, fsync {})",
            shown.display(),
            config.max_bytes,
            config.keep,
            config.fsync.word()
        ));
        Ok(Appending { log, host })
    }
}

impl Running for Appending {
    fn deliver(&mut self, event: &str) -> Result<(), PluginError> {
        let before = self.log.stats().rotations;
        let result = self.log.write(event, Instant::now());
        if self.log.stats().rotations != before {
            self.host.log(
                LogLevel::Debug,
                &format!("audit-log: rotated {}", self.log.path().display()),
            );
        }
        result.map_err(PluginError::Deliver)
    }

    fn stop(mut self) {
        let closed = self.log.close(Instant::now());
        let stats = self.log.stats();
        if let Err(e) = closed {
            self.host.error(&format!(
                "audit-log: cannot fsync {} at stop: {e}",
                self.log.path().display()
            ));
        }
        self.host.info(&format!(
            "audit-log: stopped; {} lines written, {} rotations, {} errors",
            stats.lines, stats.rotations, stats.errors
        ));
    }
}

export_plugin!(AuditLogPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_a_sink_without_types() {
        let info = AuditLogPlugin::info();
        assert_eq!(info.name, "audit-log");
        assert_eq!(info.role, Role::Sink);
        assert!(info.event_types.is_empty());
    }

    #[test]
    fn create_validates_without_touching_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.log");
        AuditLogPlugin::create(serde_json::json!({"path": path.display().to_string()})).unwrap();
        assert!(!path.parent().unwrap().exists(), "create made no folder");
        let err = AuditLogPlugin::create(serde_json::json!({"path": "a", "rotate": 1}))
            .err()
            .unwrap();
        assert!(err.to_string().contains("`rotate`"), "{err}");
    }
}
