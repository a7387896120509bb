//! End-to-end tests of a running [`Service`]: real TCP sockets on
//! 127.0.0.1, the engine, and a fake emitter that checks every payload
//! against the plugin's declarations the way the router does.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_detection::{Config, Detection, Emitter, Service};
use switchyard_plugin_api::{EmitError, EventTypeDecl, LogLevel, Plugin};

const OK: u8 = 0;
const BACKPRESSURE: u8 = 1;
const STOPPED: u8 = 2;

#[derive(Clone)]
struct Sink {
    events: Arc<Mutex<Vec<(String, Value)>>>,
    logs: Arc<Mutex<Vec<(LogLevel, String)>>>,
    mode: Arc<AtomicU8>,
    decls: Arc<Vec<EventTypeDecl>>,
    /// Payloads over this many bytes are refused as too large, as the
    /// router refuses envelopes over `server.max_event_bytes`.
    max_bytes: Arc<AtomicUsize>,
}

impl Sink {
    fn new() -> Sink {
        Sink {
            events: Arc::default(),
            logs: Arc::default(),
            mode: Arc::new(AtomicU8::new(OK)),
            decls: Arc::new(Detection::info().event_types),
            max_bytes: Arc::new(AtomicUsize::new(usize::MAX)),
        }
    }

    fn events(&self) -> Vec<(String, Value)> {
        self.events.lock().unwrap().clone()
    }

    fn of(&self, event_type: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|(t, _)| t == event_type)
            .map(|(_, p)| p)
            .collect()
    }

    fn logs(&self) -> Vec<(LogLevel, String)> {
        self.logs.lock().unwrap().clone()
    }

    /// Checks `payload` with the router's own rules
    /// ([`EventTypeDecl::check_payload`]); panics on a mismatch.
    fn validate(&self, event_type: &str, payload: &Value) {
        let decl = self
            .decls
            .iter()
            .find(|d| d.name == event_type)
            .unwrap_or_else(|| panic!("undeclared type {event_type}"));
        let problems = decl.check_payload(payload);
        assert!(
            problems.is_empty(),
            "{event_type}: {problems:?} in {payload}"
        );
    }
}

impl Emitter for Sink {
    fn emit_json(&self, event_type: &str, payload_json: &str) -> Result<(), EmitError> {
        let payload: Value = serde_json::from_str(payload_json).unwrap();
        self.validate(event_type, &payload);
        if payload_json.len() > self.max_bytes.load(Ordering::SeqCst) {
            return Err(EmitError::TooLarge);
        }
        match self.mode.load(Ordering::SeqCst) {
            BACKPRESSURE => Err(EmitError::Backpressure),
            STOPPED => Err(EmitError::Stopped),
            _ => {
                self.events
                    .lock()
                    .unwrap()
                    .push((event_type.to_owned(), payload));
                Ok(())
            }
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.lock().unwrap().push((level, message.to_owned()));
    }
}

fn config(extra: Value) -> Config {
    let mut table = json!({"listen": "127.0.0.1:0"});
    table
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    Config::from_value(table).unwrap()
}

/// How long a test waits for a condition: generous, for a loaded machine.
const WAIT: Duration = Duration::from_secs(10);

/// A bound on `stop()`: far above scheduling delays on a loaded machine, far
/// below anything that waits for a peer or a timeout.
const STOP_PROMPTLY: Duration = Duration::from_secs(5);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// Whether the server closed the connection (rather than leaving it open).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        Ok(_) => false,
    }
}

const DETECTION: &str = r#"{"camera_id":"front_door","label":"person","confidence":0.93,"bbox":{"x":10,"y":20,"width":100,"height":200},"detected_at":"2026-11-23T06:00:00Z","frame_id":"f-1"}"#;

#[test]
fn detections_flow_and_stop_closes_batches() {
    let sink = Sink::new();
    let service = Service::start(&config(json!({})), sink.clone()).unwrap();
    let mut conn = connect(service.local_addr().unwrap());
    writeln!(conn, "{DETECTION}").unwrap();
    writeln!(
        conn,
        r#"{{"camera_id":"front_door","label":"car","confidence":0.5,"bbox":{{"x":1,"y":2,"width":3,"height":4}}}}"#
    )
    .unwrap();
    writeln!(
        conn,
        r#"{{"kind":"scene_change","camera_id":"front_door","change_type":"view_blocked","similarity_score":0.31}}"#
    )
    .unwrap();
    wait_for("two detections and a scene change", || {
        sink.of("detection.new").len() == 2 && sink.of("scene_change.detected").len() == 1
    });

    let types: Vec<String> = sink.events().into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        types,
        [
            "batch.opened",
            "detection.new",
            "detection.new",
            "scene_change.detected"
        ]
    );
    let opened = &sink.of("batch.opened")[0];
    let new = sink.of("detection.new");
    assert_eq!(new[0]["camera_id"], "front_door");
    assert_eq!(new[0]["label"], "person");
    assert_eq!(new[0]["confidence"], 0.93);
    assert_eq!(
        new[0]["bbox"],
        json!({"x": 10.0, "y": 20.0, "width": 100.0, "height": 200.0})
    );
    assert_eq!(new[0]["detected_at"], "2026-11-23T06:00:00.000Z");
    assert!(new[0]["detection_id"].as_str().unwrap().starts_with("det-"));
    assert!(opened["batch_id"].as_str().unwrap().starts_with("batch-"));
    assert_eq!(new[0]["batch_id"], opened["batch_id"]);
    assert_eq!(new[1]["batch_id"], opened["batch_id"]);
    assert_ne!(new[0]["detection_id"], new[1]["detection_id"]);
    let scene = &sink.of("scene_change.detected")[0];
    assert_eq!(scene["change_type"], "view_blocked");
    assert_eq!(scene["similarity_score"], 0.31);

    // Stop with the connection still open: it does not wait for the peer,
    // and the open batch is closed with reason `stopped` before stop returns.
    let started = Instant::now();
    service.stop();
    assert!(started.elapsed() < STOP_PROMPTLY, "{:?}", started.elapsed());
    let batch = &sink.of("detection.batch")[0];
    assert_eq!(batch["batch_id"], opened["batch_id"]);
    assert_eq!(batch["detection_count"], 2);
    assert_eq!(
        batch["detection_ids"],
        json!([new[0]["detection_id"], new[1]["detection_id"]])
    );
    assert_eq!(batch["labels"], json!(["car", "person"]));
    let closed = &sink.of("batch.closed")[0];
    assert_eq!(closed["reason"], "stopped");
    assert_eq!(closed["detection_count"], 2);
    let last: Vec<String> = sink.events().into_iter().map(|(t, _)| t).collect();
    assert_eq!(last[last.len() - 2..], ["detection.batch", "batch.closed"]);
    assert!(closed_by_server(&mut conn));
}

#[test]
fn oversized_and_bad_lines_are_skipped_and_the_connection_stays() {
    let sink = Sink::new();
    let service = Service::start(&config(json!({"max_line_bytes": 256})), sink.clone()).unwrap();
    let mut conn = connect(service.local_addr().unwrap());
    // A line far over the bound, sent in pieces, then a good line.
    let big = format!(r#"{{"camera_id":"x","label":"{}"}}"#, "a".repeat(100_000));
    conn.write_all(&big.as_bytes()[..50_000]).unwrap();
    conn.write_all(&big.as_bytes()[50_000..]).unwrap();
    conn.write_all(b"\n").unwrap();
    writeln!(conn, "not json").unwrap();
    writeln!(conn, r#"{{"camera_id":"x","label":"person"}}"#).unwrap();
    writeln!(conn, "{DETECTION}").unwrap();
    wait_for("the good line", || sink.of("detection.new").len() == 1);

    let counters = service.counters();
    assert_eq!(counters.oversized_lines, 1);
    assert_eq!(counters.bad_lines, 2);
    assert_eq!(counters.detections, 1);
    let warnings: Vec<String> = sink
        .logs()
        .into_iter()
        .filter(|(l, _)| *l == LogLevel::Warn)
        .map(|(_, m)| m)
        .collect();
    assert!(
        warnings.iter().any(|m| m.contains("max_line_bytes")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|m| m.contains("missing `confidence`")),
        "{warnings:?}"
    );

    // The same connection still works.
    writeln!(conn, "{DETECTION}").unwrap();
    wait_for("the line after", || sink.of("detection.new").len() == 2);
    service.stop();
}

#[test]
fn allow_from_refuses_and_counts_peers_outside() {
    let sink = Sink::new();
    let service =
        Service::start(&config(json!({"allow_from": ["10.0.0.0/8"]})), sink.clone()).unwrap();
    let mut conn = connect(service.local_addr().unwrap());
    assert!(closed_by_server(&mut conn));
    wait_for("the refusal count", || {
        service.counters().refused_connections == 1
    });
    service.stop();

    let sink = Sink::new();
    let service = Service::start(
        &config(json!({"allow_from": ["127.0.0.0/8"]})),
        sink.clone(),
    )
    .unwrap();
    let mut conn = connect(service.local_addr().unwrap());
    writeln!(conn, "{DETECTION}").unwrap();
    wait_for("the detection", || sink.of("detection.new").len() == 1);
    assert_eq!(service.counters().refused_connections, 0);
    service.stop();
}

#[test]
fn idle_connections_never_lock_producers_out() {
    let sink = Sink::new();
    let service = Service::start(&config(json!({"max_connections": 4})), sink.clone()).unwrap();
    let addr = service.local_addr().unwrap();
    // Every slot held by connections that never send anything.
    let mut silent: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut producer = connect(addr);
    writeln!(producer, "{DETECTION}").unwrap();
    wait_for("the producer to be served", || {
        sink.of("detection.new").len() == 1
    });
    assert!(
        closed_by_server(&mut silent[0]),
        "the oldest silent connection made room"
    );
    assert_eq!(service.counters().evicted_connections, 1);
    assert_eq!(service.counters().refused_connections, 0);

    // More silent connections push out silent ones, never the producer.
    let _more: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    wait_for("three more evictions", || {
        service.counters().evicted_connections == 4
    });
    writeln!(producer, "{DETECTION}").unwrap();
    wait_for("the producer to be served again", || {
        sink.of("detection.new").len() == 2
    });
    service.stop();
}

#[test]
fn a_connection_silent_for_idle_timeout_s_is_closed() {
    let sink = Sink::new();
    let service = Service::start(&config(json!({"idle_timeout_s": 0.5})), sink.clone()).unwrap();
    let addr = service.local_addr().unwrap();
    let mut silent = connect(addr);
    let mut talking = connect(addr);
    let began = Instant::now();
    while began.elapsed() < Duration::from_millis(1500) {
        writeln!(talking, "{DETECTION}").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed_by_server(&mut silent), "the silent one was closed");
    wait_for("the idle close to be counted", || {
        service.counters().idle_connections_closed == 1
    });
    // The one that kept talking is still served.
    let before = sink.of("detection.new").len();
    writeln!(talking, "{DETECTION}").unwrap();
    wait_for("the talking connection to be served", || {
        sink.of("detection.new").len() == before + 1
    });
    service.stop();
}

#[test]
fn batches_report_progress_and_close_when_idle() {
    let sink = Sink::new();
    let service = Service::start(
        &config(json!({"batch_idle_s": 0.5, "progress_interval_ms": 100})),
        sink.clone(),
    )
    .unwrap();
    let mut conn = connect(service.local_addr().unwrap());
    for _ in 0..3 {
        writeln!(conn, "{DETECTION}").unwrap();
    }
    wait_for("idle close", || !sink.of("batch.closed").is_empty());
    // How many progress events depends on how the three lines fall into
    // 100 ms intervals (a loaded machine may spread them): at least one,
    // counts rising, the last one at 3.
    let progress = sink.of("batch.progress");
    let counts: Vec<u64> = progress
        .iter()
        .map(|p| p["detection_count"].as_u64().unwrap())
        .collect();
    assert!(
        !counts.is_empty() && counts.windows(2).all(|w| w[0] < w[1]),
        "{progress:?}"
    );
    assert_eq!(counts.last(), Some(&3), "{progress:?}");
    assert_eq!(progress[0]["last_detection_at"], "2026-11-23T06:00:00.000Z");
    let closed = &sink.of("batch.closed")[0];
    assert_eq!(closed["reason"], "idle");
    assert_eq!(closed["detection_count"], 3);
    assert_eq!(sink.of("detection.batch")[0]["detection_count"], 3);
    service.stop();
    // Nothing was open at stop.
    assert_eq!(sink.of("batch.closed").len(), 1);
}

#[test]
fn batches_close_when_the_window_passes() {
    let sink = Sink::new();
    let service = Service::start(
        &config(json!({"batch_window_s": 0.4, "batch_idle_s": 60})),
        sink.clone(),
    )
    .unwrap();
    let mut conn = connect(service.local_addr().unwrap());
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(700) {
        writeln!(conn, "{DETECTION}").unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("a window close", || !sink.of("batch.closed").is_empty());
    assert_eq!(sink.of("batch.closed")[0]["reason"], "window");
    // A detection after the close opens the next batch.
    writeln!(conn, "{DETECTION}").unwrap();
    wait_for("a second batch", || sink.of("batch.opened").len() >= 2);
    service.stop();
}

#[test]
fn backpressure_drops_and_counts_and_stopped_ends_the_engine() {
    let sink = Sink::new();
    let service = Service::start(&config(json!({})), sink.clone()).unwrap();
    let mut conn = connect(service.local_addr().unwrap());
    sink.mode.store(BACKPRESSURE, Ordering::SeqCst);
    writeln!(conn, "{DETECTION}").unwrap();
    // batch.opened and detection.new dropped.
    wait_for("drops", || service.counters().dropped_backpressure == 2);
    assert!(sink.events().is_empty());

    sink.mode.store(STOPPED, Ordering::SeqCst);
    writeln!(conn, "{DETECTION}").unwrap();
    // The engine exits and the inputs follow: the connection is closed.
    assert!(closed_by_server(&mut conn));
    let started = Instant::now();
    service.stop();
    assert!(started.elapsed() < STOP_PROMPTLY, "{:?}", started.elapsed());
}

#[test]
fn simulator_only() {
    let sink = Sink::new();
    let config = Config::from_value(json!({
        "listen": false,
        "simulate": {"cameras": 3, "rate_per_s": 100},
    }))
    .unwrap();
    let service = Service::start(&config, sink.clone()).unwrap();
    assert_eq!(service.local_addr(), None);
    wait_for("simulated detections", || {
        sink.of("detection.new").len() >= 20
    });
    service.stop();
    let closed = sink.of("batch.closed");
    assert!(!closed.is_empty());
    assert!(closed.iter().all(|c| c["reason"] == "stopped"));
    let opened = sink.of("batch.opened").len();
    assert_eq!(closed.len(), opened, "every opened batch is closed");
    for d in sink.of("detection.new") {
        let camera = d["camera_id"].as_str().unwrap();
        assert!(["cam-1", "cam-2", "cam-3"].contains(&camera), "{camera}");
    }
}

#[test]
fn a_taken_port_fails_start() {
    let first = Service::start(&config(json!({})), Sink::new()).unwrap();
    let addr = first.local_addr().unwrap();
    let taken = Config::from_value(json!({"listen": addr.to_string()})).unwrap();
    let err = Service::start(&taken, Sink::new()).err().unwrap();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    first.stop();
}

#[test]
fn a_batch_too_large_for_one_event_is_sent_in_numbered_parts() {
    let sink = Sink::new();
    sink.max_bytes.store(16 * 1024, Ordering::SeqCst);
    let service = Service::start(&config(json!({"batch_idle_s": 0.5})), sink.clone()).unwrap();
    let mut conn = connect(service.local_addr().unwrap());
    let lines: String = (0..5000).map(|_| format!("{DETECTION}\n")).collect();
    conn.write_all(lines.as_bytes()).unwrap();
    wait_for("the batch to close", || !sink.of("batch.closed").is_empty());
    let news = sink.of("detection.new");
    assert_eq!(news.len(), 5000);
    let parts = sink.of("detection.batch");
    assert!(
        parts.len() > 1,
        "5,000 ids do not fit in 16 KiB: {}",
        parts.len()
    );
    let total = parts.len() as u64;
    let mut ids = Vec::new();
    for (n, part) in parts.iter().enumerate() {
        assert_eq!(part["part"], n as u64 + 1, "numbered from 1, in order");
        assert_eq!(part["parts"], total);
        assert_eq!(part["batch_id"], parts[0]["batch_id"]);
        assert_eq!(part["detection_count"], 5000, "always the whole batch's");
        assert!(serde_json::to_string(part).unwrap().len() <= 16 * 1024);
        ids.extend(part["detection_ids"].as_array().unwrap().iter().cloned());
    }
    let sent: Vec<Value> = news.iter().map(|d| d["detection_id"].clone()).collect();
    assert_eq!(ids, sent, "every detection once, in arrival order");
    assert_eq!(service.counters().split_batches, 1);
    assert_eq!(service.counters().emit_errors, 0);

    // A batch that fits is sent whole, without part numbers.
    writeln!(conn, "{DETECTION}").unwrap();
    wait_for("the second batch to close", || {
        sink.of("batch.closed").len() == 2
    });
    let whole = sink.of("detection.batch").pop().unwrap();
    assert_eq!(whole["detection_count"], 1);
    assert!(
        whole.get("part").is_none() && whole.get("parts").is_none(),
        "{whole}"
    );
    service.stop();
}
