//! Builds a [`Config`] from the merged key tree, checking every section.
//!
//! Static checks only: whatever needs the plugins' own declarations (type
//! conflicts, whether an endpoint's channel exists) is the registry's, once
//! the plugins are loaded.

mod auth;
mod catalogue;
mod operation;
mod plugins;
mod server;

use std::path::Path;

use serde_json::{Map, Value};

use super::model::*;
use super::read::{Reader, Tab};

use auth::auth;
use catalogue::{channels, endpoints, event_types};
use operation::{cluster, log, reload};
use plugins::{plugins, routes};
use server::server;

/// Reads the whole tree; problems go to the reader, warnings to `warnings`.
pub(super) fn config(
    r: &mut Reader<'_>,
    root: &Map<String, Value>,
    source: &Path,
    warnings: &mut Vec<String>,
) -> Config {
    let folder = source.parent().unwrap_or(Path::new("/"));
    let mut top = Tab::root(root);
    let plugin_dir = r.string_or(&mut top, "plugin_dir", "target/release");
    if plugin_dir.is_empty() {
        r.problem(
            "plugin_dir",
            Some(&Value::from("")),
            "must not be empty; use \".\" for the config file's folder",
        );
    }
    let plugin_dir = folder.join(plugin_dir);
    let server = server(r, &mut top, folder, warnings);
    let auth = auth(r, &mut top, folder, &server, warnings);
    let log = log(r, &mut top);
    let reload = reload(r, &mut top);
    let cluster = cluster(r, &mut top, warnings);
    let channels = channels(r, &mut top, &auth, warnings);
    let endpoints = endpoints(r, &mut top, &auth, warnings);
    let event_types = event_types(r, &mut top);
    let plugins = plugins(r, &mut top, folder, &plugin_dir);
    let routes = routes(r, &mut top, &plugins, server.max_pattern_bytes, warnings);
    r.finish(top);
    Config {
        source: source.to_path_buf(),
        plugin_dir,
        server,
        auth,
        log,
        reload,
        cluster,
        channels,
        endpoints,
        event_types,
        plugins,
        routes,
    }
}
