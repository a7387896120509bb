//! Whether this node can take part in the cluster now: Redis reachable, its
//! own heartbeat coming back through pub/sub, every channel caught up
//! after an outage. What `/health`, publishes and plugin emits ask.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

/// What a node announces in its heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Beat {
    /// The node.
    pub node: String,
    /// Its `config_version`.
    pub config_version: u64,
    /// A digest of its registry (channels, types, endpoints).
    pub digest: String,
}

/// A node seen through its heartbeats.
#[derive(Clone, Debug)]
struct Seen {
    beat: Beat,
    at: Instant,
}

#[derive(Debug)]
struct State {
    /// Why the node is out of the cluster, while it is.
    down: Option<String>,
    /// When this node's own heartbeat last came back.
    own_beat: Instant,
    nodes: BTreeMap<String, Seen>,
}

/// The node's standing in the cluster.
#[derive(Debug)]
pub struct Health {
    node: String,
    unhealthy_after: Duration,
    /// Nodes not heard from for this long are no longer listed.
    forget_after: Duration,
    state: Mutex<State>,
}

impl Health {
    /// A node not yet in touch with the cluster.
    pub fn new(node: &str, heartbeat: Duration, unhealthy_after: Duration) -> Health {
        Health {
            node: node.to_owned(),
            unhealthy_after,
            forget_after: (heartbeat * 3).max(unhealthy_after),
            state: Mutex::new(State {
                down: Some("not yet connected to Redis".into()),
                own_beat: Instant::now(),
                nodes: BTreeMap::new(),
            }),
        }
    }

    /// `Ok` while the node can publish; else why not, for operators.
    pub fn status(&self) -> Result<(), String> {
        let state = self.state.lock();
        if let Some(reason) = &state.down {
            return Err(reason.clone());
        }
        let silent = state.own_beat.elapsed();
        if silent > self.unhealthy_after {
            return Err(format!(
                "this node's heartbeat has not come back through Redis pub/sub for {} ms \
                 (cluster.unhealthy_after_ms = {})",
                silent.as_millis(),
                self.unhealthy_after.as_millis()
            ));
        }
        Ok(())
    }

    /// The node is out of the cluster for `reason`.
    pub fn down(&self, reason: String) {
        self.state.lock().down = Some(reason);
    }

    /// The node is back, caught up: its own heartbeat counts from now.
    pub fn up(&self) {
        let mut state = self.state.lock();
        state.down = None;
        state.own_beat = Instant::now();
    }

    /// A heartbeat came in.
    pub fn heard(&self, beat: Beat) {
        let mut state = self.state.lock();
        let now = Instant::now();
        if beat.node == self.node {
            state.own_beat = now;
        }
        state
            .nodes
            .insert(beat.node.clone(), Seen { beat, at: now });
    }

    /// The nodes heard from lately, this one among them.
    pub fn live_nodes(&self) -> Vec<Beat> {
        let mut state = self.state.lock();
        let forget = self.forget_after;
        state.nodes.retain(|_, seen| seen.at.elapsed() <= forget);
        state.nodes.values().map(|s| s.beat.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_healthy_only_while_its_own_heartbeat_comes_back() {
        let health = Health::new("a", Duration::from_millis(10), Duration::from_millis(30));
        assert!(health.status().unwrap_err().contains("not yet connected"));
        health.up();
        assert_eq!(health.status(), Ok(()));
        let beat = |node: &str| Beat {
            node: node.into(),
            config_version: 1,
            digest: "d".into(),
        };
        health.heard(beat("b"));
        std::thread::sleep(Duration::from_millis(40));
        let silent = health.status().unwrap_err();
        assert!(silent.contains("heartbeat"), "{silent}");
        health.heard(beat("a"));
        assert_eq!(health.status(), Ok(()));
        assert_eq!(health.live_nodes(), [beat("a")], "b was not heard lately");
        health.down("cannot reach Redis".into());
        assert_eq!(health.status().unwrap_err(), "cannot reach Redis");
    }
}
