//! What can go wrong when loading a configuration.
//!
//! A refused configuration lists every problem at once, so an operator fixes
//! the file in one round trip; each problem names its key, the value found
//! and what to change.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

use crate::files::FileError;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, unreadable, not a
    /// regular file, too large, not UTF-8).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that was asked for, made absolute.
        path: PathBuf,
        /// Why.
        source: FileError,
    },
    /// The file is empty (or only white space): refused, since an emptied
    /// file is far more often a write in progress than a wish for defaults.
    #[error(
        "{path} is empty: refused, as an emptied file is most often a write still in progress"
    )]
    Empty {
        /// The file, made absolute.
        path: PathBuf,
    },
    /// The file was read but is not a valid configuration.
    #[error("{} problem(s) in the configuration", .0.len())]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// Every problem found, for the reload reply and `switchyard check`;
    /// empty for a read error or an empty file, which have no key to name.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } | ConfigError::Empty { .. } => &[],
            ConfigError::Invalid(problems) => problems,
        }
    }
}

/// One thing wrong with the configuration.
///
/// Serializes as the `errors` entries of a refused reload:
/// `{"key","value","problem"}`, plus `line` and `column` when known; and
/// reads back from them (`switchyard check --against`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// Dotted path of the key, such as `channels[2].slow_consumer`; `None`
    /// for a TOML syntax error, which has no key yet.
    pub key: Option<String>,
    /// The value found, when there is one (absent for a missing key).
    pub value: Option<Value>,
    /// What is wrong, in words a user can act on.
    pub problem: String,
    /// 1-based line in the file, when the key was written there (not for a
    /// value set by an environment variable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column (in characters) on that line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// Values longer than this are shortened in messages: an unknown section
/// would otherwise print its whole table.
const MAX_SHOWN_VALUE: usize = 80;

/// Where in the file first, when known, so that a log line, `switchyard
/// check` and a preview against a router each point at the line to edit.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line}, column {column}: ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            (None, _) => {}
        }
        match (&self.key, &self.value) {
            (Some(key), Some(value)) => write!(f, "{key} = {}: ", shown(value))?,
            (Some(key), None) => write!(f, "{key}: ")?,
            (None, _) => {}
        }
        f.write_str(&self.problem)
    }
}

/// The value as compact JSON, cut at a character boundary when long.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(MAX_SHOWN_VALUE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(key: Option<&str>, value: Option<Value>) -> Problem {
        Problem {
            key: key.map(str::to_owned),
            value,
            problem: "must be one of drop_oldest, disconnect".to_owned(),
            line: Some(3),
            column: Some(17),
        }
    }

    #[test]
    fn display_names_place_key_value_and_problem() {
        let p = problem(Some("channels[2].slow_consumer"), Some(Value::from("fast")));
        assert_eq!(
            p.to_string(),
            "line 3, column 17: channels[2].slow_consumer = \"fast\": must be one of drop_oldest, disconnect"
        );
        let p = problem(Some("channels[2].name"), None);
        assert!(p
            .to_string()
            .starts_with("line 3, column 17: channels[2].name: must"));
        let p = problem(None, None);
        assert!(p.to_string().starts_with("line 3, column 17: must"));
        // Set by an environment variable: no place in the file.
        let p = Problem {
            line: None,
            column: None,
            ..problem(Some("server.listen"), None)
        };
        assert!(p.to_string().starts_with("server.listen: must"), "{p}");
    }

    #[test]
    fn long_values_are_shortened() {
        let p = problem(Some("k"), Some(Value::from("x".repeat(500))));
        assert!(p.to_string().len() < 200, "{p}");
        assert!(p.to_string().contains('…'));
    }

    #[test]
    fn serializes_like_the_reload_reply() {
        let mut p = problem(None, None);
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["key"], Value::Null);
        assert_eq!(json["line"], 3);
        p.line = None;
        p.column = None;
        let json = serde_json::to_value(&p).unwrap();
        assert!(json.get("line").is_none());
    }
}
