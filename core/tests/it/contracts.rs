//! The generated contracts checked by the real tools: the AsyncAPI document
//! by the official parser (`@asyncapi/parser`), the TypeScript declarations
//! by `tsc --strict`, both from tests/contracts (an npm project; `npm ci`
//! is run here when its node_modules is missing, and a missing Node fails
//! the test rather than skipping it).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

/// The npm project with the checking tools.
fn tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/contracts")
}

/// Installs the tools once per run if scripts/test has not.
fn tools_installed() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let dir = tools();
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join("node_modules/.bin/tsc").exists() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .output()
            .expect("run npm (Node.js is needed for the contract tests)");
        assert!(out.status.success(), "npm ci failed:\n{}", text(&out));
    }
    dir
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `node validate-asyncapi.mjs FILE`.
fn validate_asyncapi(file: &Path) -> Output {
    Command::new("node")
        .arg(tools_installed().join("validate-asyncapi.mjs"))
        .arg(file)
        .output()
        .expect("run node")
}

/// `tsc --strict --noEmit FILES…` in `dir`.
fn tsc(dir: &Path, files: &[&str]) -> Output {
    Command::new("npx")
        .arg("--prefix")
        .arg(tools_installed())
        .args(["tsc", "--strict", "--noEmit"])
        .args(files)
        .current_dir(dir)
        .output()
        .expect("run npx")
}

/// A route's body, after checking its status and content type.
async fn fetch(router: &support::Remote, path: &str, content_type: &str) -> String {
    let response = reqwest::get(router.url(path)).await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET {path}");
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        content_type,
        "GET {path}"
    );
    response.text().await.unwrap()
}

async fn asyncapi(router: &support::Remote) -> Value {
    let body = fetch(router, "/api/websocket/asyncapi.json", "application/json").await;
    serde_json::from_str(&body).unwrap()
}

async fn types_ts(router: &support::Remote) -> String {
    let path = "/api/websocket/types.ts";
    fetch(router, path, "application/typescript; charset=utf-8").await
}

/// Uses the declarations of support::BASE as a client would.
const OK_TS: &str = r#"
import type { ClientMessage, EndpointEvents, Envelope, EventName, ServerMessage } from "./types";

export function handle(m: ServerMessage): string {
  switch (m.type) {
    case "alert.created":
      return m.payload.severity + m.payload.id + (m.payload.count ?? 0);
    case "connection.established":
      return m.payload.connection_id;
    case "error":
      return m.payload.code;
    default:
      return m.type;
  }
}
export const progress: Envelope<"job.progress"> = {
  type: "job.progress",
  payload: { job_id: "j1", percent: null },
  timestamp: "2026-11-23T06:00:00.123Z",
  channel: "jobs",
  sequence: 1,
};
export const carried: EndpointEvents["/ws/events"][] = ["alert.created", "job.progress"];
export const subscribe: ClientMessage = { action: "subscribe", events: ["alert.*"], id: 1 };
export const name: EventName = "alert.resolved";
"#;

/// Two mistakes the declarations must catch.
const BAD_TS: &str = r#"
import type { Envelope, EventMap } from "./types";

export const alert: EventMap["alert.created"] = { id: "a1", severity: "urgent" };
export type Unknown = Envelope<"alert.exploded">;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asyncapi_document_is_valid_for_the_official_parser() {
    let router = support::start(support::BASE).await;
    let doc = asyncapi(&router).await;
    assert_eq!(doc["info"]["version"], "1");
    assert_eq!(doc["servers"]["router"]["protocol"], "ws");
    assert_eq!(doc["servers"]["router"]["host"], router.addr.to_string());
    assert_eq!(doc["channels"]["ws_events"]["address"], "/ws/events");
    assert_eq!(
        doc["components"]["messages"]["AlertResolved"]["deprecated"],
        true
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("asyncapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = validate_asyncapi(&file);
    assert!(out.status.success(), "{}", text(&out));
    router.shutdown().await;
}

#[test]
fn the_validator_refuses_an_invalid_document() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("asyncapi.json");
    std::fs::write(
        &file,
        r#"{"asyncapi":"3.0.0","info":{"title":"x"},"channels":7}"#,
    )
    .unwrap();
    let out = validate_asyncapi(&file);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("error"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_declarations_compile_strict_and_catch_misuse() {
    let router = support::start(support::BASE).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("types.ts"), types_ts(&router).await).unwrap();
    std::fs::write(dir.path().join("ok.ts"), OK_TS).unwrap();
    std::fs::write(dir.path().join("bad.ts"), BAD_TS).unwrap();
    let ok = tsc(dir.path(), &["types.ts", "ok.ts"]);
    assert!(
        ok.status.success(),
        "ok.ts does not compile:\n{}",
        text(&ok)
    );
    let bad = tsc(dir.path(), &["types.ts", "bad.ts"]);
    let said = text(&bad);
    assert!(!bad.status.success(), "bad.ts compiled:\n{said}");
    assert!(
        said.contains("\"urgent\""),
        "the wrong enum value is not named:\n{said}"
    );
    assert!(
        said.contains("\"alert.exploded\""),
        "the unknown type is not named:\n{said}"
    );
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contracts_follow_a_reload_that_adds_a_type() {
    let router = support::start(support::BASE).await;
    assert_eq!(asyncapi(&router).await["info"]["version"], "1");
    let added = format!(
        "{}\n[[event_types]]\nname = \"alert.escalated\"\nchannel = \"alerts\"\n[event_types.payload]\nid = {{ type = \"string\", required = true }}\n",
        support::BASE
    );
    router.settle_after(|| router.write_config(&added)).await;
    let version = router.config_version().await;
    assert!(version >= 2, "the watcher applied the change: {version}");
    let doc = asyncapi(&router).await;
    assert_eq!(doc["info"]["version"], version.to_string());
    assert_eq!(
        doc["components"]["messages"]["AlertEscalated"]["name"],
        "alert.escalated"
    );
    assert!(doc["channels"]["ws_events"]["messages"]["AlertEscalated"].is_object());
    assert!(types_ts(&router)
        .await
        .contains("  \"alert.escalated\": AlertEscalated;\n"));
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codegen_prints_what_the_route_serves() {
    let router = support::start(support::BASE).await;
    let served = types_ts(&router).await;
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["codegen", "typescript", "--config"])
        .arg(router.config_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), served);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("types.ts");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["codegen", "typescript", "--config"])
        .arg(router.config_path())
        .arg("--out")
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), served);
    router.shutdown().await;
}

#[test]
fn codegen_refuses_an_invalid_config_with_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let broken = support::BASE.replace(
        "channels = [\"alerts\", \"jobs\"]",
        "channels = [\"alerts\", \"jbos\"]",
    );
    std::fs::write(&config, broken).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["codegen", "typescript", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(text(&out).contains("jbos"), "{}", text(&out));
}

/// The shipped `config.toml` with the built plugins and free loopback
/// ports in place of its fixed ones (as shipped_config.rs places it).
fn shipped_here(router_port: u16) -> String {
    let plugin_dir = Path::new(&support::plugin("switchyard_detection"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml")).unwrap();
    let replacements = [
        (
            "plugin_dir = \"target/release\"".to_owned(),
            format!("plugin_dir = {plugin_dir:?}"),
        ),
        (
            "127.0.0.1:8080".to_owned(),
            format!("127.0.0.1:{router_port}"),
        ),
        (
            "127.0.0.1:9101".to_owned(),
            format!("127.0.0.1:{}", support::free_port()),
        ),
        (
            "127.0.0.1:9102".to_owned(),
            format!("127.0.0.1:{}", support::free_port()),
        ),
    ];
    replacements.into_iter().fold(shipped, |text, (from, to)| {
        assert!(
            text.contains(&from),
            "the shipped config.toml has no {from}"
        );
        text.replace(&from, &to)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_config_contracts_pass_both_tools() {
    let port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, shipped_here(port)).unwrap();
    let secrets = [
        ("SWITCHYARD_JWT_SECRET", "a-secret-for-the-contract-test"),
        ("SWITCHYARD_API_KEYS", "ci:a-key-for-the-contract-test"),
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&config)
        .current_dir(dir.path())
        .envs(secrets)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _router = support::ChildGuard(child);
    let remote = support::Remote {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while reqwest::get(remote.url("/health/live")).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the router did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let doc = asyncapi(&remote).await;
    // Plugin-declared types are there, with the shipped aliases.
    assert_eq!(
        doc["components"]["messages"]["DetectionNew"]["name"],
        "detection.new"
    );
    let job = doc["components"]["messages"]["JobProgress"]["description"].to_string();
    assert!(job.contains("job_progress"), "{job}");
    std::fs::write(dir.path().join("asyncapi.json"), doc.to_string()).unwrap();
    let out = validate_asyncapi(&dir.path().join("asyncapi.json"));
    assert!(out.status.success(), "{}", text(&out));
    let served = types_ts(&remote).await;
    let generated = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["codegen", "typescript", "--config"])
        .arg(&config)
        .envs(secrets)
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", text(&generated));
    assert_eq!(String::from_utf8(generated.stdout).unwrap(), served);
    std::fs::write(dir.path().join("types.ts"), served).unwrap();
    let out = tsc(dir.path(), &["types.ts"]);
    assert!(out.status.success(), "{}", text(&out));
}
