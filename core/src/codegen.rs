//! `switchyard codegen typescript [--config PATH] [--out FILE]`: the
//! declarations `GET /api/websocket/types.ts` serves, from a file rather
//! than a running router, so a client build can generate them offline.
//! The config is read as `switchyard check` reads it, plugins loaded, so
//! plugin-declared types are included exactly as a router on that file
//! would have them.

use std::path::Path;

use anyhow::Context;
use switchyard::app::Options;
use switchyard::plugin_host::PluginHost;
use switchyard::reload::{self, ReloadError};
use switchyard_engine::contracts::typescript;

/// The declarations of the configuration `options` names.
pub fn typescript(options: &Options) -> Result<String, ReloadError> {
    let plugins = PluginHost::default();
    let prepared = reload::prepare(options, &plugins)?;
    Ok(typescript::declarations(
        &prepared.config,
        &prepared.registry,
    ))
}

/// Writes `text` to `out`, creating its missing folders (a client build
/// points `--out` into a source tree that may not exist yet), or to stdout
/// without one.
pub fn emit(text: &str, out: Option<&Path>) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(folder).with_context(|| {
                    format!(
                        "cannot create {} to write {}",
                        folder.display(),
                        path.display()
                    )
                })?;
            }
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write to stdout")
        }
    }
}
