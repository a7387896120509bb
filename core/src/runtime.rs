//! Running a started [`App`]: bind the listener, watch the config file,
//! serve, and shut down gracefully.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::app::App;
use crate::reload;

/// A router serving on a socket.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The app it serves.
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// Binds `server.listen` and starts serving, with the config file watched.
pub async fn bind(app: Arc<App>) -> std::io::Result<Running> {
    let addr = app.router.snapshot().config.server.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let addr = listener.local_addr()?;
    let lanes = crate::server::Lanes::configured()?;
    tracing::debug!(lanes = lanes.count(), "connection lanes started");
    let (stop, mut stopped) = watch::channel(false);
    let stopped = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    // Held before the first request is served: a reload (the admin API, a
    // file change) planned while the plugins start would not see them and
    // would start each a second time, so it waits for them.
    let serial = app.reload_lock.lock().await;
    let server = tokio::spawn(crate::server::serve(app.clone(), listener, lanes, stopped));
    // Watched before the plugins start, so that an edit saved meanwhile is
    // not missed.
    let watcher = watch_config(app.clone());
    let starter = app.clone();
    let _ = tokio::task::spawn_blocking(move || starter.start_plugins()).await;
    drop(serial);
    tokio::spawn(supervise(Arc::downgrade(&app)));
    tokio::spawn(ring_clock(Arc::downgrade(&app)));
    // Which scheme clients must use is the first thing to check when none
    // can connect: say it.
    let scheme = if app.tls.load().is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, %scheme, config = %app.options.config_path.display(), "switchyard listening");
    Ok(Running {
        addr,
        app,
        stop,
        server,
        _watcher: watcher,
    })
}

impl Running {
    /// Shuts down gracefully: new requests and upgrades get 503
    /// `shutting_down`; every connection's queue is flushed and the
    /// connection closed with 1012 (for at most `server.shutdown_timeout_s`);
    /// then plugins stop (producers first, then sinks, each drained into
    /// for at most `server.shutdown_timeout_s` again) and the listener closes.
    pub async fn shutdown(self) {
        self.app
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let timeout =
            Duration::from_secs(self.app.router.snapshot().config.server.shutdown_timeout_s);
        for (conn, _) in self.app.router.connections() {
            crate::app::close_for_shutdown(&conn);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while self.app.has_connections_left() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Held off: a reload or a restart of a failed instance meeting
        // `stop_all` could start an instance that nothing then stops.
        let _serial = self.app.reload_lock.lock().await;
        let app = self.app.clone();
        let _ = tokio::task::spawn_blocking(move || app.plugins.stop_all(&app.router)).await;
        let _ = self.stop.send(true);
        let _ = self.server.await;
    }
}

/// Runs until SIGTERM or SIGINT, reloading on SIGHUP.
///
/// The signals are taken before the listener is bound: the router serves
/// from the moment it binds, and a SIGTERM that came before the handler
/// would kill it on the spot, its connections cut without their 1012.
pub async fn run(app: Arc<App>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let running = bind(app.clone()).await?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                // Not awaited here: a SIGTERM during a long reload (a
                // plugin starting, a removed sink draining) is acted on at
                // once; the shutdown waits for the reload before it stops
                // the plugins.
                let app = app.clone();
                tokio::spawn(async move { reload::reload(&app).await });
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}

/// How often the connections' clock is rung: its alarms are in whole
/// seconds, so they ring at most this much after their second.
const RING_EVERY: Duration = Duration::from_millis(250);

/// Rings the router's connection clock (pings, heartbeat and token-expiry
/// closes, close deadlines) for as long as the app lives.
async fn ring_clock(app: std::sync::Weak<App>) {
    let mut tick = tokio::time::interval(RING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        app.router.clock().ring(std::time::Instant::now());
    }
}

/// How often failed plugin instances are looked at for a restart.
const SUPERVISE_EVERY: Duration = Duration::from_millis(250);

/// Restarts failed plugin instances with backoff, never during a reload.
async fn supervise(app: std::sync::Weak<App>) {
    let mut tick = tokio::time::interval(SUPERVISE_EVERY);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        let _serial = app.reload_lock.lock().await;
        let worker = app.clone();
        let _ =
            tokio::task::spawn_blocking(move || worker.plugins.restart_due(&worker.router)).await;
    }
}

/// Watches the config file's folder (editors save by rename, ConfigMaps swap
/// symlinks) and reloads after changes settle.
fn watch_config(app: Arc<App>) -> Option<notify::RecommendedWatcher> {
    let path = absolute(&app.options.config_path);
    let folder = path.parent()?.to_owned();
    let name = path.file_name()?.to_owned();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let missed = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if is_config_change(&event, &name) {
                let _ = tx.send(());
            }
        }
    })
    .map_err(|e| {
        tracing::warn!("cannot watch the config file: {e}; reload with SIGHUP or the admin API")
    })
    .ok()?;
    if let Err(e) = watcher.watch(&folder, RecursiveMode::NonRecursive) {
        tracing::warn!(
            "cannot watch {}: {e}; reload with SIGHUP or the admin API",
            folder.display()
        );
        return None;
    }
    // Saved after the first read and before this watch began: no event
    // told of it, so it is reloaded as if one had.
    if changed_since(&path, app.config_read_at) {
        let _ = missed.send(());
    }
    let weak = Arc::downgrade(&app);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let Some(settings) = weak.upgrade().map(|app| reload_settings(&app)) else {
                return;
            };
            // Editors, `>` and `cp` write in steps: wait until the file has
            // been quiet for the whole debounce, so a half-written file is
            // never read.
            while let Ok(Some(())) = tokio::time::timeout(settings.debounce, rx.recv()).await {}
            let Some(app) = weak.upgrade() else { return };
            if !reload_settings(&app).watch {
                tracing::debug!("config file changed; reload.watch is false: not reloading");
                continue;
            }
            tracing::info!("config file changed: reloading");
            let _ = reload::reload_by(&app, reload::Trigger::FileChange).await;
        }
    });
    Some(watcher)
}

/// `[reload]` of the configuration in force.
fn reload_settings(app: &App) -> crate::config::ReloadConfig {
    app.router.snapshot().config.reload.clone()
}

/// Whether a file event changes the config: a write, create, rename or
/// removal of the file itself, or of Kubernetes' `..data` symlink that a
/// ConfigMap update swaps. Reads are not changes (the reload itself reads
/// the file, and reacting to that would reload forever).
fn is_config_change(event: &notify::Event, name: &std::ffi::OsStr) -> bool {
    if matches!(
        event.kind,
        notify::EventKind::Access(_) | notify::EventKind::Other
    ) {
        return false;
    }
    event.paths.iter().any(|p| {
        p.file_name()
            .is_some_and(|f| f == name || f.to_string_lossy().starts_with(".."))
    })
}

/// Whether the file at `path` was modified after `read_at`.
fn changed_since(path: &Path, read_at: std::time::SystemTime) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified > read_at)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
