//! The live gap report (`GET /api/websocket/coverage`): events nobody
//! consumes, types nobody produces, patterns that match nothing, and
//! endpoints clients ask for that do not exist.
//!
//! Counts survive reloads (they are kept by type name, not by snapshot).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

/// Most entries in each list of the report.
pub const MAX_LISTED: usize = 100;
/// Most distinct unknown paths remembered (so probing cannot grow memory).
const MAX_UNKNOWN_PATHS: usize = 1000;

/// What was produced and delivered of one type.
#[derive(Clone, Debug, Default)]
struct TypeCounts {
    produced: u64,
    delivered: u64,
    last_produced_at: Option<DateTime<Utc>>,
}

/// The counters behind the report.
#[derive(Debug, Default)]
pub struct Coverage {
    types: Mutex<HashMap<String, TypeCounts>>,
    unknown_paths: Mutex<HashMap<String, u64>>,
}

/// What the routing table knows at report time.
#[derive(Debug, Default)]
pub struct Live {
    /// Every routable type with its current subscriber count.
    pub subscribers: Vec<(String, usize)>,
    /// Held patterns that match no registered type, with how many
    /// connections hold each.
    pub dead_patterns: HashMap<String, usize>,
}

impl Coverage {
    /// Counts one produced event and the connections it was queued for.
    pub fn produced(&self, type_name: &str, delivered: u64) {
        let mut types = self.types.lock();
        let counts = types.entry(type_name.to_owned()).or_default();
        counts.produced += 1;
        counts.delivered += delivered;
        counts.last_produced_at = Some(Utc::now());
    }

    /// Counts the connections a received event was queued for (cluster
    /// engine: the node that accepted it counted it as produced).
    pub fn delivered(&self, type_name: &str, delivered: u64) {
        let mut types = self.types.lock();
        types.entry(type_name.to_owned()).or_default().delivered += delivered;
    }

    /// Counts an upgrade on a path that is not an endpoint.
    pub fn unknown_endpoint(&self, path: &str) {
        let mut paths = self.unknown_paths.lock();
        if let Some(n) = paths.get_mut(path) {
            *n += 1;
        } else if paths.len() < MAX_UNKNOWN_PATHS {
            paths.insert(path.to_owned(), 1);
        }
    }

    /// The report.
    pub fn report(&self, live: &Live) -> Value {
        let types = self.types.lock().clone();
        let mut per_type = Map::new();
        let mut unconsumed = Vec::new();
        let mut never = Vec::new();
        for (name, subscribers) in &live.subscribers {
            let counts = types.get(name).cloned().unwrap_or_default();
            per_type.insert(
                name.clone(),
                json!({
                    "produced": counts.produced,
                    "last_produced_at": counts.last_produced_at.map(crate::protocol::timestamp),
                    "subscribers": subscribers,
                    "delivered": counts.delivered,
                }),
            );
            if counts.produced == 0 {
                never.push((name.clone(), 0));
            } else if *subscribers == 0 {
                unconsumed.push((name.clone(), counts.produced));
            }
        }
        let dead: Vec<(String, u64)> = live
            .dead_patterns
            .iter()
            .map(|(p, n)| (p.clone(), *n as u64))
            .collect();
        let paths: Vec<(String, u64)> = self
            .unknown_paths
            .lock()
            .iter()
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        let mut truncated = false;
        let mut top = |mut list: Vec<(String, u64)>| {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            truncated |= list.len() > MAX_LISTED;
            list.truncate(MAX_LISTED);
            list
        };
        let unconsumed: Vec<String> = top(unconsumed).into_iter().map(|(n, _)| n).collect();
        let dead: Vec<Value> = top(dead)
            .into_iter()
            .map(|(p, n)| json!({"pattern": p, "connections": n}))
            .collect();
        let paths: Vec<Value> = top(paths)
            .into_iter()
            .map(|(p, n)| json!({"path": p, "requests": n}))
            .collect();
        never.sort();
        let mut report = json!({
            "types": per_type,
            "produced_without_subscribers": unconsumed,
            "registered_never_produced": never.into_iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "patterns_matching_nothing": dead,
            "unknown_endpoints_requested": paths,
        });
        if truncated {
            report["truncated"] = json!(true);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_the_gaps() {
        let c = Coverage::default();
        c.produced("alert.created", 3);
        c.produced("detection.new", 0);
        c.unknown_endpoint("/ws/detections");
        c.unknown_endpoint("/ws/detections");
        let live = Live {
            subscribers: vec![
                ("alert.created".into(), 3),
                ("detection.new".into(), 0),
                ("camera.error".into(), 1),
            ],
            dead_patterns: [("alret.*".to_owned(), 2)].into(),
        };
        let r = c.report(&live);
        assert_eq!(r["types"]["alert.created"]["produced"], 1);
        assert_eq!(r["types"]["alert.created"]["delivered"], 3);
        assert_eq!(r["types"]["alert.created"]["subscribers"], 3);
        assert_eq!(r["produced_without_subscribers"], json!(["detection.new"]));
        assert_eq!(r["registered_never_produced"], json!(["camera.error"]));
        assert_eq!(
            r["patterns_matching_nothing"],
            json!([{"pattern": "alret.*", "connections": 2}])
        );
        assert_eq!(
            r["unknown_endpoints_requested"],
            json!([{"path": "/ws/detections", "requests": 2}])
        );
        assert!(r.get("truncated").is_none());
    }

    #[test]
    fn long_lists_are_cut_and_flagged() {
        let c = Coverage::default();
        for i in 0..150 {
            c.unknown_endpoint(&format!("/ws/x{i}"));
        }
        let r = c.report(&Live::default());
        assert_eq!(
            r["unknown_endpoints_requested"].as_array().unwrap().len(),
            MAX_LISTED
        );
        assert_eq!(r["truncated"], true);
    }
}
