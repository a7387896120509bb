//! The instance's `[plugins.config]` table: parsing and validation.
//!
//! Parsing is pure (no files are touched), so `create` can call it for
//! `switchyard check`. Every error names the offending key and says why.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use switchyard_plugin_api::config::Table;

const KEYS: &[&str] = &["path", "max_bytes", "keep", "fsync", "fsync_interval_ms"];

/// The most rotated files `keep` may ask for.
pub const MAX_KEEP: u64 = 1000;

/// When written lines are forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// After every line (slowest, nothing acknowledged is lost on power failure).
    Always,
    /// From the write path once `fsync_interval_ms` has passed since the
    /// last one, before a rotation, and at stop.
    Interval,
    /// Never explicitly: the operating system writes back when it likes.
    Never,
}

impl Fsync {
    /// Parses `always`, `interval` or `never`.
    pub fn parse(text: &str) -> Option<Fsync> {
        [Fsync::Always, Fsync::Interval, Fsync::Never]
            .into_iter()
            .find(|f| f.word() == text)
    }

    /// The word the configuration uses for it, for messages.
    pub fn word(self) -> &'static str {
        match self {
            Fsync::Always => "always",
            Fsync::Interval => "interval",
            Fsync::Never => "never",
        }
    }
}

/// The validated configuration of one audit-log instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The live file, exactly as configured (a relative path is relative to
    /// the router's working directory).
    pub path: PathBuf,
    /// The live file is rotated before a line would take it past this size.
    pub max_bytes: u64,
    /// Rotated files kept besides the live one (`path.1` newest …).
    pub keep: u32,
    /// When lines are forced to disk.
    pub fsync: Fsync,
    /// The interval of [`Fsync::Interval`].
    pub fsync_interval: Duration,
}

/// Defaults of the optional keys.
pub const DEFAULT_MAX_BYTES: u64 = 104_857_600;
/// Default of `keep`.
pub const DEFAULT_KEEP: u32 = 5;
/// Default of `fsync_interval_ms`.
pub const DEFAULT_FSYNC_INTERVAL_MS: u64 = 1000;

impl Config {
    /// Parses and validates a `[plugins.config]` table.
    pub fn from_value(value: Value) -> Result<Config, String> {
        // `3.0` counts as a whole number here.
        let table = Table::new(value, "audit-log", KEYS)?.integral_floats();
        let path = match table.get("path") {
            Some(Value::String(s)) if !s.trim().is_empty() => {
                if s.ends_with('/') {
                    return Err(format!(
                        "`path` must name a file, not a folder, such as \"var/audit/audit.log\"; got {s:?}"
                    ));
                }
                PathBuf::from(s)
            }
            Some(other) => {
                return Err(format!(
                "`path` must be a non-empty file path such as \"var/audit/audit.log\", got {other}"
            ))
            }
            None => {
                return Err(
                    "`path` is required: the audit log file, such as \"var/audit/audit.log\""
                        .to_owned(),
                )
            }
        };
        let max_bytes = table
            .whole("max_bytes", 1, i64::MAX as u64)?
            .unwrap_or(DEFAULT_MAX_BYTES);
        let keep = match table.whole("keep", 0, MAX_KEEP)? {
            Some(n) => n as u32,
            None => DEFAULT_KEEP,
        };
        let fsync = match table.get("fsync") {
            Some(v) => v.as_str().and_then(Fsync::parse).ok_or_else(|| {
                format!("`fsync` must be one of \"always\", \"interval\", \"never\"; got {v}")
            })?,
            None => Fsync::Interval,
        };
        let fsync_interval = table
            .millis("fsync_interval_ms", 1, u64::from(u32::MAX))?
            .unwrap_or(Duration::from_millis(DEFAULT_FSYNC_INTERVAL_MS));
        Ok(Config {
            path,
            max_bytes,
            keep,
            fsync,
            fsync_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_to_absent_keys() {
        let c = Config::from_value(json!({"path": "var/audit/audit.log"})).unwrap();
        assert_eq!(
            c,
            Config {
                path: PathBuf::from("var/audit/audit.log"),
                max_bytes: 104_857_600,
                keep: 5,
                fsync: Fsync::Interval,
                fsync_interval: Duration::from_secs(1),
            }
        );
    }

    #[test]
    fn every_key_is_read() {
        let c = Config::from_value(json!({
            "path": "/tmp/a.log", "max_bytes": 1000, "keep": 0,
            "fsync": "always", "fsync_interval_ms": 250
        }))
        .unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/a.log"));
        assert_eq!((c.max_bytes, c.keep), (1000, 0));
        assert_eq!(c.fsync, Fsync::Always);
        assert_eq!(c.fsync_interval, Duration::from_millis(250));
    }

    #[test]
    fn fsync_modes_parse() {
        assert_eq!(Fsync::parse("always"), Some(Fsync::Always));
        assert_eq!(Fsync::parse("interval"), Some(Fsync::Interval));
        assert_eq!(Fsync::parse("never"), Some(Fsync::Never));
        assert_eq!(Fsync::parse("Always"), None);
        for mode in ["always", "interval", "never"] {
            let c = Config::from_value(json!({"path": "a", "fsync": mode})).unwrap();
            assert_eq!(Some(c.fsync), Fsync::parse(mode));
        }
        for bad in [json!("sometimes"), json!(true), json!(1)] {
            let err = Config::from_value(json!({"path": "a", "fsync": bad})).unwrap_err();
            assert!(err.contains("`fsync`"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Config::from_value(json!({"path": "a", "max_size": 5})).unwrap_err();
        assert!(err.contains("`max_size`"), "{err}");
        assert!(err.contains("max_bytes"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (table, key) in [
            (json!({}), "path"),
            (json!({"path": ""}), "path"),
            (json!({"path": 3}), "path"),
            (json!({"path": "logs/"}), "path"),
            (json!({"path": "a", "max_bytes": 0}), "max_bytes"),
            (json!({"path": "a", "max_bytes": "1MB"}), "max_bytes"),
            (json!({"path": "a", "keep": -1}), "keep"),
            (json!({"path": "a", "keep": 1001}), "keep"),
            (
                json!({"path": "a", "fsync_interval_ms": 0}),
                "fsync_interval_ms",
            ),
        ] {
            let err = Config::from_value(table.clone()).unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{table}: {err}");
        }
        let err = Config::from_value(json!("a.log")).unwrap_err();
        assert!(err.contains("must be a table"), "{err}");
    }
}
