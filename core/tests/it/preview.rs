//! The reload preview: `POST /api/admin/reload?dry_run=true` and
//! `switchyard check --against`, against a real router with real clients
//! (docs/operations.md, "Reload preview"): what a file would change,
//! counted against the connections open, and nothing applied.

use serde_json::{json, Value};

use crate::support::{self, start, Client, Router};

/// BASE with a second endpoint, `/ws/alerts`, carrying only `alerts`.
fn two_endpoints(auth: &str) -> String {
    support::config("", auth).replace(
        "[[event_types]]\nname = \"alert.created\"",
        "[[endpoints]]\npath = \"/ws/alerts\"\nchannels = [\"alerts\"]\n\n\
         [[event_types]]\nname = \"alert.created\"",
    )
}

/// Asks for the preview of `candidate` (a TOML text).
async fn preview(router: &Router, candidate: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(router.url("/api/admin/reload?dry_run=true"))
        .header("content-type", "application/toml")
        .body(candidate.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn clients(router: &Router, path: &str, n: usize) -> Vec<Client> {
    let mut open = Vec::new();
    for _ in 0..n {
        let mut client = router.ws(path).await;
        client.established().await;
        open.push(client);
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_endpoint_is_previewed_with_the_connections_it_would_close() {
    let config = two_endpoints("mode = \"none\"");
    let router = start(&config).await;
    let _alerts = clients(&router, "/ws/alerts", 2).await;
    let mut events = clients(&router, "/ws/events", 1).await;
    let (status, body) = preview(&router, &support::config("", "mode = \"none\"")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], false);
    let impact = &body["impact"];
    assert_eq!(impact["endpoints_removed"], json!(["/ws/alerts"]), "{body}");
    assert_eq!(
        impact["connections_closed"],
        json!({"endpoint_removed": 2, "access_withdrawn": 0})
    );
    assert_eq!(router.config_version().await, 1, "nothing applied");
    router.publish_ok(&support::alert("still")).await;
    assert_eq!(events[0].recv().await["payload"]["id"], "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawn_access_and_a_moved_type_are_counted_per_connection() {
    let router = start(&support::config("", "mode = \"optional\"")).await;
    let _anonymous = clients(&router, "/ws/events", 3).await;
    let protected = support::config("", "mode = \"optional\"").replace(
        "channels = [\"alerts\", \"jobs\"]",
        "channels = [\"alerts\", \"jobs\"]\nrequire_auth = true",
    );
    let (_, body) = preview(&router, &protected).await;
    assert_eq!(
        body["impact"]["connections_closed"],
        json!({"endpoint_removed": 0, "access_withdrawn": 3}),
        "{body}"
    );

    let moved = support::config("", "mode = \"optional\"")
        .replace(
            "channels = [\"alerts\", \"jobs\"]",
            "channels = [\"alerts\"]",
        )
        .replace("[[channels]]\nname = \"jobs\"\n", "")
        .replace("channel = \"jobs\"", "channel = \"alerts\"");
    let (status, body) = preview(&router, &moved).await;
    assert_eq!(status, 200, "{body}");
    let impact = &body["impact"];
    assert_eq!(impact["channels_removed"], json!(["jobs"]), "{body}");
    assert_eq!(
        impact["types_moved"],
        json!([{"type": "job.progress", "from": "jobs", "to": "alerts"}])
    );
    assert_eq!(impact["connections_losing_channel"], json!({"jobs": 3}));
    assert_eq!(impact["connections_closed"]["access_withdrawn"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_plugin_table_is_previewed_then_applied_with_the_same_impact() {
    let library = support::plugin("switchyard_audit_log");
    let logs = tempfile::tempdir().unwrap();
    let with_log = |file: &str| {
        format!(
            "{}\n[[plugins]]\nname = \"audit\"\nlibrary = \"{library}\"\n[plugins.config]\npath = \"{}\"\n\n\
             [[routes]]\nsink = \"audit\"\nevents = [\"alert.*\"]\n",
            support::BASE,
            logs.path().join(file).display()
        )
    };
    let router = start(&with_log("a.log")).await;
    let (_, body) = preview(&router, &with_log("b.log")).await;
    let preview_impact = body["impact"].clone();
    assert_eq!(
        preview_impact["plugins"],
        json!({"started": [], "stopped": [], "restarted": ["audit"]}),
        "{body}"
    );
    assert_eq!(router.config_version().await, 1);

    router.write_config(&with_log("b.log"));
    let (status, applied) = router.reload().await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["applied"], true);
    assert_eq!(
        applied["impact"], preview_impact,
        "an applied reload reports it too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_candidate_names_its_problems_and_the_file_on_disk_is_the_default() {
    let router = start(support::BASE).await;
    let (status, body) = preview(&router, "[server]\nsend_queue = \"many\"\n").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config");
    assert!(
        body["error"]["errors"].to_string().contains("send_queue"),
        "{body}"
    );

    let (status, body) = router
        .post("/api/admin/reload?dry_run=true", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], false);
    assert_eq!(
        body["impact"]["types_added"],
        json!([]),
        "the file in force: no change"
    );
}

/// Asking for a preview never applies: `dry_run` spelled as other clients
/// write it (`True` from Python's `params={"dry_run": True}`, a bare flag)
/// is a preview, and a value that is neither true nor false is refused,
/// not taken for "apply".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_in_any_spelling_applies_nothing() {
    let router = start(support::BASE).await;
    for query in ["dry_run=True", "dry_run=TRUE", "dry_run", "dry_run="] {
        let (status, body) = router
            .post(&format!("/api/admin/reload?{query}"), &json!({}))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["applied"], false, "{query}: {body}");
        assert_eq!(router.config_version().await, 1, "{query} applied a reload");
    }
    let (status, body) = router
        .post("/api/admin/reload?dry_run=maybe", &json!({}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert_eq!(
        router.config_version().await,
        1,
        "dry_run=maybe applied a reload"
    );
    // An explicit no is a reload.
    let (status, body) = router
        .post("/api/admin/reload?dry_run=false", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], true, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_against_a_running_router_prints_the_impact() {
    let config = two_endpoints("mode = \"none\"");
    let router = start(&config).await;
    let _alerts = clients(&router, "/ws/alerts", 2).await;
    let dir = tempfile::tempdir().unwrap();
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(&candidate, support::config("", "mode = \"none\"")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg("--config")
        .arg(&candidate)
        .arg("--against")
        .arg(router.url(""))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("endpoints removed: /ws/alerts"), "{stdout}");
    assert!(
        stdout.contains("connections closed: 2 (1001 endpoint removed: 2"),
        "{stdout}"
    );
    assert_eq!(router.config_version().await, 1);
}
