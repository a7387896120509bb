//! Building a configuration and swapping it in: at start, and on every
//! reload (file change, `SIGHUP`, `POST /api/admin/reload`).
//!
//! Order matters (docs/configuration.md, "Hot reload"): load and validate
//! the file; load plugin libraries and `create` every added or changed
//! instance; merge the registry — any failure refuses the reload whole and
//! the old config keeps serving. Then stop the outgoing instances (their
//! last events still go out under the old config), swap the snapshot, start
//! the new instances.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::Utc;
use parking_lot::Mutex;
use serde_json::json;

use crate::app::{App, Options, ReloadRecord};
use crate::auth::jwt::Verifier;
use crate::auth::ApiKeys;
use crate::cluster::sequencer::RedisSequencer;
use crate::cluster::Cluster;
use crate::config::{
    self, AuthConfig, AuthMode, ClusterEngine, Config, ConfigError, Loaded, Problem,
};
use crate::log_limit::OncePer;
use crate::plugin_host::{Plan, PluginChanges, PluginHost};
use crate::registry::Registry;
use crate::router::{Impact, Router, Snapshot};

/// A configuration that was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error("{0}")]
    Read(String),
    /// Every problem found.
    #[error("{} problem(s) in the configuration", .0.len())]
    Invalid(Vec<Problem>),
    /// A change of the watched file would close every open connection
    /// (their endpoints are gone): most likely a write still in progress.
    #[error(
        "the changed file would close all {open} open connection(s), as their endpoints are gone; \
         not applied: if that is meant, reload with SIGHUP or POST /api/admin/reload"
    )]
    ClosesEveryConnection {
        /// How many connections are open.
        open: usize,
    },
    /// The cluster engine could not start (at start only).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The watched file changed: nobody may have meant it yet, so a change
    /// that would close every connection is refused.
    FileChange,
    /// An operator: `SIGHUP` or `POST /api/admin/reload`.
    Operator,
}

impl ReloadError {
    /// Every problem, for the 422 body and the log.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ReloadError::Read(message) => vec![Problem {
                key: None,
                value: None,
                problem: message.clone(),
                line: None,
                column: None,
            }],
            ReloadError::Invalid(problems) => problems.clone(),
            ReloadError::Cluster(_) => vec![Problem {
                key: Some("cluster".into()),
                value: None,
                problem: self.to_string(),
                line: None,
                column: None,
            }],
            ReloadError::ClosesEveryConnection { .. } => vec![Problem {
                key: Some("endpoints".into()),
                value: None,
                problem: self.to_string(),
                line: None,
                column: None,
            }],
        }
    }
}

impl From<ConfigError> for ReloadError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid(problems) => ReloadError::Invalid(problems),
            other => ReloadError::Read(other.to_string()),
        }
    }
}

/// What an applied reload reports.
#[derive(Debug)]
pub struct Report {
    /// The new `config_version` (applied), or the one still in force (a
    /// preview).
    pub config_version: u64,
    /// Whether it was applied (`false`: a preview).
    pub applied: bool,
    /// Keys that changed but need a restart.
    pub restart_required: Vec<String>,
    /// Warnings of the new configuration.
    pub warnings: Vec<String>,
    /// What it does (or would do) to channels, types, endpoints and
    /// connections.
    pub impact: Impact,
    /// What it does (or would do) to plugin instances.
    pub plugins: PluginChanges,
}

impl Report {
    /// The `POST /api/admin/reload` body.
    pub fn to_json(&self) -> serde_json::Value {
        let mut impact = serde_json::to_value(&self.impact).expect("an impact serializes");
        impact["plugins"] = serde_json::to_value(&self.plugins).expect("changes serialize");
        json!({
            "config_version": self.config_version,
            "applied": self.applied,
            "restart_required": self.restart_required,
            "warnings": self.warnings,
            "impact": impact,
        })
    }
}

/// A validated configuration with its registry and planned instances.
pub struct Prepared {
    /// The configuration.
    pub config: Config,
    /// Its registry.
    pub registry: Registry,
    /// Config and registry warnings.
    pub warnings: Vec<String>,
    /// The instances to start.
    pub plan: Plan,
    /// Keys set by environment variables.
    pub overridden_keys: Vec<String>,
    /// `server.listen` as the file (or environment) has it, before `--listen`.
    pub configured_listen: std::net::SocketAddr,
    /// When the file was read (just before): a change saved after it, and
    /// before the file is watched, is reloaded once the watch begins.
    pub read_at: std::time::SystemTime,
}

/// Loads, validates and plans a configuration; starts nothing. Every
/// problem is reported at once: the file's, the plugins' and the registry's.
pub fn prepare(options: &Options, plugins: &PluginHost) -> Result<Prepared, ReloadError> {
    let read_at = std::time::SystemTime::now();
    let loaded = config::load_all(&options.config_path)?;
    prepare_loaded(options, plugins, loaded, read_at)
}

/// [`prepare`] for a candidate's text instead of the file on disk, read as
/// if it were that file.
pub fn prepare_candidate(
    options: &Options,
    plugins: &PluginHost,
    text: &str,
) -> Result<Prepared, ReloadError> {
    let loaded = config::load_candidate(text, &options.config_path)?;
    prepare_loaded(options, plugins, loaded, std::time::SystemTime::now())
}

fn prepare_loaded(
    options: &Options,
    plugins: &PluginHost,
    (loaded, mut problems): (Loaded, Vec<Problem>),
    read_at: std::time::SystemTime,
) -> Result<Prepared, ReloadError> {
    let Loaded {
        mut config,
        mut warnings,
        overridden_keys,
    } = loaded;
    let configured_listen = config.server.listen;
    if let Some(listen) = options.listen {
        config.server.listen = listen;
    }
    let plan = plugins.plan(&config);
    // Without every plugin's types, the registry would report channels and
    // types those plugins provide as missing: noise, not problems.
    let registry = match &plan {
        Ok(plan) => Some(Registry::build(&config, plan.instance_types())),
        Err(plugin_problems) => {
            problems.extend(plugin_problems.iter().cloned());
            None
        }
    };
    match registry {
        Some(Ok(built)) if problems.is_empty() => {
            warnings.extend(built.warnings);
            Ok(Prepared {
                config,
                registry: built.registry,
                warnings,
                plan: plan.unwrap_or_default(),
                overridden_keys,
                configured_listen,
                read_at,
            })
        }
        Some(Err(registry_problems)) => {
            problems.extend(registry_problems);
            Err(ReloadError::Invalid(problems))
        }
        _ => Err(ReloadError::Invalid(problems)),
    }
}

/// What a configuration's key material reads into.
pub struct Credentials {
    keys: ApiKeys,
    verifier: Verifier,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Credentials that are missing without stopping the configuration
    /// (an unset variable), one sentence each.
    pub warnings: Vec<String>,
}

/// The credentials a configuration names — API keys, JWT keys, the TLS
/// certificate, the Redis URL and password — read now from their variables
/// and files. Start, reload and
/// `switchyard check` all read them here, so `check` refuses exactly what
/// start would.
pub fn load_credentials(config: &Config) -> Result<Credentials, ReloadError> {
    let problem = |key: &str, why: String| Problem {
        key: Some(key.into()),
        value: None,
        problem: why,
        line: None,
        column: None,
    };
    let mut warnings = Vec::new();
    let keys = ApiKeys::load(&config.auth);
    let verifier = match Verifier::load(&config.auth) {
        // Out of the box (`optional`, no secret set) the router still serves
        // anonymous clients; a presented token is then refused, never trusted.
        Err(e) => match (config.auth.mode, e.unset_default_secret()) {
            (AuthMode::Optional, Some(unset)) => {
                warnings.push(format!(
                    "{unset}: no JWT key, so only anonymous connections are possible"
                ));
                Ok(Verifier::default())
            }
            _ => Err(e),
        },
        loaded => loaded,
    };
    if let Ok(keys) = &keys {
        warnings.extend(keyless_warning(&config.auth, keys));
    }
    let tls = config
        .server
        .tls
        .as_ref()
        .map(crate::tls::acceptor)
        .transpose();
    let cluster = match config.cluster.engine {
        ClusterEngine::Redis => crate::cluster::check(&config.cluster),
        ClusterEngine::Memory => Ok(()),
    };
    match (keys, verifier, tls, cluster) {
        (Ok(keys), Ok(verifier), Ok(tls), Ok(())) => Ok(Credentials {
            keys,
            verifier,
            tls,
            warnings,
        }),
        (keys, verifier, tls, cluster) => {
            let mut problems = Vec::new();
            if let Err(e) = keys {
                problems.push(problem(e.key, e.to_string()));
            }
            if let Err(e) = verifier {
                // Its message is "key: why", the key naming the entry.
                let text = e.to_string();
                let (key, why) = text.split_once(": ").unwrap_or(("auth.jwt", &text));
                problems.push(problem(key, why.to_owned()));
            }
            if let Err(e) = tls {
                problems.push(problem("server.tls", e.to_string()));
            }
            if let Err(e) = cluster {
                problems.push(e.problem());
            }
            Err(ReloadError::Invalid(problems))
        }
    }
}

/// The warning when auth is on and no API key is configured.
fn keyless_warning(auth: &AuthConfig, keys: &ApiKeys) -> Option<String> {
    let keyless = keys.publish.is_empty() && keys.admin.is_empty();
    (auth.mode != AuthMode::None && keyless).then(|| {
        let source = match (&auth.api_keys_file, &auth.api_keys_env) {
            (Some(file), _) => format!("{} holds none", file.display()),
            (None, Some(var)) if std::env::var_os(var).is_none() => format!("{var} is not set"),
            (None, Some(var)) => format!("{var} holds none"),
            (None, None) => "auth.api_keys_env is empty".to_owned(),
        };
        format!(
            "no API key is configured ({source}): publish and admin routes answer only clients on this host"
        )
    })
}

/// Builds the app from a configuration prepared with `plugins`, joining
/// the cluster first with `[cluster] engine = "redis"`. Its plugin
/// instances are started by [`App::start_plugins`] once the listener is
/// bound, so that nothing they do at start (a health check of the router
/// itself, say) finds the port closed.
pub async fn start(
    options: Options,
    plugins: PluginHost,
    prepared: Prepared,
) -> Result<Arc<App>, ReloadError> {
    let credentials = load_credentials(&prepared.config)?;
    for warning in &credentials.warnings {
        tracing::warn!("{warning}");
    }
    // The caller has logged the configuration's own warnings.
    let logged = prepared
        .warnings
        .iter()
        .chain(&credentials.warnings)
        .cloned()
        .collect();
    let Prepared {
        config,
        registry,
        warnings,
        plan,
        read_at,
        ..
    } = prepared;
    let snapshot = Snapshot {
        version: 1,
        loaded_at: Utc::now(),
        config: Arc::new(config),
        registry,
        warnings,
        sinks: plan.sinks(),
    };
    let (router, cluster) = match snapshot.config.cluster.engine {
        ClusterEngine::Memory => (Arc::new(Router::new(snapshot)), None),
        ClusterEngine::Redis => {
            let cluster = Cluster::connect(&snapshot.config).await?;
            let sequencer = RedisSequencer::new(cluster.shared.clone());
            let router = Arc::new(Router::with_sequencer(snapshot, Arc::new(sequencer)));
            crate::cluster::feed::start(cluster.shared.clone(), &router).await;
            (router, Some(cluster))
        }
    };
    let app = Arc::new(App {
        router,
        cluster,
        plugins,
        options,
        started: Instant::now(),
        keys: ArcSwap::from_pointee(credentials.keys),
        verifier: ArcSwap::from_pointee(credentials.verifier),
        tls: arc_swap::ArcSwapOption::from(credentials.tls.map(Arc::new)),
        shutting_down: Default::default(),
        opening: Default::default(),
        config_read_at: read_at,
        publish_buckets: Default::default(),
        last_reload: Mutex::new(None),
        reload_lock: tokio::sync::Mutex::new(()),
        unstarted: Mutex::new(Some(plan)),
        refused_origins: OncePer::new(Duration::from_secs(60)),
        logged_warnings: Mutex::new(logged),
    });
    Ok(app)
}

/// Reloads `config.toml` now, as an operator asked. Reloads never overlap.
pub async fn reload(app: &Arc<App>) -> Result<Report, ReloadError> {
    reload_by(app, Trigger::Operator).await
}

/// Reloads `config.toml` now for `trigger`. Reloads never overlap.
pub async fn reload_by(app: &Arc<App>, trigger: Trigger) -> Result<Report, ReloadError> {
    let _serial = app.reload_lock.lock().await;
    let started = Instant::now();
    let worker = app.clone();
    let result = tokio::task::spawn_blocking(move || apply(&worker, trigger))
        .await
        .unwrap_or_else(|e| Err(ReloadError::Read(format!("reload task failed: {e}"))));
    let record = ReloadRecord {
        at: Utc::now(),
        applied: result.is_ok(),
        errors: result
            .as_ref()
            .err()
            .map(ReloadError::problems)
            .unwrap_or_default(),
    };
    *app.last_reload.lock() = Some(record);
    app.router.metrics().reload(result.is_ok());
    match &result {
        Ok(report) => tracing::info!(
            config_version = report.config_version,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "configuration reloaded"
        ),
        Err(e @ ReloadError::ClosesEveryConnection { .. }) => {
            tracing::warn!("reload refused: {e}");
        }
        Err(e) => {
            for p in e.problems() {
                tracing::error!("reload refused: {p}");
            }
        }
    }
    result
}

fn apply(app: &App, trigger: Trigger) -> Result<Report, ReloadError> {
    let old = app.router.snapshot();
    let mut prepared = prepare(&app.options, &app.plugins)?;
    let credentials = load_credentials(&prepared.config)?;
    if trigger == Trigger::FileChange {
        refuse_closing_everything(&app.router, &prepared.config)?;
    }
    let restart_required = keep_fixed(&old.config, &mut prepared, &app.options);
    let Prepared {
        config,
        registry,
        warnings,
        plan,
        ..
    } = prepared;
    let version = old.version + 1;
    let next = Snapshot {
        version,
        loaded_at: Utc::now(),
        config: Arc::new(config),
        registry,
        warnings: warnings.clone(),
        sinks: plan.sinks(),
    };
    let impact = app.router.impact(&next);
    let plugins = plan.changes();
    tracing::info!(
        trigger = ?trigger,
        impact = %serde_json::to_string(&impact).unwrap_or_default(),
        plugins = %serde_json::to_string(&plugins).unwrap_or_default(),
        "applying the configuration"
    );
    app.plugins.stop_outgoing(&plan, &app.router);
    let applied = app.router.apply(next);
    if applied.closed > 0 {
        tracing::info!(
            closed = applied.closed,
            "closed connections of removed endpoints"
        );
    }
    app.keys.store(Arc::new(credentials.keys));
    app.verifier.store(Arc::new(credentials.verifier));
    app.tls.store(credentials.tls.map(Arc::new));
    app.plugins.start_incoming(plan, &app.router);
    log_new_warnings(app, warnings.iter().chain(&credentials.warnings));
    Ok(Report {
        config_version: version,
        applied: true,
        restart_required,
        warnings,
        impact,
        plugins,
    })
}

/// What reloading would do, without doing it: the file on disk, or
/// `candidate`'s text read as if it were that file. Refuses what a reload
/// would refuse, with the same problems.
pub async fn preview(app: &Arc<App>, candidate: Option<String>) -> Result<Report, ReloadError> {
    // Not in the middle of a reload: it would compare against instances
    // half stopped, half started.
    let _serial = app.reload_lock.lock().await;
    let worker = app.clone();
    tokio::task::spawn_blocking(move || {
        let app = &worker;
        let old = app.router.snapshot();
        let mut prepared = match &candidate {
            Some(text) => prepare_candidate(&app.options, &app.plugins, text)?,
            None => prepare(&app.options, &app.plugins)?,
        };
        load_credentials(&prepared.config)?;
        let restart_required = keep_fixed(&old.config, &mut prepared, &app.options);
        let plugins = prepared.plan.changes();
        let next = Snapshot {
            version: old.version,
            loaded_at: Utc::now(),
            config: Arc::new(prepared.config),
            registry: prepared.registry,
            warnings: prepared.warnings.clone(),
            sinks: prepared.plan.sinks(),
        };
        Ok(Report {
            config_version: old.version,
            applied: false,
            restart_required,
            warnings: prepared.warnings,
            impact: app.router.impact(&next),
            plugins,
        })
    })
    .await
    .unwrap_or_else(|e| Err(ReloadError::Read(format!("preview task failed: {e}"))))
}

/// Refuses a configuration under which no open connection keeps its
/// endpoint (a file emptied or cut short by a write in progress looks like
/// that), when at least one connection is open.
fn refuse_closing_everything(router: &Router, config: &Config) -> Result<(), ReloadError> {
    let open = router.connections();
    let kept = open
        .iter()
        .any(|(conn, _)| config.endpoint(&conn.endpoint).is_some());
    if open.is_empty() || kept {
        Ok(())
    } else {
        Err(ReloadError::ClosesEveryConnection { open: open.len() })
    }
}

/// Logs the warnings of the configuration now in force that were not in
/// force before, so that reloads (watcher, `SIGHUP`) do not repeat a
/// warning every time; one that goes away and comes back is logged again.
fn log_new_warnings<'a>(app: &App, current: impl Iterator<Item = &'a String>) {
    let current: BTreeSet<String> = current.cloned().collect();
    let mut logged = app.logged_warnings.lock();
    for warning in current.difference(&logged) {
        tracing::warn!("{warning}");
    }
    *logged = current;
}

/// Keeps what cannot change live and names it in `restart_required`.
fn keep_fixed(old: &Config, new: &mut Prepared, options: &Options) -> Vec<String> {
    let mut restart = Vec::new();
    if let Some(fixed) = options.listen {
        if new.configured_listen != fixed {
            tracing::info!(
                configured = %new.configured_listen,
                listening = %fixed,
                "server.listen is fixed by --listen; the value in the file is ignored"
            );
        }
    } else if new.config.server.listen != old.server.listen {
        restart.push("server.listen".to_owned());
        new.config.server.listen = old.server.listen;
    }
    if new.config.cluster != old.cluster {
        restart.push("cluster".to_owned());
        new.config.cluster = old.cluster.clone();
    }
    for key in &new.overridden_keys {
        tracing::debug!(key = %key, "key set by an environment variable");
    }
    restart
}
