//! `[[plugins]]` and `[[routes]]`: plugin instances and what sinks receive.

use std::collections::BTreeMap;
use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::model::*;
use crate::config::read::{suggestion, Reader, Tab};
use crate::names::Pattern;

use super::catalogue::unique;

/// The `producer` of types declared in `[[event_types]]`, so no plugin
/// instance may take that name.
const CONFIG_PRODUCER: &str = "config";

/// A plugin instance name: it appears in metrics labels, `/health` keys and
/// as a type's `producer`, so it is kept to a plain, unambiguous form.
fn is_instance_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

pub(super) fn plugins(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    folder: &Path,
    plugin_dir: &Path,
) -> Vec<PluginConfig> {
    let mut out = Vec::new();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for mut t in r.tables(top, "plugins") {
        let name = r.required(&mut t, "name").unwrap_or_default();
        let key = t.key("name");
        if !name.is_empty() {
            if name == CONFIG_PRODUCER {
                r.problem(
                    &key,
                    Some(&Value::from(name.as_str())),
                    "is reserved: `config` is the producer of types declared in [[event_types]]",
                );
            } else if !is_instance_name(&name) {
                r.problem(
                    &key,
                    Some(&Value::from(name.as_str())),
                    "must be a lower-case letter, then lower-case letters, digits, _ or -, \
                     at most 64 bytes",
                );
            } else {
                unique(r, &mut first, &key, &name, t.path(), "plugin instance");
            }
        }
        let written = r.required(&mut t, "library");
        let library = written
            .as_deref()
            .map(|lib| library_path(folder, plugin_dir, lib))
            .unwrap_or_default();
        let library_as_written = written.unwrap_or_default();
        let enabled = r.boolean(&mut t, "enabled", true);
        let stop_timeout_s = r.uint(&mut t, "stop_timeout_s", 5, 1, u64::MAX);
        // Taken whole and never typed: it belongs to the plugin, which
        // validates it in `create`.
        let config = match r.raw(&mut t, "config") {
            None => json!({}),
            Some(value @ Value::Object(_)) => value.clone(),
            Some(other) => {
                r.problem(
                    &t.key("config"),
                    Some(other),
                    "must be a table ([plugins.config]) of the plugin's own keys",
                );
                json!({})
            }
        };
        r.finish(t);
        out.push(PluginConfig {
            name,
            library,
            library_as_written,
            enabled,
            stop_timeout_s,
            config,
        });
    }
    out
}

/// Where a plugin's library is: a bare stem is looked up in `plugin_dir`
/// with the platform's prefix and extension; anything that looks like a
/// path is taken against the config file's folder.
fn library_path(folder: &Path, plugin_dir: &Path, library: &str) -> PathBuf {
    let is_path = library.contains('/')
        || library.contains(std::path::MAIN_SEPARATOR)
        || library.ends_with(DLL_SUFFIX);
    if is_path {
        folder.join(library)
    } else {
        plugin_dir.join(format!("{DLL_PREFIX}{library}{DLL_SUFFIX}"))
    }
}

pub(super) fn routes(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    plugins: &[PluginConfig],
    max_pattern_bytes: usize,
    warnings: &mut Vec<String>,
) -> Vec<RouteConfig> {
    let mut out = Vec::new();
    for mut t in r.tables(top, "routes") {
        let sink = r.required(&mut t, "sink").unwrap_or_default();
        if !sink.is_empty() {
            match plugins.iter().find(|p| p.name == sink) {
                Some(plugin) if !plugin.enabled => warnings.push(format!(
                    "{}: sink {sink} is disabled, so these events go nowhere",
                    t.path()
                )),
                Some(_) => {}
                None => {
                    let hint = suggestion(&sink, plugins.iter().map(|p| p.name.as_str()));
                    let text = format!("names no [[plugins]] instance{hint}");
                    r.problem(&t.key("sink"), Some(&Value::from(sink.as_str())), text);
                }
            }
        }
        let listed = r.raw(&mut t, "events");
        let mut events = Vec::new();
        for (key, pattern) in r.strings(&mut t, "events") {
            match Pattern::parse(&pattern, max_pattern_bytes) {
                Ok(_) => events.push(pattern),
                Err(e) => r.problem(&key, Some(&Value::from(pattern.as_str())), e.to_string()),
            }
        }
        match listed {
            None if t.is_table() => r.problem(
                &t.key("events"),
                None,
                "is required: the patterns routed to the sink, such as [\"alert.*\"]",
            ),
            Some(Value::Array(items)) if items.is_empty() => r.problem(
                &t.key("events"),
                Some(&json!([])),
                "must list at least one pattern, such as \"alert.*\"",
            ),
            _ => {}
        }
        r.finish(t);
        out.push(RouteConfig { sink, events });
    }
    out
}
