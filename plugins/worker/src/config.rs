//! The instance's `[plugins.config]` table: parsing and validation.
//!
//! Parsing is pure (no sockets, threads, files or name resolution), so
//! `create` can call it for `switchyard check`. Every error names the
//! offending key (`workers[1].check`) and says why.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use switchyard_plugin_api::config::{kind_of, Table};

const KEYS: &[&str] = &["workers"];
const WORKER_KEYS: &[&str] = &[
    "name",
    "type",
    "check",
    "interval_ms",
    "timeout_ms",
    "failure_threshold",
    "restart_command",
    "restart_backoff_s",
];

/// Default `interval_ms`.
pub const DEFAULT_INTERVAL_MS: u64 = 5000;
/// Default `timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 2000;
/// Default `failure_threshold`.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Default `restart_backoff_s`.
pub const DEFAULT_RESTART_BACKOFF_S: u64 = 30;

/// Bounds that keep a typo from asking for something absurd.
const INTERVAL_MS: (u64, u64) = (10, 86_400_000);
const TIMEOUT_MS: (u64, u64) = (1, 300_000);
const THRESHOLD: (u64, u64) = (1, 1_000_000);
const MAX_BACKOFF_S: f64 = 365.0 * 24.0 * 3600.0;
const MAX_NAME_BYTES: usize = 128;

/// The validated configuration of one worker instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The workers to check, in config order (at least one, names unique).
    pub workers: Vec<WorkerConfig>,
}

/// One entry of `workers`.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerConfig {
    /// `name`: unique within the instance; the events' `worker_name`.
    pub name: String,
    /// `type`: the events' `worker_type`.
    pub worker_type: WorkerType,
    /// `check`: what a health check does.
    pub check: Check,
    /// `interval_ms`: from the start of one check to the start of the next.
    pub interval: Duration,
    /// `timeout_ms`: a check that takes longer fails.
    pub timeout: Duration,
    /// `failure_threshold`: failed checks in a row that make the worker down.
    pub failure_threshold: u32,
    /// `restart_command`: the argv run (without a shell) after the worker goes down.
    pub restart_command: Option<Vec<String>>,
    /// `restart_backoff_s`: the least time between two runs of `restart_command`.
    pub restart_backoff: Duration,
}

/// A worker's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerType {
    /// `detection`
    Detection,
    /// `analysis`
    Analysis,
    /// `timeout`
    Timeout,
    /// `metrics`
    Metrics,
}

impl WorkerType {
    /// Every type, in the order of [`WorkerType::NAMES`].
    pub const ALL: [WorkerType; 4] = [
        WorkerType::Detection,
        WorkerType::Analysis,
        WorkerType::Timeout,
        WorkerType::Metrics,
    ];
    /// The wire names (the schema's `enum`).
    pub const NAMES: [&'static str; 4] = ["detection", "analysis", "timeout", "metrics"];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            WorkerType::Detection => "detection",
            WorkerType::Analysis => "analysis",
            WorkerType::Timeout => "timeout",
            WorkerType::Metrics => "metrics",
        }
    }

    fn parse(text: &str) -> Option<WorkerType> {
        WorkerType::ALL.into_iter().find(|t| t.name() == text)
    }
}

/// A worker's `check`: how its health is probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `http://host[:port][/path][?query]`: healthy when a GET answers 2xx.
    Http {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// Port (80 by default).
        port: u16,
        /// The request target: path and query, at least `/`.
        target: String,
    },
    /// `tcp://host:port`: healthy when a TCP connection is accepted.
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
    },
}

impl Check {
    /// Parses an `http://` or `tcp://` URL; the error says why it is not one.
    pub fn parse(text: &str) -> Result<Check, String> {
        let text = text.trim();
        let (scheme, rest) = text
            .split_once("://")
            .ok_or("must be an http:// URL or tcp://host:port")?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {
                let rest = rest.split('#').next().unwrap_or_default();
                let split = rest.find(['/', '?']).unwrap_or(rest.len());
                let (authority, target) = rest.split_at(split);
                let (host, port) = authority_parts(authority, Some(80))?;
                let target = match target {
                    "" => "/".to_owned(),
                    t if t.starts_with('?') => format!("/{t}"),
                    t => t.to_owned(),
                };
                if target.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err("the path must not contain spaces or control characters".into());
                }
                Ok(Check::Http { host, port, target })
            }
            "tcp" => {
                let authority = rest.strip_suffix('/').unwrap_or(rest);
                if authority.contains(['/', '?', '#']) {
                    return Err("a tcp:// check is only tcp://host:port, with no path".into());
                }
                let (host, port) = authority_parts(authority, None)?;
                Ok(Check::Tcp { host, port })
            }
            "https" => Err(
                "https:// is not supported; check the worker over http:// (e.g. on loopback) \
                 or use tcp://host:port"
                    .into(),
            ),
            other => Err(format!(
                "unsupported scheme {other:?}: use an http:// URL or tcp://host:port"
            )),
        }
    }

    /// The host and port to connect to.
    pub fn endpoint(&self) -> (&str, u16) {
        match self {
            Check::Http { host, port, .. } | Check::Tcp { host, port } => (host, *port),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (host, port) = self.endpoint();
        let (scheme, target) = match self {
            Check::Http { target, .. } => ("http", target.as_str()),
            Check::Tcp { .. } => ("tcp", ""),
        };
        if host.contains(':') {
            write!(f, "{scheme}://[{host}]:{port}{target}")
        } else {
            write!(f, "{scheme}://{host}:{port}{target}")
        }
    }
}

/// Splits `host[:port]` (IPv6 in brackets); `default_port` `None` makes the
/// port required.
fn authority_parts(authority: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("user names and passwords in the URL are not supported".into());
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or("an IPv6 address must be closed with `]`")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or("expected `:port` after the IPv6 address")?,
                ),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if !host.contains(':')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!("{host:?} is not a valid host name or address"));
    }
    let port = match (port, default_port) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("the port {p:?} must be a number from 1 to 65535")),
        },
        (None, Some(p)) => p,
        (None, None) => return Err("the port is missing (tcp://host:port)".into()),
    };
    Ok((host.to_owned(), port))
}

impl Config {
    /// Parses and validates a `[plugins.config]` table.
    pub fn from_value(value: Value) -> Result<Config, String> {
        let table = Table::new(value, "worker", KEYS)?;
        let list = match table.get("workers") {
            None => {
                return Err("`workers` is missing: list the workers to check, e.g. \
                     workers = [{ name = \"api\", type = \"analysis\", check = \"http://127.0.0.1:8000/health\" }]"
                    .to_owned())
            }
            Some(Value::Array(list)) => list,
            Some(other) => {
                return Err(format!(
                    "`workers` must be a list of tables, got {}",
                    kind_of(other)
                ))
            }
        };
        if list.is_empty() {
            return Err("`workers` is empty: list at least one worker to check".to_owned());
        }
        let mut names = HashSet::new();
        let mut workers = Vec::with_capacity(list.len());
        for (i, entry) in list.iter().enumerate() {
            let worker = parse_worker(&format!("workers[{i}]"), entry)?;
            if !names.insert(worker.name.clone()) {
                return Err(format!(
                    "`workers[{i}].name`: {:?} is used by an earlier worker; names must be unique",
                    worker.name
                ));
            }
            workers.push(worker);
        }
        Ok(Config { workers })
    }
}

fn parse_worker(at: &str, value: &Value) -> Result<WorkerConfig, String> {
    let table = value.as_object().ok_or_else(|| {
        format!(
            "`{at}` must be a table {{ name, type, check, … }}, got {}",
            kind_of(value)
        )
    })?;
    let table = Table::nested(table, at, WORKER_KEYS)?;
    let required_str = |key: &str, example: &str| -> Result<&str, String> {
        match table.get(key) {
            None => Err(format!("`{at}.{key}` is missing (e.g. {example})")),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(other) => Err(format!(
                "`{at}.{key}` must be a string (e.g. {example}), got {}",
                kind_of(other)
            )),
        }
    };
    let name = required_str("name", "\"api\"")?.trim();
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(format!(
            "`{at}.name` must be 1 to {MAX_NAME_BYTES} bytes without control characters, got {name:?}"
        ));
    }
    let type_text = required_str("type", "\"analysis\"")?;
    let worker_type = WorkerType::parse(type_text).ok_or_else(|| {
        format!(
            "`{at}.type` must be one of {}, got {type_text:?}",
            WorkerType::NAMES.join(", ")
        )
    })?;
    let check_text = required_str("check", "\"http://127.0.0.1:8000/health\"")?;
    let check =
        Check::parse(check_text).map_err(|why| format!("`{at}.check` {check_text:?}: {why}"))?;
    let ms = |key: &str, default: u64, (min, max): (u64, u64)| -> Result<u64, String> {
        Ok(table.whole(key, min, max)?.unwrap_or(default))
    };
    let interval = Duration::from_millis(ms("interval_ms", DEFAULT_INTERVAL_MS, INTERVAL_MS)?);
    let timeout = Duration::from_millis(ms("timeout_ms", DEFAULT_TIMEOUT_MS, TIMEOUT_MS)?);
    let failure_threshold = ms(
        "failure_threshold",
        DEFAULT_FAILURE_THRESHOLD.into(),
        THRESHOLD,
    )? as u32;
    let restart_command = match table.get("restart_command") {
        None => None,
        Some(v) => Some(parse_argv(&format!("{at}.restart_command"), v)?),
    };
    let restart_backoff = match table.get("restart_backoff_s") {
        None => Duration::from_secs(DEFAULT_RESTART_BACKOFF_S),
        Some(v) => v
            .as_f64()
            .filter(|s| (0.0..=MAX_BACKOFF_S).contains(s))
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                format!(
                    "`{at}.restart_backoff_s` must be a number of seconds from 0 to {MAX_BACKOFF_S}, got {v}"
                )
            })?,
    };
    Ok(WorkerConfig {
        name: name.to_owned(),
        worker_type,
        check,
        interval,
        timeout,
        failure_threshold,
        restart_command,
        restart_backoff,
    })
}

fn parse_argv(key: &str, value: &Value) -> Result<Vec<String>, String> {
    let example = "[\"systemctl\", \"restart\", \"my-worker\"]";
    let items = value.as_array().ok_or_else(|| {
        format!(
            "`{key}` must be a list of strings (the program and its arguments, run without a \
             shell), e.g. {example}; got {}",
            kind_of(value)
        )
    })?;
    if items.is_empty() {
        return Err(format!(
            "`{key}` is empty: give the program and its arguments, e.g. {example}, or omit the key"
        ));
    }
    let argv = items
        .iter()
        .map(|item| match item {
            Value::String(s) if !s.contains('\0') => Ok(s.clone()),
            Value::String(_) => Err(format!("`{key}` entries must not contain NUL bytes")),
            other => Err(format!(
                "`{key}` entries must be strings, got {}",
                kind_of(other)
            )),
        })
        .collect::<Result<Vec<String>, String>>()?;
    if argv[0].trim().is_empty() {
        return Err(format!("`{key}`: the program (first entry) is empty"));
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Config::from_value(v).unwrap_err()
    }

    fn one(worker: Value) -> Result<WorkerConfig, String> {
        Config::from_value(json!({ "workers": [worker] })).map(|mut c| c.workers.remove(0))
    }

    fn base() -> Value {
        json!({"name": "api", "type": "analysis", "check": "http://127.0.0.1:8000/health"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut w = base();
        w[key] = value;
        w
    }

    #[test]
    fn defaults() {
        let w = one(base()).unwrap();
        assert_eq!(w.name, "api");
        assert_eq!(w.worker_type, WorkerType::Analysis);
        assert_eq!(
            w.check,
            Check::Http {
                host: "127.0.0.1".into(),
                port: 8000,
                target: "/health".into()
            }
        );
        assert_eq!(w.interval, Duration::from_millis(5000));
        assert_eq!(w.timeout, Duration::from_millis(2000));
        assert_eq!(w.failure_threshold, 3);
        assert_eq!(w.restart_command, None);
        assert_eq!(w.restart_backoff, Duration::from_secs(30));
    }

    #[test]
    fn full_config() {
        let c = Config::from_value(json!({"workers": [
            {"name": "det", "type": "detection", "check": "tcp://localhost:9000",
             "interval_ms": 100, "timeout_ms": 50, "failure_threshold": 1,
             "restart_command": ["systemctl", "restart", "det"], "restart_backoff_s": 0.5},
            {"name": "m", "type": "metrics", "check": "HTTP://[::1]:81?x=1"},
            {"name": "t", "type": "timeout", "check": "http://example.com"}
        ]}))
        .unwrap();
        let w = &c.workers[0];
        assert_eq!(w.worker_type, WorkerType::Detection);
        assert_eq!(
            w.check,
            Check::Tcp {
                host: "localhost".into(),
                port: 9000
            }
        );
        assert_eq!(w.interval, Duration::from_millis(100));
        assert_eq!(w.timeout, Duration::from_millis(50));
        assert_eq!(w.failure_threshold, 1);
        assert_eq!(
            w.restart_command.as_deref(),
            Some(&["systemctl".to_owned(), "restart".into(), "det".into()][..])
        );
        assert_eq!(w.restart_backoff, Duration::from_millis(500));
        assert_eq!(
            c.workers[1].check,
            Check::Http {
                host: "::1".into(),
                port: 81,
                target: "/?x=1".into()
            }
        );
        assert_eq!(c.workers[1].check.to_string(), "http://[::1]:81/?x=1");
        assert_eq!(c.workers[2].check.to_string(), "http://example.com:80/");
    }

    #[test]
    fn check_urls() {
        let ok = |s: &str| Check::parse(s).unwrap().to_string();
        assert_eq!(ok("http://h:8080/a/b?c=d#frag"), "http://h:8080/a/b?c=d");
        assert_eq!(ok("tcp://10.0.0.1:6379/"), "tcp://10.0.0.1:6379");
        assert_eq!(ok("tcp://[fd00::1]:1"), "tcp://[fd00::1]:1");
        let bad = |s: &str, why: &str| {
            let e = Check::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        };
        bad("127.0.0.1:80", "http:// URL or tcp://");
        bad("https://h/", "https:// is not supported");
        bad("ftp://h/", "unsupported scheme");
        bad("tcp://h", "port is missing");
        bad("tcp://h:80/path", "no path");
        bad("tcp://h:0", "1 to 65535");
        bad("http://h:99999/", "1 to 65535");
        bad("http://h:x/", "1 to 65535");
        bad("http:///x", "host is missing");
        bad("http://user:pw@h/", "not supported");
        bad("http://[::1/", "closed with `]`");
        bad("http://[nope]/", "not an IPv6 address");
        bad("http://h h/", "not a valid host");
        bad("http://h/a b", "spaces");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(json!({"workers": [base()], "wokers": []}));
        assert!(e.contains("`wokers`"), "{e}");
        let e = err(json!({"workers": [with("intervl_ms", json!(5))]}));
        assert!(e.contains("`workers[0].intervl_ms`"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (json!({}), "`workers` is missing"),
            (json!({"workers": []}), "`workers` is empty"),
            (json!({"workers": {}}), "`workers` must be a list"),
            (json!({"workers": [1]}), "`workers[0]` must be a table"),
            (
                json!({"workers": [{"type": "analysis", "check": "tcp://h:1"}]}),
                "`workers[0].name` is missing",
            ),
            (
                json!({"workers": [with("name", json!(""))]}),
                "`workers[0].name`",
            ),
            (
                json!({"workers": [with("name", json!(3))]}),
                "`workers[0].name`",
            ),
            (
                json!({"workers": [with("type", json!("gpu"))]}),
                "`workers[0].type`",
            ),
            (
                json!({"workers": [with("check", json!("https://x/"))]}),
                "`workers[0].check`",
            ),
            (
                json!({"workers": [with("check", json!(80))]}),
                "`workers[0].check`",
            ),
            (
                json!({"workers": [with("interval_ms", json!(0))]}),
                "`workers[0].interval_ms`",
            ),
            (
                json!({"workers": [with("interval_ms", json!(1.5))]}),
                "`workers[0].interval_ms`",
            ),
            (
                json!({"workers": [with("timeout_ms", json!(0))]}),
                "`workers[0].timeout_ms`",
            ),
            (
                json!({"workers": [with("timeout_ms", json!("2s"))]}),
                "`workers[0].timeout_ms`",
            ),
            (
                json!({"workers": [with("failure_threshold", json!(0))]}),
                "`workers[0].failure_threshold`",
            ),
            (
                json!({"workers": [with("failure_threshold", json!(-1))]}),
                "`workers[0].failure_threshold`",
            ),
            (
                json!({"workers": [with("restart_command", json!("systemctl restart x"))]}),
                "`workers[0].restart_command`",
            ),
            (
                json!({"workers": [with("restart_command", json!([]))]}),
                "`workers[0].restart_command`",
            ),
            (
                json!({"workers": [with("restart_command", json!(["a", 1]))]}),
                "`workers[0].restart_command`",
            ),
            (
                json!({"workers": [with("restart_command", json!([" "]))]}),
                "`workers[0].restart_command`",
            ),
            (
                json!({"workers": [with("restart_backoff_s", json!(-1))]}),
                "`workers[0].restart_backoff_s`",
            ),
            (
                json!({"workers": [with("restart_backoff_s", json!("30"))]}),
                "`workers[0].restart_backoff_s`",
            ),
            (
                json!({"workers": [base(), with("check", json!("tcp://h:1"))]}),
                "`workers[1].name`: \"api\" is used by an earlier worker",
            ),
        ];
        for (config, key) in cases {
            let e = err(config.clone());
            assert!(e.contains(key), "{config} -> {e}");
        }
        assert!(err(json!([1])).contains("table"));
        assert!(err(Value::Null).contains("`workers` is missing"));
    }
}
