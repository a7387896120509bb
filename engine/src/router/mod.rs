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
mod publishing;
mod recovery;
mod stamped;
mod table;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use parking_lot::RwLock;
use serde_json::Value;

pub use census::Counts;
pub use channel::{fresh_epoch, Recoverable, Stored};
pub use log::{
    Appended, Batch, LogError, Loss, Placed, Received, Sequenced, Sequencer, Sequencing, Settle,
};
pub use publish::{Incoming, Origin, PublishError, Stamp};
pub use publishing::Publishing;
pub use stamped::Marks;
pub use table::impact::{Closed, Impact, Moved};

use crate::config::Config;
use crate::connection::{inline, Clock, ConnRef};
use crate::metrics::Metrics;
use crate::protocol::Position;
use crate::registry::Registry;
use crate::text::Text;
use channel::NewEpoch;
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
    /// A digest of what nodes of one cluster must agree on: channels,
    /// types (with their channel and payload schema) and endpoints. Nodes
    /// compare them through their heartbeats (docs/cluster.md).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let types: Vec<Value> = self
            .registry
            .routable()
            .map(|t| serde_json::json!([&*t.name, &*t.channel, t.schema.to_json_schema()]))
            .collect();
        let endpoints: Vec<Value> = self
            .config
            .endpoints
            .iter()
            .map(|e| serde_json::json!([e.path, e.channels]))
            .collect();
        let channels: Vec<&str> = self.registry.channels().keys().map(|c| &**c).collect();
        let canonical = serde_json::json!([channels, types, endpoints]).to_string();
        let hash = Sha256::digest(canonical.as_bytes());
        hash[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

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
    /// Connections that count against the same `[auth]` limit (this
    /// user's, or anonymous ones from this address) on other nodes of a
    /// cluster; 0 with the memory engine.
    pub elsewhere: usize,
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
    coverage: Arc<Coverage>,
    /// Where events are stamped when not here (a cluster engine; see [`log`]).
    sequencer: Option<Arc<dyn Sequencer>>,
    /// The connections' timers.
    clock: Clock,
    /// The transport's inline writer, once it has registered one.
    inline_writer: OnceLock<inline::Write>,
    /// What this node stamped in a cluster store (see [`stamped`]).
    stamped: Arc<stamped::Stamped>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config_version", &self.snapshot().version)
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A router serving `snapshot` that stamps events itself, with fresh
    /// channels (`[cluster] engine = "memory"`).
    pub fn new(snapshot: Snapshot) -> Router {
        Router::build(snapshot, None)
    }

    /// A router whose events are stamped by `sequencer` and come back
    /// through [`Router::receive`]: the seam a cluster engine plugs into
    /// (see [`log`]).
    pub fn with_sequencer(snapshot: Snapshot, sequencer: Arc<dyn Sequencer>) -> Router {
        Router::build(snapshot, Some(sequencer))
    }

    fn build(snapshot: Snapshot, sequencer: Option<Arc<dyn Sequencer>>) -> Router {
        let snapshot = Arc::new(snapshot);
        Router {
            table: RwLock::new(Table::new(snapshot.clone(), sequencer.is_some())),
            current: ArcSwap::new(snapshot),
            next_conn: AtomicU64::new(1),
            metrics: Arc::new(Metrics::for_node(sequencer.as_ref().map(|s| s.node()))),
            coverage: Arc::default(),
            sequencer,
            clock: Clock::default(),
            inline_writer: OnceLock::new(),
            stamped: Arc::default(),
        }
    }

    /// Registers the transport's writer for connections it serves inline
    /// (see [`inline`]), for its mailboxes' drainers to write with. The
    /// first registration stays.
    pub fn write_inline_with(&self, write: inline::Write) {
        let _ = self.inline_writer.set(write);
    }

    /// The transport's inline writer, once registered: what a lane's
    /// [`Mailbox`](inline::Mailbox) drainer writes with.
    pub fn inline_writer(&self) -> Option<inline::Write> {
        self.inline_writer.get().copied()
    }

    /// The clock the connections' timers run on; the transport rings it
    /// about once a second.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// This router's gap-report counters.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    /// This node's gap-report counts, to add up with other nodes'.
    pub fn coverage_tally(&self) -> coverage::Tally {
        let live = self.table.read().live_coverage();
        self.coverage.tally(&live)
    }

    /// This router's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The configuration in force (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// What [`Router::apply`] would do with `next`, without doing it.
    pub fn impact(&self, next: &Snapshot) -> Impact {
        self.table.read().impact(next)
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

    /// What the `[auth]` connection limits count on this node.
    pub fn census(&self) -> census::Counts {
        self.table.read().census()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.table.read().connection_count()
    }

    /// Positions (epoch, last sequence) of every channel.
    pub fn positions(&self) -> BTreeMap<String, (String, u64)> {
        self.table.read().positions()
    }

    /// Validates, stamps and fans out events, all or nothing: at once with
    /// the memory engine, once the cluster store settles with a cluster
    /// engine (whose events are then fanned out as they come back through
    /// [`Router::receive`]).
    ///
    /// Never waits more than `server.publish_wait_ms` for the routing table:
    /// past that (a reload or subscribe burst holding it) the answer is
    /// [`PublishError::Overloaded`] — 503 over HTTP, `backpressure` to a plugin.
    pub fn publish(&self, events: Vec<Incoming>, origin: &Origin) -> Publishing {
        // Opened before the routing table is locked, so that it closes,
        // and hands over what the fan-out deferred, after.
        let _deliveries = inline::Scope::open();
        let wait = Duration::from_millis(self.current.load().config.server.publish_wait_ms);
        let Some(table) = self.table.try_read_for(wait) else {
            self.metrics.refuse(PublishError::Overloaded.reason());
            return Publishing::ready(Err(PublishError::Overloaded));
        };
        let prepared = match publish::prepare(&table.snap, events, origin) {
            Ok(prepared) => prepared,
            Err(e) => {
                self.metrics.refuse(e.reason());
                return Publishing::ready(Err(e));
            }
        };
        let Some(sequencer) = &self.sequencer else {
            return Publishing::ready(Ok(table.stamp_and_route(
                prepared,
                &self.metrics,
                &self.coverage,
            )));
        };
        let batch = table.batch(&prepared);
        drop(table);
        let (publishing, settle) = Publishing::remote(
            &batch,
            self.metrics.clone(),
            self.coverage.clone(),
            self.stamped.clone(),
        );
        sequencer.sequence(batch, settle);
        publishing
    }

    /// What this node has stamped in the cluster store so far (nothing
    /// with the memory engine): only what comes back through the store's
    /// feed is offered to this node's sinks, so a shutdown waits, with
    /// [`Router::not_back`], for these marks before it stops them.
    pub fn stamped_marks(&self) -> Marks {
        self.stamped.marks()
    }

    /// How many of the events up to `marks` may not have come back through
    /// the feed yet (an upper bound).
    pub fn not_back(&self, marks: &Marks) -> u64 {
        marks.behind(&self.positions())
    }

    /// Takes an event stamped by the cluster engine: delivered if it is its
    /// channel's next one (a channel whose epoch it starts is reset first,
    /// and its connections told with `connection.channels`); see
    /// [`Received`] for the rest.
    pub fn receive(&self, event: &Sequenced) -> Received {
        let received = self.receive_once(event);
        if received == Received::Delivered && event.to_sinks {
            self.stamped
                .came_back(&event.channel, &event.epoch, event.sequence);
        }
        received
    }

    fn receive_once(&self, event: &Sequenced) -> Received {
        // As in `publish`: closed after the table is unlocked.
        let _deliveries = inline::Scope::open();
        let received = self
            .table
            .read()
            .receive(event, &self.metrics, &self.coverage);
        let Err(NewEpoch) = received else {
            return received.unwrap_or(Received::Stale);
        };
        self.reset(&event.channel, &event.epoch);
        // Only a reset to yet another epoch in between makes this one new
        // again: it is then older than the channel's, so stale.
        self.table
            .read()
            .receive(event, &self.metrics, &self.coverage)
            .unwrap_or(Received::Stale)
    }

    /// Moves `channel` to `epoch` if it is a new one; this node's stamps of
    /// the epochs it leaves that have not come back never reach its sinks:
    /// counted.
    fn reset(&self, channel: &str, epoch: &str) {
        if self.table.write().reset(channel, epoch) {
            let gone = self.stamped.left_for(channel, epoch);
            self.metrics.drop_events("cluster_lost", gone as u64);
        }
    }

    /// Whether `epoch` is one `channel` has not had (neither its current
    /// epoch nor one before): an event of it would start it, in
    /// [`Router::receive`]. Epochs are not ordered, so only the cluster
    /// store can tell a new epoch from one it has already left.
    pub fn is_new_epoch(&self, channel: &str, epoch: &str) -> bool {
        self.table.read().is_new_epoch(channel, epoch)
    }

    /// Starts `epoch` on `channel` (the cluster store lost the channel's
    /// state, or started it): its connections are told their new position
    /// with `connection.channels`.
    pub fn start_epoch(&self, channel: &str, epoch: &str) {
        self.reset(channel, epoch);
    }

    /// Declares the events of `channel` after its last delivered one up to
    /// `until` lost (the cluster's history no longer holds them): its
    /// connections get `connection.lagged`, and recovery from before
    /// `until` answers `too_old`; those this node accepted never reach its
    /// sinks, and are counted as `cluster_lost`.
    pub fn lose(&self, channel: &str, until: u64) -> Loss {
        let Some((epoch, events, connections)) = self.table.read().lose(channel, until) else {
            return Loss::default();
        };
        let sinks = self.stamped.lost(channel, &epoch, until);
        self.metrics.drop_events("cluster_lost", sinks as u64);
        Loss {
            events,
            connections,
            sinks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Text;

    fn router() -> Router {
        Router::new(snapshot())
    }

    fn snapshot() -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let toml = "[[channels]]\nname = \"alerts\"\nhistory = 3\n[[endpoints]]\npath = \"/ws\"\nchannels = [\"alerts\"]\n[[event_types]]\nname = \"alert.created\"\nchannel = \"alerts\"\n[event_types.payload]\nid = { type = \"string\" }\n";
        std::fs::write(&path, toml).unwrap();
        let config = crate::config::load_with_env(&path, Vec::new())
            .unwrap()
            .config;
        let built = Registry::build(&config, &[]).unwrap();
        Snapshot {
            version: 1,
            loaded_at: Utc::now(),
            config: Arc::new(config),
            registry: built.registry,
            warnings: Vec::new(),
            sinks: BTreeMap::new(),
        }
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
        let refused = router.publish(vec![alert()], &Origin::Http).wait();
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
            router.publish(vec![alert()], &Origin::Http).wait().unwrap()[0].sequence,
            1
        );
    }

    /// Settles every batch as a cluster store out of reach would.
    #[derive(Debug)]
    struct Unreachable;

    impl Sequencer for Unreachable {
        fn node(&self) -> &str {
            "n1"
        }
        fn sequence(&self, batch: Batch, settle: Settle) {
            settle(Err(LogError::Unavailable {
                channel: batch.events[0].channel.to_string(),
                reason: "connection refused".into(),
            }));
        }
    }

    /// Keeps what it is given, to settle from the test.
    #[derive(Default)]
    struct Held(parking_lot::Mutex<Vec<(Batch, Settle)>>);

    impl std::fmt::Debug for Held {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Held")
        }
    }

    impl Sequencer for Arc<Held> {
        fn node(&self) -> &str {
            "n1"
        }
        fn sequence(&self, batch: Batch, settle: Settle) {
            self.0.lock().push((batch, settle));
        }
    }

    #[test]
    fn a_store_out_of_reach_refuses_the_publish_as_cluster_unavailable() {
        let router = Router::with_sequencer(snapshot(), Arc::new(Unreachable));
        let refused = router.publish(vec![alert(), alert()], &Origin::Http).wait();
        let Err(PublishError::Unavailable { accepted, error }) = refused else {
            panic!("{refused:?}");
        };
        assert!(accepted.is_empty(), "a batch is stamped all or none");
        assert!(error.to_string().contains("`alerts`"), "{error}");
        assert!(router.metrics().encode().contains(
            "switchyard_events_refused_total{node=\"n1\",reason=\"cluster_unavailable\"} 1"
        ));
    }

    #[test]
    fn a_sequencer_gets_each_envelope_around_its_sequence_and_settles_the_publish() {
        let held = Arc::new(Held::default());
        let router = Router::with_sequencer(snapshot(), Arc::new(held.clone()));
        let publishing = router.publish(vec![alert(), alert()], &Origin::Http);
        let (batch, settle) = held.0.lock().pop().unwrap();
        let rendered = format!("{}7{}", batch.events[0].head, batch.events[0].tail);
        let envelope: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(envelope["sequence"], 7);
        assert_eq!(envelope["channel"], "alerts");
        assert_eq!(batch.events[0].history, 3);
        let placed = |appended| Placed {
            appended,
            epoch: "E".into(),
        };
        settle(Ok(vec![
            placed(Appended::New(7)),
            placed(Appended::Repeated(2)),
        ]));
        let stamps = publishing.wait().unwrap();
        assert_eq!(
            stamps.iter().map(|s| s.sequence).collect::<Vec<_>>(),
            [7, 2]
        );
        assert!(router
            .metrics()
            .encode()
            .contains("switchyard_events_accepted_total{node=\"n1\",type=\"alert.created\"} 1"));
        assert_eq!(router.positions()["alerts"].1, 0, "delivery is receive's");
    }

    /// Publishes one event through `held`, settled as stamped at
    /// `sequence` of `epoch`.
    fn publish_stamped(router: &Router, held: &Held, epoch: &str, sequence: u64) {
        let publishing = router.publish(vec![alert()], &Origin::Http);
        let (_, settle) = held.0.lock().pop().unwrap();
        settle(Ok(vec![Placed {
            appended: Appended::New(sequence),
            epoch: epoch.into(),
        }]));
        publishing.wait().unwrap();
    }

    fn own(sequence: u64) -> Sequenced {
        Sequenced {
            to_sinks: true,
            ..stamped("E1", sequence)
        }
    }

    /// An event this node accepted that the store then lost never reaches
    /// its sinks: a loss of the channel counts it (and only it, not the
    /// other nodes' events nor this node's that came back), and so does a
    /// move to another epoch with some of its events still on their way.
    #[test]
    fn what_this_node_accepted_and_the_store_lost_is_counted_as_its_sinks_loss() {
        let held = Arc::new(Held::default());
        let router = Router::with_sequencer(snapshot(), Arc::new(held.clone()));
        router.receive(&stamped("E1", 0));
        for sequence in [1, 3, 4] {
            publish_stamped(&router, &held, "E1", sequence);
        }
        assert_eq!(router.receive(&own(1)), Received::Delivered);
        // 2 (another node's), 3 and 4 (this node's) were lost.
        let loss = router.lose("alerts", 4);
        assert_eq!((loss.events, loss.sinks), (3, 2), "{loss:?}");
        assert_eq!(router.lose("alerts", 4), Loss::default(), "once");
        // Back before its publish was answered: not lost later.
        assert_eq!(router.receive(&own(5)), Received::Delivered);
        publish_stamped(&router, &held, "E1", 5);
        publish_stamped(&router, &held, "E1", 6);
        router.start_epoch("alerts", "E2");
        // A stamp of E2 on its way is not lost by a call to go back to E1,
        // an epoch the channel has had: the channel stays on E2.
        publish_stamped(&router, &held, "E2", 1);
        router.start_epoch("alerts", "E1");
        assert!(
            router
                .metrics()
                .encode()
                .contains("switchyard_dropped_total{node=\"n1\",reason=\"cluster_lost\"} 3"),
            "2 lost, then 6 left behind in E1, and nothing more: {}",
            router.metrics().encode()
        );
    }

    fn stamped(epoch: &str, sequence: u64) -> Sequenced {
        Sequenced {
            channel: "alerts".into(),
            epoch: epoch.into(),
            sequence,
            type_name: "alert.created".into(),
            frame: Text::from(format!("{{\"sequence\":{sequence}}}")),
            age: Duration::ZERO,
            to_sinks: false,
            emitter: None,
        }
    }

    fn listener(router: &Router) -> ConnRef {
        router
            .connect(ConnectRequest {
                endpoint: "/ws".into(),
                user: None,
                ip: "127.0.0.1".parse().unwrap(),
                expires_at: None,
                channel_claim: None,
                events: None,
                since: None,
                elsewhere: 0,
            })
            .unwrap()
    }

    fn frames(conn: &ConnRef) -> Vec<String> {
        let batch = futures_executor::block_on(conn.outbox.next_batch());
        conn.outbox
            .release(crate::connection::outbox::Written::all(&batch.frames));
        batch.frames.iter().map(|f| f.text().to_string()).collect()
    }

    #[test]
    fn received_events_are_delivered_once_in_order_and_gaps_are_reported() {
        let router = Router::with_sequencer(snapshot(), Arc::new(Unreachable));
        let conn = listener(&router);
        let established = frames(&conn);
        assert!(established[0].contains("connection.established"));
        let epoch = router.positions()["alerts"].0.clone();
        // The store's epoch is new to the channel: it is reset and announced.
        router.receive(&stamped("E1", 0));
        let announced = frames(&conn);
        assert!(
            announced[0].contains("connection.channels") && announced[0].contains("E1"),
            "{announced:?}"
        );
        assert_eq!(router.receive(&stamped("E1", 1)), Received::Delivered);
        assert_eq!(router.receive(&stamped("E1", 1)), Received::Stale);
        assert_eq!(
            router.receive(&stamped("E1", 3)),
            Received::Missing { after: 1 }
        );
        assert_eq!(router.receive(&stamped("E1", 2)), Received::Delivered);
        assert_eq!(router.receive(&stamped("E1", 3)), Received::Delivered);
        assert_eq!(
            router.receive(&stamped(&epoch, 4)),
            Received::Stale,
            "an epoch the channel had before is never taken again"
        );
        assert_eq!(
            frames(&conn),
            ["{\"sequence\":1}", "{\"sequence\":2}", "{\"sequence\":3}"]
        );
        assert_eq!(router.positions()["alerts"], ("E1".to_owned(), 3));
    }

    #[test]
    fn events_declared_lost_are_lagged_and_cannot_be_recovered() {
        let router = Router::with_sequencer(snapshot(), Arc::new(Unreachable));
        let conn = listener(&router);
        frames(&conn);
        router.receive(&stamped("E1", 1));
        router.lose("alerts", 5);
        assert_eq!(router.receive(&stamped("E1", 6)), Received::Delivered);
        let got = frames(&conn);
        assert!(got.iter().any(|f| f.contains("connection.channels")));
        let lagged = got
            .iter()
            .find(|f| f.contains("connection.lagged"))
            .unwrap();
        let lagged: serde_json::Value = serde_json::from_str(lagged).unwrap();
        assert_eq!(lagged["payload"]["dropped"], 4, "{lagged}");
        assert_eq!(lagged["payload"]["channels"]["alerts"]["sequence"], 1);
        let since: BTreeMap<String, Position> = [(
            "alerts".to_owned(),
            Position {
                epoch: "E1".into(),
                sequence: 1,
            },
        )]
        .into_iter()
        .collect();
        router.subscribe(&conn, &["alert.*".to_owned()], Some(&since), &None);
        let reply = frames(&conn).pop().unwrap();
        assert!(reply.contains("too_old"), "{reply}");
        router.subscribe(
            &conn,
            &["alert.*".to_owned()],
            Some(
                &[(
                    "alerts".to_owned(),
                    Position {
                        epoch: "E1".into(),
                        sequence: 5,
                    },
                )]
                .into_iter()
                .collect(),
            ),
            &None,
        );
        let reply = frames(&conn).pop().unwrap();
        assert!(
            reply.contains("\"recovered\":true,\"replayed\":0"),
            "after the gap, recovery works (and 6 was sent already): {reply}"
        );
    }

    fn since(epoch: &str, sequence: u64) -> BTreeMap<String, Position> {
        let position = Position {
            epoch: epoch.into(),
            sequence,
        };
        [("alerts".to_owned(), position)].into_iter().collect()
    }

    /// A client that recovers on each `connection.lagged` may ask again
    /// before reading the first replay (the first reply itself can drop an
    /// event): that is answered, and nothing is replayed twice.
    #[test]
    fn a_recovery_is_answered_while_an_earlier_replay_is_unwritten() {
        let router = router();
        router
            .publish(vec![alert(), alert()], &Origin::Http)
            .wait()
            .unwrap();
        let conn = listener(&router);
        frames(&conn);
        let epoch = router.positions()["alerts"].0.clone();
        let all = ["alert.*".to_owned()];
        router.subscribe(&conn, &all, Some(&since(&epoch, 1)), &None);
        assert!(conn.outbox.replaying() > 0, "the first replay is unwritten");
        router.subscribe(&conn, &all, Some(&since(&epoch, 0)), &None);
        router.subscribe(&conn, &all, Some(&since(&epoch, 0)), &None);
        let got: Vec<serde_json::Value> = frames(&conn)
            .iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect();
        let (replies, replays): (Vec<_>, Vec<_>) =
            got.iter().partition(|f| f["type"] == "subscribed");
        let sequences: Vec<&serde_json::Value> = replays.iter().map(|f| &f["sequence"]).collect();
        assert_eq!(sequences, [2, 1], "each missed event once: {got:?}");
        let replayed: Vec<&serde_json::Value> = replies
            .iter()
            .map(|f| &f["recovery"]["alerts"]["replayed"])
            .collect();
        assert_eq!(replayed, [1, 1, 0], "{got:?}");
        assert_eq!(conn.outbox.replaying(), 0, "written");
    }

    #[test]
    fn a_client_ahead_of_this_nodes_copy_gets_nothing_twice() {
        let router = Router::with_sequencer(snapshot(), Arc::new(Unreachable));
        router.receive(&stamped("E1", 1));
        let since: BTreeMap<String, Position> = [(
            "alerts".to_owned(),
            Position {
                epoch: "E1".into(),
                sequence: 3,
            },
        )]
        .into_iter()
        .collect();
        let conn = router
            .connect(ConnectRequest {
                endpoint: "/ws".into(),
                user: None,
                ip: "127.0.0.1".parse().unwrap(),
                expires_at: None,
                channel_claim: None,
                events: Some(vec!["alert.*".into()]),
                since: Some(since),
                elsewhere: 0,
            })
            .unwrap();
        let reply = frames(&conn).pop().unwrap();
        assert!(
            reply.contains("\"recovered\":true,\"replayed\":0"),
            "delivered elsewhere up to 3: {reply}"
        );
        for sequence in 2..=4 {
            assert_eq!(
                router.receive(&stamped("E1", sequence)),
                Received::Delivered
            );
        }
        assert_eq!(frames(&conn), ["{\"sequence\":4}"]);
    }

    thread_local! {
        /// What [`record_inline`] was handed: connection and frames.
        static INLINE: std::cell::RefCell<Vec<(u64, usize)>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Serves `conn` inline from a thread that then ends (and so has no
    /// mailbox).
    fn serve_inline_from_a_thread_gone(conn: &ConnRef) {
        let conn = conn.clone();
        std::thread::spawn(move || inline::serve(&conn.outbox, 4))
            .join()
            .unwrap();
    }

    fn publish_two(router: &Router) {
        router
            .publish(vec![alert(), alert()], &Origin::Http)
            .wait()
            .unwrap();
    }

    /// An inline writer that takes what it may and records it.
    fn record_inline(conn: &crate::connection::Connection, _: &Metrics) {
        let taken = conn.outbox.take_inline().map_or(0, |(_, b)| b.frames.len());
        INLINE.with_borrow_mut(|seen| seen.push((conn.id, taken)));
    }

    /// Drains `mailbox` once with the router's writer: what it wrote.
    fn drain(router: &Router, mailbox: &inline::Mailbox) -> Vec<(u64, usize)> {
        let waker = futures_util::task::noop_waker();
        let cx = std::task::Context::from_waker(&waker);
        let _ = mailbox.poll_write(&cx, router.inline_writer(), router.metrics());
        INLINE.take()
    }

    /// The publisher writes nothing itself, even on the connection's own
    /// thread: its thread's drainer writes, everything published since it
    /// last ran at once.
    #[test]
    fn publishes_are_written_by_the_drainer_all_at_once() {
        let router = router();
        router.write_inline_with(record_inline);
        let conn = listener(&router);
        frames(&conn);
        let mailbox = inline::Mailbox::open();
        inline::serve(&conn.outbox, 3);
        publish_two(&router);
        publish_two(&router);
        assert!(INLINE.take().is_empty(), "the publisher wrote nothing");
        assert_eq!(drain(&router, &mailbox), [(conn.id, 4)]);
        assert!(drain(&router, &mailbox).is_empty(), "nothing twice");
        mailbox.close();
    }

    /// A lane's connections are left in its mailbox, a publish's at once,
    /// and its drainer writes them there; a thread without a mailbox has
    /// its connections woken.
    #[test]
    fn a_publish_leaves_a_lanes_connections_in_its_mailbox() {
        let router = Arc::new(router());
        router.write_inline_with(record_inline);
        let (lane_conn, other_conn) = (listener(&router), listener(&router));
        frames(&lane_conn);
        frames(&other_conn);
        let (opened, open) = std::sync::mpsc::channel();
        let (published, publish) = std::sync::mpsc::channel::<()>();
        let lane = {
            let (router, conn) = (router.clone(), lane_conn.clone());
            std::thread::spawn(move || {
                let mailbox = inline::Mailbox::open();
                inline::serve(&conn.outbox, 5);
                opened.send(()).unwrap();
                publish.recv().unwrap();
                let written = drain(&router, &mailbox);
                mailbox.close();
                written
            })
        };
        open.recv().unwrap();
        serve_inline_from_a_thread_gone(&other_conn);
        publish_two(&router);
        assert!(INLINE.take().is_empty(), "nothing of this thread's");
        published.send(()).unwrap();
        assert_eq!(
            lane.join().unwrap(),
            [(lane_conn.id, 2)],
            "the lane wrote its connection, the whole publish at once"
        );
        assert_eq!(other_conn.outbox.depth().0, 2, "no mailbox: woken");
    }
}
