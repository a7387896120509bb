//! The router: where every event enters, is validated against the registry,
//! stamped with its channel's sequence, kept in history and fanned out.
//!
//! The routing table (configuration snapshot, channel states, connections,
//! their subscription sets and the per-type recipient index) sits behind one
//! read–write lock. Events are stamped and fanned out under the *read* lock
//! (and their channel's mutex, for order), so each event is handled wholly
//! under one configuration. Subscription changes, connects and reloads take
//! the *write* lock briefly, so a `subscribed` reply means the very next event
//! is routed by the new set. Nothing here waits on a client: fan-out only
//! pushes into bounded per-connection queues.

mod census;
mod channel;
pub mod coverage;
pub mod envelope;
pub mod log;
mod publish;
mod recovery;
mod table;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde_json::Value;

pub use channel::{Recoverable, Stored};
pub use log::{Appended, Appending, ChannelLog, LogError, LogStore, MemoryLogs};
pub use publish::{Incoming, Origin, PublishError, Stamp};

use crate::config::Config;
use crate::connection::ConnRef;
use crate::metrics::Metrics;
use crate::protocol::Position;
use crate::registry::Registry;
use crate::text::Text;
use coverage::Coverage;
use table::Table;

/// What became of an event offered to a sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offered {
    /// Queued for the sink.
    Queued,
    /// Dropped: the sink's queue was full (`sink_overflow`).
    Full,
    /// Dropped: the sink is going away for good (`sink_shutdown`).
    Closed,
}

/// Where routed events leave for a sink plugin. Offering never waits: an
/// event a sink cannot take is dropped, and the router counts it.
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// The sink instance's name.
    fn name(&self) -> &str;
    /// Offers one event's envelope.
    fn offer(&self, event: &Text) -> Offered;
}

/// One configuration in force: what readers see through [`Router::snapshot`].
#[derive(Debug)]
pub struct Snapshot {
    /// Increments with every applied reload (1 at start).
    pub version: u64,
    /// When it was applied.
    pub loaded_at: DateTime<Utc>,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The merged registry.
    pub registry: Registry,
    /// Warnings found while building it.
    pub warnings: Vec<String>,
    /// The sink instances `[[routes]]` may name.
    pub sinks: BTreeMap<String, Arc<dyn Sink>>,
}

impl Snapshot {
    /// The endpoint with this path, if any.
    pub fn endpoint(&self, path: &str) -> Option<&crate::config::EndpointConfig> {
        self.config.endpoints.iter().find(|e| e.path == path)
    }
}

/// A request to open a connection on an endpoint.
#[derive(Debug)]
pub struct ConnectRequest {
    /// The endpoint path.
    pub endpoint: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
    /// The client address.
    pub ip: IpAddr,
    /// When the client's token expires (Unix seconds), if any.
    pub expires_at: Option<i64>,
    /// The token's `channels` claim: only these channels (`None` = all).
    pub channel_claim: Option<Vec<String>>,
    /// Patterns from `?events=` (`None` = receive all).
    pub events: Option<Vec<String>>,
    /// Positions from `?since=`.
    pub since: Option<BTreeMap<String, Position>>,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No endpoint has that path (any more).
    #[error("no endpoint at {0}")]
    UnknownEndpoint(String),
    /// The endpoint (or every channel it carries) needs authentication.
    #[error("{0} requires authentication")]
    AuthRequired(String),
    /// `auth.max_anonymous_per_ip` reached for this address.
    #[error("too many anonymous connections from this address")]
    TooManyAnonymous,
    /// `auth.max_connections_per_user` reached with `on_user_limit = "refuse"`.
    #[error("too many connections for this user")]
    TooManyForUser,
}

/// What applying a new configuration did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Connections closed because their endpoint was removed.
    pub closed: usize,
}

/// The router.
pub struct Router {
    table: RwLock<Table>,
    current: ArcSwap<Snapshot>,
    next_conn: AtomicU64,
    metrics: Arc<Metrics>,
    coverage: Coverage,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config_version", &self.snapshot().version)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router serving `snapshot`, with fresh channels.
    pub fn new(snapshot: Snapshot) -> Router {
        Router::with_logs(snapshot, Arc::new(log::MemoryLogs))
    }

    /// A router whose channels' order and history live in `logs`: the seam
    /// a cluster engine plugs into (see [`log`]).
    pub fn with_logs(snapshot: Snapshot, logs: Arc<dyn log::LogStore>) -> Router {
        let snapshot = Arc::new(snapshot);
        Router {
            table: RwLock::new(Table::new(snapshot.clone(), logs)),
            current: ArcSwap::new(snapshot),
            next_conn: AtomicU64::new(1),
            metrics: Arc::new(Metrics::new()),
            coverage: Coverage::default(),
        }
    }

    /// This router's gap-report counters.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    /// The live gap report.
    pub fn coverage_report(&self) -> serde_json::Value {
        let live = self.table.read().live_coverage();
        self.coverage.report(&live)
    }

    /// This router's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configuration in force (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in a new configuration: channels kept keep their epoch,
    /// sequence and history; connections and subscriptions survive.
    pub fn apply(&self, snapshot: Snapshot) -> Applied {
        let snapshot = Arc::new(snapshot);
        let mut table = self.table.write();
        let applied = table.apply(snapshot.clone());
        self.current.store(snapshot);
        applied
    }

    /// Opens a connection: queues `connection.established` (and the
    /// `subscribed` reply for `?events=`) before any event can reach it.
    pub fn connect(&self, req: ConnectRequest) -> Result<ConnRef, ConnectError> {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let dropped = self.metrics.dropped_counter("slow_consumer");
        self.table.write().connect(id, req, dropped)
    }

    /// Adds patterns (and recovers from `since`); queues the reply.
    pub fn subscribe(
        &self,
        conn: &ConnRef,
        events: &[String],
        since: Option<&BTreeMap<String, Position>>,
        id: &Option<Value>,
    ) {
        self.table.write().subscribe(conn, events, since, id);
    }

    /// Removes patterns (all when `None`); queues the reply.
    pub fn unsubscribe(&self, conn: &ConnRef, events: Option<&[String]>, id: &Option<Value>) {
        self.table.write().unsubscribe(conn, events, id);
    }

    /// Forgets a connection whose transport has ended.
    pub fn disconnect(&self, conn: &ConnRef) {
        self.table.write().disconnect(conn.id);
    }

    /// Every open connection with its held patterns (`None` = receives all).
    pub fn connections(&self) -> Vec<(ConnRef, Option<Vec<String>>)> {
        self.table.read().connections()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.table.read().connection_count()
    }

    /// Positions (epoch, last sequence) of every channel.
    pub fn positions(&self) -> BTreeMap<String, (String, u64)> {
        self.table.read().positions()
    }

    /// Validates, stamps and fans out events, all or nothing.
    ///
    /// Never waits more than `server.publish_wait_ms` for the routing table:
    /// past that (a reload or subscribe burst holding it) the answer is
    /// [`PublishError::Overloaded`] — 503 over HTTP, `backpressure` to a plugin.
    pub fn publish(
        &self,
        events: Vec<Incoming>,
        origin: &Origin,
    ) -> Result<Vec<Stamp>, PublishError> {
        let wait = Duration::from_millis(self.current.load().config.server.publish_wait_ms);
        let Some(table) = self.table.try_read_for(wait) else {
            self.metrics.refuse(PublishError::Overloaded.reason());
            return Err(PublishError::Overloaded);
        };
        let prepared = publish::prepare(&table.snap, events, origin)
            .inspect_err(|e| self.metrics.refuse(e.reason()))?;
        table
            .stamp_and_route(prepared, &self.metrics, &self.coverage)
            .inspect_err(|e| self.metrics.refuse(e.reason()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        router_with(Arc::new(MemoryLogs))
    }

    fn router_with(logs: Arc<dyn LogStore>) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let toml = "[[channels]]\nname = \"alerts\"\n[[endpoints]]\npath = \"/ws\"\nchannels = [\"alerts\"]\n[[event_types]]\nname = \"alert.created\"\nchannel = \"alerts\"\n[event_types.payload]\nid = { type = \"string\" }\n";
        std::fs::write(&path, toml).unwrap();
        let config = crate::config::load_with_env(&path, Vec::new())
            .unwrap()
            .config;
        let built = Registry::build(&config, &[]).unwrap();
        Router::with_logs(
            Snapshot {
                version: 1,
                loaded_at: Utc::now(),
                config: Arc::new(config),
                registry: built.registry,
                warnings: Vec::new(),
                sinks: BTreeMap::new(),
            },
            logs,
        )
    }

    fn alert() -> Incoming {
        Incoming {
            type_name: "alert.created".into(),
            payload: serde_json::json!({"id": "a"}),
            correlation_id: None,
            idempotency_key: None,
        }
    }

    #[test]
    fn a_table_held_too_long_makes_publishing_overloaded() {
        let router = router();
        let held = router.table.write();
        let started = std::time::Instant::now();
        let refused = router.publish(vec![alert()], &Origin::Http);
        assert!(
            matches!(refused, Err(PublishError::Overloaded)),
            "{refused:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a publisher never waits long"
        );
        drop(held);
        assert_eq!(
            router.publish(vec![alert()], &Origin::Http).unwrap()[0].sequence,
            1
        );
    }

    /// A store whose logs append `budget` events, then answer as a shared
    /// store out of reach would: to test how the router takes a failure.
    #[derive(Debug)]
    struct Unreachable {
        budget: std::sync::atomic::AtomicUsize,
    }

    #[derive(Debug)]
    struct UnreachableLog {
        inner: Arc<dyn ChannelLog>,
        store: Arc<Unreachable>,
    }

    impl LogStore for Arc<Unreachable> {
        fn open(&self, channel: &str) -> Arc<dyn ChannelLog> {
            Arc::new(UnreachableLog {
                inner: MemoryLogs.open(channel),
                store: self.clone(),
            })
        }
    }

    impl ChannelLog for UnreachableLog {
        fn name(&self) -> &Arc<str> {
            self.inner.name()
        }
        fn epoch(&self) -> Arc<str> {
            self.inner.epoch()
        }
        fn sequence(&self) -> u64 {
            self.inner.sequence()
        }
        fn oldest_kept(&self) -> u64 {
            self.inner.oldest_kept()
        }
        fn recoverable(&self, after: u64, ttl: Option<std::time::Duration>) -> Recoverable {
            self.inner.recoverable(after, ttl)
        }
        fn append(
            &self,
            event: Appending<'_>,
            hand_over: &mut dyn FnMut(&Stored),
        ) -> Result<Appended, LogError> {
            let left = &self.store.budget;
            if left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
            {
                return Err(LogError::Unavailable {
                    channel: self.name().to_string(),
                    reason: "connection refused".into(),
                });
            }
            self.inner.append(event, hand_over)
        }
    }

    #[test]
    fn a_log_that_cannot_append_stops_the_publish_and_names_what_was_accepted() {
        let store = Arc::new(Unreachable {
            budget: std::sync::atomic::AtomicUsize::new(2),
        });
        let router = router_with(Arc::new(store));
        let refused = router.publish(vec![alert(), alert(), alert(), alert()], &Origin::Http);
        let Err(PublishError::Unavailable { accepted, error }) = refused else {
            panic!("{refused:?}");
        };
        let sequences: Vec<u64> = accepted.iter().map(|s| s.sequence).collect();
        assert_eq!(sequences, [1, 2], "the events before the failure stay");
        assert!(error.to_string().contains("`alerts`"), "{error}");
        assert_eq!(router.positions()["alerts"].1, 2, "nothing after it");
        assert!(router
            .metrics()
            .encode()
            .contains("switchyard_events_refused_total{reason=\"cluster_unavailable\"} 1"));
    }
}
