//! Alert bodies: the Alertmanager webhook (version 4) and the Alertmanager
//! v2 postable-alerts array that Prometheus sends, each alert turned into an
//! `infrastructure.alert` payload.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use switchyard_plugin_api::timestamp;

/// An alert's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Active.
    Firing,
    /// Over.
    Resolved,
}

/// Payload of `infrastructure.alert`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InfrastructureAlert {
    /// The `alertname` label ("" when absent).
    pub alertname: String,
    /// firing or resolved.
    pub status: Status,
    /// The `severity` label.
    pub severity: Option<String>,
    /// The `component` label, else `job`, else `instance`.
    pub component: Option<String>,
    /// The `summary` annotation, else `description`.
    pub summary: Option<String>,
    /// When the alert started (RFC 3339 UTC, milliseconds).
    pub started_at: String,
    /// When it resolved; `None` while firing.
    pub ends_at: Option<String>,
    /// Alertmanager's fingerprint of the labels, 16 hex digits.
    pub fingerprint: String,
    /// Every label.
    pub labels: BTreeMap<String, String>,
}

/// Which of the two accepted shapes a body had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An Alertmanager webhook notification (an object with `alerts`).
    Webhook,
    /// A postable-alerts array (what Prometheus posts to Alertmanager).
    Postable,
}

/// Parses a request body into alerts. All or nothing: the first problem is
/// returned (with the path of the offending value) and nothing is taken.
pub fn parse_body(
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<(Shape, Vec<InfrastructureAlert>), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| postable(item, &format!("[{i}]"), now))
            .collect::<Result<_, _>>()
            .map(|alerts| (Shape::Postable, alerts)),
        Value::Object(obj) if obj.contains_key("alerts") => {
            webhook(&obj, now).map(|alerts| (Shape::Webhook, alerts))
        }
        _ => Err(
            "expected an Alertmanager webhook notification (an object with `version` \"4\" and \
             `alerts`) or a postable-alerts array ([{labels, annotations, startsAt, endsAt, \
             generatorURL}])"
                .to_owned(),
        ),
    }
}

fn webhook(
    obj: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Vec<InfrastructureAlert>, String> {
    match obj.get("version") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == "4" => {}
        Some(other) => {
            return Err(format!(
                "`version`: only Alertmanager webhook version \"4\" is understood, got {other}"
            ))
        }
    }
    let group_status = match obj.get("status") {
        None | Some(Value::Null) => None,
        Some(v) => Some(status(v, "status")?),
    };
    let alerts = obj
        .get("alerts")
        .and_then(Value::as_array)
        .ok_or("`alerts` must be an array of alerts")?;
    alerts
        .iter()
        .enumerate()
        .map(|(i, alert)| {
            let at = format!("alerts[{i}]");
            let a = alert
                .as_object()
                .ok_or_else(|| format!("`{at}` must be an object"))?;
            let labels = string_map(a.get("labels"), &format!("{at}.labels"), true)?;
            let annotations =
                string_map(a.get("annotations"), &format!("{at}.annotations"), false)?;
            let status = match a.get("status") {
                None | Some(Value::Null) => group_status
                    .ok_or_else(|| format!("`{at}.status` is missing (firing or resolved)"))?,
                Some(v) => status(v, &format!("{at}.status"))?,
            };
            let starts_at = time(a.get("startsAt"), &format!("{at}.startsAt"))?;
            let ends_at = time(a.get("endsAt"), &format!("{at}.endsAt"))?;
            let fingerprint = match a.get("fingerprint") {
                Some(Value::String(f)) if !f.is_empty() => f.clone(),
                None | Some(Value::Null) | Some(Value::String(_)) => fingerprint(&labels),
                Some(_) => return Err(format!("`{at}.fingerprint` must be a string")),
            };
            Ok(build(
                labels,
                &annotations,
                status,
                starts_at,
                ends_at,
                fingerprint,
                now,
            ))
        })
        .collect()
}

fn postable(item: &Value, at: &str, now: DateTime<Utc>) -> Result<InfrastructureAlert, String> {
    let a = item
        .as_object()
        .ok_or_else(|| format!("`{at}` must be an alert object"))?;
    let labels = string_map(a.get("labels"), &format!("{at}.labels"), true)?;
    if labels.is_empty() {
        return Err(format!("`{at}.labels` must hold at least one label"));
    }
    let annotations = string_map(a.get("annotations"), &format!("{at}.annotations"), false)?;
    let starts_at = time(a.get("startsAt"), &format!("{at}.startsAt"))?;
    let ends_at = time(a.get("endsAt"), &format!("{at}.endsAt"))?;
    if let (Some(s), Some(e)) = (starts_at, ends_at) {
        if e < s {
            return Err(format!("`{at}`: endsAt is before startsAt"));
        }
    }
    // As Alertmanager: resolved once endsAt has passed, firing until then.
    let status = match ends_at {
        Some(e) if e <= now => Status::Resolved,
        _ => Status::Firing,
    };
    let fingerprint = fingerprint(&labels);
    Ok(build(
        labels,
        &annotations,
        status,
        starts_at,
        ends_at,
        fingerprint,
        now,
    ))
}

fn build(
    labels: BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    status: Status,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    fingerprint: String,
    now: DateTime<Utc>,
) -> InfrastructureAlert {
    let label = |name: &str| labels.get(name).filter(|v| !v.is_empty()).cloned();
    let annotation = |name: &str| annotations.get(name).filter(|v| !v.is_empty()).cloned();
    InfrastructureAlert {
        alertname: labels.get("alertname").cloned().unwrap_or_default(),
        status,
        severity: label("severity"),
        component: label("component")
            .or_else(|| label("job"))
            .or_else(|| label("instance")),
        summary: annotation("summary").or_else(|| annotation("description")),
        // Alertmanager stamps a missing startsAt with the time it received the alert.
        started_at: timestamp(starts_at.unwrap_or(now)),
        ends_at: match status {
            Status::Firing => None,
            Status::Resolved => Some(timestamp(ends_at.unwrap_or(now))),
        },
        fingerprint,
        labels,
    }
}

/// Alertmanager's fingerprint of a label set (Prometheus `model.LabelSet.Fingerprint`):
/// FNV-1a 64 over each label, sorted by name, as name bytes, 0xff, value
/// bytes, 0xff; printed as 16 lower-case hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    const SEPARATOR: u8 = 0xff;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    // A BTreeMap iterates in byte order of the names, as Go's sort.Strings.
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[SEPARATOR]);
        add(value.as_bytes());
        add(&[SEPARATOR]);
    }
    format!("{hash:016x}")
}

fn status(value: &Value, at: &str) -> Result<Status, String> {
    match value.as_str() {
        Some("firing") => Ok(Status::Firing),
        Some("resolved") => Ok(Status::Resolved),
        _ => Err(format!(
            "`{at}` must be \"firing\" or \"resolved\", got {value}"
        )),
    }
}

/// A `{name: string}` object; absent or null is empty unless `required`.
fn string_map(
    value: Option<&Value>,
    at: &str,
    required: bool,
) -> Result<BTreeMap<String, String>, String> {
    match value {
        None | Some(Value::Null) if !required => Ok(BTreeMap::new()),
        None | Some(Value::Null) => Err(format!("`{at}` is missing (an object of strings)")),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!("`{at}.{k}` must be a string, got {other}")),
            })
            .collect(),
        Some(other) => Err(format!("`{at}` must be an object of strings, got {other}")),
    }
}

/// An RFC 3339 time; absent, null, "" and Go's zero time
/// (`0001-01-01T00:00:00Z`, Alertmanager's "unset") are `None`.
fn time(value: Option<&Value>, at: &str) -> Result<Option<DateTime<Utc>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            let t = DateTime::parse_from_rfc3339(s)
                .map_err(|_| format!("`{at}` must be an RFC 3339 time, got {s:?}"))?
                .with_timezone(&Utc);
            Ok((t.year() > 1).then_some(t))
        }
        Some(other) => Err(format!(
            "`{at}` must be an RFC 3339 time string, got {other}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-23T08:00:00Z".parse().unwrap()
    }

    /// Two notifications captured from a real Alertmanager 0.25.0 webhook
    /// receiver (`send_resolved: true`): firing, then resolved.
    const WEBHOOK_FIRING: &str = r#"{"receiver":"r","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"HighLatency","instance":"db-1:9100","job":"node","severity":"critical"},"annotations":{"description":"long","summary":"p99 latency above 2s"},"startsAt":"2026-11-23T06:00:00.123Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=latency","fingerprint":"9ceeea28345527f4"}],"groupLabels":{},"commonLabels":{"alertname":"HighLatency","instance":"db-1:9100","job":"node","severity":"critical"},"commonAnnotations":{"description":"long","summary":"p99 latency above 2s"},"externalURL":"http://vm:19093","version":"4","groupKey":"{}:{}","truncatedAlerts":0}"#;
    const WEBHOOK_RESOLVED: &str = r#"{"receiver":"r","status":"resolved","alerts":[{"status":"resolved","labels":{"alertname":"HighLatency","instance":"db-1:9100","job":"node","severity":"critical"},"annotations":{"description":"long","summary":"p99 latency above 2s"},"startsAt":"2026-11-23T06:00:00.123Z","endsAt":"2026-11-23T06:05:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=latency","fingerprint":"9ceeea28345527f4"}],"groupLabels":{},"commonLabels":{"alertname":"HighLatency","instance":"db-1:9100","job":"node","severity":"critical"},"commonAnnotations":{"description":"long","summary":"p99 latency above 2s"},"externalURL":"http://vm:19093","version":"4","groupKey":"{}:{}","truncatedAlerts":0}"#;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn real_alertmanager_webhook_firing_then_resolved() {
        let (shape, alerts) = parse_body(WEBHOOK_FIRING.as_bytes(), now()).unwrap();
        assert_eq!(shape, Shape::Webhook);
        assert_eq!(alerts.len(), 1);
        let a = &alerts[0];
        assert_eq!(a.alertname, "HighLatency");
        assert_eq!(a.status, Status::Firing);
        assert_eq!(a.severity.as_deref(), Some("critical"));
        assert_eq!(a.component.as_deref(), Some("node"), "job before instance");
        assert_eq!(a.summary.as_deref(), Some("p99 latency above 2s"));
        assert_eq!(a.started_at, "2026-11-23T06:00:00.123Z");
        assert_eq!(a.ends_at, None);
        assert_eq!(a.fingerprint, "9ceeea28345527f4");
        assert_eq!(a.labels.len(), 4);
        let payload = serde_json::to_value(a).unwrap();
        assert_eq!(payload["ends_at"], Value::Null);
        assert_eq!(payload["status"], "firing");

        let (_, alerts) = parse_body(WEBHOOK_RESOLVED.as_bytes(), now()).unwrap();
        assert_eq!(alerts[0].status, Status::Resolved);
        assert_eq!(
            alerts[0].ends_at.as_deref(),
            Some("2026-11-23T06:05:00.000Z")
        );
        // Alertmanager's own fingerprint agrees with ours.
        assert_eq!(alerts[0].fingerprint, fingerprint(&alerts[0].labels));
    }

    #[test]
    fn webhook_fallbacks() {
        let body = json!({
            "version": "4", "status": "resolved",
            "alerts": [
                {"labels": {"alertname": "A", "instance": "h:1"}, "annotations": {"description": "d"},
                 "startsAt": "2026-11-23T06:00:00+02:00", "endsAt": "0001-01-01T00:00:00Z"},
                {"status": "firing", "labels": {"component": "db", "job": "j"}, "endsAt": "2030-01-01T00:00:00Z"}
            ]
        });
        let (_, alerts) = parse_body(body.to_string().as_bytes(), now()).unwrap();
        let a = &alerts[0];
        assert_eq!(
            a.status,
            Status::Resolved,
            "group status when the alert has none"
        );
        assert_eq!(a.component.as_deref(), Some("h:1"));
        assert_eq!(a.summary.as_deref(), Some("d"));
        assert_eq!(a.started_at, "2026-11-23T04:00:00.000Z");
        assert_eq!(
            a.ends_at.as_deref(),
            Some("2026-11-23T08:00:00.000Z"),
            "unset end → now"
        );
        assert_eq!(
            a.fingerprint,
            fingerprint(&a.labels),
            "computed when absent"
        );
        let b = &alerts[1];
        assert_eq!(b.alertname, "");
        assert_eq!(b.component.as_deref(), Some("db"));
        assert_eq!(b.severity, None);
        assert_eq!(b.summary, None);
        assert_eq!(b.ends_at, None, "null while firing");
        assert_eq!(b.started_at, "2026-11-23T08:00:00.000Z");
    }

    #[test]
    fn postable_alerts_status_comes_from_ends_at() {
        let body = json!([
            {"labels": {"alertname": "DiskFull", "instance": "db-1:9100", "severity": "warning"},
             "annotations": {"summary": "disk 95% full"},
             "startsAt": "2026-11-23T07:00:00Z", "endsAt": "2026-11-23T07:30:00Z",
             "generatorURL": "http://prometheus:9090/graph"},
            {"labels": {"alertname": "DiskFull", "instance": "db-2:9100"},
             "startsAt": "2026-11-23T07:00:00Z", "endsAt": "2026-11-23T09:00:00Z"},
            {"labels": {"alertname": "Up"}}
        ]);
        let (shape, alerts) = parse_body(body.to_string().as_bytes(), now()).unwrap();
        assert_eq!(shape, Shape::Postable);
        assert_eq!(alerts[0].status, Status::Resolved, "endsAt in the past");
        assert_eq!(
            alerts[0].ends_at.as_deref(),
            Some("2026-11-23T07:30:00.000Z")
        );
        assert_eq!(alerts[0].component.as_deref(), Some("db-1:9100"));
        assert_eq!(alerts[0].summary.as_deref(), Some("disk 95% full"));
        assert_eq!(alerts[1].status, Status::Firing, "endsAt in the future");
        assert_eq!(alerts[1].ends_at, None);
        assert_eq!(alerts[2].status, Status::Firing, "no endsAt");
        assert_eq!(alerts[2].started_at, "2026-11-23T08:00:00.000Z");
        assert_eq!(alerts[0].fingerprint, fingerprint(&alerts[0].labels));
        assert_ne!(alerts[0].fingerprint, alerts[1].fingerprint);
        let (_, none) = parse_body(b"[]", now()).unwrap();
        assert!(none.is_empty());
    }

    /// An FNV-1a 64 written out independently of [`fingerprint`].
    fn fnv1a64(bytes: &[u8]) -> u64 {
        bytes.iter().fold(14_695_981_039_346_656_037, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(1_099_511_628_211)
        })
    }

    #[test]
    fn fingerprint_is_alertmanagers() {
        // FNV-1a 64 reference vectors.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
        // Labels sorted by name, each as name 0xff value 0xff.
        let ls = labels(&[
            ("severity", "critical"),
            ("alertname", "HighLatency"),
            ("instance", "db-1:9100"),
        ]);
        let mut bytes = Vec::new();
        for (k, v) in [
            ("alertname", "HighLatency"),
            ("instance", "db-1:9100"),
            ("severity", "critical"),
        ] {
            bytes.extend_from_slice(k.as_bytes());
            bytes.push(0xff);
            bytes.extend_from_slice(v.as_bytes());
            bytes.push(0xff);
        }
        assert_eq!(fingerprint(&ls), format!("{:016x}", fnv1a64(&bytes)));
        // Values read from a real Alertmanager 0.25.0 (GET /api/v2/alerts).
        assert_eq!(fingerprint(&ls), "c7491a10608db6b3");
        assert_eq!(
            fingerprint(&labels(&[("alertname", "foo")])),
            "c5a7cb176f0f418a"
        );
        assert_eq!(
            fingerprint(&labels(&[
                ("alertname", "HighLatency"),
                ("instance", "db-1:9100"),
                ("job", "node"),
                ("severity", "critical")
            ])),
            "9ceeea28345527f4"
        );
        // The empty set is the FNV offset basis; leading zeros are kept.
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        assert_eq!(fingerprint(&labels(&[("a", "b")])).len(), 16);
    }

    #[test]
    fn bad_bodies_are_refused_with_a_path() {
        let cases: &[(&str, &str)] = &[
            ("{not json", "not valid JSON"),
            ("42", "expected an Alertmanager webhook"),
            (r#"{"status":"firing"}"#, "expected an Alertmanager webhook"),
            (r#"{"version":"3","alerts":[]}"#, "`version`"),
            (r#"{"version":"4","alerts":{}}"#, "`alerts`"),
            (r#"{"alerts":[{"labels":{"a":"b"}}]}"#, "`alerts[0].status`"),
            (
                r#"{"alerts":[{"status":"gone","labels":{}}]}"#,
                "`alerts[0].status`",
            ),
            (r#"{"alerts":[{"status":"firing"}]}"#, "`alerts[0].labels`"),
            (
                r#"{"alerts":[{"status":"firing","labels":{"a":1}}]}"#,
                "`alerts[0].labels.a`",
            ),
            (
                r#"{"alerts":[{"status":"firing","labels":{},"startsAt":"yesterday"}]}"#,
                "`alerts[0].startsAt`",
            ),
            (
                r#"{"alerts":[{"status":"firing","labels":{},"fingerprint":7}]}"#,
                "`alerts[0].fingerprint`",
            ),
            ("[1]", "`[0]`"),
            (r#"[{"labels":{}}]"#, "`[0].labels`"),
            (
                r#"[{"labels":{"a":"b"}},{"annotations":{}}]"#,
                "`[1].labels`",
            ),
            (
                r#"[{"labels":{"a":"b"},"annotations":[]}]"#,
                "`[0].annotations`",
            ),
            (r#"[{"labels":{"a":"b"},"endsAt":5}]"#, "`[0].endsAt`"),
            (
                r#"[{"labels":{"a":"b"},"startsAt":"2026-11-23T07:00:00Z","endsAt":"2026-11-23T06:00:00Z"}]"#,
                "before",
            ),
        ];
        for (body, wanted) in cases {
            let e = parse_body(body.as_bytes(), now()).unwrap_err();
            assert!(e.contains(wanted), "{body} -> {e}");
        }
    }
}
