//! The live gap report (`GET /api/websocket/coverage`): events nobody
//! consumes, types nobody produces, patterns that match nothing, and
//! endpoints clients ask for that do not exist.
//!
//! Counts survive reloads (they are kept by type name, not by snapshot).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
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

/// One type's line of a [`Tally`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeTally {
    /// Events of the type accepted.
    pub produced: u64,
    /// Connections they were queued for.
    pub delivered: u64,
    /// Connections that receive the type now.
    pub subscribers: u64,
    /// When the last one was accepted (Unix ms).
    pub last_produced_ms: Option<i64>,
}

/// The report's counts, taken from one node and added up over several:
/// what a cluster's report is made of (an event produced on one node and
/// consumed on another is consumed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Every routable type.
    pub types: BTreeMap<String, TypeTally>,
    /// Held patterns matching nothing, with the connections holding each.
    pub dead_patterns: BTreeMap<String, u64>,
    /// Paths asked for that are not endpoints, with the requests for each.
    pub unknown_paths: BTreeMap<String, u64>,
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

    /// This node's counts, with what the table knows now.
    pub fn tally(&self, live: &Live) -> Tally {
        let counted = self.types.lock();
        let types = live
            .subscribers
            .iter()
            .map(|(name, subscribers)| {
                let counts = counted.get(name).cloned().unwrap_or_default();
                let line = TypeTally {
                    produced: counts.produced,
                    delivered: counts.delivered,
                    subscribers: *subscribers as u64,
                    last_produced_ms: counts.last_produced_at.map(|t| t.timestamp_millis()),
                };
                (name.clone(), line)
            })
            .collect();
        Tally {
            types,
            dead_patterns: live
                .dead_patterns
                .iter()
                .map(|(p, n)| (p.clone(), *n as u64))
                .collect(),
            unknown_paths: self
                .unknown_paths
                .lock()
                .iter()
                .map(|(p, n)| (p.clone(), *n))
                .collect(),
        }
    }

    /// The report of this node alone.
    pub fn report(&self, live: &Live) -> Value {
        self.tally(live).report()
    }
}

impl Tally {
    /// Adds another node's counts: its lines of the types this one
    /// registers, and all of its patterns and paths.
    pub fn add(&mut self, other: &Tally) {
        for (name, theirs) in &other.types {
            if let Some(ours) = self.types.get_mut(name) {
                ours.produced += theirs.produced;
                ours.delivered += theirs.delivered;
                ours.subscribers += theirs.subscribers;
                ours.last_produced_ms = ours.last_produced_ms.max(theirs.last_produced_ms);
            }
        }
        for (pattern, n) in &other.dead_patterns {
            *self.dead_patterns.entry(pattern.clone()).or_default() += n;
        }
        for (path, n) in &other.unknown_paths {
            *self.unknown_paths.entry(path.clone()).or_default() += n;
        }
    }

    /// The report (`GET /api/websocket/coverage`).
    pub fn report(&self) -> Value {
        let mut per_type = Map::new();
        let mut unconsumed = Vec::new();
        let mut never = Vec::new();
        for (name, line) in &self.types {
            let last = line
                .last_produced_ms
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .map(crate::protocol::timestamp);
            per_type.insert(
                name.clone(),
                json!({
                    "produced": line.produced,
                    "last_produced_at": last,
                    "subscribers": line.subscribers,
                    "delivered": line.delivered,
                }),
            );
            if line.produced == 0 {
                never.push((name.clone(), 0));
            } else if line.subscribers == 0 {
                unconsumed.push((name.clone(), line.produced));
            }
        }
        let listed = |map: &BTreeMap<String, u64>| -> Vec<(String, u64)> {
            map.iter().map(|(k, n)| (k.clone(), *n)).collect()
        };
        let mut truncated = false;
        let mut top = |mut list: Vec<(String, u64)>| {
            list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            truncated |= list.len() > MAX_LISTED;
            list.truncate(MAX_LISTED);
            list
        };
        let unconsumed: Vec<String> = top(unconsumed).into_iter().map(|(n, _)| n).collect();
        let dead: Vec<Value> = top(listed(&self.dead_patterns))
            .into_iter()
            .map(|(p, n)| json!({"pattern": p, "connections": n}))
            .collect();
        let paths: Vec<Value> = top(listed(&self.unknown_paths))
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
    fn tallies_of_nodes_add_up_so_a_type_consumed_elsewhere_is_consumed() {
        let here = Coverage::default();
        here.produced("alert.created", 0);
        let there = Coverage::default();
        there.delivered("alert.created", 2);
        there.unknown_endpoint("/ws/x");
        let live = |subscribers: usize| Live {
            subscribers: vec![("alert.created".into(), subscribers)],
            dead_patterns: HashMap::new(),
        };
        let alone = here.report(&live(0));
        assert_eq!(
            alone["produced_without_subscribers"],
            json!(["alert.created"])
        );
        let mut tally = here.tally(&live(0));
        let theirs = there.tally(&live(2));
        let wire: Tally = serde_json::from_str(&serde_json::to_string(&theirs).unwrap()).unwrap();
        tally.add(&wire);
        let r = tally.report();
        assert_eq!(r["types"]["alert.created"]["produced"], 1);
        assert_eq!(r["types"]["alert.created"]["delivered"], 2);
        assert_eq!(r["types"]["alert.created"]["subscribers"], 2);
        assert_eq!(r["produced_without_subscribers"], json!([]));
        assert_eq!(
            r["unknown_endpoints_requested"],
            json!([{"path": "/ws/x", "requests": 1}])
        );
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
