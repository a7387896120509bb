//! The instance's `[plugins.config]` table: parsing and validation.
//!
//! Parsing is pure (no threads, files or clocks), so `create` can call it for
//! `switchyard check`. Every error names the offending key and says why.

use serde_json::{Map, Value};

const KEYS: &[&str] = &["hourly_period_s", "daily_period_s", "max_keys"];

/// The longest period accepted: about ten years, so that a typo cannot ask
/// for a period the clock arithmetic cannot hold.
pub const MAX_PERIOD_S: u64 = 10 * 366 * 24 * 3600;
/// The most distinct keys `max_keys` may allow per breakdown.
pub const MAX_KEYS_LIMIT: u64 = 10_000;

/// The validated configuration of one summary instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Length of a `summary.hourly` period, in seconds.
    pub hourly_period_s: u64,
    /// Length of a `summary.daily` period, in seconds.
    pub daily_period_s: u64,
    /// Most distinct keys kept in each of `by_type`, `by_camera` and
    /// `by_severity` per period; further keys are counted under
    /// [`crate::OTHER_KEY`].
    pub max_keys: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            hourly_period_s: 3600,
            daily_period_s: 86_400,
            max_keys: 256,
        }
    }
}

impl Config {
    /// Parses and validates a `[plugins.config]` table (`null` = all defaults).
    pub fn from_value(value: Value) -> Result<Config, String> {
        let table = match value {
            Value::Null => Map::new(),
            Value::Object(table) => table,
            other => {
                return Err(format!(
                    "the summary config must be a table, got {}",
                    kind_of(&other)
                ))
            }
        };
        if let Some(key) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown config key `{key}` (known keys: {})",
                KEYS.join(", ")
            ));
        }
        let mut config = Config::default();
        if let Some(v) = table.get("hourly_period_s") {
            config.hourly_period_s = whole(v, "hourly_period_s", 1, MAX_PERIOD_S)?;
        }
        if let Some(v) = table.get("daily_period_s") {
            config.daily_period_s = whole(v, "daily_period_s", 1, MAX_PERIOD_S)?;
        }
        if let Some(v) = table.get("max_keys") {
            config.max_keys = whole(v, "max_keys", 1, MAX_KEYS_LIMIT)? as usize;
        }
        Ok(config)
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// A whole number in `min..=max`; `3.0` counts as whole.
fn whole(value: &Value, key: &str, min: u64, max: u64) -> Result<u64, String> {
    let n = value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= max as f64)
            .map(|f| f as u64)
    });
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{key}` must be a whole number from {min} to {max}, got {value}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply_to_an_empty_or_absent_table() {
        assert_eq!(Config::from_value(Value::Null).unwrap(), Config::default());
        let c = Config::from_value(json!({})).unwrap();
        assert_eq!((c.hourly_period_s, c.daily_period_s), (3600, 86_400));
        assert_eq!(c.max_keys, 256);
    }

    #[test]
    fn keys_are_read() {
        let c = Config::from_value(
            json!({"hourly_period_s": 2, "daily_period_s": 10.0, "max_keys": 3}),
        )
        .unwrap();
        assert_eq!(
            c,
            Config {
                hourly_period_s: 2,
                daily_period_s: 10,
                max_keys: 3
            }
        );
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Config::from_value(json!({"hourly_period": 2})).unwrap_err();
        assert!(err.contains("`hourly_period`"), "{err}");
        assert!(err.contains("hourly_period_s"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        for (table, key) in [
            (json!({"hourly_period_s": 0}), "hourly_period_s"),
            (json!({"hourly_period_s": 1.5}), "hourly_period_s"),
            (json!({"daily_period_s": "86400"}), "daily_period_s"),
            (json!({"daily_period_s": -1}), "daily_period_s"),
            (
                json!({"daily_period_s": MAX_PERIOD_S + 1}),
                "daily_period_s",
            ),
            (json!({"max_keys": 0}), "max_keys"),
        ] {
            let err = Config::from_value(table.clone()).unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{table}: {err}");
        }
        let err = Config::from_value(json!([1])).unwrap_err();
        assert!(err.contains("must be a table"), "{err}");
    }
}
