//! Shared test harness: builds the real plugin libraries, starts a real
//! router on 127.0.0.1:0, and talks to it with real WebSocket and HTTP
//! clients.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchyard::app::{App, Options};
use switchyard::connection::ConnRef;
use switchyard::plugin_host::PluginHost;
use switchyard::protocol::Position;
use switchyard::router::ConnectRequest;
use switchyard::runtime::{self, Running};
use switchyard::{reload, reload::ReloadError};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as WsResponse;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any one message.
pub const WAIT: Duration = Duration::from_secs(10);

/// Builds the plugin cdylibs once per test binary (`cargo test` does not
/// build them) and returns their paths by package name.
pub fn plugins() -> &'static HashMap<String, PathBuf> {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "-p",
                "switchyard-detection",
                "-p",
                "switchyard-worker",
                "-p",
                "switchyard-prometheus",
                "-p",
                "switchyard-summary",
                "-p",
                "switchyard-audit-log",
                "-p",
                "switchyard-testkit-plugin",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build for the plugins");
        assert!(
            out.status.success(),
            "building plugins failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut found = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" || msg["target"]["kind"][0] != "cdylib" {
                continue;
            }
            let name = msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            for file in msg["filenames"].as_array().into_iter().flatten() {
                let file = PathBuf::from(file.as_str().unwrap_or_default());
                if file.extension().is_some_and(|e| e == "so") {
                    found.insert(name.clone(), file);
                }
            }
        }
        found
    })
}

/// The path of a built plugin library by crate name (e.g. `switchyard_testkit`).
pub fn plugin(name: &str) -> String {
    plugins()
        .get(name)
        .unwrap_or_else(|| panic!("plugin {name} was not built: {:?}", plugins().keys()))
        .display()
        .to_string()
}

/// Compiles a C file under tests/fixtures into a shared library.
pub fn c_library(source: &str, dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(source);
    let out = dir.join(format!("lib{}.so", source.trim_end_matches(".c")));
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api/include");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg("-I")
        .arg(&include)
        .arg(&src)
        .status()
        .expect("run the system C compiler (cc)");
    assert!(status.success(), "cc failed on {source}");
    out
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The base config, `base.toml`: two channels, one endpoint, three
/// HTTP-published types (shared with the TypeScript client's tests).
pub const BASE: &str = include_str!("base.toml");

/// BASE with lines added to `[server]` and the `[auth]` body (its `mode`
/// line) replaced by `auth` (which may open `[auth.jwt]`: `[log]` follows
/// it in BASE).
pub fn config(server: &str, auth: &str) -> String {
    let server_header = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let auth_header = "[auth]\nmode = \"none\"\n";
    assert!(BASE.contains(server_header) && BASE.contains(auth_header));
    BASE.replace(server_header, &format!("{server_header}{server}\n"))
        .replace(auth_header, &format!("[auth]\n{auth}\n"))
}

/// BASE with extra `[server]` keys.
pub fn with_server(server: &str) -> String {
    config(server, "mode = \"none\"")
}

/// BASE with one more channel, `incidents`, carried by `/ws/events`, and a
/// type `incident.opened` on it.
pub fn with_incidents() -> String {
    let config = BASE.replace(
        r#"channels = ["alerts", "jobs"]"#,
        r#"channels = ["alerts", "jobs", "incidents"]"#,
    );
    format!(
        r#"{config}
[[channels]]
name = "incidents"
history = 10

[[event_types]]
name = "incident.opened"
channel = "incidents"
description = "Incident opened"
[event_types.payload]
id = {{ type = "string", required = true }}
"#
    )
}

/// An `alert.created` event with `id`, as published over HTTP.
pub fn alert(id: &str) -> Value {
    serde_json::json!({"type": "alert.created", "payload": {"id": id, "severity": "low"}})
}

/// A `job.progress` event with `id` at 10 %, as published over HTTP.
pub fn job(id: &str) -> Value {
    serde_json::json!({"type": "job.progress", "payload": {"job_id": id, "percent": 10}})
}

/// Asserts `msg` is a WebSocket `error` with `code` and a message.
pub fn assert_error(msg: &Value, code: &str) {
    assert_eq!(msg["type"], "error", "expected an error {code}, got {msg}");
    assert_eq!(msg["payload"]["code"], code, "{msg}");
    assert!(
        msg["payload"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error carries a message: {msg}"
    );
}

/// Makes a named pipe at `path` (with the system's `mkfifo`).
pub fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A child process (the real binary, Alertmanager), killed and reaped when
/// dropped, also when a test fails before it exits.
pub struct ChildGuard(pub Child);

/// The real `switchyard` binary serving `config` on `127.0.0.1:port`
/// (`--listen`), its stdout discarded and its stderr to `stderr`.
pub fn serve(config: &Path, port: u16, stderr: impl Into<Stdio>) -> ChildGuard {
    serve_with_env(config, port, stderr, &[])
}

/// Like [`serve`], with `env` added to the binary's environment.
pub fn serve_with_env(
    config: &Path,
    port: u16,
    stderr: impl Into<Stdio>,
    env: &[(&str, &str)],
) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .envs(env.iter().copied())
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start the switchyard binary");
    ChildGuard(child)
}

/// The real binary with one worker thread and so no lanes
/// (`TOKIO_WORKER_THREADS=1`): every connection is served by that one
/// thread, whose mailbox drainer writes idle connections without waking
/// their tasks (inline delivery, ARCHITECTURE.md).
pub struct OneWorker {
    remote: Remote,
    _process: ChildGuard,
    _dir: tempfile::TempDir,
}

impl OneWorker {
    /// Starts the binary on `config` and waits until it answers `/health`.
    pub async fn start(config: &str) -> OneWorker {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let port = free_port();
        let env = [("TOKIO_WORKER_THREADS", "1"), ("SWITCHYARD_LANES", "")];
        let router = OneWorker {
            remote: Remote {
                addr: format!("127.0.0.1:{port}").parse().unwrap(),
            },
            _process: serve_with_env(&path, port, Stdio::null(), &env),
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while reqwest::get(router.url("/health")).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        router
    }
}

impl std::ops::Deref for OneWorker {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Opens a connection on the routing core directly, without a socket: an
/// anonymous client from loopback on `endpoint`, with the connect-time
/// `events` and `since` of its URL.
pub fn open_direct(
    router: &switchyard::router::Router,
    endpoint: &str,
    events: Option<Vec<String>>,
    since: Option<BTreeMap<String, Position>>,
) -> ConnRef {
    router
        .connect(ConnectRequest {
            endpoint: endpoint.into(),
            user: None,
            ip: "127.0.0.1".parse().unwrap(),
            expires_at: None,
            channel_claim: None,
            events,
            since,
            elsewhere: 0,
        })
        .unwrap()
}

/// A router running in this test's runtime; what it serves is reached
/// through [`Remote`].
pub struct Router {
    remote: Remote,
    pub app: Arc<App>,
    pub dir: tempfile::TempDir,
    running: Option<Running>,
}

/// Writes `config` to a fresh folder and starts a router on it.
pub async fn start(config: &str) -> Router {
    try_start(config)
        .await
        .unwrap_or_else(|e| panic!("router did not start: {:?}", e.problems()))
}

/// Like [`start`], but returns the refusal.
pub async fn try_start(config: &str) -> Result<Router, ReloadError> {
    try_start_on(config, "127.0.0.1:0".parse().unwrap()).await
}

/// Like [`try_start`], listening on `listen` (as `--listen` would).
pub async fn try_start_on(config: &str, listen: SocketAddr) -> Result<Router, ReloadError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    try_start_in(dir, listen).await
}

/// Starts a router on `dir/config.toml`, which the caller has made (a
/// file, or a symlink to one), listening on `listen`.
pub async fn try_start_in(
    dir: tempfile::TempDir,
    listen: SocketAddr,
) -> Result<Router, ReloadError> {
    let options = Options {
        config_path: dir.path().join("config.toml"),
        listen: Some(listen),
    };
    let plugins = PluginHost::default();
    let prepared = tokio::task::block_in_place(|| reload::prepare(&options, &plugins))?;
    let app = reload::start(options, plugins, prepared).await?;
    let running = runtime::bind(app.clone()).await.unwrap();
    Ok(Router {
        remote: Remote { addr: running.addr },
        app,
        dir,
        running: Some(running),
    })
}

impl std::ops::Deref for Router {
    type Target = Remote;

    fn deref(&self) -> &Remote {
        &self.remote
    }
}

/// A router reached over loopback, in this process or another: its
/// HTTP routes and WebSocket endpoints.
pub struct Remote {
    pub addr: SocketAddr,
}

impl Remote {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connects a WebSocket client to `path_and_query`.
    pub async fn ws(&self, path_and_query: &str) -> Client {
        let url = format!("ws://{}{path_and_query}", self.addr);
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connect");
        Client { socket }
    }

    /// POSTs `event` to `/api/events`; asserts it was accepted (202).
    pub async fn publish_ok(&self, event: &Value) {
        let (code, body) = self.publish(event).await;
        assert_eq!(code, 202, "publishing {event} was refused: {body}");
    }

    /// The `config_version` that `/health` reports.
    pub async fn config_version(&self) -> u64 {
        let (status, health) = self.get("/health").await;
        assert_eq!(status, 200, "{health}");
        health["config_version"]
            .as_u64()
            .unwrap_or_else(|| panic!("config_version is an integer: {health}"))
    }

    /// Upgrades on `path_and_query` with extra request headers; the refusal
    /// (an HTTP answer or an I/O error) is returned, not a panic.
    pub async fn try_ws(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Client, WsResponse), WsError> {
        let url = format!("ws://{}{path_and_query}", self.addr);
        let mut request = url.into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let (socket, response) = tokio_tungstenite::connect_async(request).await?;
        Ok((Client { socket }, response))
    }

    /// A client on `path_and_query` whose socket receive buffer is tiny
    /// (4 KiB), so that a client that stops reading fills the router's
    /// queue for it quickly.
    pub async fn stalled(&self, path_and_query: &str) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(self.addr).await.unwrap();
        let url = format!("ws://{}{path_and_query}", self.addr);
        let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade");
        Client { socket }
    }

    /// An event stream on `path_and_query` over HTTP/1.1 (so chunked),
    /// once its response head is read; a socket receive buffer of
    /// `recv_buffer` bytes, if given, makes a client that stops reading
    /// fill the router's side quickly.
    pub async fn event_stream(
        &self,
        path_and_query: &str,
        recv_buffer: Option<u32>,
    ) -> BufReader<TcpStream> {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).unwrap();
        }
        let mut stream = socket.connect(self.addr).await.unwrap();
        let request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let (status, _) = read_head(&mut reader).await;
        assert_eq!(status, 200);
        reader
    }

    /// POSTs JSON to `/api/events`; returns status and body.
    pub async fn publish(&self, body: &Value) -> (u16, Value) {
        self.post("/api/events", body).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::get(self.url(path)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /api/admin/reload`.
    pub async fn reload(&self) -> (u16, Value) {
        self.post("/api/admin/reload", &serde_json::json!({})).await
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(self.url("/metrics")).await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET /metrics");
        response.text().await.unwrap()
    }

    /// One series of `/metrics` (`name{labels}` exactly as printed); 0 when
    /// it is not printed (yet).
    pub async fn metric(&self, series: &str) -> f64 {
        sample(&self.metrics().await, series).unwrap_or(0.0)
    }
}

impl Router {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Rewrites the config file (the watcher may pick it up too).
    pub fn write_config(&self, config: &str) {
        std::fs::write(self.config_path(), config).unwrap();
    }

    /// Reloads tried so far, applied or refused, whatever started them.
    pub async fn reload_attempts(&self) -> f64 {
        let text = self.metrics().await;
        ["applied", "refused"]
            .iter()
            .map(|r| {
                sample(
                    &text,
                    &format!("switchyard_config_reloads_total{{result=\"{r}\"}}"),
                )
                .unwrap_or(0.0)
            })
            .sum()
    }

    /// Runs `write` (a change to the config file) and waits (up to [`WAIT`])
    /// until the file watcher has tried the change, applied or refused. A
    /// test that then reloads through the admin route, or checks an exact
    /// `config_version` or reload count, no longer races the watcher's
    /// debounce.
    pub async fn settle_after(&self, write: impl FnOnce()) {
        let before = self.reload_attempts().await;
        write();
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.reload_attempts().await <= before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the file watcher did not try the changed config within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// The value of one sample line (`series` exactly as printed, then a space)
/// of a Prometheus text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A real WebSocket client.
pub struct Client {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, value: &Value) {
        self.socket
            .send(Message::Text(value.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::Text(text.into())).await.unwrap();
    }

    /// Reads `connection.established` (the first message) and returns it.
    pub async fn established(&mut self) -> Value {
        let hello = self.recv().await;
        assert_eq!(hello["type"], "connection.established", "{hello}");
        hello
    }

    /// Sends a message and returns the next message (its reply).
    pub async fn request(&mut self, msg: Value) -> Value {
        self.send(&msg).await;
        self.recv().await
    }

    /// The next JSON text message (pings and pongs skipped).
    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("server sent JSON")
    }

    /// The next text frame exactly as the server sent it (pings and pongs
    /// skipped).
    pub async fn recv_text(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("timed out waiting for a message")
                .expect("connection ended")
                .expect("WebSocket error");
            match msg {
                Message::Text(t) => return t.to_string(),
                Message::Close(frame) => panic!("connection closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Skips messages until one of `type`; returns it.
    pub async fn recv_type(&mut self, wanted: &str) -> Value {
        loop {
            let msg = self.recv().await;
            if msg["type"] == wanted {
                return msg;
            }
        }
    }

    /// Asserts that nothing but WebSocket Ping/Pong frames arrives within
    /// `wait`: any text or binary message, a close or the end of the
    /// connection fails the test.
    pub async fn expect_silence(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let Ok(msg) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                return;
            };
            match msg {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(t))) => panic!("expected nothing, got {t}"),
                Some(Ok(other)) => panic!("expected nothing, got {other:?}"),
                Some(Err(e)) => panic!("expected nothing, got the error {e}"),
                None => panic!("expected nothing, but the connection ended"),
            }
        }
    }

    /// Waits for the server's close frame; returns its code and reason
    /// (1005 and an empty reason when the server sent none).
    pub async fn close_frame(&mut self) -> (u16, String) {
        loop {
            let msg = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("timed out waiting for close");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code.into(), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("error instead of close: {e}"),
            }
        }
    }
}

/// Reads a response's status line and headers (names lowercased).
pub async fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).await.unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else {
            return (status, headers);
        };
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// The next chunk of a chunked body; `None` after the last, which must be
/// followed by the connection's end.
pub async fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut size = String::new();
    tokio::time::timeout(WAIT, reader.read_line(&mut size))
        .await
        .expect("timed out waiting for a chunk")
        .unwrap();
    let size = usize::from_str_radix(size.trim_end(), 16).unwrap();
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).await.unwrap();
    assert!(chunk.ends_with(b"\r\n"), "{chunk:?}");
    if size == 0 {
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing after the last chunk: {rest:?}");
        return None;
    }
    chunk.truncate(size);
    Some(String::from_utf8(chunk).unwrap())
}
