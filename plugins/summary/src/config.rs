//! The instance's `[plugins.config]` table: parsing and validation.
//!
//! Parsing is pure (no threads, files or clocks), so `create` can call it for
//! `switchyard check`. Every error names the offending key and says why.

use serde_json::Value;
use switchyard_plugin_api::config::Table;

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
        // `3.0` counts as a whole number here.
        let table = Table::new(value, "summary", KEYS)?.integral_floats();
        let mut config = Config::default();
        if let Some(n) = table.whole("hourly_period_s", 1, MAX_PERIOD_S)? {
            config.hourly_period_s = n;
        }
        if let Some(n) = table.whole("daily_period_s", 1, MAX_PERIOD_S)? {
            config.daily_period_s = n;
        }
        if let Some(n) = table.whole("max_keys", 1, MAX_KEYS_LIMIT)? {
            config.max_keys = n as usize;
        }
        Ok(config)
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
