//! The engine decides; it carries no bytes. This fails when an async
//! runtime, HTTP or WebSocket crate enters its normal dependency tree
//! (development dependencies do not count: tests may use tokio).

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

const FORBIDDEN: [&str; 6] = [
    "tokio",
    "hyper",
    "warp",
    "tungstenite",
    "tokio-tungstenite",
    "axum",
];

/// Names of every package in the engine's normal dependency tree.
fn normal_dependency_tree() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let engine = names
        .iter()
        .find(|(_, name)| **name == "switchyard-engine")
        .map(|(id, _)| *id)
        .expect("the engine is a workspace member");
    let mut seen = BTreeSet::new();
    let mut todo = vec![engine];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                todo.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    seen.iter().map(|id| names[id].to_owned()).collect()
}

#[test]
fn the_engine_depends_on_no_runtime_or_transport() {
    let tree = normal_dependency_tree();
    assert!(
        tree.contains("switchyard-plugin-api"),
        "the walk found the tree: {tree:?}"
    );
    let found: Vec<&str> = FORBIDDEN
        .into_iter()
        .filter(|name| tree.contains(*name))
        .collect();
    assert!(
        found.is_empty(),
        "switchyard-engine depends on {found:?}: the engine must carry no runtime or transport \
         (ARCHITECTURE.md)"
    );
}
