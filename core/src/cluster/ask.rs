//! Questions a node asks every other, for the operations that span the
//! cluster: the connections list, admin disconnects and the coverage
//! report (docs/cluster.md, "Operations across nodes").
//!
//! A question goes out on `P:commands` with an id; each live node answers
//! on the asker's own `P:replies:<node>`. The asker waits for every node
//! whose lease is current (see [`super::leases`]), at most
//! [`ANSWER_WITHIN`]; the nodes that did not answer in time are named, never silently left out. The answers
//! themselves are made by [`answer`], the same function a node uses for its
//! own part.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::Shared;
use crate::protocol::timestamp;
use crate::router::Router;

/// How long an asker waits for the other nodes' answers.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// What one node can be asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum Question {
    /// Its connections, filtered and paged as `GET /api/websocket/connections`.
    Connections {
        /// Only this user's.
        user: Option<String>,
        /// Only this endpoint's.
        endpoint: Option<String>,
        /// Only ids after this one.
        after: Option<String>,
        /// At most this many (the first by id).
        limit: usize,
    },
    /// To close connections as `POST /api/admin/disconnect`.
    Disconnect {
        /// The connection with this id.
        connection_id: Option<String>,
        /// Every connection of this user.
        user: Option<String>,
    },
    /// Its gap-report counts.
    Coverage,
}

/// A question on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Asked {
    /// Unique per asker.
    pub id: u64,
    /// The asking node: where the answer goes.
    pub from: String,
    /// The question.
    pub question: Question,
}

/// An answer on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answered {
    /// The question's id.
    pub id: u64,
    /// The answering node.
    pub node: String,
    /// What [`answer`] said there.
    pub answer: Value,
}

/// What the other nodes said.
#[derive(Debug, Default)]
pub struct Answers {
    /// Each answering node's answer.
    pub answers: Vec<(String, Value)>,
    /// Who did not answer.
    pub unanswered: Unanswered,
}

/// Who an answer lacks, so that it never leaves a node out silently.
#[derive(Debug, Default)]
pub struct Unanswered {
    /// Live nodes that did not answer within [`ANSWER_WITHIN`].
    pub missing: Vec<String>,
    /// Why the other nodes could not even be asked (Redis out of reach):
    /// the answer is this node's alone.
    pub unreachable: Option<String>,
}

impl Unanswered {
    /// Adds `missing_nodes` and `cluster_unreachable` to a reply body when
    /// they apply.
    pub fn note(&self, body: &mut Value) {
        if !self.missing.is_empty() {
            body["missing_nodes"] = json!(self.missing);
        }
        if let Some(reason) = &self.unreachable {
            body["cluster_unreachable"] = json!(reason);
        }
    }
}

/// The questions this node is waiting on.
#[derive(Debug, Default)]
pub struct Pending {
    next: AtomicU64,
    waiting: Mutex<HashMap<u64, mpsc::UnboundedSender<(String, Value)>>>,
}

impl Pending {
    /// Hands an answer to whoever asked (late ones go nowhere).
    pub fn deliver(&self, answered: Answered) {
        if let Some(tx) = self.waiting.lock().get(&answered.id) {
            let _ = tx.send((answered.node, answered.answer));
        }
    }
}

/// Asks every other live node `question`; waits for their answers.
pub async fn ask_others(shared: &Shared, question: Question) -> Answers {
    let members = match super::leases::members(shared).await {
        Ok(members) => members,
        Err(e) => {
            return Answers {
                answers: Vec::new(),
                unanswered: Unanswered {
                    missing: Vec::new(),
                    unreachable: Some(shared.unreachable(&e)),
                },
            }
        }
    };
    let mut expected: Vec<String> = members
        .into_iter()
        .filter(|node| *node != shared.node)
        .collect();
    if expected.is_empty() {
        return Answers::default();
    }
    let id = shared.pending.next.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::unbounded_channel();
    shared.pending.waiting.lock().insert(id, tx);
    let asked = Asked {
        id,
        from: shared.node.clone(),
        question,
    };
    let text = serde_json::to_string(&asked).expect("a question serializes");
    let mut conn = shared.conn.clone();
    let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
        .arg(shared.keys.commands())
        .arg(text)
        .query_async(&mut conn)
        .await;
    let mut answers = Vec::new();
    let unreachable = sent.as_ref().err().map(|e| shared.unreachable(e));
    if sent.is_ok() {
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        while !expected.is_empty() {
            let Ok(Some((node, answer))) = tokio::time::timeout_at(deadline, rx.recv()).await
            else {
                break;
            };
            expected.retain(|n| *n != node);
            answers.push((node, answer));
        }
    }
    shared.pending.waiting.lock().remove(&id);
    Answers {
        answers,
        unanswered: Unanswered {
            missing: expected,
            unreachable,
        },
    }
}

/// This node's answer to `question` (`node` is its name in a cluster).
pub fn answer(router: &Router, node: Option<&str>, question: &Question) -> Value {
    match question {
        Question::Connections {
            user,
            endpoint,
            after,
            limit,
        } => {
            let mut all = router.connections();
            all.retain(|(c, _)| {
                user.as_deref().is_none_or(|u| c.user.as_deref() == Some(u))
                    && endpoint.as_ref().is_none_or(|e| *c.endpoint == **e)
                    && after.as_deref().is_none_or(|a| &*c.public_id > a)
            });
            all.sort_by(|a, b| a.0.public_id.cmp(&b.0.public_id));
            all.truncate(*limit);
            let list: Vec<Value> = all
                .iter()
                .map(|(c, patterns)| {
                    let (queue_depth, dropped) = c.outbox.depth();
                    let mut entry = json!({
                        "id": c.public_id,
                        "endpoint": &*c.endpoint,
                        "user": c.user,
                        "ip": c.ip.to_string(),
                        "patterns": patterns,
                        "queue_depth": queue_depth,
                        "dropped": dropped,
                        "connected_at": timestamp(c.connected_at),
                    });
                    if let Some(node) = node {
                        entry["node"] = json!(node);
                    }
                    entry
                })
                .collect();
            Value::Array(list)
        }
        Question::Disconnect {
            connection_id,
            user,
        } => {
            let closed = router
                .connections()
                .into_iter()
                .filter(|(c, _)| {
                    connection_id
                        .as_deref()
                        .is_some_and(|id| &*c.public_id == id)
                        || user
                            .as_deref()
                            .is_some_and(|u| c.user.as_deref() == Some(u))
                })
                .inspect(|(c, _)| c.close(1008, "disconnected by operator"))
                .count();
            json!(closed)
        }
        Question::Coverage => {
            serde_json::to_value(router.coverage_tally()).expect("a tally serializes")
        }
    }
}
