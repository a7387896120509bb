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
