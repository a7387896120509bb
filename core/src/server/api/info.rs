//! The open routes: health and the capabilities (discovery) document.

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::{json_reply, Reply};
use crate::app::App;
use crate::cluster::ask::Question;
use crate::config::AuthMode;
use crate::metrics::{EndpointLabel, PluginLabel};
use crate::plugin_host::State;
use crate::router::coverage::Tally;
use std::sync::Arc;

/// `GET /health`: 200 ok / degraded (a plugin failed, or this node's
/// registry differs from another node's), 503 unhealthy (out of the
/// cluster) or shutting down.
pub fn health(app: &App) -> Reply {
    let snap = app.router.snapshot();
    let plugins = app.plugins.statuses();
    let failed = plugins.values().any(|s| s.state == State::Failed);
    let cluster = cluster_health(app);
    let (code, status) = if app.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if cluster.unhealthy {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    } else if failed || cluster.differs {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ok")
    };
    json_reply(
        code,
        &json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": app.started.elapsed().as_secs(),
            "config_version": snap.version,
            "plugins": plugins,
            "cluster": cluster.body,
        }),
    )
}

/// The `cluster` part of `/health`, and what it means for the status.
struct ClusterHealth {
    body: Value,
    unhealthy: bool,
    differs: bool,
}

fn cluster_health(app: &App) -> ClusterHealth {
    let Some(cluster) = &app.cluster else {
        return ClusterHealth {
            body: json!({"engine": "memory", "connected": true}),
            unhealthy: false,
            differs: false,
        };
    };
    let shared = &cluster.shared;
    let status = shared.health.status();
    let digest = app.router.snapshot().digest();
    let nodes = shared.health.live_nodes();
    let differing: Vec<&str> = nodes
        .iter()
        .filter(|n| n.digest != digest)
        .map(|n| n.node.as_str())
        .collect();
    let mut body = json!({
        "engine": "redis",
        "connected": status.is_ok(),
        "node": shared.node,
        "digest": digest,
        "nodes": nodes,
    });
    if let Err(reason) = &status {
        body["reason"] = json!(reason);
    }
    if !differing.is_empty() {
        body["registry_differs_from"] = json!(differing);
    }
    ClusterHealth {
        body,
        unhealthy: status.is_err(),
        differs: !differing.is_empty(),
    }
}

/// `GET /api/websocket/coverage`: the gap report, every node's counts
/// added up in a cluster.
pub async fn coverage(app: Arc<App>) -> Reply {
    let (answers, unanswered) = super::admin::ask_every_node(&app, Question::Coverage).await;
    // This node's first: its registry decides which types are listed.
    let mut tallies = answers
        .into_iter()
        .filter_map(|answer| serde_json::from_value::<Tally>(answer).ok());
    let mut tally = tallies.next().unwrap_or_default();
    for theirs in tallies {
        tally.add(&theirs);
    }
    let mut report = tally.report();
    unanswered.note(&mut report);
    json_reply(StatusCode::OK, &report)
}

/// `GET /api/websocket/capabilities`: every endpoint, channel and type.
pub fn capabilities(app: &App) -> Reply {
    let snap = app.router.snapshot();
    let registry = &snap.registry;
    let mode = match snap.config.auth.mode {
        AuthMode::None => "none",
        AuthMode::Optional => "optional",
        AuthMode::Required => "required",
    };
    let endpoints: Vec<Value> = snap
        .config
        .endpoints
        .iter()
        .map(|ep| {
            let events: Vec<&str> = registry
                .routable()
                .filter(|t| ep.channels.iter().any(|c| *c == *t.channel))
                .map(|t| &*t.name)
                .collect();
            json!({
                "path": ep.path,
                "description": ep.description,
                "channels": ep.channels,
                "events": events,
                "authentication": {
                    "mode": mode,
                    "required": mode == "required" || ep.require_auth,
                    "token_sources": ["query:token", "header:Authorization", "subprotocol:bearer"],
                },
            })
        })
        .collect();
    let event_registry: Map<String, Value> = registry
        .types()
        .map(|t| (t.name.to_string(), registry.describe(t)))
        .collect();
    let channels: Vec<&str> = registry.channels().keys().map(|c| &**c).collect();
    json_reply(
        StatusCode::OK,
        &json!({
            "endpoints": endpoints,
            "event_registry": event_registry,
            "channels": channels,
        }),
    )
}

/// `GET /metrics`: Prometheus text exposition.
pub fn metrics(app: &App) -> Reply {
    let metrics = app.router.metrics();
    metrics.connections.clear();
    for ep in &app.router.snapshot().config.endpoints {
        let label = EndpointLabel {
            endpoint: ep.path.clone(),
        };
        metrics.connections.get_or_create(&label).set(0);
    }
    for (conn, _) in app.router.connections() {
        let label = EndpointLabel {
            endpoint: conn.endpoint.to_string(),
        };
        metrics.connections.get_or_create(&label).inc();
    }
    metrics.plugin_up.clear();
    metrics.plugin_restarts.clear();
    for (name, status) in app.plugins.statuses() {
        let label = PluginLabel { plugin: name };
        let up = i64::from(status.state == State::Running);
        metrics.plugin_up.get_or_create(&label).set(up);
        metrics
            .plugin_restarts
            .get_or_create(&label)
            .set(i64::from(status.restarts));
    }
    if let (Some(gauge), Some(cluster)) = (&metrics.cluster_connected, &app.cluster) {
        gauge.set(i64::from(cluster.shared.health.status().is_ok()));
    }
    let mut response = Reply::new(metrics.encode().into());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}
