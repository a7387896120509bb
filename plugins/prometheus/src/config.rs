//! The instance's `[plugins.config]` table: parsing and validation.
//!
//! Parsing is pure (no sockets, threads or files; it reads the `token_env`
//! variable), so `create` can call it for `switchyard check`. Every error
//! names the offending key and says why.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use switchyard_plugin_api::config::{kind_of, refuse_unknown_keys, Table};

use crate::exposition::Selector;

/// The default listen address of the alert input.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9102";

const KEYS: &[&str] = &[
    "listen",
    "max_body_bytes",
    "max_connections",
    "token_env",
    "scrape",
];
const SCRAPE_KEYS: &[&str] = &["url", "interval_ms", "timeout_ms", "metrics"];
/// The fields of `queue.metrics`, which are also the keys of `scrape[].metrics`.
pub const METRIC_FIELDS: [&str; 4] = [
    "pending",
    "processing",
    "pending_batches",
    "avg_wait_time_ms",
];

const MAX_BODY_BYTES_LIMIT: u64 = 256 * 1024 * 1024;
const MAX_CONNECTIONS_LIMIT: u64 = 65_536;
const DEFAULT_INTERVAL_MS: u64 = 15_000;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const MIN_INTERVAL_MS: u64 = 10;
const MAX_INTERVAL_MS: u64 = 24 * 3600 * 1000;

/// The validated configuration of one prometheus instance.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Where the alert input listens; `None` turns it off.
    pub listen: Option<SocketAddr>,
    /// Largest accepted request body in bytes; larger: 413.
    pub max_body_bytes: usize,
    /// Most HTTP connections at once; more get 503 and are counted.
    pub max_connections: usize,
    /// The bearer token requests must carry (read from `token_env`), if any.
    pub token: Option<String>,
    /// The variable `token` was read from (for messages; the token is never shown).
    pub token_env: Option<String>,
    /// The scrape targets.
    pub scrape: Vec<ScrapeConfig>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_connections", &self.max_connections)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_env", &self.token_env)
            .field("scrape", &self.scrape)
            .finish()
    }
}

/// One `scrape` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrapeConfig {
    /// An `http://` URL serving the Prometheus text exposition format.
    pub url: String,
    /// Time between the starts of two scrapes.
    pub interval: Duration,
    /// Longest a scrape may take (connect, headers and body).
    pub timeout: Duration,
    /// `(queue.metrics field, selector)` pairs, in [`METRIC_FIELDS`] order.
    pub metrics: Vec<(&'static str, Selector)>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: Some(
                DEFAULT_LISTEN
                    .parse()
                    .expect("default listen address parses"),
            ),
            max_body_bytes: 1_048_576,
            max_connections: 64,
            token: None,
            token_env: None,
            scrape: Vec::new(),
        }
    }
}

impl Config {
    /// Parses and validates a `[plugins.config]` table (`null` = all defaults).
    pub fn from_value(value: Value) -> Result<Config, String> {
        Config::from_value_with_env(value, |name| std::env::var(name).ok())
    }

    /// Like [`Config::from_value`], reading variables through `env`.
    pub fn from_value_with_env(
        value: Value,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let table = Table::new(value, "prometheus", KEYS)?;
        let mut config = Config::default();
        if let Some(listen) = table.listen("listen", DEFAULT_LISTEN, "the alert input")? {
            config.listen = listen;
        }
        if let Some(n) = table.whole("max_body_bytes", 1, MAX_BODY_BYTES_LIMIT)? {
            config.max_body_bytes = n as usize;
        }
        if let Some(n) = table.whole("max_connections", 1, MAX_CONNECTIONS_LIMIT)? {
            config.max_connections = n as usize;
        }
        if let Some(v) = table.get("token_env") {
            let name = v.as_str().map(str::trim).ok_or_else(|| {
                format!(
                    "`token_env` must be the name of an environment variable holding the \
                     bearer token, got {}",
                    kind_of(v)
                )
            })?;
            if !name.is_empty() {
                let token = env(name).map(|t| t.trim().to_owned()).unwrap_or_default();
                if token.is_empty() {
                    return Err(format!(
                        "`token_env` names the variable {name}, which is unset or empty; \
                         set it to the bearer token, or remove `token_env` to accept requests \
                         without a token"
                    ));
                }
                config.token = Some(token);
                config.token_env = Some(name.to_owned());
            }
        }
        if let Some(v) = table.get("scrape") {
            config.scrape = parse_scrape_list(v)?;
        }
        if config.listen.is_none() && config.scrape.is_empty() {
            return Err(
                "no input: `listen` turns the alert input off and `scrape` lists no target; \
                 set `listen` to an address (default \"127.0.0.1:9102\") or add a `scrape` entry"
                    .to_owned(),
            );
        }
        Ok(config)
    }
}

fn parse_scrape_list(value: &Value) -> Result<Vec<ScrapeConfig>, String> {
    let items = value.as_array().ok_or_else(|| {
        format!(
            "`scrape` must be a list of tables such as [{{ url = \"http://127.0.0.1:8080/metrics\", \
             interval_ms = 15000, metrics = {{ pending = \"queue_pending\" }} }}], got {}",
            kind_of(value)
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_scrape(item, i))
        .collect()
}

fn parse_scrape(value: &Value, i: usize) -> Result<ScrapeConfig, String> {
    let at = format!("scrape[{i}]");
    let table = value
        .as_object()
        .ok_or_else(|| format!("`{at}` must be a table, got {}", kind_of(value)))?;
    let table = Table::nested(table, &at, SCRAPE_KEYS)?;
    let url = match table.string("url")? {
        Some(s) => s.trim().to_owned(),
        None => return Err(format!("`{at}.url` is missing")),
    };
    check_url(&url).map_err(|why| format!("`{at}.url`: {why}"))?;
    let interval_ms = table
        .whole("interval_ms", MIN_INTERVAL_MS, MAX_INTERVAL_MS)?
        .unwrap_or(DEFAULT_INTERVAL_MS);
    let timeout_ms = table
        .whole("timeout_ms", 1, MAX_INTERVAL_MS)?
        .unwrap_or(DEFAULT_TIMEOUT_MS.min(interval_ms));
    let metrics_table = match table.get("metrics") {
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(format!(
                "`{at}.metrics` must be a table of series selectors such as \
                 {{ pending = \"queue_pending\" }}, got {}",
                kind_of(other)
            ))
        }
        None => {
            return Err(format!(
                "`{at}.metrics` is missing: map at least one of {} to a series selector",
                METRIC_FIELDS.join(", ")
            ))
        }
    };
    refuse_unknown_keys(metrics_table, &format!("{at}.metrics"), &METRIC_FIELDS)?;
    let mut metrics = Vec::new();
    for field in METRIC_FIELDS {
        let Some(v) = metrics_table.get(field) else {
            continue;
        };
        let text = v.as_str().ok_or_else(|| {
            format!(
                "`{at}.metrics.{field}` must be a series selector string such as \
                 \"queue_pending\" or \"queue_pending{{queue=\\\"a\\\"}}\", got {}",
                kind_of(v)
            )
        })?;
        let selector =
            Selector::parse(text).map_err(|why| format!("`{at}.metrics.{field}`: {why}"))?;
        metrics.push((field, selector));
    }
    if metrics.is_empty() {
        return Err(format!(
            "`{at}.metrics` is empty: map at least one of {} to a series selector",
            METRIC_FIELDS.join(", ")
        ));
    }
    Ok(ScrapeConfig {
        url,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        metrics,
    })
}

/// Scrape URLs are plain `http://` (the plugin is built without TLS: the
/// exporters it reads sit on the same host or network).
fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "must be an http:// URL such as \"http://127.0.0.1:8080/metrics\" \
             (https is not supported), got {:?}",
            redact_url(url)
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("has no host: {:?}", redact_url(url)));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "must not contain white space: {:?}",
            redact_url(url)
        ));
    }
    Ok(())
}

/// `url` with any `user:password@` replaced, for logs and messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Config::from_value_with_env(v, |_| None).unwrap_err()
    }

    #[test]
    fn defaults() {
        let c = Config::from_value(json!({})).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, Some("127.0.0.1:9102".parse().unwrap()));
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.max_connections, 64);
        assert_eq!(c.token, None);
        assert!(c.scrape.is_empty());
        assert_eq!(Config::from_value(Value::Null).unwrap(), Config::default());
    }

    #[test]
    fn full_config() {
        let c = Config::from_value_with_env(
            json!({
                "listen": "0.0.0.0:9300",
                "max_body_bytes": 2048,
                "max_connections": 3,
                "token_env": "AM_TOKEN",
                "scrape": [{
                    "url": "http://127.0.0.1:8080/metrics",
                    "interval_ms": 500,
                    "metrics": {
                        "pending": "queue_pending",
                        "avg_wait_time_ms": "queue_wait_ms{queue=\"a\"}"
                    }
                }, {
                    "url": "http://u:secret@10.0.0.1:9100/metrics",
                    "timeout_ms": 250,
                    "metrics": {"processing": "jobs"}
                }]
            }),
            |name| (name == "AM_TOKEN").then(|| " s3cret \n".to_owned()),
        )
        .unwrap();
        assert_eq!(c.listen, Some("0.0.0.0:9300".parse().unwrap()));
        assert_eq!(c.max_body_bytes, 2048);
        assert_eq!(c.max_connections, 3);
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.scrape.len(), 2);
        let s = &c.scrape[0];
        assert_eq!(s.interval, Duration::from_millis(500));
        assert_eq!(s.timeout, Duration::from_millis(500));
        let fields: Vec<&str> = s.metrics.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["pending", "avg_wait_time_ms"]);
        assert_eq!(c.scrape[1].interval, Duration::from_secs(15));
        assert_eq!(c.scrape[1].timeout, Duration::from_millis(250));
    }

    #[test]
    fn listen_can_be_turned_off_when_scraping() {
        let scrape = json!([{"url": "http://127.0.0.1:1/metrics", "metrics": {"pending": "p"}}]);
        for off in [json!(""), json!(false)] {
            let c = Config::from_value(json!({"listen": off, "scrape": scrape})).unwrap();
            assert_eq!(c.listen, None);
            assert_eq!(c.scrape.len(), 1);
        }
        let e = err(json!({"listen": ""}));
        assert!(e.contains("no input"), "{e}");
        let e = err(json!({"listen": false, "scrape": []}));
        assert!(e.contains("no input"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(json!({"max_body": 3}));
        assert!(e.contains("`max_body`"), "{e}");
        let e = err(
            json!({"scrape": [{"url": "http://h/m", "metrics": {"pending": "p"}, "every": 1}]}),
        );
        assert!(e.contains("`scrape[0].every`"), "{e}");
        let e = err(json!({"scrape": [{"url": "http://h/m", "metrics": {"queued": "p"}}]}));
        assert!(e.contains("`scrape[0].metrics.queued`"), "{e}");
    }

    #[test]
    fn token_env_must_name_a_set_variable() {
        let e = err(json!({"token_env": "NOPE_UNSET"}));
        assert!(e.contains("`token_env`") && e.contains("NOPE_UNSET"), "{e}");
        let e = Config::from_value_with_env(json!({"token_env": "T"}), |_| Some("  ".into()))
            .unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let c = Config::from_value_with_env(json!({"token_env": ""}), |_| None).unwrap();
        assert_eq!(c.token, None);
    }

    #[test]
    fn bad_values_are_named() {
        let m = json!({"pending": "p"});
        let cases = [
            (json!({"listen": "localhost:9102"}), "`listen`"),
            (json!({"listen": true}), "`listen`"),
            (json!({"max_body_bytes": 0}), "`max_body_bytes`"),
            (json!({"max_body_bytes": "1MB"}), "`max_body_bytes`"),
            (json!({"max_connections": 0}), "`max_connections`"),
            (json!({"token_env": 5}), "`token_env`"),
            (json!({"scrape": {"url": "http://h/"}}), "`scrape`"),
            (json!({"scrape": ["http://h/"]}), "`scrape[0]`"),
            (json!({"scrape": [{"metrics": m}]}), "`scrape[0].url`"),
            (
                json!({"scrape": [{"url": "https://h/m", "metrics": m}]}),
                "`scrape[0].url`",
            ),
            (
                json!({"scrape": [{"url": "http:///m", "metrics": m}]}),
                "`scrape[0].url`",
            ),
            (
                json!({"scrape": [{"url": "http://h/m", "interval_ms": 0, "metrics": m}]}),
                "`scrape[0].interval_ms`",
            ),
            (
                json!({"scrape": [{"url": "http://h/m", "timeout_ms": -1, "metrics": m}]}),
                "`scrape[0].timeout_ms`",
            ),
            (
                json!({"scrape": [{"url": "http://h/m"}]}),
                "`scrape[0].metrics`",
            ),
            (
                json!({"scrape": [{"url": "http://h/m", "metrics": {}}]}),
                "`scrape[0].metrics`",
            ),
            (
                json!({"scrape": [{"url": "http://h/m", "metrics": {"pending": 3}}]}),
                "`scrape[0].metrics.pending`",
            ),
            (
                json!({"scrape": [{"url": "http://h/m", "metrics": {"pending": "a{b=c}"}}]}),
                "`scrape[0].metrics.pending`",
            ),
        ];
        for (config, key) in cases {
            let e = err(config.clone());
            assert!(e.contains(key), "{config} -> {e}");
        }
        assert!(err(json!([1])).contains("table"));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("http://u:pw@host:1/m?x=@"),
            "http://***@host:1/m?x=@"
        );
        assert_eq!(redact_url("http://host/m"), "http://host/m");
        let e = err(json!({"scrape": [{"url": "ftp://u:pw@h/m", "metrics": {"pending": "p"}}]}));
        assert!(!e.contains("pw"), "{e}");
    }
}
