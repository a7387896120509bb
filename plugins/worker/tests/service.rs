//! A running [`Service`] on a fake emitter: real sockets on 127.0.0.1, real
//! threads, every payload checked against the plugin's declarations the way
//! the router checks it; and `stop` bounded even mid-check.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard_plugin_api::{EmitError, EventTypeDecl, LogLevel, Plugin};
use switchyard_worker::{Config, Emitter, Service, Worker};

#[derive(Clone)]
struct Sink {
    events: Arc<Mutex<Vec<(String, Value)>>>,
    logs: Arc<Mutex<Vec<(LogLevel, String)>>>,
    stopped: Arc<AtomicBool>,
    decls: Arc<Vec<EventTypeDecl>>,
}

impl Sink {
    fn new() -> Sink {
        Sink {
            events: Arc::default(),
            logs: Arc::default(),
            stopped: Arc::default(),
            decls: Arc::new(Worker::info().event_types),
        }
    }

    fn events(&self) -> Vec<(String, Value)> {
        self.events.lock().unwrap().clone()
    }

    fn logs(&self) -> Vec<(LogLevel, String)> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until `n` events arrived; returns them all.
    fn wait_events(&self, n: usize) -> Vec<(String, Value)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events();
            if events.len() >= n {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{n} events expected: {events:#?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
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
        if self.stopped.load(Ordering::SeqCst) {
            return Err(EmitError::Stopped);
        }
        let payload: Value = serde_json::from_str(payload_json).unwrap();
        self.validate(event_type, &payload);
        self.events
            .lock()
            .unwrap()
            .push((event_type.to_owned(), payload));
        Ok(())
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.lock().unwrap().push((level, message.to_owned()));
    }
}

/// An HTTP server on `listener` answering `status` to every request, until
/// `stop` is set (then the listener is closed).
fn http_server(listener: TcpListener, status: &'static str, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

fn config(workers: Value) -> Config {
    Config::from_value(json!({ "workers": workers })).unwrap()
}

fn kinds(events: &[(String, Value)]) -> Vec<(String, String, u64)> {
    events
        .iter()
        .map(|(t, p)| {
            (
                t.clone(),
                p["state"].as_str().unwrap().to_owned(),
                p["consecutive_failures"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_unhealthy_status_goes_down_and_a_healthy_one_recovers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop_503 = Arc::new(AtomicBool::new(false));
    http_server(listener, "503 Service Unavailable", Arc::clone(&stop_503));
    let sink = Sink::new();
    let service = Service::start(
        &config(
            json!([{"name": "api", "type": "analysis", "check": format!("http://{addr}/"),
            "interval_ms": 20, "failure_threshold": 2}]),
        ),
        sink.clone(),
    )
    .unwrap();
    let events = sink.wait_events(4);
    let expected = [
        ("worker.health_check_failed", "starting", 1),
        ("worker.health_check_failed", "starting", 2),
        ("worker.error", "error", 2),
        ("worker.stopped", "stopped", 2),
    ];
    let expected: Vec<(String, String, u64)> = expected
        .iter()
        .map(|(t, s, n)| (t.to_string(), s.to_string(), *n))
        .collect();
    assert_eq!(kinds(&events), expected);
    assert_eq!(events[0].1["error"], "HTTP 503 Service Unavailable");
    assert_eq!(events[0].1["worker_name"], "api");
    assert_eq!(events[0].1["worker_type"], "analysis");

    // Swap in a healthy server on the same port: never up before, so `started`.
    stop_503.store(true, Ordering::SeqCst);
    let listener = loop {
        match TcpListener::bind(addr) {
            Ok(l) => break l,
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    };
    let stop_200 = Arc::new(AtomicBool::new(false));
    http_server(listener, "200 OK", Arc::clone(&stop_200));
    let events = sink.wait_events(5);
    assert_eq!(events[4].0, "worker.started", "{events:#?}");
    assert_eq!(events[4].1["state"], "running");
    assert!(events[4].1["error"].is_null());
    service.stop();
    stop_200.store(true, Ordering::SeqCst);
    assert!(sink
        .logs()
        .iter()
        .any(|(_, m)| m.contains("worker: stopped")));
}

#[test]
fn stop_returns_at_once_even_mid_check() {
    // Accepts (the kernel does) but never answers: every check hangs until
    // its timeout, 30 s.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = Sink::new();
    let service = Service::start(
        &config(json!([
            {"name": "a", "type": "metrics", "check": format!("http://{addr}/"), "timeout_ms": 30000},
            {"name": "b", "type": "timeout", "check": format!("http://{addr}/x"), "timeout_ms": 30000}
        ])),
        sink.clone(),
    )
    .unwrap();
    thread::sleep(Duration::from_millis(200));
    // Far below the checks' 30 s timeout, far above scheduling delays on a
    // loaded machine: stop did not wait for the hanging checks.
    let t = Instant::now();
    service.stop();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(sink.events().is_empty());
    assert!(
        !sink.logs().iter().any(|(_, m)| m.contains("left behind")),
        "{:?}",
        sink.logs()
    );
    drop(listener);
}

#[test]
fn a_refused_emit_ends_the_worker_thread() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sink = Sink::new();
    sink.stopped.store(true, Ordering::SeqCst);
    let service = Service::start(
        &config(
            json!([{"name": "a", "type": "metrics", "check": format!("tcp://{addr}"),
            "interval_ms": 10}]),
        ),
        sink.clone(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sink
        .logs()
        .iter()
        .any(|(_, m)| m.contains("router stopped this instance"))
    {
        assert!(Instant::now() < deadline, "{:?}", sink.logs());
        thread::sleep(Duration::from_millis(10));
    }
    let checks = service.counters().checks;
    thread::sleep(Duration::from_millis(100));
    assert_eq!(service.counters().checks, checks, "no more checks");
    service.stop();
}

#[test]
fn restart_command_runs_without_a_shell_and_its_exit_is_logged() {
    let dir = std::env::temp_dir().join(format!("switchyard-worker-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("a file; with shell characters $(x)");
    let _ = std::fs::remove_file(&marker);
    // Nothing listens on this port (bound, then closed).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = Sink::new();
    let service = Service::start(
        &config(
            json!([{"name": "w", "type": "detection", "check": format!("tcp://127.0.0.1:{port}"),
            "interval_ms": 20, "failure_threshold": 1,
            "restart_command": ["touch", marker.to_str().unwrap()], "restart_backoff_s": 60}]),
        ),
        sink.clone(),
    )
    .unwrap();
    let events = sink.wait_events(4);
    assert_eq!(events[3].0, "worker.restarting");
    assert_eq!(events[3].1["state"], "starting");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sink
        .logs()
        .iter()
        .any(|(_, m)| m.contains("restart_command \"touch\" exited"))
    {
        assert!(Instant::now() < deadline, "{:?}", sink.logs());
        thread::sleep(Duration::from_millis(10));
    }
    assert!(marker.exists(), "the argument reached touch verbatim");
    // Within the backoff: no second restart.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(sink.events().len(), 4, "{:#?}", sink.events());
    assert_eq!(service.counters().restarts, 1);
    service.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_restart_program_is_logged_not_fatal() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = Sink::new();
    let service = Service::start(
        &config(
            json!([{"name": "w", "type": "detection", "check": format!("tcp://127.0.0.1:{port}"),
            "interval_ms": 20, "failure_threshold": 1,
            "restart_command": ["/nonexistent/switchyard-restart"], "restart_backoff_s": 0}]),
        ),
        sink.clone(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink
        .logs()
        .iter()
        .filter(|(l, m)| *l == LogLevel::Error && m.contains("cannot run restart_command"))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{:?}", sink.logs());
        thread::sleep(Duration::from_millis(10));
    }
    service.stop();
}
