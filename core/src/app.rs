//! The running router's shared state: the router, the plugin host, the keys
//! in force and the record of reloads. Built once at start; every transport
//! holds an `Arc<App>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::auth::ApiKeys;
use crate::config::Problem;
use crate::plugin_host::{Plan, PluginHost};
use crate::router::Router;

/// How the router was started.
#[derive(Clone, Debug)]
pub struct Options {
    /// The config file.
    pub config_path: PathBuf,
    /// `--listen`, which fixes `server.listen` for the life of the process.
    pub listen: Option<SocketAddr>,
}

/// The outcome of the last reload, for `GET /api/admin/config`.
#[derive(Clone, Debug)]
pub struct ReloadRecord {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// Whether it was applied.
    pub applied: bool,
    /// Why it was refused.
    pub errors: Vec<Problem>,
}

/// Everything a request handler needs.
pub struct App {
    /// The router.
    pub router: Arc<Router>,
    /// The plugin host.
    pub plugins: PluginHost,
    /// How the process was started.
    pub options: Options,
    /// When the process started.
    pub started: Instant,
    /// API keys in force (re-read on every reload).
    pub keys: ArcSwap<ApiKeys>,
    /// The last reload's outcome.
    pub last_reload: Mutex<Option<ReloadRecord>>,
    /// Serializes reloads: they never run concurrently.
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    /// The first configuration's plugin instances, until they are started.
    pub(crate) unstarted: Mutex<Option<Plan>>,
}

impl App {
    /// Starts the first configuration's plugin instances (once).
    pub fn start_plugins(&self) {
        if let Some(plan) = self.unstarted.lock().take() {
            self.plugins.start_incoming(plan, &self.router);
        }
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}
