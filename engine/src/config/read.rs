//! Typed reading of the merged key tree, collecting every problem.
//!
//! Serde would stop at the first wrong key; this reader records a problem
//! and carries on with the default, so one pass reports everything. Each
//! table remembers which keys were asked for, so an unknown key is found
//! without a second list of known keys that could drift from the reader.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::error::Problem;
use crate::names::did_you_mean;

/// Where each key was written in the file: dotted key → (line, column).
pub(super) type Positions = BTreeMap<String, (usize, usize)>;

/// The reader's state: problems so far, and where keys came from.
pub(super) struct Reader<'a> {
    /// Every problem found so far, in reading order.
    pub problems: Vec<Problem>,
    positions: &'a Positions,
    /// Dotted key → the environment variable that set it.
    env: &'a BTreeMap<String, String>,
}

/// One table being read: its dotted path and the keys asked for so far.
pub(super) struct Tab<'v> {
    path: String,
    map: Option<&'v Map<String, Value>>,
    seen: Vec<&'static str>,
}

impl<'v> Tab<'v> {
    /// The root table of the file.
    pub fn root(map: &'v Map<String, Value>) -> Tab<'v> {
        Tab {
            path: String::new(),
            map: Some(map),
            seen: Vec::new(),
        }
    }

    /// The dotted key of `key` in this table.
    pub fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The dotted path of this table itself.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether there is a table to read: not when the value was of another
    /// type (already reported), so its keys are not reported missing too.
    pub fn is_table(&self) -> bool {
        self.map.is_some()
    }

    /// The value of `key`, marking it known.
    fn get(&mut self, key: &'static str) -> Option<&'v Value> {
        self.seen.push(key);
        self.map.and_then(|m| m.get(key))
    }
}

/// How a value's JSON type is named in messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "true or false",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "a whole number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

/// `; did you mean X?` when `input` is close to one of `candidates`.
pub(super) fn suggestion<'c>(input: &str, candidates: impl IntoIterator<Item = &'c str>) -> String {
    match did_you_mean(input, candidates) {
        Some(close) if close != input => format!("; did you mean {close}?"),
        _ => String::new(),
    }
}

impl<'a> Reader<'a> {
    /// A reader with no problems yet.
    pub fn new(positions: &'a Positions, env: &'a BTreeMap<String, String>) -> Reader<'a> {
        Reader {
            problems: Vec::new(),
            positions,
            env,
        }
    }

    /// Records a problem on `key`; the environment variable that set it is
    /// named, since the file may not even mention that key.
    pub fn problem(&mut self, key: &str, value: Option<&Value>, text: impl Into<String>) {
        let mut problem = text.into();
        let (line, column) = match self.env.get(key) {
            Some(var) => {
                problem.push_str(&format!(" (set by the environment variable {var})"));
                (None, None)
            }
            None => match self.positions.get(key) {
                Some(&(line, column)) => (Some(line), Some(column)),
                None => (None, None),
            },
        };
        self.problems.push(Problem {
            key: Some(key.to_owned()),
            value: value.cloned(),
            problem,
            line,
            column,
        });
    }

    /// Whether `key` was set by an environment variable, whose value is
    /// always a string and so is parsed into the type the key wants.
    fn set_by_env(&self, key: &str) -> bool {
        self.env.contains_key(key)
    }

    /// Reports the keys of `tab` that nobody asked for.
    pub fn finish(&mut self, tab: Tab<'_>) {
        let Some(map) = tab.map else { return };
        for (key, value) in map {
            if tab.seen.contains(&key.as_str()) {
                continue;
            }
            let hint = suggestion(key, tab.seen.iter().copied());
            let place = if tab.path.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("in [{}]", tab.path)
            };
            self.problem(
                &tab.key(key),
                Some(value),
                format!("unknown key {place}{hint}"),
            );
        }
    }

    /// Opens `key` of `parent` as a table; absent gives an empty table, so
    /// every key in it takes its default.
    pub fn table<'v>(&mut self, parent: &mut Tab<'v>, key: &'static str) -> Tab<'v> {
        let path = parent.key(key);
        let value = parent.get(key);
        self.table_value(path, value)
    }

    /// Opens `value` (at `path`) as a table.
    pub fn table_value<'v>(&mut self, path: String, value: Option<&'v Value>) -> Tab<'v> {
        let map = match value {
            None => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                let text = format!("must be a table, not {}", kind(other));
                self.problem(&path, Some(other), text);
                None
            }
        };
        Tab {
            path,
            map,
            seen: Vec::new(),
        }
    }

    /// Each entry of the array of tables `key` (`[[key]]`), with its path.
    pub fn tables<'v>(&mut self, parent: &mut Tab<'v>, key: &'static str) -> Vec<Tab<'v>> {
        let path = parent.key(key);
        match parent.get(key) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.table_value(format!("{path}[{i}]"), Some(item)))
                .collect(),
            Some(other) => {
                let text = format!("must be a list of tables ([[{key}]]), not {}", kind(other));
                self.problem(&path, Some(other), text);
                Vec::new()
            }
        }
    }

    /// The raw value of `key`, for values checked by the caller.
    pub fn raw<'v>(&mut self, tab: &mut Tab<'v>, key: &'static str) -> Option<&'v Value> {
        tab.get(key)
    }

    /// An optional string.
    pub fn string(&mut self, tab: &mut Tab<'_>, key: &'static str) -> Option<String> {
        match tab.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                let text = format!("must be a string, not {}", kind(other));
                self.problem(&tab.key(key), Some(other), text);
                None
            }
        }
    }

    /// A string with a default.
    pub fn string_or(&mut self, tab: &mut Tab<'_>, key: &'static str, default: &str) -> String {
        self.string(tab, key).unwrap_or_else(|| default.to_owned())
    }

    /// A string where empty means unset.
    pub fn optional(
        &mut self,
        tab: &mut Tab<'_>,
        key: &'static str,
        default: &str,
    ) -> Option<String> {
        Some(self.string_or(tab, key, default)).filter(|s| !s.is_empty())
    }

    /// A string that must be present and not empty.
    pub fn required(&mut self, tab: &mut Tab<'_>, key: &'static str) -> Option<String> {
        let present = tab.map.is_some_and(|m| m.contains_key(key));
        let value = self.string(tab, key);
        match value.as_deref() {
            Some("") => {
                self.problem(&tab.key(key), Some(&Value::from("")), "must not be empty");
                None
            }
            Some(_) => value,
            None => {
                if !present && tab.is_table() {
                    self.problem(&tab.key(key), None, "is required");
                }
                None
            }
        }
    }

    /// A boolean with a default.
    pub fn boolean(&mut self, tab: &mut Tab<'_>, key: &'static str, default: bool) -> bool {
        let Some(value) = tab.get(key) else {
            return default;
        };
        let name = tab.key(key);
        match value {
            Value::Bool(b) => *b,
            Value::String(s) if self.set_by_env(&name) => match s.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    self.problem(&name, Some(value), "must be true or false");
                    default
                }
            },
            other => {
                let text = format!("must be true or false, not {}", kind(other));
                self.problem(&name, Some(other), text);
                default
            }
        }
    }

    /// A whole number in `min..=max`, with a default.
    pub fn uint(
        &mut self,
        tab: &mut Tab<'_>,
        key: &'static str,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        let Some(value) = tab.get(key) else {
            return default;
        };
        let name = tab.key(key);
        let parsed = match value {
            Value::Number(n) if n.is_f64() => Err("must be a whole number".to_owned()),
            Value::Number(n) => n.as_u64().ok_or_else(|| "must not be negative".to_owned()),
            Value::String(s) if self.set_by_env(&name) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| "must be a whole number".to_owned()),
            other => Err(format!("must be a whole number, not {}", kind(other))),
        };
        match parsed {
            Ok(n) if n < min => {
                self.problem(&name, Some(value), format!("must be at least {min}"));
                default
            }
            Ok(n) if n > max => {
                self.problem(&name, Some(value), format!("must be at most {max}"));
                default
            }
            Ok(n) => n,
            Err(why) => {
                self.problem(&name, Some(value), why);
                default
            }
        }
    }

    /// A whole number that counts something in memory.
    pub fn size(
        &mut self,
        tab: &mut Tab<'_>,
        key: &'static str,
        default: usize,
        min: u64,
    ) -> usize {
        let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
        let n = self.uint(tab, key, default as u64, min, max);
        usize::try_from(n).unwrap_or(default)
    }

    /// A rate: a finite number above zero, with a default.
    pub fn rate(&mut self, tab: &mut Tab<'_>, key: &'static str, default: f64) -> f64 {
        let Some(value) = tab.get(key) else {
            return default;
        };
        let name = tab.key(key);
        let parsed = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) if self.set_by_env(&name) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(rate) if rate.is_finite() && rate > 0.0 => rate,
            Some(_) => {
                self.problem(&name, Some(value), "must be greater than 0");
                default
            }
            None => {
                let text = format!("must be a number, not {}", kind(value));
                self.problem(&name, Some(value), text);
                default
            }
        }
    }

    /// One of a closed set of strings, with a default.
    pub fn choice<E: Copy>(
        &mut self,
        tab: &mut Tab<'_>,
        key: &'static str,
        default: E,
        options: &[(&str, E)],
    ) -> E {
        let Some(value) = tab.get(key) else {
            return default;
        };
        let name = tab.key(key);
        if let Some(text) = value.as_str() {
            if let Some((_, e)) = options.iter().find(|(o, _)| *o == text) {
                return *e;
            }
        }
        let names: Vec<&str> = options.iter().map(|(o, _)| *o).collect();
        let hint = value
            .as_str()
            .map(|text| suggestion(text, names.iter().copied()))
            .unwrap_or_default();
        let text = format!("must be one of {}{hint}", names.join(", "));
        self.problem(&name, Some(value), text);
        default
    }

    /// A list of strings (empty when absent), each with its own dotted key
    /// (`key[i]`) for reporting. From an environment variable it is the
    /// comma-separated entries.
    pub fn strings(&mut self, tab: &mut Tab<'_>, key: &'static str) -> Vec<(String, String)> {
        let Some(value) = tab.get(key) else {
            return Vec::new();
        };
        let name = tab.key(key);
        match value {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_key = format!("{name}[{i}]");
                    match item {
                        Value::String(s) => out.push((item_key, s.clone())),
                        other => {
                            let text = format!("must be a string, not {}", kind(other));
                            self.problem(&item_key, Some(other), text);
                        }
                    }
                }
                out
            }
            Value::String(s) if self.set_by_env(&name) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| (name.clone(), s.to_owned()))
                .collect(),
            other => {
                let text = format!("must be a list of strings, not {}", kind(other));
                self.problem(&name, Some(other), text);
                Vec::new()
            }
        }
    }

    /// A string parsed with `FromStr`, with a default; `expected` tells the
    /// user what a good value looks like.
    pub fn parsed<T: FromStr>(
        &mut self,
        tab: &mut Tab<'_>,
        key: &'static str,
        default: T,
        expected: &str,
    ) -> T {
        let Some(value) = tab.get(key) else {
            return default;
        };
        let name = tab.key(key);
        match value.as_str().map(|s| s.trim().parse::<T>()) {
            Some(Ok(parsed)) => parsed,
            _ => {
                self.problem(&name, Some(value), format!("must be {expected}"));
                default
            }
        }
    }
}
