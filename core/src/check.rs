//! `switchyard check`: validate the config, load every enabled plugin
//! (calling `create` and `destroy`, never `start`), read the credentials it
//! names, and describe the result.

use std::fmt::Write as _;

use crate::app::Options;
use crate::config::Config;
use crate::plugin_host::PluginHost;
use crate::reload::{self, ReloadError};

/// File descriptors kept aside for plugins, files and the API.
const FD_HEADROOM: u64 = 256;

/// A warning when `server.max_connections` cannot fit in the open-file limit.
pub fn fd_warning(config: &Config) -> Option<String> {
    let (soft, _) = rlimit::Resource::NOFILE.get().ok()?;
    let wanted = config.server.max_connections as u64 + FD_HEADROOM;
    (wanted > soft).then(|| {
        format!(
            "server.max_connections ({}) plus {FD_HEADROOM} of headroom exceeds the open-file limit ({soft}): connections past the limit will fail to open; raise `ulimit -n` or lower max_connections",
            config.server.max_connections
        )
    })
}

/// Runs the check; `Ok` holds the report to print, `Err` every problem.
pub fn run(options: &Options) -> Result<String, ReloadError> {
    let plugins = PluginHost::default();
    let prepared = reload::prepare(options, &plugins)?;
    // Read like start does, so `check` never calls valid what start refuses.
    let credentials = reload::load_credentials(&prepared.config)?;
    let mut out = String::new();
    let config = &prepared.config;
    let _ = writeln!(out, "configuration {} is valid", config.source.display());
    let _ = writeln!(out, "\nendpoints:");
    for ep in &config.endpoints {
        let _ = writeln!(out, "  {}  channels: {}", ep.path, ep.channels.join(", "));
    }
    let _ = writeln!(out, "\nplugins:");
    for p in &config.plugins {
        let state = if p.enabled {
            "loaded and created"
        } else {
            "disabled (validated only)"
        };
        let _ = writeln!(out, "  {}  {}  {state}", p.name, p.library.display());
    }
    let _ = writeln!(out, "\nevent registry:");
    for t in prepared.registry.types() {
        let mut line = format!(
            "  {:<32} channel {:<16} producer {}",
            t.name, t.channel, t.producer
        );
        if !t.aliases.is_empty() {
            let _ = write!(line, "  aliases {}", t.aliases.join(", "));
        }
        if let Some(d) = &t.deprecated {
            let _ = write!(line, "  DEPRECATED: {d}");
        }
        let _ = writeln!(out, "{line}");
    }
    let mut warnings = prepared.warnings.clone();
    warnings.extend(credentials.warnings);
    warnings.extend(fd_warning(config));
    let _ = writeln!(
        out,
        "\nwarnings: {}",
        if warnings.is_empty() { "none" } else { "" }
    );
    for w in &warnings {
        let _ = writeln!(out, "  - {w}");
    }
    Ok(out)
}

/// Why `switchyard check --against` could not tell what a file would do.
#[derive(Debug, thiserror::Error)]
pub enum AgainstError {
    /// The candidate file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The router did not answer.
    #[error("cannot reach the router at {url}: {reason}")]
    Unreachable {
        /// The preview URL.
        url: String,
        /// What the request answered.
        reason: String,
    },
    /// The router answered with an error (refused file, no admin access).
    #[error("the router answered {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its body, for the problems it lists.
        body: serde_json::Value,
    },
}

/// `switchyard check --config CANDIDATE --against URL`: asks the running
/// router what the candidate would change (`POST
/// /api/admin/reload?dry_run=true`) and renders the answer for a terminal.
pub async fn against(
    candidate: &std::path::Path,
    base: &str,
    key: Option<&str>,
) -> Result<String, AgainstError> {
    let text = std::fs::read_to_string(candidate).map_err(|source| AgainstError::Read {
        path: candidate.to_path_buf(),
        source,
    })?;
    let url = format!(
        "{}/api/admin/reload?dry_run=true",
        base.trim_end_matches('/')
    );
    let mut request = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/toml")
        .body(text);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let unreachable = |e: reqwest::Error| AgainstError::Unreachable {
        url: url.clone(),
        reason: e.to_string(),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.map_err(unreachable)?;
    if status != 200 {
        return Err(AgainstError::Refused { status, body });
    }
    Ok(render_impact(&body))
}

/// A preview's answer, a line per change (nothing for what does not change).
pub fn render_impact(report: &serde_json::Value) -> String {
    let impact = &report["impact"];
    let mut lines = Vec::new();
    for (label, key) in [
        ("channels added", "channels_added"),
        ("channels removed", "channels_removed"),
        ("types added", "types_added"),
        ("types removed", "types_removed"),
        ("endpoints added", "endpoints_added"),
        ("endpoints removed", "endpoints_removed"),
        ("types reaching no endpoint", "types_reaching_no_endpoint"),
    ] {
        listed(&mut lines, label, strings(&impact[key]));
    }
    let moved = impact["types_moved"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let text = |k: &str| m[k].as_str().unwrap_or("").to_owned();
            format!("{} ({} → {})", text("type"), text("from"), text("to"))
        })
        .collect();
    listed(&mut lines, "types moved", moved);
    let closed = &impact["connections_closed"];
    let count = |k: &str| closed[k].as_u64().unwrap_or(0);
    let (gone, withdrawn) = (count("endpoint_removed"), count("access_withdrawn"));
    if gone + withdrawn > 0 {
        lines.push(format!(
            "connections closed: {} (1001 endpoint removed: {gone}, 1008 access withdrawn: {withdrawn})",
            gone + withdrawn
        ));
    }
    let losing = impact["connections_losing_channel"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(channel, n)| format!("{channel} ({n})"))
        .collect();
    listed(&mut lines, "connections that stop receiving", losing);
    for (label, key) in [
        ("plugins started", "started"),
        ("plugins stopped", "stopped"),
        ("plugins restarted", "restarted"),
    ] {
        listed(&mut lines, label, strings(&impact["plugins"][key]));
    }
    listed(
        &mut lines,
        "needs a restart",
        strings(&report["restart_required"]),
    );
    if lines.is_empty() {
        lines.push("no change to channels, types, endpoints, connections or plugins".into());
    }
    let mut out = format!("against config_version {}:\n", report["config_version"]);
    for line in lines {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// The strings of a JSON array (none for anything else).
fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// `label: a, b` when there is anything to list.
fn listed(lines: &mut Vec<String>, label: &str, items: Vec<String>) {
    if !items.is_empty() {
        lines.push(format!("{label}: {}", items.join(", ")));
    }
}
