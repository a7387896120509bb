//! The instance's `[plugins.config]` table: parsing and validation.
//!
//! Parsing is pure (no sockets, threads or files), so `create` can call it
//! for `switchyard check`. Every error names the offending key and says why.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use switchyard_plugin_api::config::{kind_of, Table};

/// The default TCP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9101";

const KEYS: &[&str] = &[
    "listen",
    "max_line_bytes",
    "max_connections",
    "allow_from",
    "idle_timeout_s",
    "simulate",
    "batch_window_s",
    "batch_idle_s",
    "progress_interval_ms",
];
const SIMULATE_KEYS: &[&str] = &["cameras", "rate_per_s"];

/// Upper bounds that keep a typo from asking for absurd resources.
const MAX_LINE_BYTES_LIMIT: u64 = 16 * 1024 * 1024;
const MAX_CONNECTIONS_LIMIT: u64 = 65_536;
const MAX_CAMERAS: u64 = 100_000;
const MAX_RATE_PER_S: f64 = 1_000_000.0;

/// The validated configuration of one detection instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where the TCP JSON-lines input listens; `None` turns TCP input off.
    pub listen: Option<SocketAddr>,
    /// Longest accepted input line in bytes, newline excluded.
    pub max_line_bytes: usize,
    /// Most TCP connections open at once; a new one past it closes the
    /// one silent the longest.
    pub max_connections: usize,
    /// A TCP connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Peers allowed to connect; `None` allows any peer.
    pub allow_from: Option<Vec<Cidr>>,
    /// The built-in detection simulator; `None` turns it off.
    pub simulate: Option<SimulateConfig>,
    /// A batch closes this long after it opened.
    pub batch_window: Duration,
    /// A batch closes after this long without a detection.
    pub batch_idle: Duration,
    /// At most one `batch.progress` per open batch per this interval.
    pub progress_interval: Duration,
}

/// The `simulate` table.
#[derive(Clone, Debug, PartialEq)]
pub struct SimulateConfig {
    /// Number of simulated cameras, named `cam-1` … `cam-N`.
    pub cameras: u32,
    /// Detections per second over all cameras.
    pub rate_per_s: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: Some(
                DEFAULT_LISTEN
                    .parse()
                    .expect("default listen address parses"),
            ),
            max_line_bytes: 65_536,
            max_connections: 64,
            idle_timeout: Duration::from_secs(60),
            allow_from: None,
            simulate: None,
            batch_window: Duration::from_secs(90),
            batch_idle: Duration::from_secs(30),
            progress_interval: Duration::from_millis(1000),
        }
    }
}

impl Config {
    /// Parses and validates a `[plugins.config]` table (`null` = all defaults).
    pub fn from_value(value: Value) -> Result<Config, String> {
        let table = Table::new(value, "detection", KEYS)?;
        let mut config = Config::default();
        if let Some(listen) = table.listen("listen", DEFAULT_LISTEN, "TCP input")? {
            config.listen = listen;
        }
        if let Some(n) = table.whole("max_line_bytes", 1, MAX_LINE_BYTES_LIMIT)? {
            config.max_line_bytes = n as usize;
        }
        if let Some(n) = table.whole("max_connections", 1, MAX_CONNECTIONS_LIMIT)? {
            config.max_connections = n as usize;
        }
        if let Some(d) = table.seconds("idle_timeout_s")? {
            config.idle_timeout = d;
        }
        if let Some(v) = table.get("allow_from") {
            config.allow_from = Some(parse_allow_from(v)?);
        }
        if let Some(v) = table.get("simulate") {
            config.simulate = Some(parse_simulate(v)?);
        }
        if let Some(d) = table.seconds("batch_window_s")? {
            config.batch_window = d;
        }
        if let Some(d) = table.seconds("batch_idle_s")? {
            config.batch_idle = d;
        }
        if let Some(d) = table.millis("progress_interval_ms", 1, u32::MAX.into())? {
            config.progress_interval = d;
        }
        if config.listen.is_none() && config.simulate.is_none() {
            return Err(
                "no input: `listen` turns TCP input off and `simulate` is absent; \
                 set `listen` to an address or add a `simulate` table"
                    .to_owned(),
            );
        }
        Ok(config)
    }
}

fn parse_allow_from(value: &Value) -> Result<Vec<Cidr>, String> {
    let items = value.as_array().ok_or_else(|| {
        format!(
            "`allow_from` must be a list of CIDRs such as [\"127.0.0.1/32\", \"10.0.0.0/8\"], got {}",
            kind_of(value)
        )
    })?;
    if items.is_empty() {
        return Err(
            "`allow_from` is empty, which would refuse every peer; list CIDRs or omit the key to allow any peer"
                .to_owned(),
        );
    }
    items
        .iter()
        .map(|item| match item.as_str() {
            Some(s) => Cidr::parse(s).map_err(|why| format!("`allow_from` entry {s:?}: {why}")),
            None => Err(format!(
                "`allow_from` entries must be CIDR strings, got {}",
                kind_of(item)
            )),
        })
        .collect()
}

fn parse_simulate(value: &Value) -> Result<SimulateConfig, String> {
    let table = value.as_object().ok_or_else(|| {
        format!(
            "`simulate` must be a table such as {{ cameras = 4, rate_per_s = 2.0 }}, got {}",
            kind_of(value)
        )
    })?;
    let table = Table::nested(table, "simulate", SIMULATE_KEYS)?;
    let cameras = match table.whole("cameras", 1, MAX_CAMERAS)? {
        Some(n) => n as u32,
        None => return Err("`simulate.cameras` is missing (a whole number ≥ 1)".to_owned()),
    };
    let rate_per_s = match table.get("rate_per_s") {
        Some(v) => v
            .as_f64()
            .filter(|r| *r > 0.0 && *r <= MAX_RATE_PER_S)
            .ok_or_else(|| {
                format!(
                    "`simulate.rate_per_s` must be a number greater than 0 and at most {MAX_RATE_PER_S}, got {v}"
                )
            })?,
        None => return Err("`simulate.rate_per_s` is missing (a number > 0)".to_owned()),
    };
    Ok(SimulateConfig {
        cameras,
        rate_per_s,
    })
}

/// An IP network such as `10.0.0.0/8` or `::1/128` (a bare address is a
/// single-host network). Host bits below the prefix are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or a bare `ADDR`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| "not an IP address or CIDR such as 10.0.0.0/8".to_owned())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!(
                        "the prefix length must be a number from 0 to {max}"
                    ))
                }
            },
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in this network (IPv4-mapped IPv6 peers count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Config::from_value(v).unwrap_err()
    }

    #[test]
    fn defaults() {
        let c = Config::from_value(json!({})).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen, Some("127.0.0.1:9101".parse().unwrap()));
        assert_eq!(c.max_line_bytes, 65_536);
        assert_eq!(c.max_connections, 64);
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.allow_from, None);
        assert_eq!(c.simulate, None);
        assert_eq!(c.batch_window, Duration::from_secs(90));
        assert_eq!(c.batch_idle, Duration::from_secs(30));
        assert_eq!(c.progress_interval, Duration::from_secs(1));
        assert_eq!(Config::from_value(Value::Null).unwrap(), Config::default());
    }

    #[test]
    fn full_config() {
        let c = Config::from_value(json!({
            "listen": "0.0.0.0:9200",
            "max_line_bytes": 1024,
            "max_connections": 2,
            "allow_from": ["10.0.0.0/8", "::1"],
            "simulate": {"cameras": 3, "rate_per_s": 0.5},
            "batch_window_s": 1.5,
            "batch_idle_s": 2,
            "progress_interval_ms": 250
        }))
        .unwrap();
        assert_eq!(c.listen, Some("0.0.0.0:9200".parse().unwrap()));
        assert_eq!(c.max_line_bytes, 1024);
        assert_eq!(c.max_connections, 2);
        assert_eq!(c.allow_from.as_ref().unwrap().len(), 2);
        assert_eq!(
            c.simulate,
            Some(SimulateConfig {
                cameras: 3,
                rate_per_s: 0.5
            })
        );
        assert_eq!(c.batch_window, Duration::from_millis(1500));
        assert_eq!(c.batch_idle, Duration::from_secs(2));
        assert_eq!(c.progress_interval, Duration::from_millis(250));
    }

    #[test]
    fn listen_can_be_turned_off_when_simulating() {
        let sim = json!({"cameras": 1, "rate_per_s": 1});
        for off in [json!(""), json!(false)] {
            let c = Config::from_value(json!({"listen": off, "simulate": sim})).unwrap();
            assert_eq!(c.listen, None);
        }
        let e = err(json!({"listen": ""}));
        assert!(e.contains("no input"), "{e}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(json!({"batch_windw_s": 3}));
        assert!(e.contains("`batch_windw_s`"), "{e}");
        let e = err(json!({"simulate": {"cameras": 1, "rate_per_s": 1, "rate": 2}}));
        assert!(e.contains("`simulate.rate`"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (json!({"listen": "localhost:9101"}), "`listen`"),
            (json!({"listen": true}), "`listen`"),
            (json!({"listen": 9101}), "`listen`"),
            (json!({"max_line_bytes": 0}), "`max_line_bytes`"),
            (json!({"max_line_bytes": "big"}), "`max_line_bytes`"),
            (json!({"max_connections": -1}), "`max_connections`"),
            (json!({"max_connections": 1.5}), "`max_connections`"),
            (json!({"allow_from": "10.0.0.0/8"}), "`allow_from`"),
            (json!({"allow_from": []}), "`allow_from`"),
            (json!({"allow_from": ["10.0.0.0/33"]}), "`allow_from`"),
            (json!({"allow_from": ["nope"]}), "`allow_from`"),
            (json!({"allow_from": [1]}), "`allow_from`"),
            (json!({"idle_timeout_s": 0}), "`idle_timeout_s`"),
            (json!({"batch_window_s": 0}), "`batch_window_s`"),
            (json!({"batch_window_s": -3}), "`batch_window_s`"),
            (json!({"batch_idle_s": "30"}), "`batch_idle_s`"),
            (json!({"batch_idle_s": 1e300}), "`batch_idle_s`"),
            (json!({"progress_interval_ms": 0}), "`progress_interval_ms`"),
            (json!({"simulate": true}), "`simulate`"),
            (json!({"simulate": {"rate_per_s": 1}}), "`simulate.cameras`"),
            (
                json!({"simulate": {"cameras": 0, "rate_per_s": 1}}),
                "`simulate.cameras`",
            ),
            (json!({"simulate": {"cameras": 2}}), "`simulate.rate_per_s`"),
            (
                json!({"simulate": {"cameras": 2, "rate_per_s": 0}}),
                "`simulate.rate_per_s`",
            ),
            (
                json!({"simulate": {"cameras": 2, "rate_per_s": -1.5}}),
                "`simulate.rate_per_s`",
            ),
        ];
        for (config, key) in cases {
            let e = err(config.clone());
            assert!(e.contains(key), "{config} -> {e}");
        }
        assert!(err(json!([1])).contains("table"));
    }

    #[test]
    fn cidr_matching() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.9.9".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let host = Cidr::parse("127.0.0.1").unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.168.1.1".parse().unwrap()));
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Cidr::parse("::1/129").is_err());
    }
}
