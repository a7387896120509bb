//! The running router's shared state: the router, the plugin host, the keys
//! in force and the record of reloads. Built once at start; every transport
//! holds an `Arc<App>`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::auth::jwt::Verifier;
use crate::auth::ApiKeys;
use crate::config::Problem;
use crate::connection::ConnRef;
use crate::log_limit::OncePer;
use crate::plugin_host::{Plan, PluginHost};
use crate::ratelimit::TokenBucket;
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
    /// The cluster engine, with `[cluster] engine = "redis"`.
    pub cluster: Option<crate::cluster::Cluster>,
    /// The plugin host.
    pub plugins: PluginHost,
    /// How the process was started.
    pub options: Options,
    /// When the process started.
    pub started: Instant,
    /// API keys in force (re-read on every reload).
    pub keys: ArcSwap<ApiKeys>,
    /// JWT keys and rules in force (key files re-read on every reload).
    pub verifier: ArcSwap<Verifier>,
    /// The TLS acceptor when `server.tls` is set (files re-read on every reload).
    pub tls: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// Set when a graceful shutdown begins: new requests get 503.
    pub shutting_down: AtomicBool,
    /// New connections past the shutdown check and not yet in the router
    /// (`server::admission::Opening`): the shutdown waits for them too.
    pub(crate) opening: AtomicUsize,
    /// Publish rate limits, per API key name (or client IP without auth).
    pub publish_buckets: Mutex<HashMap<String, TokenBucket>>,
    /// The last reload's outcome.
    pub last_reload: Mutex<Option<ReloadRecord>>,
    /// When the first configuration was read (see `runtime`'s watcher).
    pub(crate) config_read_at: std::time::SystemTime,
    /// Serializes reloads: they never run concurrently.
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
    /// The first configuration's plugin instances, until they are started.
    pub(crate) unstarted: Mutex<Option<Plan>>,
    /// Refused `Origin`s are logged at most once a minute each.
    pub refused_origins: OncePer,
    /// The warnings of the configuration in force that were logged, so a
    /// reload logs only the ones it adds.
    pub(crate) logged_warnings: Mutex<BTreeSet<String>>,
}

/// Closes `conn` as a graceful shutdown does: 1012, once its queue is
/// written.
pub fn close_for_shutdown(conn: &ConnRef) {
    conn.close(1012, "service restart");
}

/// Most publish buckets kept; past it, the idle ones are forgotten.
const MAX_PUBLISH_BUCKETS: usize = 10_000;

impl App {
    /// Whether a graceful shutdown is under way.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Whether a graceful shutdown still has connections to see closed:
    /// open ones, and new ones on their way in.
    pub fn has_connections_left(&self) -> bool {
        self.router.connection_count() > 0 || self.opening.load(Ordering::SeqCst) > 0
    }

    /// Takes one publish token for `who`; `Err` holds the seconds to wait.
    pub fn publish_allowed(&self, who: &str) -> Result<(), u64> {
        let limit = self.router.snapshot().config.server.publish_rate_limit;
        let mut buckets = self.publish_buckets.lock();
        if buckets.len() >= MAX_PUBLISH_BUCKETS && !buckets.contains_key(who) {
            buckets.retain(|_, b| !b.is_full(limit.requests_per_s, limit.burst));
        }
        let bucket = buckets
            .entry(who.to_owned())
            .or_insert_with(|| TokenBucket::full(limit.burst));
        if bucket.take(limit.requests_per_s, limit.burst) {
            Ok(())
        } else {
            Err(bucket.wait_s(limit.requests_per_s))
        }
    }

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
