//! The router's metrics, served as Prometheus text at `GET /metrics`.
//!
//! Counters are incremented where things happen (the router, the transport,
//! reloads); gauges that describe state (connections, plugin health) are
//! read at scrape time, so they can never drift.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::borrow::Cow;

mod sharded;
pub use sharded::ShardedHistogram;

/// A metric label set with one label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// The event type.
    pub r#type: String,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// `channel` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// The channel.
    pub channel: String,
}

/// `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `applied` or `refused`.
    pub result: String,
}

/// `endpoint` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    /// The endpoint path.
    pub endpoint: String,
}

/// `plugin` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// The plugin instance.
    pub plugin: String,
}

/// Every metric of one router.
pub struct Metrics {
    registry: Registry,
    /// `switchyard_events_accepted_total{type}`.
    pub accepted: Family<TypeLabel, Counter>,
    /// `switchyard_events_refused_total{reason}`.
    pub refused: Family<ReasonLabel, Counter>,
    /// `switchyard_deliveries_total{channel}`: events written to sockets.
    pub deliveries: Family<ChannelLabel, Counter>,
    /// `switchyard_upgrades_refused_total{reason}`: WebSocket upgrades
    /// refused before a socket is opened.
    pub upgrades_refused: Family<ReasonLabel, Counter>,
    /// `switchyard_dropped_total{reason}`: `slow_consumer`, `sink_overflow`,
    /// `sink_shutdown`, `cluster_lost`.
    pub dropped: Family<ReasonLabel, Counter>,
    /// `switchyard_delivery_latency_seconds`: accept → written to the
    /// socket. Sharded: every lane observes it once per delivery.
    pub latency: ShardedHistogram,
    /// `switchyard_config_reloads_total{result}`.
    pub reloads: Family<ResultLabel, Counter>,
    /// `switchyard_connections{endpoint}`, set at scrape time.
    pub connections: Family<EndpointLabel, Gauge>,
    /// `switchyard_plugin_up{plugin}`, set at scrape time.
    pub plugin_up: Family<PluginLabel, Gauge>,
    /// `switchyard_plugin_restarts{plugin}`, set at scrape time.
    pub plugin_restarts: Family<PluginLabel, Gauge>,
    /// `switchyard_cluster_connected`: 1 while this node is in its cluster
    /// (set at scrape time; a node of a cluster engine only).
    pub cluster_connected: Option<Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn label(value: &str) -> String {
    value.to_owned()
}

impl Metrics {
    /// A fresh set of metrics, registered under the `switchyard_` prefix.
    pub fn new() -> Metrics {
        Metrics::for_node(None)
    }

    /// Metrics of one node of a cluster when `node` is given: every series
    /// carries the label `node`, and `switchyard_cluster_connected` is kept.
    pub fn for_node(node: Option<&str>) -> Metrics {
        let mut registry = match node {
            Some(node) => Registry::with_prefix_and_labels(
                "switchyard",
                [(Cow::Borrowed("node"), Cow::Owned(node.to_owned()))].into_iter(),
            ),
            None => Registry::with_prefix("switchyard"),
        };
        let cluster_connected = node.map(|_| Gauge::default());
        if let Some(gauge) = &cluster_connected {
            registry.register(
                "cluster_connected",
                "1 while this node is in its cluster (Redis reachable, its heartbeat seen)",
                gauge.clone(),
            );
        }
        let accepted = Family::<TypeLabel, Counter>::default();
        let refused = Family::<ReasonLabel, Counter>::default();
        let deliveries = Family::<ChannelLabel, Counter>::default();
        let dropped = Family::<ReasonLabel, Counter>::default();
        let upgrades_refused = Family::<ReasonLabel, Counter>::default();
        let latency = ShardedHistogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ]);
        let reloads = Family::<ResultLabel, Counter>::default();
        let connections = Family::<EndpointLabel, Gauge>::default();
        let plugin_up = Family::<PluginLabel, Gauge>::default();
        let plugin_restarts = Family::<PluginLabel, Gauge>::default();
        registry.register(
            "events_accepted",
            "Events accepted, by type",
            accepted.clone(),
        );
        registry.register(
            "events_refused",
            "Events refused, by reason",
            refused.clone(),
        );
        registry.register(
            "deliveries",
            "Events written to WebSocket connections, by channel",
            deliveries.clone(),
        );
        registry.register("dropped", "Events dropped, by reason", dropped.clone());
        registry.register(
            "upgrades_refused",
            "WebSocket upgrades refused before the socket was opened, by reason",
            upgrades_refused.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from accepting an event to writing it to a socket",
            latency.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        registry.register(
            "connections",
            "Open WebSocket connections, by endpoint",
            connections.clone(),
        );
        registry.register(
            "plugin_up",
            "1 when the plugin instance is running",
            plugin_up.clone(),
        );
        registry.register(
            "plugin_restarts",
            "How often the plugin instance was restarted after failing",
            plugin_restarts.clone(),
        );
        Metrics {
            registry,
            accepted,
            refused,
            deliveries,
            dropped,
            upgrades_refused,
            latency,
            reloads,
            connections,
            plugin_up,
            plugin_restarts,
            cluster_connected,
        }
    }

    /// Counts one accepted event of `type_name`.
    pub fn accept(&self, type_name: &str) {
        self.accepted
            .get_or_create(&TypeLabel {
                r#type: label(type_name),
            })
            .inc();
    }

    /// Counts a refused event.
    pub fn refuse(&self, reason: &str) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: label(reason),
            })
            .inc();
    }

    /// Counts an upgrade refused before the socket was opened.
    pub fn refuse_upgrade(&self, reason: &str) {
        self.upgrades_refused
            .get_or_create(&ReasonLabel {
                reason: label(reason),
            })
            .inc();
    }

    /// Counts dropped events.
    pub fn drop_events(&self, reason: &str, n: u64) {
        if n > 0 {
            self.dropped_counter(reason).inc_by(n);
        }
    }

    /// The `switchyard_dropped_total` counter of one reason, for a holder
    /// that counts its own drops.
    pub fn dropped_counter(&self, reason: &str) -> Counter {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: label(reason),
            })
            .clone()
    }

    /// Counts a reload.
    pub fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "refused" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: label(result),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
