//! Reading a plugin instance's `[plugins.config]` table.
//!
//! The router hands a plugin its config table as JSON ([`Plugin::create`]).
//! These helpers give every plugin the same checks and the same error
//! messages: the table must be a table, unknown keys are refused by name
//! (listing the known ones), and every bad value names its key, says what
//! was expected and shows what was given.
//!
//! ```
//! use std::time::Duration;
//! use switchyard_plugin_api::config::Table;
//! use switchyard_plugin_api::serde_json::json;
//!
//! let table = Table::new(json!({"max_keys": 8}), "demo", &["max_keys", "period_s"]).unwrap();
//! assert_eq!(table.whole("max_keys", 1, 100).unwrap(), Some(8));
//! assert_eq!(table.seconds("period_s").unwrap(), None::<Duration>);
//!
//! let err = Table::new(json!({"max_key": 8}), "demo", &["max_keys"]).unwrap_err();
//! assert_eq!(err, "unknown config key `max_key` (known keys: max_keys)");
//! ```
//!
//! [`Plugin::create`]: crate::Plugin::create

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value};

/// The longest duration [`seconds`] accepts: a year.
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// What kind of value `value` is, for messages: `"a string"`, `"a table"`, ….
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// Refuses the first key of `table` that is not in `known`, naming it as
/// `{at}.{key}` (or `{key}` when `at` is empty) and listing the known keys.
pub fn refuse_unknown_keys(
    table: &Map<String, Value>,
    at: &str,
    known: &[&str],
) -> Result<(), String> {
    match table.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(format!(
            "unknown config key `{}` (known keys: {})",
            join_key(at, key),
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// A whole number in `min..=max` (`3.0` is refused: it is a float).
pub fn whole(value: &Value, key: &str, min: u64, max: u64) -> Result<u64, String> {
    check_whole(value.as_u64(), value, key, min, max)
}

/// A whole number in `min..=max`, where an integral float such as `3.0`
/// counts as whole too.
pub fn whole_or_integral_float(
    value: &Value,
    key: &str,
    min: u64,
    max: u64,
) -> Result<u64, String> {
    let n = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= max as f64)
            .map(|f| f as u64)
    });
    check_whole(n, value, key, min, max)
}

fn check_whole(
    n: Option<u64>,
    value: &Value,
    key: &str,
    min: u64,
    max: u64,
) -> Result<u64, String> {
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{key}` must be a whole number from {min} to {max}, got {value}"
        )),
    }
}

/// A number of seconds greater than 0 and at most a year ([`MAX_SECONDS`]),
/// fractions allowed.
pub fn seconds(value: &Value, key: &str) -> Result<Duration, String> {
    value
        .as_f64()
        .filter(|s| *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| *d <= Duration::from_secs(MAX_SECONDS))
        .ok_or_else(|| {
            format!(
                "`{key}` must be a number of seconds greater than 0 (at most a year), got {value}"
            )
        })
}

/// A listen address: an IP address and port (host names are not resolved),
/// or `""` / `false` for "off" (`None`). `default` is shown as the example
/// and `what` names what "off" turns off (such as `"TCP input"`).
pub fn listen(
    value: &Value,
    key: &str,
    default: &str,
    what: &str,
) -> Result<Option<SocketAddr>, String> {
    match value {
        Value::Bool(false) => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s.trim().parse().map(Some).map_err(|_| {
            format!(
                "`{key}` must be an IP address and port such as \"{default}\" \
                 (host names are not resolved), or \"\" / false to turn {what} off; got {s:?}"
            )
        }),
        other => Err(format!(
            "`{key}` must be a string such as \"{default}\", or \"\" / false to turn \
             {what} off; got {}",
            kind_of(other)
        )),
    }
}

fn join_key(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// A config table whose keys were checked against the known ones; its
/// readers return `Ok(None)` for an absent key and name the key (with its
/// path, such as `simulate.cameras`) in every error.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    map: Map<String, Value>,
    at: String,
    integral_floats: bool,
}

impl Table {
    /// Checks a plugin's whole config table: `null` is an empty table,
    /// anything but a table is refused as "the {plugin} config must be a
    /// table", and so is any key not in `known`.
    pub fn new(value: Value, plugin: &str, known: &[&str]) -> Result<Table, String> {
        let map = match value {
            Value::Null => Map::new(),
            Value::Object(map) => map,
            other => {
                return Err(format!(
                    "the {plugin} config must be a table, got {}",
                    kind_of(&other)
                ))
            }
        };
        Table::checked(map, "", known)
    }

    /// Checks a table nested at `at` (such as `simulate` or `workers[0]`):
    /// unknown keys are refused as `{at}.{key}`, and errors name keys so.
    pub fn nested(map: &Map<String, Value>, at: &str, known: &[&str]) -> Result<Table, String> {
        Table::checked(map.clone(), at, known)
    }

    fn checked(map: Map<String, Value>, at: &str, known: &[&str]) -> Result<Table, String> {
        refuse_unknown_keys(&map, at, known)?;
        Ok(Table {
            map,
            at: at.to_owned(),
            integral_floats: false,
        })
    }

    /// Makes [`Table::whole`] and [`Table::millis`] accept integral floats
    /// such as `3.0` (see [`whole_or_integral_float`]).
    pub fn integral_floats(mut self) -> Table {
        self.integral_floats = true;
        self
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// The full name of `key` for messages (`simulate.cameras`), without backticks.
    pub fn name(&self, key: &str) -> String {
        join_key(&self.at, key)
    }

    /// A whole number in `min..=max` (see [`whole`]).
    pub fn whole(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
        self.get(key)
            .map(|v| {
                let name = self.name(key);
                if self.integral_floats {
                    whole_or_integral_float(v, &name, min, max)
                } else {
                    whole(v, &name, min, max)
                }
            })
            .transpose()
    }

    /// A whole number of milliseconds in `min..=max`.
    pub fn millis(&self, key: &str, min: u64, max: u64) -> Result<Option<Duration>, String> {
        Ok(self.whole(key, min, max)?.map(Duration::from_millis))
    }

    /// A number of seconds greater than 0 and at most a year (see [`seconds`]).
    pub fn seconds(&self, key: &str) -> Result<Option<Duration>, String> {
        self.get(key)
            .map(|v| seconds(v, &self.name(key)))
            .transpose()
    }

    /// A string, untrimmed; anything else is refused as "must be a string".
    pub fn string(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "`{}` must be a string, got {}",
                self.name(key),
                kind_of(other)
            )),
        }
    }

    /// A listen address, or `Some(None)` for "off" (see [`listen`]).
    pub fn listen(
        &self,
        key: &str,
        default: &str,
        what: &str,
    ) -> Result<Option<Option<SocketAddr>>, String> {
        self.get(key)
            .map(|v| listen(v, &self.name(key), default, what))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_are_named_for_messages() {
        let kinds: Vec<&str> = [
            json!(null),
            json!(true),
            json!(1.5),
            json!("x"),
            json!([1]),
            json!({}),
        ]
        .iter()
        .map(kind_of)
        .collect();
        assert_eq!(
            kinds,
            [
                "null",
                "a boolean",
                "a number",
                "a string",
                "an array",
                "a table"
            ]
        );
    }

    #[test]
    fn the_table_must_be_a_table_of_known_keys() {
        assert_eq!(
            Table::new(json!(null), "demo", &["a"]).unwrap(),
            Table::new(json!({}), "demo", &["a"]).unwrap()
        );
        assert_eq!(
            Table::new(json!([1]), "demo", &["a"]).unwrap_err(),
            "the demo config must be a table, got an array"
        );
        assert_eq!(
            Table::new(json!({"a": 1, "b": 2}), "demo", &["a", "c"]).unwrap_err(),
            "unknown config key `b` (known keys: a, c)"
        );
        let outer = json!({"x": 1});
        assert_eq!(
            Table::nested(outer.as_object().unwrap(), "sim", &["y"]).unwrap_err(),
            "unknown config key `sim.x` (known keys: y)"
        );
        let mut map = Map::new();
        map.insert("q".into(), json!(1));
        assert!(refuse_unknown_keys(&map, "", &["q"]).is_ok());
    }

    #[test]
    fn whole_numbers() {
        let t = Table::new(
            json!({"n": 5, "f": 3.0, "h": 1.5, "s": "5", "neg": -1}),
            "d",
            &["n", "f", "h", "s", "neg", "absent"],
        )
        .unwrap();
        assert_eq!(t.whole("n", 1, 10).unwrap(), Some(5));
        assert_eq!(t.whole("absent", 1, 10).unwrap(), None);
        assert_eq!(
            t.whole("n", 6, 10).unwrap_err(),
            "`n` must be a whole number from 6 to 10, got 5"
        );
        for key in ["f", "h", "s", "neg"] {
            let e = t.whole(key, 0, 10).unwrap_err();
            assert!(
                e.starts_with(&format!("`{key}` must be a whole number")),
                "{e}"
            );
        }
        let lenient = t.clone().integral_floats();
        assert_eq!(lenient.whole("f", 1, 10).unwrap(), Some(3));
        assert!(lenient.whole("h", 1, 10).is_err());
        assert!(lenient.whole("neg", 0, 10).is_err());
        assert_eq!(
            t.millis("n", 1, 10).unwrap(),
            Some(Duration::from_millis(5))
        );
        assert_eq!(whole(&json!(7), "k", 7, 7), Ok(7));
        assert_eq!(whole_or_integral_float(&json!(7.0), "k", 7, 7), Ok(7));
    }

    #[test]
    fn seconds_are_positive_and_at_most_a_year() {
        assert_eq!(seconds(&json!(1.5), "s"), Ok(Duration::from_millis(1500)));
        assert_eq!(
            seconds(&json!(MAX_SECONDS), "s"),
            Ok(Duration::from_secs(MAX_SECONDS))
        );
        for bad in [
            json!(0),
            json!(-3),
            json!("30"),
            json!(1e300),
            json!(MAX_SECONDS + 1),
        ] {
            let e = seconds(&bad, "s").unwrap_err();
            assert!(e.starts_with("`s` must be a number of seconds"), "{e}");
        }
        let t = Table::new(json!({"w": 2}), "d", &["w"]).unwrap();
        let inner = json!({"w": 0});
        let nested = Table::nested(inner.as_object().unwrap(), "sim", &["w"]).unwrap();
        assert_eq!(t.seconds("w").unwrap(), Some(Duration::from_secs(2)));
        assert!(nested.seconds("w").unwrap_err().starts_with("`sim.w`"));
        assert_eq!(nested.name("w"), "sim.w");
    }

    #[test]
    fn strings() {
        let t = Table::new(json!({"s": " a ", "n": 1}), "d", &["s", "n", "x"]).unwrap();
        assert_eq!(t.string("s").unwrap(), Some(" a "));
        assert_eq!(t.string("x").unwrap(), None);
        assert_eq!(
            t.string("n").unwrap_err(),
            "`n` must be a string, got a number"
        );
    }

    #[test]
    fn listen_addresses() {
        let l = |v: Value| listen(&v, "listen", "127.0.0.1:1", "the input");
        assert_eq!(
            l(json!(" 0.0.0.0:80 ")),
            Ok(Some("0.0.0.0:80".parse().unwrap()))
        );
        assert_eq!(l(json!("")), Ok(None));
        assert_eq!(l(json!(false)), Ok(None));
        let e = l(json!("localhost:80")).unwrap_err();
        assert!(e.contains("host names are not resolved"), "{e}");
        assert!(e.contains("to turn the input off"), "{e}");
        let e = l(json!(true)).unwrap_err();
        assert!(e.ends_with("got a boolean"), "{e}");
        let t = Table::new(json!({"listen": "[::1]:9"}), "d", &["listen"]).unwrap();
        assert_eq!(
            t.listen("listen", "127.0.0.1:1", "x").unwrap(),
            Some(Some("[::1]:9".parse().unwrap()))
        );
        assert_eq!(t.listen("other", "127.0.0.1:1", "x").unwrap(), None);
    }
}
