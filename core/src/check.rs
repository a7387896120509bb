//! `switchyard check`: validate the config, load every enabled plugin
//! (calling `create` and `destroy`, never `start`), read the credentials it
//! names, and describe the result.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::app::Options;
use crate::config::{Config, Problem};
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
    // The path as given, as the refusal names it: not the absolute source.
    let _ = writeln!(
        out,
        "configuration {} is valid",
        options.config_path.display()
    );
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
    write_warnings(&mut out, &warnings);
    Ok(out)
}

/// The `warnings:` section of a report: `none`, or one `  - ` line each.
fn write_warnings(out: &mut String, warnings: &[String]) {
    if warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings: none");
        return;
    }
    let _ = writeln!(out, "\nwarnings:");
    for w in warnings {
        let _ = writeln!(out, "  - {w}");
    }
}

/// The problems of a refused configuration, one `  - ` line each (no
/// final newline), where in the file first when known.
pub fn problem_list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
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
        /// What the request answered, with its causes.
        reason: String,
    },
    /// The router would refuse the file: its problems, as `check` lists a
    /// file's own.
    #[error(
        "{} would be refused by the router at {url} (nothing was applied):\n{}",
        .path.display(),
        problem_list(.problems)
    )]
    Invalid {
        /// The candidate file, as given.
        path: PathBuf,
        /// The router's base URL.
        url: String,
        /// Every problem the router found.
        problems: Vec<Problem>,
    },
    /// The router wants an admin key: none was sent, or not a valid one.
    #[error("{message}; give the admin key with --key KEY or the SWITCHYARD_ADMIN_KEY environment variable")]
    Unauthorized {
        /// The router's words.
        message: String,
    },
    /// Any other answer than the impact (no admin access from this host, a
    /// router too old to preview a file).
    #[error("the router answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The router's error code and message, or its whole body when it
        /// has no error of the usual form.
        message: String,
    },
}

/// `switchyard check --config CANDIDATE --against URL`: asks the running
/// router what the candidate would change (`POST
/// /api/admin/reload?dry_run=true`) and renders the answer for a terminal.
pub async fn against(
    candidate: &Path,
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
        reason: crate::tools::with_causes(&e.without_url()),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(unreachable)?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status != 200 {
        return Err(refusal(candidate, base, status, &body));
    }
    Ok(render_impact(&body))
}

/// What a preview answered other than 200 means, from its `error` body.
fn refusal(candidate: &Path, base: &str, status: u16, body: &Value) -> AgainstError {
    let error = &body["error"];
    let message = error["message"].as_str().map(str::to_owned);
    let problems: Vec<Problem> = error["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| Problem::deserialize(entry).ok())
        .collect();
    match (status, message) {
        (422, _) if !problems.is_empty() => AgainstError::Invalid {
            path: candidate.to_path_buf(),
            url: base.trim_end_matches('/').to_owned(),
            problems,
        },
        (401, Some(message)) => AgainstError::Unauthorized { message },
        (_, Some(message)) => AgainstError::Refused {
            status,
            message: match error["code"].as_str() {
                Some(code) => format!("{code}: {message}"),
                None => message,
            },
        },
        (_, None) => AgainstError::Refused {
            status,
            message: match body {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            },
        },
    }
}

/// A preview's answer, a line per change (nothing for what does not
/// change), then its warnings as `check` prints a file's own.
pub fn render_impact(report: &Value) -> String {
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
    write_warnings(&mut out, &strings(&report["warnings"]));
    out
}

/// The strings of a JSON array (none for anything else).
fn strings(value: &Value) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(status: u16, body: Value) -> String {
        refusal(Path::new("new.toml"), "http://r/", status, &body).to_string()
    }

    #[test]
    fn a_refused_file_lists_its_problems_where_they_are() {
        let body = json!({"error": {"code": "invalid_config", "message": "refused", "errors": [
            {"key": "channels[0].slow_consumer", "value": "x", "problem": "must be one of drop_oldest, disconnect", "line": 18, "column": 1},
            {"key": null, "value": null, "problem": "expected `=`", "line": 3, "column": 7},
            {"key": "server.listen", "problem": "set by SWITCHYARD_LISTEN: not an address"},
        ]}});
        assert_eq!(
            refused(422, body),
            "new.toml would be refused by the router at http://r (nothing was applied):\n  \
             - line 18, column 1: channels[0].slow_consumer = \"x\": must be one of drop_oldest, disconnect\n  \
             - line 3, column 7: expected `=`\n  \
             - server.listen: set by SWITCHYARD_LISTEN: not an address"
        );
    }

    #[test]
    fn other_refusals_say_the_routers_message_plainly() {
        let body = json!({"error": {"code": "unauthorized", "message": "send an API key"}});
        assert_eq!(
            refused(401, body),
            "send an API key; give the admin key with --key KEY or the SWITCHYARD_ADMIN_KEY environment variable"
        );
        let body = json!({"error": {"code": "forbidden", "message": "only clients on this host"}});
        assert_eq!(
            refused(403, body),
            "the router answered 403: forbidden: only clients on this host"
        );
        assert_eq!(
            refused(502, Value::String("Bad Gateway".into())),
            "the router answered 502: Bad Gateway"
        );
    }

    #[test]
    fn an_impact_ends_with_the_warnings_as_check_prints_them() {
        let report = json!({"config_version": 4, "warnings": ["w1", "w2"]});
        assert!(
            render_impact(&report).ends_with("\n\nwarnings:\n  - w1\n  - w2\n"),
            "{}",
            render_impact(&report)
        );
        let report = json!({"config_version": 4, "warnings": []});
        assert!(render_impact(&report).ends_with("\n\nwarnings: none\n"));
    }
}
