//! The model-based delivery property: random sequences of publish,
//! connect, subscribe, unsubscribe, reload, disconnect and
//! reconnect-with-since, driven socket-less against the router, and checked
//! against a model of what each client must receive.
//!
//! Every connection is healthy (queues far larger than anything a case
//! publishes), so none may ever lose or repeat an event:
//! - per channel (and epoch), the sequences a client receives strictly
//!   increase, across reconnects too;
//! - a client receives exactly the events published while it was connected
//!   whose channel its endpoint carried and whose type its patterns matched
//!   (everything before its first subscribe), plus — after a recovery that
//!   answered `recovered: true` — every event of that channel above its
//!   `since` that its patterns match; and nothing else;
//! - recovery answers `recovered: false` only for the reasons
//!   docs/protocol.md gives ("Recovery with `since`": `epoch_changed`,
//!   `unknown_channel`): history here is never exhausted;
//! - `subscribed` / `unsubscribed` echo the patterns the model holds.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use futures_util::FutureExt;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed, TestCaseError};
use serde_json::{json, Value};
use switchyard::config::{self, Config};
use switchyard::connection::outbox::Written;
use switchyard::connection::ConnRef;
use switchyard::protocol::Position;
use switchyard::registry::Registry;
use switchyard::router::{Incoming, Origin, Router, Snapshot};

// ---------------------------------------------------------------------------
// The configurations a case moves between.

/// One configuration: channels with their types, and endpoints.
struct Variant {
    /// (channel, description, types on it).
    channels: &'static [(&'static str, &'static str, &'static [&'static str])],
    /// (path, channels).
    endpoints: &'static [(&'static str, &'static [&'static str])],
}

const BASE_CHANNELS: &[(&str, &str, &[&str])] = &[
    ("alerts", "Alerts", &["alert.created", "alert.resolved"]),
    ("jobs", "Jobs", &["job.progress", "job.failed"]),
    ("system", "System", &["system.status"]),
];
const BASE_ENDPOINTS: &[(&str, &[&str])] = &[
    ("/ws/events", &["alerts", "jobs"]),
    ("/ws/system", &["system", "jobs"]),
];

/// The variants, by index: 0 is where every case starts.
const VARIANTS: &[Variant] = &[
    // 0: base.
    Variant {
        channels: BASE_CHANNELS,
        endpoints: BASE_ENDPOINTS,
    },
    // 1: the same with other descriptions.
    Variant {
        channels: &[
            (
                "alerts",
                "Alert notifications",
                &["alert.created", "alert.resolved"],
            ),
            ("jobs", "Background jobs", &["job.progress", "job.failed"]),
            ("system", "System health", &["system.status"]),
        ],
        endpoints: BASE_ENDPOINTS,
    },
    // 2: an extra channel, type and endpoint; /ws/events carries it too.
    Variant {
        channels: &[
            ("alerts", "Alerts", &["alert.created", "alert.resolved"]),
            ("jobs", "Jobs", &["job.progress", "job.failed"]),
            ("system", "System", &["system.status"]),
            ("audit", "Audit trail", &["audit.logged"]),
        ],
        endpoints: &[
            ("/ws/events", &["alerts", "jobs", "audit"]),
            ("/ws/system", &["system", "jobs"]),
            ("/ws/audit", &["audit"]),
        ],
    },
    // 3: /ws/system carries alerts too.
    Variant {
        channels: BASE_CHANNELS,
        endpoints: &[
            ("/ws/events", &["alerts", "jobs"]),
            ("/ws/system", &["system", "jobs", "alerts"]),
        ],
    },
    // 4: job.failed moved to the system channel.
    Variant {
        channels: &[
            ("alerts", "Alerts", &["alert.created", "alert.resolved"]),
            ("jobs", "Jobs", &["job.progress"]),
            ("system", "System", &["system.status", "job.failed"]),
        ],
        endpoints: BASE_ENDPOINTS,
    },
];

impl Variant {
    fn toml(&self) -> String {
        let mut out = String::from(
            "[server]\nsend_queue = 100000\nsend_queue_bytes = 1073741824\nmax_patterns = 64\n\n",
        );
        for (name, description, _) in self.channels {
            out += &format!(
                "[[channels]]\nname = \"{name}\"\ndescription = \"{description}\"\n\
                 history = 100000\nhistory_ttl_s = 0\nhistory_max_bytes = 1073741824\n\n"
            );
        }
        for (path, channels) in self.endpoints {
            let list: Vec<String> = channels.iter().map(|c| format!("\"{c}\"")).collect();
            out += &format!(
                "[[endpoints]]\npath = \"{path}\"\nchannels = [{}]\n\n",
                list.join(", ")
            );
        }
        for (channel, _, types) in self.channels {
            for t in *types {
                let aliases = if *t == "job.progress" {
                    "[\"job_progress\"]"
                } else {
                    "[]"
                };
                out += &format!(
                    "[[event_types]]\nname = \"{t}\"\nchannel = \"{channel}\"\naliases = {aliases}\n\
                     [event_types.payload]\nn = {{ type = \"integer\" }}\n\n"
                );
            }
        }
        out
    }

    fn channel_of(&self, type_name: &str) -> Option<&'static str> {
        self.channels
            .iter()
            .find(|(_, _, types)| types.contains(&type_name))
            .map(|(c, _, _)| *c)
    }

    fn carries(&self, endpoint: &str, channel: &str) -> bool {
        self.endpoints
            .iter()
            .any(|(p, chans)| *p == endpoint && chans.contains(&channel))
    }
}

static CONFIGS: LazyLock<Vec<Config>> = LazyLock::new(|| {
    VARIANTS
        .iter()
        .map(|v| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.toml");
            std::fs::write(&path, v.toml()).unwrap();
            config::load_with_env(&path, Vec::new())
                .unwrap_or_else(|e| panic!("{e}: {:?}", e.problems()))
                .config
        })
        .collect()
});

fn snapshot(variant: usize, version: u64) -> Snapshot {
    let config = CONFIGS[variant].clone();
    let built = Registry::build(&config, &[]).unwrap();
    Snapshot {
        version,
        loaded_at: chrono::Utc::now(),
        config: Arc::new(config),
        registry: built.registry,
        warnings: built.warnings,
        sinks: BTreeMap::new(),
    }
}

// ---------------------------------------------------------------------------
// Operations.

const TYPES: &[&str] = &[
    "alert.created",
    "alert.resolved",
    "job.progress",
    "job.failed",
    "system.status",
    "audit.logged",
];

const PATTERNS: &[&str] = &[
    "*",
    "alert.*",
    "job.*",
    "system.*",
    "audit.*",
    "alert.created",
    "alert.resolved",
    "job_progress",
    "job.failed",
    "system.status",
    "audit.logged",
    "nothing.here",
    "connection.*",
    "Bad*",
];

const ENDPOINTS: &[&str] = &["/ws/events", "/ws/system"];

/// One step. Clients are numbered in connect order; an index past the last
/// client is taken modulo the number of clients, so shrinking keeps steps
/// meaningful.
#[derive(Clone, Debug)]
enum Op {
    /// `POST /api/events` with these types, as one batch.
    Publish(Vec<&'static str>),
    /// A new client; `None` patterns = no `?events=` (receive all).
    Connect(&'static str, Option<Vec<&'static str>>),
    /// `subscribe`; with `since` = the client's last positions when true.
    Subscribe(usize, Vec<&'static str>, bool),
    /// `unsubscribe`; `None` = all.
    Unsubscribe(usize, Option<Vec<&'static str>>),
    /// Apply configuration variant N.
    Reload(usize),
    /// The transport ends; the client goes offline and remembers where it was.
    Disconnect(usize),
    /// An offline client connects again with `since` = where it was and the
    /// patterns it held.
    Reconnect(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let patterns = || prop::collection::vec(prop::sample::select(PATTERNS), 0..4);
    prop_oneof![
        6 => prop::collection::vec(prop::sample::select(TYPES), 1..4).prop_map(Op::Publish),
        2 => (prop::sample::select(ENDPOINTS), prop::option::of(patterns()))
            .prop_map(|(e, p)| Op::Connect(e, p)),
        2 => (0..6usize, patterns(), any::<bool>()).prop_map(|(c, p, s)| Op::Subscribe(c, p, s)),
        1 => (0..6usize, prop::option::of(patterns())).prop_map(|(c, p)| Op::Unsubscribe(c, p)),
        1 => (0..VARIANTS.len()).prop_map(Op::Reload),
        1 => (0..6usize).prop_map(Op::Disconnect),
        2 => (0..6usize).prop_map(Op::Reconnect),
    ]
}

// ---------------------------------------------------------------------------
// The model.

/// An event as the model knows it: (channel, epoch, sequence).
type EventId = (String, String, u64);

#[derive(Debug)]
struct Client {
    endpoint: &'static str,
    /// Canonical patterns held; `None` = never subscribed (receive all).
    held: Option<Vec<String>>,
    /// Per channel: the epoch the client knows and the last sequence it saw.
    known: BTreeMap<String, (String, u64)>,
    /// Every event received, in order, over all its connections.
    received: Vec<EventId>,
    /// Every event it must receive.
    expected: BTreeSet<EventId>,
    conn: Option<ConnRef>,
}

struct Published {
    id: EventId,
    type_name: &'static str,
}

struct Model {
    router: Router,
    variant: usize,
    version: u64,
    clients: Vec<Client>,
    /// Every accepted event, in stamping order.
    log: Vec<Published>,
    n: u64,
}

fn canonical(pattern: &str) -> Option<String> {
    match pattern {
        "Bad*" | "connection.*" => None,
        "job_progress" => Some("job.progress".into()),
        other => Some(other.into()),
    }
}

fn matches(pattern: &str, type_name: &str) -> bool {
    match pattern.strip_suffix(".*") {
        _ if pattern == "*" => true,
        Some(domain) => type_name.split('.').next() == Some(domain),
        None => pattern == type_name,
    }
}

fn wants(held: &Option<Vec<String>>, type_name: &str) -> bool {
    held.as_ref()
        .is_none_or(|h| h.iter().any(|p| matches(p, type_name)))
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

impl Model {
    fn new() -> Model {
        Model {
            router: Router::new(snapshot(0, 1)),
            variant: 0,
            version: 1,
            clients: Vec::new(),
            log: Vec::new(),
            n: 0,
        }
    }

    fn variant(&self) -> &'static Variant {
        &VARIANTS[self.variant]
    }

    fn pick(&self, index: usize) -> Option<usize> {
        (!self.clients.is_empty()).then(|| index % self.clients.len())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Publish(types) => self.publish(types)?,
            Op::Connect(endpoint, patterns) => {
                let mut client = Client {
                    endpoint,
                    held: None,
                    known: BTreeMap::new(),
                    received: Vec::new(),
                    expected: BTreeSet::new(),
                    conn: None,
                };
                if let Some(p) = patterns {
                    client.held = Some(Vec::new());
                    add_patterns(&mut client.held, p);
                }
                let conn = self.connect(endpoint, patterns.as_ref().map(|p| strings(p)), None);
                client.conn = Some(conn);
                self.clients.push(client);
                let c = self.clients.len() - 1;
                let expect = patterns.is_some().then_some(Expect::Subscribed);
                self.drain(c, expect)?;
            }
            Op::Subscribe(index, patterns, with_since) => {
                let Some(c) = self.pick(*index) else {
                    return Ok(());
                };
                let Some(conn) = self.clients[c].conn.clone() else {
                    return Ok(());
                };
                let client = &mut self.clients[c];
                if client.held.is_none() {
                    client.held = Some(Vec::new());
                }
                add_patterns(&mut client.held, patterns);
                let since = with_since.then(|| since_of(client));
                self.router
                    .subscribe(&conn, &strings(patterns), since.as_ref(), &None);
                self.drain(c, Some(Expect::Recovery(since)))?;
            }
            Op::Unsubscribe(index, patterns) => {
                let Some(c) = self.pick(*index) else {
                    return Ok(());
                };
                let Some(conn) = self.clients[c].conn.clone() else {
                    return Ok(());
                };
                let client = &mut self.clients[c];
                match patterns {
                    None => client.held = Some(Vec::new()),
                    Some(list) => {
                        if let Some(held) = &mut client.held {
                            let remove: Vec<String> = list
                                .iter()
                                .map(|p| {
                                    if *p == "job_progress" {
                                        "job.progress".to_owned()
                                    } else {
                                        p.to_string()
                                    }
                                })
                                .collect();
                            held.retain(|h| !remove.contains(h));
                        }
                    }
                }
                let list = patterns.as_ref().map(|p| strings(p));
                self.router.unsubscribe(&conn, list.as_deref(), &None);
                self.drain(c, Some(Expect::Unsubscribed))?;
            }
            Op::Reload(variant) => {
                self.version += 1;
                self.variant = *variant;
                let applied = self.router.apply(snapshot(*variant, self.version));
                prop_assert_eq!(applied.closed, 0, "no endpoint in use is removed");
                for c in 0..self.clients.len() {
                    self.drain(c, None)?;
                }
            }
            Op::Disconnect(index) => {
                let Some(c) = self.pick(*index) else {
                    return Ok(());
                };
                if let Some(conn) = self.clients[c].conn.take() {
                    self.router.disconnect(&conn);
                    let late = conn.outbox.next_batch().now_or_never();
                    prop_assert!(
                        late.is_none_or(|b| b.frames.is_empty()),
                        "nothing queued after the last drain"
                    );
                }
            }
            Op::Reconnect(index) => {
                let Some(c) = self.pick(*index) else {
                    return Ok(());
                };
                if self.clients[c].conn.is_some() {
                    return Ok(());
                }
                let client = &self.clients[c];
                let since = since_of(client);
                let conn = self.connect(client.endpoint, client.held.clone(), Some(since.clone()));
                self.clients[c].conn = Some(conn);
                self.drain(c, Some(Expect::Recovery(Some(since))))?;
            }
        }
        Ok(())
    }

    fn connect(
        &self,
        endpoint: &str,
        events: Option<Vec<String>>,
        since: Option<BTreeMap<String, Position>>,
    ) -> ConnRef {
        support::open_direct(&self.router, endpoint, events, since)
    }

    fn publish(&mut self, types: &[&'static str]) -> Result<(), TestCaseError> {
        let variant = self.variant();
        let batch: Vec<Incoming> = types
            .iter()
            .map(|t| {
                self.n += 1;
                Incoming {
                    type_name: if *t == "job.progress" && self.n % 2 == 0 {
                        "job_progress".into()
                    } else {
                        t.to_string()
                    },
                    payload: json!({ "n": self.n }),
                    correlation_id: None,
                    idempotency_key: None,
                }
            })
            .collect();
        let result = self.router.publish(batch, &Origin::Http).wait();
        let registered = types.iter().all(|t| variant.channel_of(t).is_some());
        let stamps = match result {
            Ok(stamps) => {
                prop_assert!(registered, "published unregistered types {:?}", types);
                stamps
            }
            Err(e) => {
                prop_assert!(!registered, "refused {:?}: {}", types, e);
                return Ok(());
            }
        };
        let positions = self.router.positions();
        for (stamp, type_name) in stamps.iter().zip(types) {
            let channel = variant.channel_of(type_name).unwrap();
            prop_assert_eq!(&*stamp.channel, channel);
            let id: EventId = (
                channel.to_owned(),
                positions[channel].0.clone(),
                stamp.sequence,
            );
            for client in &mut self.clients {
                if client.conn.is_some()
                    && variant.carries(client.endpoint, channel)
                    && wants(&client.held, type_name)
                {
                    client.expected.insert(id.clone());
                }
            }
            self.log.push(Published { id, type_name });
        }
        for c in 0..self.clients.len() {
            self.drain(c, None)?;
        }
        Ok(())
    }

    /// Reads everything queued for client `c` into the model.
    fn drain(&mut self, c: usize, expect: Option<Expect>) -> Result<(), TestCaseError> {
        let Some(conn) = self.clients[c].conn.clone() else {
            return Ok(());
        };
        let batch = conn.outbox.next_batch().now_or_never().unwrap_or_default();
        // This test is the transport: what it took is written.
        conn.outbox.release(Written::all(&batch.frames));
        prop_assert!(
            batch.close.is_none(),
            "client {} closed: {:?}",
            c,
            batch.close
        );
        let mut reply = None;
        for frame in &batch.frames {
            let msg: Value = serde_json::from_str(frame.text()).unwrap();
            let ty = msg["type"].as_str().unwrap_or_default().to_owned();
            let client = &mut self.clients[c];
            match ty.as_str() {
                "connection.established" | "connection.channels" => {
                    let channels = msg["payload"]["channels"].as_object().unwrap();
                    for (name, pos) in channels {
                        let epoch = pos["epoch"].as_str().unwrap().to_owned();
                        let seq = pos["sequence"].as_u64().unwrap();
                        match client.known.get(name) {
                            Some((e, _)) if *e == epoch => {}
                            _ => {
                                client.known.insert(name.clone(), (epoch, seq));
                            }
                        }
                    }
                }
                "connection.lagged" => {
                    prop_assert!(false, "client {} lagged: {}", c, msg);
                }
                "subscribed" | "unsubscribed" => {
                    prop_assert!(reply.is_none(), "two replies: {}", msg);
                    reply = Some(msg);
                }
                "error" => {
                    prop_assert_eq!(
                        &msg["payload"]["code"],
                        &json!("invalid_pattern"),
                        "only Bad* is refused: {}",
                        msg
                    );
                }
                _ => {
                    let channel = msg["channel"].as_str().unwrap().to_owned();
                    let seq = msg["sequence"].as_u64().unwrap();
                    let Some((epoch, last)) = client.known.get_mut(&channel) else {
                        prop_assert!(false, "client {} got {} on an unannounced channel", c, msg);
                        unreachable!();
                    };
                    prop_assert!(
                        seq > *last,
                        "client {}: {} #{} after #{} (repeat or out of order)",
                        c,
                        channel,
                        seq,
                        last
                    );
                    *last = seq;
                    let epoch = epoch.clone();
                    let id = (channel, epoch, seq);
                    if let Some(p) = self.log.iter().find(|p| p.id == id) {
                        prop_assert_eq!(msg["type"].as_str(), Some(p.type_name));
                    }
                    client.received.push(id);
                }
            }
        }
        match expect {
            None => prop_assert!(reply.is_none(), "an unasked reply: {:?}", reply),
            Some(expect) => {
                let reply = reply.ok_or_else(|| TestCaseError::fail("no reply"))?;
                self.check_reply(c, expect, &reply)?;
            }
        }
        Ok(())
    }

    fn check_reply(
        &mut self,
        c: usize,
        expect: Expect,
        reply: &Value,
    ) -> Result<(), TestCaseError> {
        let client = &self.clients[c];
        let held: Option<Vec<String>> = serde_json::from_value(reply["events"].clone()).unwrap();
        let (kind, since) = match expect {
            Expect::Subscribed => ("subscribed", None),
            Expect::Unsubscribed => ("unsubscribed", None),
            Expect::Recovery(since) => ("subscribed", since),
        };
        prop_assert_eq!(&reply["type"], &json!(kind));
        prop_assert_eq!(
            held.map(sorted),
            client.held.clone().map(sorted),
            "held patterns echoed: {}",
            reply
        );
        let Some(since) = since else {
            return Ok(());
        };
        let recovery = reply["recovery"].as_object().cloned().unwrap_or_default();
        prop_assert_eq!(
            recovery.len(),
            since.len(),
            "one answer per channel: {}",
            reply
        );
        let positions = self.router.positions();
        let variant = self.variant();
        let mut missed = Vec::new();
        for (channel, pos) in &since {
            let answer = &recovery[channel];
            let carried = variant.carries(client.endpoint, channel);
            let reason = match positions.get(channel) {
                Some(_) if !carried => Some("unknown_channel"),
                None => Some("unknown_channel"),
                Some((epoch, _)) if *epoch != pos.epoch => Some("epoch_changed"),
                Some(_) => None,
            };
            match reason {
                Some(reason) => prop_assert_eq!(
                    answer,
                    &json!({"recovered": false, "reason": reason}),
                    "recovery of {} from {:?}",
                    channel,
                    pos
                ),
                None => {
                    prop_assert_eq!(
                        &answer["recovered"],
                        &json!(true),
                        "recovery of {} from {:?}: {}",
                        channel,
                        pos,
                        answer
                    );
                    missed.extend(
                        self.log
                            .iter()
                            .filter(|p| {
                                p.id.0 == *channel
                                    && p.id.1 == pos.epoch
                                    && p.id.2 > pos.sequence
                                    && wants(&client.held, p.type_name)
                            })
                            .map(|p| p.id.clone()),
                    );
                }
            }
        }
        self.clients[c].expected.extend(missed);
        Ok(())
    }

    /// At the end: every client received exactly what it had to.
    fn check_final(&self) -> Result<(), TestCaseError> {
        for (c, client) in self.clients.iter().enumerate() {
            let received: BTreeSet<EventId> = client.received.iter().cloned().collect();
            prop_assert_eq!(
                received.len(),
                client.received.len(),
                "client {} got a repeat",
                c
            );
            let lost: Vec<&EventId> = client.expected.difference(&received).collect();
            let extra: Vec<&EventId> = received.difference(&client.expected).collect();
            prop_assert!(
                lost.is_empty() && extra.is_empty(),
                "client {} ({}, patterns {:?}): lost {:?}, unexpected {:?}",
                c,
                client.endpoint,
                client.held,
                lost,
                extra
            );
        }
        Ok(())
    }
}

/// What reply a step must produce.
enum Expect {
    /// A connect with `?events=` and no `since`.
    Subscribed,
    Unsubscribed,
    /// A subscribe, or a reconnect, with `since` when it recovers.
    Recovery(Option<BTreeMap<String, Position>>),
}

fn add_patterns(held: &mut Option<Vec<String>>, patterns: &[&str]) {
    let held = held.get_or_insert_with(Vec::new);
    for p in patterns {
        if let Some(p) = canonical(p) {
            if !held.contains(&p) {
                held.push(p);
            }
        }
    }
}

fn since_of(client: &Client) -> BTreeMap<String, Position> {
    client
        .known
        .iter()
        .map(|(name, (epoch, sequence))| {
            (
                name.clone(),
                Position {
                    epoch: epoch.clone(),
                    sequence: *sequence,
                },
            )
        })
        .collect()
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::new();
    for op in ops {
        model.step(op)?;
    }
    model.check_final()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/corpus/properties/regressions",
        ))),
        rng_seed: RngSeed::Fixed(0x5717_c4ad),
        max_shrink_iters: 8192,
        ..ProptestConfig::default()
    })]

    /// No healthy connection ever loses or repeats an event.
    #[test]
    fn no_healthy_connection_loses_or_repeats_an_event(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        run(&ops)?;
    }
}
