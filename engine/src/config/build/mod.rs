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

use std::collections::BTreeMap;
use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{json, Map, Value};
use switchyard_plugin_api::{EventTypeDecl, Field, FieldType};

use super::model::*;
use super::read::{suggestion, Reader, Tab};
use crate::names::{is_alias, is_channel_name, is_type_name, Pattern};
use switchyard_plugin_api::payload::check_declaration;

use auth::*;
use catalogue::*;
use operation::*;
use plugins::*;
use server::*;

/// The channel, and type domain, that the router keeps for its control
/// messages.
const CONTROL: &str = "connection";

/// serde_json refuses nesting deeper than this whatever the router allows,
/// so a larger `max_json_depth` would fail with a different error.
const SERDE_JSON_MAX_DEPTH: u64 = 127;

/// Paths the HTTP API answers; an endpoint there would never be reached.
const RESERVED_PATHS: [&str; 3] = ["/health", "/metrics", "/api"];

/// The `producer` of types declared in `[[event_types]]`, so no plugin
/// instance may take that name.
const CONFIG_PRODUCER: &str = "config";

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
