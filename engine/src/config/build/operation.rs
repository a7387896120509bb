//! `[log]`, `[reload]` and `[cluster]`: how the router runs.

use serde_json::Value;

use crate::config::model::*;
use crate::config::read::{suggestion, Reader, Tab};

/// The levels `tracing` knows, for checking `log.level`.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

pub(super) fn log(r: &mut Reader<'_>, top: &mut Tab<'_>) -> LogConfig {
    let mut t = r.table(top, "log");
    let level = r.string_or(&mut t, "level", "info");
    if !is_level_filter(&level) {
        let hint = suggestion(&level, LEVELS);
        r.problem(
            &t.key("level"),
            Some(&Value::from(level.as_str())),
            format!(
                "must be a level ({}) or directives such as \"info,switchyard=debug\"{hint}",
                LEVELS.join(", ")
            ),
        );
    }
    let format = r.choice(
        &mut t,
        "format",
        LogFormat::Text,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    );
    r.finish(t);
    LogConfig { level, format }
}

/// Longest `reload.debounce_ms`: past a minute a change would look lost.
const MAX_DEBOUNCE_MS: u64 = 60_000;

pub(super) fn reload(r: &mut Reader<'_>, top: &mut Tab<'_>) -> ReloadConfig {
    let mut t = r.table(top, "reload");
    let watch = r.boolean(&mut t, "watch", true);
    let debounce_ms = r.uint(&mut t, "debounce_ms", 300, 0, MAX_DEBOUNCE_MS);
    r.finish(t);
    ReloadConfig {
        watch,
        debounce: std::time::Duration::from_millis(debounce_ms),
    }
}

/// Whether `text` is a level or comma-separated `target=level` directives.
/// A bare word is taken as a level, not as a target, so a misspelt level is
/// caught instead of silently enabling a target that does not exist.
fn is_level_filter(text: &str) -> bool {
    let is_level = |l: &str| {
        LEVELS
            .iter()
            .any(|known| known.eq_ignore_ascii_case(l.trim()))
    };
    !text.trim().is_empty()
        && text.split(',').all(|part| match part.rsplit_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(part),
        })
}

pub(super) fn cluster(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    warnings: &mut Vec<String>,
) -> ClusterConfig {
    let mut t = r.table(top, "cluster");
    let engine = r.choice(
        &mut t,
        "engine",
        ClusterEngine::Memory,
        &[
            ("memory", ClusterEngine::Memory),
            ("redis", ClusterEngine::Redis),
        ],
    );
    let redis_url = r.optional(&mut t, "redis_url", "");
    let redis_password_env = r.optional(&mut t, "redis_password_env", "");
    let key_prefix = r.string_or(&mut t, "key_prefix", "switchyard");
    if !is_key_prefix(&key_prefix) {
        r.problem(
            &t.key("key_prefix"),
            Some(&Value::from(key_prefix.as_str())),
            "must be 1-64 letters, digits, '_', '-', '.' or ':'",
        );
    }
    let node_id = r.optional(&mut t, "node_id", "");
    if node_id.as_deref().is_some_and(|n| !is_node_id(n)) {
        r.problem(
            &t.key("node_id"),
            node_id.as_deref().map(Value::from).as_ref(),
            "must be 1-64 letters, digits, '_', '-' or '.'",
        );
    }
    let heartbeat_ms = r.uint(&mut t, "heartbeat_interval_ms", 1000, 50, 60_000);
    let unhealthy_ms = r.uint(&mut t, "unhealthy_after_ms", 3000, 100, 600_000);
    if unhealthy_ms < 2 * heartbeat_ms {
        r.problem(
            &t.key("unhealthy_after_ms"),
            Some(&Value::from(unhealthy_ms)),
            format!(
                "must be at least twice cluster.heartbeat_interval_ms ({heartbeat_ms}), \
                 or one late heartbeat makes a node unhealthy"
            ),
        );
    }
    let key = t.key("redis_url");
    r.finish(t);
    match (&engine, &redis_url) {
        (ClusterEngine::Redis, None) => {
            r.problem(&key, None, "is required when cluster.engine = \"redis\"");
        }
        (_, Some(url))
            if !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme)) =>
        {
            r.problem(
                &key,
                Some(&Value::from(url.as_str())),
                "must be a Redis URL such as redis://127.0.0.1:6379 \
                 (redis://, rediss://, redis+unix:// or unix://)",
            );
        }
        (ClusterEngine::Memory, Some(_)) => {
            warnings.push(format!(
                "{key} is ignored while cluster.engine = \"memory\""
            ));
        }
        _ => {}
    }
    ClusterConfig {
        engine,
        redis_url,
        redis_password_env,
        key_prefix,
        node_id,
        heartbeat_interval: std::time::Duration::from_millis(heartbeat_ms),
        unhealthy_after: std::time::Duration::from_millis(unhealthy_ms),
    }
}

/// Whether `text` can start every Redis key: short, and nothing a shell or
/// a Redis pattern would read specially.
fn is_key_prefix(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
}

/// Whether `text` can name a node: it travels in pub/sub messages and
/// metric labels.
fn is_node_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}
