//! The real `switchyard` binary: SIGHUP reloads, SIGTERM shuts down
//! gracefully (clients closed with 1012, exit status 0).

use crate::support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use support::{free_port, mkfifo, serve, ChildGuard};
use tokio_tungstenite::tungstenite::Message;

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

async fn config_version(port: u16) -> Option<u64> {
    let body: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["config_version"].as_u64()
}

/// Polls `/health` (up to 15 s) until `config_version` is one that `wanted`
/// accepts; returns it. `what` says what was waited for when it never is.
async fn wait_for_version_where(port: u16, what: &str, wanted: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(now) = config_version(port).await.filter(|v| wanted(*v)) {
            return now;
        }
        assert!(Instant::now() < deadline, "config_version never {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `config_version` is `version`.
async fn wait_for_version(port: u16, version: u64) {
    wait_for_version_where(port, &format!("reached {version}"), |v| v == version).await;
}

/// The binary serving `BASE` from `config.toml` in a new folder, once it
/// answers with config version 1: the folder, the port and the process.
async fn serve_base() -> (tempfile::TempDir, u16, ChildGuard) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, support::BASE).unwrap();
    let port = free_port();
    let router = serve(&config, port, Stdio::null());
    wait_for_version(port, 1).await;
    (dir, port, router)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_closes_clients_with_1012() {
    let (_dir, port, mut router) = serve_base().await;
    signal(&router.0, "HUP");
    wait_for_version(port, 2).await;

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws/events"))
        .await
        .unwrap();
    assert!(
        matches!(ws.next().await, Some(Ok(Message::Text(_)))),
        "connection.established"
    );
    signal(&router.0, "TERM");
    closes_1012_then_exits(&mut ws, &mut router).await;
}

/// A SIGTERM while plugins still start (the router serves from the moment
/// it binds) is a graceful shutdown too: it used to kill the router before
/// its signal handler was installed, cutting clients off without a close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_plugins_start_still_closes_clients_with_1012() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        with_slow_plugin(dir.path(), support::BASE, "start", 3000),
    )
    .unwrap();
    let port = free_port();
    let mut router = serve(&config, port, Stdio::null());
    let url = format!("ws://127.0.0.1:{port}/ws/events");
    let deadline = Instant::now() + support::WAIT;
    let mut ws = loop {
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => break ws,
            Err(e) => assert!(Instant::now() < deadline, "never listened: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(ws.next().await, Some(Ok(Message::Text(_)))),
        "connection.established"
    );
    signal(&router.0, "TERM");
    closes_1012_then_exits(&mut ws, &mut router).await;
}

/// `base` plus a testkit instance named `slow` whose `step` (`start` or
/// `create`) takes `delay_ms`. Its library is a copy in `dir`: a reload
/// compares the file with the one loaded, and the build's own copy is
/// another test run's (or a concurrent build's) to replace.
fn with_slow_plugin(dir: &Path, base: &str, step: &str, delay_ms: u64) -> String {
    let library = dir.join("libslow.so");
    std::fs::copy(support::plugin("switchyard_testkit"), &library).unwrap();
    format!(
        "{base}\n[[plugins]]\nname = \"slow\"\nlibrary = \"{}\"\n[plugins.config]\n{step}_delay_ms = {delay_ms}\n",
        library.display()
    )
}

/// Polls `/health/live` until the router on `port` answers (it serves
/// before its plugins have started).
async fn until_listening(port: u16) {
    let deadline = Instant::now() + support::WAIT;
    let url = format!("http://127.0.0.1:{port}/health/live");
    while reqwest::get(&url).await.is_err() {
        assert!(Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A reload asked for while the first plugins start waits for them: it
/// used to plan without the instance still starting and start it a second
/// time, the first left running and never stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_plugins_start_waits_and_starts_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        with_slow_plugin(dir.path(), support::BASE, "start", 2000),
    )
    .unwrap();
    let port = free_port();
    // Its log says why an instance was started or replaced, should it be.
    let log = dir.path().join("stderr.log");
    let _router = support::serve_with_env(
        &config,
        port,
        std::fs::File::create(&log).unwrap(),
        &[("RUST_LOG", "switchyard=debug")],
    );
    until_listening(port).await;
    let reply: serde_json::Value = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/admin/reload"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let plugins = &reply["impact"]["plugins"];
    assert!(
        plugins["started"] == serde_json::json!([])
            && plugins["restarted"] == serde_json::json!([]),
        "{reply}\nthe router's log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// An edit saved while the router starts, after it read its config and
/// before it watches the file (here while it creates a slow plugin), is
/// applied once the watch begins: no file event told of it, and it used to
/// wait for the next edit or a SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_saved_while_the_router_starts_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let slow = with_slow_plugin(dir.path(), support::BASE, "create", 3000);
    std::fs::write(&config, &slow).unwrap();
    let port = free_port();
    let _router = serve(&config, port, Stdio::null());
    // Read at once; the plugin's create then takes 3 s.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let late = "\n[[endpoints]]\npath = \"/ws/late\"\nchannels = [\"alerts\"]\n";
    std::fs::write(&config, format!("{slow}{late}")).unwrap();
    until_listening(port).await;
    let capabilities = format!("http://127.0.0.1:{port}/api/websocket/capabilities");
    let deadline = Instant::now() + support::WAIT;
    loop {
        let body: serde_json::Value = reqwest::get(&capabilities)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if body["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "/ws/late")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edit was never applied: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A SIGTERM during a SIGHUP reload that takes long (a plugin starting)
/// is acted on at once: `/health` says `shutting_down` within a second,
/// where it used to say `ok` until the reload was over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_sighup_reload_shuts_down_at_once() {
    let (dir, port, mut router) = serve_base().await;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        with_slow_plugin(dir.path(), support::BASE, "start", 6000),
    )
    .unwrap();
    signal(&router.0, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&router.0, "TERM");
    let asked = Instant::now();
    let health = format!("http://127.0.0.1:{port}/health");
    loop {
        let status = reqwest::get(&health).await.unwrap().status();
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "/health still {status} 2 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited(&mut router).await;
    assert!(status.success(), "exit status {status}");
}

/// How one raw upgrade racing a SIGTERM ended.
#[derive(Debug, PartialEq)]
enum Raced {
    /// Refused in HTTP with this status.
    Refused(u16),
    /// Upgraded, then closed with this code.
    Closed(u16),
    /// Upgraded, then cut off without a close frame: the bug.
    Cut,
    /// No answer at all (the listener closed before accepting it).
    Unanswered,
}

/// Asks for a WebSocket upgrade, or an event stream (`stream`), on `tcp`
/// once `go` opens, and reads what comes back until the close or the end.
async fn race_one(
    mut tcp: tokio::net::TcpStream,
    go: std::sync::Arc<tokio::sync::Barrier>,
    stream: bool,
) -> Raced {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (request, opened) = if stream {
        (
            "GET /ws/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
            200,
        )
    } else {
        ("GET /ws/events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", 101)
    };
    go.wait().await;
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return Raced::Unanswered;
    }
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Raced::Unanswered,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    let status: u16 = String::from_utf8_lossy(&bytes[9..12]).parse().unwrap();
    if status != opened {
        return Raced::Refused(status);
    }
    let mut body = bytes.split_off(head_end);
    loop {
        let close = if stream {
            last_message_close(&body)
        } else {
            close_frame(&mut body)
        };
        if let Some(code) = close {
            return Raced::Closed(code);
        }
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return Raced::Cut,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The code of a stream's last `connection.closed` message, once `body`
/// holds it whole.
fn last_message_close(body: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(body);
    let at = text.find("\"type\":\"connection.closed\"")?;
    let line = text[at..]
        .split('\n')
        .next()
        .filter(|_| text[at..].contains('\n'))?;
    let code = line.split("\"code\":").nth(1)?;
    code.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The code of a close frame, once `frames` holds one whole; the frames
/// before it are taken off.
fn close_frame(frames: &mut Vec<u8>) -> Option<u16> {
    // Server frames are unmasked, each under 64 KiB here.
    while let Some((opcode, start, end)) = frame_at(frames) {
        if opcode == 8 {
            return Some(u16::from_be_bytes([frames[start], frames[start + 1]]));
        }
        frames.drain(..end);
    }
    None
}

/// The first whole frame in `bytes`: its opcode and where its payload
/// starts and ends.
fn frame_at(bytes: &[u8]) -> Option<(u8, usize, usize)> {
    let (opcode, len) = (bytes.first()? & 0x0f, usize::from(bytes.get(1)? & 0x7f));
    let (start, len) = match len {
        126 => (
            4,
            usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
        ),
        127 => panic!("a frame of 64 KiB or more"),
        len => (2, len),
    };
    (bytes.len() >= start + len).then_some((opcode, start, start + len))
}

/// Upgrades on their way in when a SIGTERM comes (past the shutdown check,
/// not yet in the router) are closed with 1012 like the others. They used
/// to be missed by the shutdown's closing of every connection and cut off
/// without a close frame when the process exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_racing_a_sigterm_are_refused_or_closed_with_1012_never_cut() {
    connections_race_a_sigterm(false).await;
}

/// Event streams racing a SIGTERM: each is refused, or ends with its last
/// `connection.closed` 1012.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_racing_a_sigterm_are_refused_or_closed_with_1012_never_cut() {
    connections_race_a_sigterm(true).await;
}

/// 200 clients ask for a connection (an event stream if `stream`) at once,
/// 2 ms before a SIGTERM: none may be cut off without its close.
async fn connections_race_a_sigterm(stream: bool) {
    const CLIENTS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let server = "shutdown_timeout_s = 3\nmax_pending_handshakes = 4096";
    std::fs::write(&config, support::with_server(server)).unwrap();
    let port = free_port();
    let mut router = serve(&config, port, Stdio::null());
    wait_for_version(port, 1).await;
    let go = std::sync::Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        clients.push(tokio::spawn(race_one(tcp, go.clone(), stream)));
    }
    go.wait().await;
    tokio::time::sleep(Duration::from_millis(2)).await;
    signal(&router.0, "TERM");
    let mut outcomes = Vec::new();
    for client in clients {
        let outcome = tokio::time::timeout(Duration::from_secs(20), client)
            .await
            .expect("every client hears how it ended")
            .unwrap();
        outcomes.push(outcome);
    }
    let wrong: Vec<&Raced> = outcomes
        .iter()
        .filter(|o| {
            !matches!(
                o,
                Raced::Refused(503) | Raced::Closed(1012) | Raced::Unanswered
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {CLIENTS} ended wrong: {wrong:?}",
        wrong.len()
    );
    let status = router.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
}

/// After a SIGTERM: `ws` gets a 1012 close (within [`support::WAIT`]) and
/// the router exits with status 0.
async fn closes_1012_then_exits<S>(ws: &mut S, router: &mut ChildGuard)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let close = loop {
        match tokio::time::timeout(support::WAIT, ws.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                break (u16::from(frame.code), frame.reason.to_string())
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close, (1012, "service restart".to_owned()));
    let status = exited(router).await;
    assert!(status.success(), "exit status {status}");
}

/// What a finished run of the binary printed.
struct Exited {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` (no secrets in its environment) and waits
/// for it to exit: within 30 s, or the test fails (a hang is the bug).
fn run(args: &[&std::ffi::OsStr]) -> Exited {
    run_with(args, &[])
}

/// [`run`], with `env` added to the environment.
fn run_with(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Exited {
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("SWITCHYARD_JWT_SECRET")
        .env_remove("SWITCHYARD_API_KEYS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("switchyard {args:?} did not exit within 30 s");
        }
    };
    Exited {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `switchyard --config <path> --listen 127.0.0.1:0` and `switchyard check --config <path>`.
fn start_and_check(config: &std::path::Path) -> [Exited; 2] {
    let config = config.as_os_str();
    [
        run(&[
            "--config".as_ref(),
            config,
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ]),
        run(&["check".as_ref(), "--config".as_ref(), config]),
    ]
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn start_and_check_print_every_credential_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &support::BASE.replace(
            "mode = \"none\"",
            "mode = \"required\"\napi_keys_file = \"missing-keys.txt\"\n\
             [auth.jwt]\nsecret_env = \"SWITCHYARD_TEST_NEVER_SET_JWT\"",
        ),
    );
    for (i, out) in start_and_check(&config).iter().enumerate() {
        assert!(
            !out.success,
            "run {i} succeeded:\n{}{}",
            out.stdout, out.stderr
        );
        assert!(!out.stdout.contains("is valid"), "{}", out.stdout);
        for expected in [
            "auth.jwt: environment variable SWITCHYARD_TEST_NEVER_SET_JWT is not set",
            "auth.api_keys_file: cannot read API keys from",
            "missing-keys.txt: No such file",
        ] {
            assert!(
                out.stderr.contains(expected),
                "run {i}: no {expected:?} in:\n{}",
                out.stderr
            );
        }
    }
}

/// A Redis URL with a password in it is refused by `check` as by start-up
/// (it used to pass `check`, and a reload), and the password is never
/// printed.
#[test]
fn a_redis_url_holding_a_password_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &format!(
            "{}\n[cluster]\nengine = \"redis\"\nredis_url = \"redis://:hunter2@127.0.0.1:1\"\n",
            support::BASE
        ),
    );
    for (i, out) in start_and_check(&config).iter().enumerate() {
        assert!(
            !out.success,
            "run {i} succeeded:\n{}{}",
            out.stdout, out.stderr
        );
        let said = format!("{}{}", out.stdout, out.stderr);
        assert!(
            said.contains("cluster.redis_url = \"redis://:***@127.0.0.1:1\": not a Redis URL: it holds a password"),
            "run {i}:\n{said}"
        );
        assert!(
            !said.contains("hunter2"),
            "run {i} showed the password:\n{said}"
        );
    }
}

/// `SWITCHYARD_JWT_SECRET: ${JWT_SECRET}` in a compose file with the host
/// variable unset sets it to "": in mode `optional` that is no JWT key, as
/// an unset variable is (a warning, anonymous clients only). It stopped the
/// router instead.
#[test]
fn an_empty_jwt_secret_variable_in_optional_mode_warns_as_an_unset_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &support::BASE.replace(
            "mode = \"none\"",
            "mode = \"optional\"\n[auth.jwt]\nsecret_env = \"SWITCHYARD_TEST_EMPTY_JWT\"",
        ),
    );
    let out = run_with(
        &["check".as_ref(), "--config".as_ref(), config.as_os_str()],
        &[("SWITCHYARD_TEST_EMPTY_JWT", "  ")],
    );
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("SWITCHYARD_TEST_EMPTY_JWT is empty: no JWT key, so only anonymous"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_warns_about_credentials_it_sees_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &support::BASE.replace(
            "mode = \"none\"",
            "mode = \"optional\"\napi_keys_env = \"SWITCHYARD_TEST_NEVER_SET_KEYS\"\n\
             [auth.jwt]\nsecret_env = \"SWITCHYARD_TEST_NEVER_SET_JWT\"",
        ),
    );
    let out = run(&["check".as_ref(), "--config".as_ref(), config.as_os_str()]);
    assert!(out.success, "{}{}", out.stdout, out.stderr);
    let warnings = out.stdout.split("\nwarnings:").nth(1).unwrap_or_default();
    assert!(
        warnings.contains("SWITCHYARD_TEST_NEVER_SET_JWT is not set: no JWT key"),
        "{}",
        out.stdout
    );
    assert!(
        warnings.contains("no API key is configured (SWITCHYARD_TEST_NEVER_SET_KEYS is not set)"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_lane_count_that_is_not_a_number_stops_the_router_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, support::BASE);
    let args = [
        "--config".as_ref(),
        config.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    let out = run_with(&args, &[("SWITCHYARD_LANES", "two")]);
    assert!(!out.success);
    assert!(
        out.stderr
            .contains(r#"SWITCHYARD_LANES="two" is not a number of lanes (0 for none)"#),
        "{}",
        out.stderr
    );
}

#[test]
fn an_address_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(&dir, support::BASE);
    let out = run(&[
        "--config".as_ref(),
        config.as_os_str(),
        "--listen".as_ref(),
        addr.as_ref(),
    ]);
    assert!(!out.success);
    assert!(
        out.stderr.contains(&format!("cannot listen on {addr}")) && out.stderr.contains("in use"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_fifo_as_config_or_library_is_refused_at_start_and_in_check() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    mkfifo(&fifo);
    for (i, out) in start_and_check(&fifo).iter().enumerate() {
        assert!(!out.success, "run {i}");
        assert!(
            out.stderr.contains("named pipe (FIFO), not a regular file"),
            "run {i}: {}",
            out.stderr
        );
    }
    let library = dir.path().join("libfifo.so");
    mkfifo(&library);
    let config = write_config(
        &dir,
        &format!(
            "{}\n[[plugins]]\nname = \"fifo\"\nlibrary = {:?}\n",
            support::BASE,
            library.display().to_string()
        ),
    );
    for (i, out) in start_and_check(&config).iter().enumerate() {
        assert!(!out.success, "run {i}");
        assert!(
            out.stderr.contains("libfifo.so") && out.stderr.contains("named pipe (FIFO)"),
            "run {i}: {}",
            out.stderr
        );
    }
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &support::BASE.replace("level = \"warn\"", "level = \"info\""),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _router = ChildGuard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("switchyard listening"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "no \"switchyard listening\" line; stderr so far:\n{}",
                seen.join("\n")
            ),
        }
    }
    for line in &seen {
        assert!(!line.contains('\x1b'), "ANSI escape in {line:?}");
        assert!(!line.contains("Some("), "Debug form in {line:?}");
    }
    // The line names the scheme clients must use (https with server.tls).
    let listening = seen.last().unwrap();
    assert!(listening.contains("scheme=http "), "{listening}");
}

/// What the binary writes to a terminal (a pseudo-terminal made by
/// util-linux `script`) when it logs a warning at start and then exits,
/// its address being taken; `no_color` sets `NO_COLOR=1`.
fn terminal_output(no_color: bool) -> String {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &dir,
        &support::BASE.replace(
            "mode = \"none\"",
            "mode = \"optional\"\n[auth.jwt]\nsecret_env = \"SWITCHYARD_TEST_NEVER_SET_JWT\"",
        ),
    );
    let command = format!(
        "{} --config {} --listen {}",
        env!("CARGO_BIN_EXE_switchyard"),
        config.display(),
        taken.local_addr().unwrap()
    );
    let mut script = Command::new("script");
    script.args(["-q", "-e", "-c", &command, "/dev/null"]);
    script.env_remove("NO_COLOR").env_remove("RUST_LOG");
    if no_color {
        script.env("NO_COLOR", "1");
    }
    let out = script
        .stdin(Stdio::null())
        .output()
        .expect("run util-linux script");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("SWITCHYARD_TEST_NEVER_SET_JWT is not set"),
        "no warning on the terminal: {text:?}"
    );
    text
}

#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    assert!(
        terminal_output(false).contains("\x1b["),
        "a terminal gets colour"
    );
    let plain = terminal_output(true);
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain:?}");
}

/// Waits (generously) for the router to exit and returns its status.
async fn exited(router: &mut ChildGuard) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = router.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the router did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_audit_log_queue_so_every_accepted_event_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[[plugins]]\nname = \"audit\"\nlibrary = \"{}\"\n[plugins.config]\npath = \"{}\"\nfsync = \"always\"\n\n[[routes]]\nsink = \"audit\"\nevents = [\"alert.*\"]\n",
            support::BASE,
            support::plugin("switchyard_audit_log"),
            audit.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut router = serve(&config, port, Stdio::null());
    wait_for_version(port, 1).await;

    // A burst the sink cannot keep up with (one fsync per line).
    let client = reqwest::Client::new();
    let mut accepted = 0;
    for batch in 0..4 {
        let events: Vec<serde_json::Value> = (0..500)
            .map(|i| {
                serde_json::json!({"type": "alert.created",
                    "payload": {"id": format!("a{batch}-{i}"), "severity": "low"}})
            })
            .collect();
        let response = client
            .post(format!("http://127.0.0.1:{port}/api/events"))
            .json(&events)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: serde_json::Value = response.json().await.unwrap();
        accepted += body["accepted"].as_u64().unwrap();
    }
    assert_eq!(accepted, 2000);
    signal(&router.0, "TERM");
    let status = exited(&mut router).await;
    assert!(status.success(), "exit status {status}");
    let written = std::fs::read_to_string(&audit).unwrap_or_default();
    assert_eq!(
        written.lines().count() as u64,
        accepted,
        "every accepted event is in the audit log after SIGTERM"
    );
}

/// Writes `text` to `config` and runs the binary on it, its stderr going to
/// a file beside it; returns once it serves (`config_version` 1).
async fn spawn_logging(
    config: &std::path::Path,
    text: &str,
) -> (ChildGuard, u16, std::path::PathBuf) {
    std::fs::write(config, text).unwrap();
    let log = config.with_file_name("stderr.log");
    let port = free_port();
    let router = serve(config, port, std::fs::File::create(&log).unwrap());
    wait_for_version(port, 1).await;
    (router, port, log)
}

/// Reloads by `SIGHUP` log each warning once while it lasts: the unset JWT
/// secret and a config warning are not repeated by every reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_warnings_are_logged_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let orphan = "\n[[channels]]\nname = \"orphans\"\n\n[[event_types]]\nname = \"orphan.seen\"\n\
                  channel = \"orphans\"\ndescription = \"carried by no endpoint\"\n\
                  [event_types.payload]\nid = { type = \"string\" }\n";
    let text = support::BASE.replacen(
        "[auth]\nmode = \"none\"\n",
        "[auth]\nmode = \"optional\"\n[auth.jwt]\nsecret_env = \"SY_TEST_never_set_reload_warnings\"\n",
        1,
    ) + orphan;
    let (router, port, log) = spawn_logging(&config, &text).await;
    for version in [2, 3] {
        signal(&router.0, "HUP");
        wait_for_version(port, version).await;
    }
    // A warning a reload brings is logged, once, however many reloads follow
    // (the watcher's and SIGHUP's alike).
    let strays = "\n[[channels]]\nname = \"strays\"\n\n[[event_types]]\nname = \"stray.seen\"\n\
                  channel = \"strays\"\ndescription = \"carried by no endpoint\"\n\
                  [event_types.payload]\nid = { type = \"string\" }\n";
    let text = std::fs::read_to_string(&config).unwrap() + strays;
    std::fs::write(&config, text).unwrap();
    signal(&router.0, "HUP");
    let applied = wait_for_version_above(port, 3).await;
    signal(&router.0, "HUP");
    wait_for_version_above(port, applied).await;
    drop(router);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        stderr
            .matches("SY_TEST_never_set_reload_warnings is not set")
            .count(),
        1,
        "{stderr}"
    );
    let orphan_lines = stderr.lines().filter(|l| l.contains("orphans")).count();
    assert_eq!(orphan_lines, 1, "{stderr}");
    let stray_lines = stderr.lines().filter(|l| l.contains("strays")).count();
    assert_eq!(stray_lines, 1, "{stderr}");
}

/// Waits until `config_version` is above `version` (the watcher may add
/// reloads of its own); returns it.
async fn wait_for_version_above(port: u16, version: u64) -> u64 {
    wait_for_version_where(port, &format!("went above {version}"), |v| v > version).await
}

/// A refused `Origin` is logged at info, naming it and what is allowed, at
/// most once a minute per origin (compared case-insensitively).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_origins_are_logged_once_a_minute_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let text = support::BASE
        .replacen("level = \"warn\"", "level = \"info\"", 1)
        .replacen(
            "[auth]\nmode = \"none\"\n",
            "[auth]\nmode = \"none\"\nallowed_origins = [\"https://dash.example.com\"]\n",
            1,
        );
    let (router, port, log) = spawn_logging(&config, &text).await;
    let client = reqwest::Client::new();
    for origin in [
        "https://evil.example",
        "HTTPS://EVIL.example",
        "https://other.example",
    ] {
        let response = client
            .get(format!("http://127.0.0.1:{port}/ws/events"))
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 403, "{origin}");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    let stderr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("refused Origin https://other.example") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(router);
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("refused Origin"))
        .collect();
    assert_eq!(refused.len(), 2, "{stderr}");
    assert!(
        refused
            .iter()
            .all(|l| l.contains("https://dash.example.com")),
        "names what is allowed: {refused:?}"
    );
    assert!(refused[0].contains("https://evil.example"), "{refused:?}");
    assert!(refused[1].contains("https://other.example"), "{refused:?}");
}
