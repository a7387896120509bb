//! The operator's command-line tools, run as the real binary against a real
//! router: `switchyard publish`, `switchyard token` and `switchyard tail`
//! (docs/operations.md, "Command-line tools"); and what `switchyard check`
//! (with and without `--against`) and `switchyard codegen --out` tell a user.

use crate::support;

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{alert, config, free_port, job, start, Client, Router, BASE, WAIT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The binary, with the environment variables the tools read cleared.
/// `[auth]` text requiring a token signed with the HS256 secret in `var`.
fn jwt_required(var: &str) -> String {
    format!("mode = \"required\"\n[auth.jwt]\nsecret_env = \"{var}\"")
}

fn switchyard() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .env_remove("SWITCHYARD_URL")
        .env_remove("SWITCHYARD_API_KEY")
        .env_remove("SWITCHYARD_TOKEN")
        .env_remove("SWITCHYARD_CONFIG")
        .env_remove("SWITCHYARD_ADMIN_KEY")
        .env_remove("NO_COLOR")
        .kill_on_drop(true);
    command
}

/// Runs the binary with `args` to its end (within [`WAIT`]).
async fn run(command: &mut Command) -> Output {
    tokio::time::timeout(WAIT, command.output())
        .await
        .expect("the command did not finish in time")
        .expect("run the switchyard binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn publish(router: &Router, event_type: &str, payload: &str) -> Output {
    run(switchyard()
        .args(["publish", event_type, payload, "--url"])
        .arg(router.url("")))
    .await
}

// ------------------------------------------------------------------ publish

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_prints_the_stamp_and_the_event_reaches_a_client() {
    let router = start(BASE).await;
    let mut client = router.ws("/ws/events").await;
    let hello = client.established().await;
    let epoch = hello["payload"]["channels"]["alerts"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();

    let out = run(switchyard()
        .args([
            "publish",
            "alert.created",
            r#"{"id":"a1","severity":"high"}"#,
            "--correlation-id",
            "req-7",
            "--url",
        ])
        .arg(router.url("")))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("alerts:{epoch}:1\n"));

    let event = client.recv_type("alert.created").await;
    assert_eq!(event["payload"], json!({"id":"a1","severity":"high"}));
    assert_eq!(
        (&event["channel"], &event["sequence"]),
        (&json!("alerts"), &json!(1))
    );
    assert_eq!(event["correlation_id"], "req-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_of_an_unknown_type_exits_1_naming_did_you_mean() {
    let router = start(BASE).await;
    let out = publish(&router, "alert.craeted", r#"{"id":"a1","severity":"low"}"#).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown_event_type"), "{stderr}");
    assert!(stderr.contains("did_you_mean: alert.created"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = publish(
        &router,
        "alert.created",
        r#"{"id":"a1","severity":"urgent"}"#,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("invalid_payload"), "{stderr}");
    assert!(stderr.contains("severity: not_in_enum"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_a_payload_that_is_not_json_locally_with_exit_2() {
    let router = start(BASE).await;
    let out = publish(&router, "alert.created", "{id: a1}").await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not JSON"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        router
            .metric("switchyard_events_refused_total{reason=\"invalid_json\"}")
            .await,
        0.0,
        "nothing was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_sends_the_key_as_a_bearer_token() {
    let var = "SY_CLI_TOOLS_PUBLISH_KEYS";
    std::env::set_var(var, "ops:k-123");
    let router = start(&config(
        "",
        &format!(
            "mode = \"optional\"\napi_keys_env = \"{var}\"\n[auth.jwt]\nsecret_env = \"{var}\""
        ),
    ))
    .await;
    let payload = r#"{"id":"a1","severity":"low"}"#;
    let out = publish(&router, "alert.created", payload).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );

    let out = run(switchyard()
        .args(["publish", "alert.created", payload, "--url"])
        .arg(router.url(""))
        .env("SWITCHYARD_API_KEY", "k-123"))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_that_cannot_connect_says_why() {
    let out = run(switchyard()
        .args([
            "publish",
            "alert.created",
            r#"{"id":"a1","severity":"low"}"#,
        ])
        .args(["--url", &format!("http://127.0.0.1:{}", free_port())]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refused_for_want_of_a_key_says_how_to_give_one() {
    let var = "SY_CLI_TOOLS_PUBLISH_HINT";
    std::env::set_var(var, "ops:k-456");
    let router = start(&config(
        "",
        &format!(
            "mode = \"optional\"\napi_keys_env = \"{var}\"\n[auth.jwt]\nsecret_env = \"{var}\""
        ),
    ))
    .await;
    let out = publish(&router, "alert.created", r#"{"id":"a1","severity":"low"}"#).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("(HTTP 401)")
            && stderr.contains("--key")
            && stderr.contains("SWITCHYARD_API_KEY"),
        "{stderr}"
    );
}

/// An empty value is most often a failed `$(…)`: sent, the router would take
/// it for no key at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_an_empty_key_with_exit_2() {
    let router = start(BASE).await;
    let payload = r#"{"id":"a1","severity":"low"}"#;
    let flag = run(switchyard()
        .args(["publish", "alert.created", payload, "--key", "", "--url"])
        .arg(router.url("")))
    .await;
    let variable = run(switchyard()
        .args(["publish", "alert.created", payload, "--url"])
        .arg(router.url(""))
        .env("SWITCHYARD_API_KEY", ""))
    .await;
    for out in [flag, variable] {
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("--key is empty"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    let (code, body) = router.publish(&alert("a2")).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        body["sequences"][0]["sequence"], 1,
        "nothing was sent before"
    );
}

// -------------------------------------------------------------------- token

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_mints_a_token_the_router_accepts() {
    let var = "SY_CLI_TOOLS_JWT_SECRET";
    std::env::set_var(var, "a-secret-for-the-cli-tools-test");
    let router = start(&config("", &jwt_required(var))).await;
    let out = run(switchyard()
        .args([
            "token",
            "--sub",
            "alice",
            "--ttl",
            "15m",
            "--channels",
            "alerts",
            "--config",
        ])
        .arg(router.config_path()))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();

    let mut client = router.ws(&format!("/ws/events?token={token}")).await;
    let hello = client.established().await;
    assert_eq!(hello["payload"]["user"], "alice", "{hello}");
    let channels = hello["payload"]["channels"].as_object().unwrap();
    assert_eq!(channels.keys().collect::<Vec<_>>(), ["alerts"], "{hello}");
    let expires =
        chrono::DateTime::parse_from_rfc3339(hello["payload"]["expires_at"].as_str().unwrap())
            .unwrap();
    let left = expires.timestamp() - chrono::Utc::now().timestamp();
    assert!((800..=900).contains(&left), "expires in {left}s");
}

/// `--channels "alerts, jobs"`: the space is not part of a channel's
/// name (the token allowed `alerts` and a channel " jobs" that does not
/// exist), and an empty name is a usage error, not a token for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_channels_may_have_spaces_after_the_commas() {
    let var = "SY_CLI_TOOLS_JWT_CHANNELS";
    std::env::set_var(var, "a-secret-for-the-channels-test");
    let router = start(&config("", &jwt_required(var))).await;
    let mint = |channels: &str| {
        let mut command = switchyard();
        command
            .args([
                "token",
                "--sub",
                "alice",
                "--channels",
                channels,
                "--config",
            ])
            .arg(router.config_path());
        command
    };
    let out = run(&mut mint("alerts, jobs")).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let mut client = router.ws(&format!("/ws/events?token={token}")).await;
    let hello = client.established().await;
    let channels = hello["payload"]["channels"].as_object().unwrap();
    assert_eq!(
        channels.keys().collect::<Vec<_>>(),
        ["alerts", "jobs"],
        "{hello}"
    );
    for empty in ["", "alerts,"] {
        let out = run(&mut mint(empty)).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{empty:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{empty:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_signs_with_the_kid_of_a_listed_key() {
    let var = "SY_CLI_TOOLS_JWT_KID";
    std::env::set_var(var, "a-secret-for-kid-b");
    let auth = format!(
        "mode = \"required\"\n[auth.jwt]\nsecret_env = \"SY_CLI_TOOLS_NEVER_SET\"\n\
         keys = [ {{ kid = \"b\", secret_env = \"{var}\" }} ]"
    );
    let router = start(&config("", &auth)).await;
    let out = run(switchyard()
        .args(["token", "--sub", "bob", "--config"])
        .arg(router.config_path())
        .env_remove("SY_CLI_TOOLS_NEVER_SET"))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), Some("b"));
    let mut client = router.ws(&format!("/ws/events?token={token}")).await;
    assert_eq!(client.established().await["payload"]["user"], "bob");
}

/// `--sub ""` (say `--sub "$USER"` with `USER` unset) would mint a token
/// that every router refuses (`sub` must not be empty): a usage error,
/// like an empty `--token` for `tail`.
#[test]
fn token_refuses_an_empty_sub() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let var = "SY_CLI_TOOLS_EMPTY_SUB";
    std::fs::write(&path, config("", &jwt_required(var))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["token", "--sub", "", "--config"])
        .arg(&path)
        .env(var, "a-secret-for-the-empty-sub-test")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {} stderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("--sub"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn token_without_a_secret_fails_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let var = "SY_CLI_TOOLS_UNSET_SECRET";
    std::fs::write(&path, config("", &jwt_required(var))).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["token", "--sub", "alice", "--config"])
        .arg(&path)
        .env_remove(var)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(var) && stderr.contains("not set"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    std::fs::write(
        &path,
        config(
            "",
            "mode = \"required\"\n[auth.jwt]\nalgorithm = \"RS256\"\npublic_key_file = \"k.pem\"",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["token", "--sub", "alice", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no HS256 secret"), "{stderr}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["token", "--sub", "alice", "--ttl", "1w", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a bad --ttl is a usage error");
}

// --------------------------------------------------------------------- tail

/// The ids of the connections the router holds.
/// A connected client (kept open by the caller), the epoch of `alerts`
/// it was told, and the connections open so far (to tell tail's apart).
async fn a_client_and_its_alerts_epoch(router: &Router) -> (Client, String, Vec<String>) {
    let mut client = router.ws("/ws/events").await;
    let epoch = client.established().await["payload"]["channels"]["alerts"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let mine = connection_ids(router).await;
    (client, epoch, mine)
}

async fn connection_ids(router: &Router) -> Vec<String> {
    let (code, body) = router.get("/api/websocket/connections").await;
    assert_eq!(code, 200, "{body}");
    body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the router holds a connection not in `known`; returns it.
async fn wait_for_connection(router: &Router, known: &[String]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let ids = connection_ids(router).await;
        if let Some(id) = ids.iter().find(|id| !known.contains(id)) {
            return id.clone();
        }
        assert!(Instant::now() < deadline, "tail never connected: {ids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next stdout line of `tail`, as JSON.
async fn next_event(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("tail printed nothing in time")
        .unwrap()
        .expect("tail's stdout ended");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON line ({e}): {line}"))
}

fn spawn_tail(router: &Router, extra: &[&str]) -> Child {
    switchyard()
        .args(["tail", "--json", "--url"])
        .arg(router.url(""))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard tail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_json_recovers_what_was_published_while_it_reconnected() {
    let router = start(BASE).await;
    let mut tail = spawn_tail(&router, &[]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let first = wait_for_connection(&router, &[]).await;

    router.publish_ok(&alert("a1")).await;
    router.publish_ok(&job("j1")).await;
    let mut seen = vec![next_event(&mut lines).await, next_event(&mut lines).await];

    let (code, body) = router
        .post("/api/admin/disconnect", &json!({"connection_id": first}))
        .await;
    assert_eq!((code, &body["closed"]), (200, &json!(1)), "{body}");
    // Published while tail is away: it must replay them on reconnect.
    router.publish_ok(&alert("a2")).await;
    router.publish_ok(&job("j2")).await;
    router.publish_ok(&alert("a3")).await;
    // No connection yet: tail (which waits 0.2 s before reconnecting) must
    // get those three from history, through `since`.
    let away = connection_ids(&router).await.is_empty();
    wait_for_connection(&router, std::slice::from_ref(&first)).await;
    router.publish_ok(&alert("a4")).await;

    while seen.len() < 6 {
        seen.push(next_event(&mut lines).await);
    }
    tail.start_kill().unwrap();
    let _ = tail.wait().await;
    // Anything printed after a4 would be a duplicate.
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(rest.is_empty(), "duplicates or strays after a4: {rest}");

    let mut got: Vec<(String, u64, String)> = seen
        .iter()
        .map(|e| {
            let id = e["payload"]["id"]
                .as_str()
                .or(e["payload"]["job_id"].as_str())
                .unwrap()
                .to_owned();
            (
                e["channel"].as_str().unwrap().to_owned(),
                e["sequence"].as_u64().unwrap(),
                id,
            )
        })
        .collect();
    got.sort();
    let want = [
        ("alerts", 1, "a1"),
        ("alerts", 2, "a2"),
        ("alerts", 3, "a3"),
        ("alerts", 4, "a4"),
        ("jobs", 1, "j1"),
        ("jobs", 2, "j2"),
    ]
    .map(|(c, s, i)| (c.to_owned(), s, i.to_owned()));
    assert_eq!(got, want, "every event once: {seen:?}");
    // Per channel, in order.
    let alerts: Vec<u64> = seen
        .iter()
        .filter(|e| e["channel"] == "alerts")
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(alerts, [1, 2, 3, 4]);

    let mut stderr = String::new();
    tail.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("disconnected by operator"), "{stderr}");
    assert!(stderr.contains("reconnected"), "{stderr}");
    if away {
        assert!(
            stderr.contains("recovered 2 missed event(s) of alerts")
                && stderr.contains("recovered 1 missed event(s) of jobs"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_starts_from_a_since_cursor_and_filters_by_pattern() {
    let router = start(BASE).await;
    let (_client, epoch, mine) = a_client_and_its_alerts_epoch(&router).await;
    for id in ["a1", "a2", "a3"] {
        router.publish_ok(&alert(id)).await;
    }
    router.publish_ok(&job("j1")).await;

    let since = format!("alerts:{epoch}:1");
    let mut tail = spawn_tail(&router, &["--events", "alert.*", "--since", &since]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    let a2 = next_event(&mut lines).await;
    let a3 = next_event(&mut lines).await;
    assert_eq!(
        (&a2["payload"]["id"], &a3["payload"]["id"]),
        (&json!("a2"), &json!("a3"))
    );
    wait_for_connection(&router, &mine).await;
    router.publish_ok(&job("j2")).await;
    router.publish_ok(&alert("a4")).await;
    let a4 = next_event(&mut lines).await;
    assert_eq!(a4["payload"]["id"], "a4", "job.progress is not subscribed");
    tail.start_kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_reports_a_gap_it_cannot_recover() {
    let router = start(BASE).await;
    let mut tail = spawn_tail(&router, &["--since", "alerts:not-the-epoch:3"]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    wait_for_connection(&router, &[]).await;
    router.publish_ok(&alert("a1")).await;
    assert_eq!(next_event(&mut lines).await["payload"]["id"], "a1");
    let stderr = stop_and_read_stderr(&mut tail).await;
    assert!(
        stderr.contains("GAP on alerts") && stderr.contains("epoch_changed"),
        "{stderr}"
    );
}

/// A `--since` past the channel's last sequence (a stamp from another
/// router, a typo) is `invalid_position`: the router sends live events from
/// its own position on, and tail must print them, not hold them back as
/// already seen until the channel catches up with the bad cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_from_a_since_past_the_channel_prints_the_live_events() {
    let router = start(BASE).await;
    let (_client, epoch, mine) = a_client_and_its_alerts_epoch(&router).await;
    router.publish_ok(&alert("a1")).await;

    let since = format!("alerts:{epoch}:50");
    let mut tail = spawn_tail(&router, &["--since", &since]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    wait_for_connection(&router, &mine).await;
    router.publish_ok(&alert("a2")).await;
    let next = tokio::time::timeout(Duration::from_secs(3), lines.next_line()).await;
    let stderr = stop_and_read_stderr(&mut tail).await;
    assert!(stderr.contains("invalid_position"), "{stderr}");
    let line = next
        .unwrap_or_else(|_| panic!("alerts:2 was never printed; stderr: {stderr}"))
        .unwrap()
        .expect("tail's stdout ended");
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["payload"]["id"], "a2", "{line}");
}

/// Runs `tail` with `args` for at most `limit`: its exit status (`None`
/// when it was still running) and its stderr.
async fn tail_for(router: &Router, args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let url = router.url("");
    let mut all = vec!["--url", url.as_str()];
    all.extend_from_slice(args);
    run_tail(&all, limit).await
}

/// Runs `switchyard tail args` for at most `limit`: its exit code (`None`
/// when it was still running and was killed) and its stderr.
async fn run_tail(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut tail = switchyard()
        .arg("tail")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard tail");
    let mut stderr = tail.stderr.take().unwrap();
    let status = exit_code_within(&mut tail, limit).await;
    let mut text = String::new();
    stderr.read_to_string(&mut text).await.unwrap();
    (status, text)
}

/// The exit code of `child` if it ends within `limit`; `None` (and killed)
/// if it does not.
async fn exit_code_within(child: &mut Child, limit: Duration) -> Option<i32> {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => status.unwrap().code(),
        Err(_) => {
            child.start_kill().unwrap();
            let _ = child.wait().await;
            None
        }
    }
}

/// Stops a running tail and returns what it wrote on stderr.
async fn stop_and_read_stderr(tail: &mut Child) -> String {
    tail.start_kill().unwrap();
    let _ = tail.wait().await;
    let mut stderr = String::new();
    tail.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    stderr
}

/// A mistyped `--endpoint` is refused by the router with 404
/// `unknown_endpoint` and the endpoints it has: tail must say so and exit 1,
/// not retry a path that will never be there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_on_an_unknown_endpoint_exits_1_naming_the_right_one() {
    let router = start(BASE).await;
    let (status, stderr) = tail_for(
        &router,
        &["--endpoint", "/ws/evnts"],
        Duration::from_secs(4),
    )
    .await;
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown_endpoint") && stderr.contains("did_you_mean: /ws/events"),
        "{stderr}"
    );
}

/// `--events 'alert.*, job.progress'`: spaces after the commas are not part
/// of the patterns, as in `--since` (and in tail's own resubscribe on a lag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_events_may_have_spaces_after_the_commas() {
    let router = start(BASE).await;
    let mut tail = spawn_tail(&router, &["--events", "alert.*, job.progress"]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    wait_for_connection(&router, &[]).await;
    router.publish_ok(&job("j1")).await;
    router.publish_ok(&alert("a1")).await;
    let first = next_event(&mut lines).await;
    let stderr = stop_and_read_stderr(&mut tail).await;
    assert!(!stderr.contains("invalid_pattern"), "{stderr}");
    assert_eq!(first["type"], "job.progress", "{first}; {stderr}");
}

/// `--url 127.0.0.1:8080` (no scheme) can never connect: a usage error
/// that says what is wrong, not a retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_with_a_url_without_a_scheme_exits_2_saying_so() {
    let (status, text) = run_tail(&["--url", "127.0.0.1:9"], Duration::from_secs(3)).await;
    assert_eq!(status, Some(2), "{text}");
    assert!(text.contains("http://"), "{text}");
}

/// `switchyard tail … 2>&1 | head -1`: once the reader of its messages is
/// gone, tail ends as it does when the reader of its events is gone, with
/// 0; it used to panic (101) on its next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_ends_quietly_when_its_stderr_is_closed() {
    let mut tail = switchyard()
        .args(["tail", "--url", "http://127.0.0.1:9"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard tail");
    let mut stderr = BufReader::new(tail.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).await.unwrap();
    assert!(first.contains("retrying"), "{first}");
    drop(stderr);
    assert_eq!(
        exit_code_within(&mut tail, Duration::from_secs(5)).await,
        Some(0)
    );
}

#[test]
fn tail_refuses_a_malformed_since() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "tail",
            "--url",
            "http://127.0.0.1:9",
            "--since",
            "alerts:41",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--since: entry `alerts:41` is not channel:epoch:sequence"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("since").count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_refuses_an_empty_token_with_exit_2() {
    let router = start(BASE).await;
    let flag = run(switchyard()
        .args(["tail", "--token", "", "--url"])
        .arg(router.url("")))
    .await;
    let variable = run(switchyard()
        .args(["tail", "--url"])
        .arg(router.url(""))
        .env("SWITCHYARD_TOKEN", ""))
    .await;
    for out in [flag, variable] {
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("--token is empty (did the command that made it fail?)"),
            "{stderr}"
        );
    }
    assert!(connection_ids(&router).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_with_a_minted_token_prints_events_and_without_one_exits_1() {
    let var = "SY_CLI_TOOLS_JWT_TAIL";
    std::env::set_var(var, "a-secret-for-tail");
    let router = start(&config("", &jwt_required(var))).await;
    let out = run(switchyard()
        .args(["tail", "--json", "--url"])
        .arg(router.url("")))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("refused the connection") && stderr.contains("1008"),
        "{stderr}"
    );

    let out = run(switchyard()
        .args(["token", "--sub", "carol", "--config"])
        .arg(router.config_path()))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let mut tail = spawn_tail(&router, &["--token", &token]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    wait_for_connection(&router, &[]).await;
    router.publish_ok(&alert("a1")).await;
    assert_eq!(next_event(&mut lines).await["payload"]["id"], "a1");
    tail.start_kill().unwrap();
}

/// What `tail` (without `--json`) writes to a terminal (a pseudo-terminal
/// made by util-linux `script`) for one event; `no_color` sets `NO_COLOR=1`.
async fn tail_on_a_terminal(router: &Router, no_color: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let typescript = dir.path().join("typescript");
    let command = format!(
        "{} tail --url {}",
        env!("CARGO_BIN_EXE_switchyard"),
        router.url("")
    );
    let mut script = Command::new("script");
    script
        .args(["-q", "-f", "-c", &command])
        .arg(&typescript)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if no_color {
        script.env("NO_COLOR", "1");
    }
    let mut script = script.spawn().expect("run util-linux script");
    let id = wait_for_connection(router, &[]).await;
    router.publish_ok(&alert("t1")).await;
    let deadline = Instant::now() + WAIT;
    let written = loop {
        let written = std::fs::read_to_string(&typescript).unwrap_or_default();
        if written.contains("alert.created") && written.contains('\n') {
            break written;
        }
        assert!(
            Instant::now() < deadline,
            "tail printed nothing: {written:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    script.start_kill().unwrap();
    let _ = script.wait().await;
    // Let the router forget the connection before the next run counts them.
    let deadline = Instant::now() + WAIT;
    while connection_ids(router).await.contains(&id) {
        assert!(Instant::now() < deadline, "tail's connection never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_on_a_terminal_prints_readable_coloured_lines_unless_no_color() {
    let router = start(BASE).await;
    let coloured = tail_on_a_terminal(&router, false).await;
    assert!(
        coloured.contains("\x1b["),
        "a terminal gets colour: {coloured:?}"
    );
    assert!(
        coloured.contains(r#"{"id":"t1","severity":"low"}"#),
        "{coloured:?}"
    );
    let plain = tail_on_a_terminal(&router, true).await;
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain:?}");
    assert!(
        plain.contains(r#" alert.created alerts:2 {"id":"t1","severity":"low"}"#),
        "time, type, channel:sequence, payload: {plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_that_lags_asks_for_the_dropped_events_again() {
    let server = "send_queue = 8\nsend_queue_bytes = 65536\nsocket_send_buffer = 8192";
    let router =
        start(&config(server, "mode = \"none\"").replace("history = 100", "history = 5000")).await;
    let mut tail = spawn_tail(&router, &[]);
    let stdout = tail.stdout.take().unwrap();
    wait_for_connection(&router, &[]).await;
    // Nobody reads tail's stdout for now: its pipe, then its socket, then
    // its queue at the router fill up, and the router drops events for it.
    let pad = "x".repeat(3000);
    let total = 2400;
    for batch in 0..total / 100 {
        let events: Vec<Value> = (0..100)
            .map(|i| alert(&format!("{}-{pad}", batch * 100 + i)))
            .collect();
        let (code, body) = router.publish(&Value::from(events)).await;
        assert_eq!(code, 202, "{body}");
    }
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    while seen.len() < total {
        seen.push(next_event(&mut lines).await["sequence"].as_u64().unwrap());
    }
    let stderr = stop_and_read_stderr(&mut tail).await;
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), total, "a duplicate: {stderr}");
    assert_eq!(sorted, (1..=total as u64).collect::<Vec<_>>(), "{stderr}");
    assert!(
        stderr.contains("lagged"),
        "the router never dropped: {stderr}"
    );
}

// -------------------------------------------------------------------- check

/// BASE with `channels[0].slow_consumer` set to what it cannot be.
fn refused_config() -> String {
    BASE.replace(
        "name = \"alerts\"\n",
        "name = \"alerts\"\nslow_consumer = \"x\"\n",
    )
}

/// BASE with a setting that loads, with a warning.
fn warned_config() -> String {
    BASE.replace(
        "name = \"jobs\"\n",
        "name = \"jobs\"\nrequire_auth = true\n",
    )
}

/// `switchyard check` run in `dir` on `config.toml` there, holding `text`;
/// with `extra` arguments.
async fn check_in(dir: &std::path::Path, text: &str, extra: &[&str]) -> Output {
    std::fs::write(dir.join("config.toml"), text).unwrap();
    run(switchyard()
        .current_dir(dir)
        .args(["check", "--config", "config.toml"])
        .args(extra))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_file_as_given_and_lists_warnings_without_trailing_space() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_in(dir.path(), &warned_config(), &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("configuration config.toml is valid\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nwarnings:\n  - channels[1] (jobs): require_auth has no effect"),
        "{stdout}"
    );
    assert!(!stdout.lines().any(|l| l.ends_with(' ')), "{stdout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_lists_the_problems_of_a_refused_file_as_check_does() {
    let router = start(BASE).await;
    let dir = tempfile::tempdir().unwrap();
    let local = check_in(dir.path(), &refused_config(), &[]).await;
    assert_eq!(local.status.code(), Some(1));
    let local = text(&local.stderr);
    let problem = "channels[0].slow_consumer = \"x\": must be one of drop_oldest, disconnect";
    assert!(local.contains(problem), "{local}");

    let out = check_in(
        dir.path(),
        &refused_config(),
        &["--against", &router.url("")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("config.toml would be refused by the router at"),
        "{stderr}"
    );
    let line = refused_config()
        .lines()
        .position(|l| l.starts_with("slow_consumer"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!("\n  - line {line}, column 1: {problem}\n")),
        "{stderr}"
    );
    assert!(!stderr.contains('{'), "no raw JSON: {stderr}");
    assert_eq!(router.config_version().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_prints_the_warnings_of_the_candidate() {
    let router = start(BASE).await;
    let dir = tempfile::tempdir().unwrap();
    let out = check_in(
        dir.path(),
        &warned_config(),
        &["--against", &router.url("")],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("\nwarnings:\n  - channels[1] (jobs): require_auth has no effect"),
        "{stdout}"
    );
    let out = check_in(dir.path(), BASE, &["--against", &router.url("")]).await;
    assert!(
        text(&out.stdout).ends_with("\nwarnings: none\n"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_without_the_admin_key_says_how_to_give_it() {
    let var = "SY_CLI_TOOLS_ADMIN_KEYS";
    std::env::set_var(var, "ops:a-789");
    let router = start(&config(
        "",
        &format!(
            "mode = \"optional\"\nadmin_keys_env = \"{var}\"\n[auth.jwt]\nsecret_env = \"{var}\""
        ),
    ))
    .await;
    let candidate = std::fs::read_to_string(router.config_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = check_in(dir.path(), &candidate, &["--against", &router.url("")]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("send an API key as `Authorization: Bearer <key>`")
            && stderr.contains("--key KEY or the SWITCHYARD_ADMIN_KEY environment variable"),
        "{stderr}"
    );
    assert!(!stderr.contains('{'), "no raw JSON: {stderr}");

    let out = check_in(
        dir.path(),
        &candidate,
        &["--against", &router.url(""), "--key", "a-789"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
}

// ------------------------------------------------------------------ codegen

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codegen_out_creates_missing_folders_and_names_a_path_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, BASE).unwrap();
    let file = dir.path().join("client/src/types.ts");
    let out = run(switchyard()
        .args(["codegen", "typescript", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&file))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .contains("alert.created"));

    // A folder in the way is a file: the error names where it was writing.
    let blocked = dir.path().join("config.toml/types.ts");
    let out = run(switchyard()
        .args(["codegen", "typescript", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&blocked))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&blocked.display().to_string()), "{stderr}");
}
