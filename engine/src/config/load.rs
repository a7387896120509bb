//! Reading the file and the environment into one key tree.
//!
//! The `config` crate merges the file with `SWITCHYARD__SECTION__KEY`
//! variables. The file is also parsed by `toml` directly, first: its spans
//! give a syntax error its line and column, and every other problem the
//! line of its key.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use toml::de::{DeTable, DeValue};

use super::build;
use super::error::{ConfigError, Problem};
use super::model::Config;
use super::read::{Positions, Reader};
use crate::files;

/// Variables starting with this (in any case) override configuration keys;
/// a single underscore (`SWITCHYARD_CONFIG`, secret variables) does not.
const ENV_PREFIX: &str = "SWITCHYARD";
/// Separates the prefix and the key's segments in a variable name.
const ENV_SEPARATOR: &str = "__";

/// A configuration that passed validation, with what the caller should
/// tell the operator about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Things worth an operator's attention that do not stop the config,
    /// one sentence each.
    pub warnings: Vec<String>,
    /// Dotted keys set by environment variables (such as `server.listen`),
    /// sorted; a reload leaves them as they are.
    pub overridden_keys: Vec<String>,
}

/// Loads and validates the file at `path` with overrides from the process
/// environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_with_env(path, process_env())
}

/// Like [`load`], but a file whose values are wrong still yields a
/// configuration (defaults in place of the wrong values) together with
/// every problem, so later checks (plugins, registry) can report theirs
/// too. Only an unreadable file or a TOML syntax error is an `Err`.
pub fn load_all(path: &Path) -> Result<(Loaded, Vec<Problem>), ConfigError> {
    read(path, process_env())
}

/// The process environment; variables that are not UTF-8 cannot be keys or
/// values, and skipping them avoids the panic of `std::env::vars`.
fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// Loads and validates the file at `path` with overrides from `env`
/// (name, value) pairs instead of the process environment, so tests can
/// run side by side.
pub fn load_with_env(path: &Path, env: Vec<(String, String)>) -> Result<Loaded, ConfigError> {
    let (loaded, problems) = read(path, env)?;
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Loads and validates a candidate configuration's `text` as if it were
/// the file at `path` (relative paths resolve from its folder), with the
/// process environment's overrides: what a reload preview judges.
pub fn load_candidate(text: &str, path: &Path) -> Result<(Loaded, Vec<Problem>), ConfigError> {
    let source = absolute(path)?;
    read_text(text, source, process_env())
}

fn absolute(path: &Path) -> Result<std::path::PathBuf, ConfigError> {
    std::path::absolute(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source: source.into(),
    })
}

fn read(path: &Path, env: Vec<(String, String)>) -> Result<(Loaded, Vec<Problem>), ConfigError> {
    let source = absolute(path)?;
    let text =
        files::read_text(&source, files::MAX_CONFIG_BYTES).map_err(|e| ConfigError::Read {
            path: source.clone(),
            source: e,
        })?;
    read_text(&text, source, env)
}

fn read_text(
    text: &str,
    source: std::path::PathBuf,
    env: Vec<(String, String)>,
) -> Result<(Loaded, Vec<Problem>), ConfigError> {
    if text.len() > files::MAX_CONFIG_BYTES as usize {
        return Err(ConfigError::Invalid(vec![Problem {
            key: None,
            value: None,
            problem: format!(
                "the configuration is {} bytes; the limit is {}",
                text.len(),
                files::MAX_CONFIG_BYTES
            ),
            line: None,
            column: None,
        }]));
    }
    if text.trim().is_empty() {
        return Err(ConfigError::Empty { path: source });
    }
    let positions = positions(text).map_err(|p| ConfigError::Invalid(vec![p]))?;
    let overrides: BTreeMap<String, String> = env
        .iter()
        .filter_map(|(name, _)| Some((override_key(name)?, name.clone())))
        .collect();
    let merged = merge(text, env).map_err(|p| ConfigError::Invalid(vec![p]))?;
    let mut reader = Reader::new(&positions, &overrides);
    let mut warnings = Vec::new();
    let config = build::config(&mut reader, &merged, &source, &mut warnings);
    let problems = std::mem::take(&mut reader.problems);
    drop(reader);
    let loaded = Loaded {
        config,
        warnings,
        overridden_keys: overrides.into_keys().collect(),
    };
    Ok((loaded, problems))
}

/// The dotted key a variable overrides, the way the `config` crate reads
/// it (case-insensitive prefix, lower-cased key), or `None` if it is not an
/// override.
fn override_key(name: &str) -> Option<String> {
    let lower = name.to_lowercase();
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}").to_lowercase();
    let rest = lower.strip_prefix(&prefix)?;
    Some(rest.replace(ENV_SEPARATOR, "."))
}

/// The file merged with the overrides, as one JSON tree. Values keep their
/// TOML types and keys their case, so `[plugins.config]` reaches the plugin
/// as written.
fn merge(
    text: &str,
    env: Vec<(String, String)>,
) -> Result<serde_json::Map<String, Value>, Problem> {
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(name, _)| override_key(name).is_some())
        .collect();
    let merged = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .separator(ENV_SEPARATOR)
                .source(Some(env)),
        )
        .build()
        .and_then(|c| c.try_deserialize::<serde_json::Map<String, Value>>());
    merged.map_err(|e| Problem {
        key: None,
        value: None,
        problem: format!("cannot merge the file with the environment overrides: {e}"),
        line: None,
        column: None,
    })
}

/// Where each key is written, or the syntax error.
fn positions(text: &str) -> Result<Positions, Problem> {
    let table = DeTable::parse(text).map_err(|e| {
        let (line, column) = e.span().map(|span| line_column(text, span.start)).unzip();
        Problem {
            key: None,
            value: None,
            problem: format!("invalid TOML: {}", e.message().trim().replace('\n', "; ")),
            line,
            column,
        }
    })?;
    let mut out = Positions::new();
    let mut problems = Vec::new();
    walk_table(text, table.get_ref(), "", &mut out, &mut problems);
    // Only the first is returned: like a syntax error, it stops the load
    // before the values are read.
    problems.into_iter().next().map_or(Ok(out), Err)
}

fn walk_table(
    text: &str,
    table: &DeTable<'_>,
    prefix: &str,
    out: &mut Positions,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        out.insert(path.clone(), line_column(text, key.span().start));
        walk_value(text, value.get_ref(), &path, out, problems);
    }
}

fn walk_value(
    text: &str,
    value: &DeValue<'_>,
    path: &str,
    out: &mut Positions,
    problems: &mut Vec<Problem>,
) {
    match value {
        DeValue::Table(table) => walk_table(text, table, path, out, problems),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                out.insert(path.clone(), line_column(text, item.span().start));
                walk_value(text, item.get_ref(), &path, out, problems);
            }
        }
        // The parser keeps integers as text; one outside i64 would only be
        // refused later, by the merge, without saying where.
        DeValue::Integer(n) if i64::from_str_radix(n.as_str(), n.radix()).is_err() => {
            let (line, column) = out.get(path).copied().unzip();
            problems.push(Problem {
                key: Some(path.to_owned()),
                value: Some(Value::String(n.as_str().to_owned())),
                problem: "integer out of range: TOML integers are 64-bit signed".into(),
                line,
                column,
            });
        }
        _ => {}
    }
}

/// 1-based line and character column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}
