//! The event types this plugin emits: their declarations (the schemas the
//! router validates against).

use switchyard_plugin_api::{EventTypeDecl, Field};

/// `infrastructure.alert`
pub const INFRASTRUCTURE_ALERT: &str = "infrastructure.alert";
/// `queue.metrics`
pub const QUEUE_METRICS: &str = "queue.metrics";

/// The declaration of `infrastructure.alert` (channel `infrastructure`).
pub fn infrastructure_alert() -> EventTypeDecl {
    EventTypeDecl::new(
        INFRASTRUCTURE_ALERT,
        "infrastructure",
        "A Prometheus / Alertmanager alert fired or resolved",
    )
    .field(
        "alertname",
        Field::string()
            .required()
            .describe("The alert's `alertname` label (\"\" when it has none)"),
    )
    .field(
        "status",
        Field::string()
            .required()
            .one_of(&["firing", "resolved"])
            .describe("firing, or resolved"),
    )
    .field(
        "severity",
        Field::string().describe("The `severity` label; null when absent"),
    )
    .field(
        "component",
        Field::string()
            .describe("The `component` label, else `job`, else `instance`; null when none is set"),
    )
    .field(
        "summary",
        Field::string()
            .describe("The `summary` annotation, else `description`; null when neither is set"),
    )
    .field(
        "started_at",
        Field::string()
            .required()
            .describe("When the alert started firing (RFC 3339 UTC, milliseconds)"),
    )
    .field(
        "ends_at",
        Field::string().describe("When the alert resolved (RFC 3339 UTC); null while firing"),
    )
    .field(
        "fingerprint",
        Field::string()
            .required()
            .describe("Alertmanager's fingerprint of the label set (16 hex digits)"),
    )
    .field(
        "labels",
        Field::object()
            .required()
            .describe("All of the alert's labels, name → value"),
    )
}

/// The declaration of `queue.metrics` (channel `system`).
pub fn queue_metrics() -> EventTypeDecl {
    EventTypeDecl::new(
        QUEUE_METRICS,
        "system",
        "Queue metrics read from a Prometheus exposition page",
    )
    .field(
        "pending",
        Field::number().describe("Items waiting (sum of the matching series)"),
    )
    .field(
        "processing",
        Field::number().describe("Items being processed (sum of the matching series)"),
    )
    .field(
        "pending_batches",
        Field::number().describe("Batches waiting (sum of the matching series)"),
    )
    .field(
        "avg_wait_time_ms",
        Field::number().describe("Average wait in milliseconds (sum of the matching series)"),
    )
}

/// Every type the plugin may emit (the library's default list).
pub fn declarations() -> Vec<EventTypeDecl> {
    vec![infrastructure_alert(), queue_metrics()]
}
