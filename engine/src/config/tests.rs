//! Reading `config.toml`: every key, every problem reported with its key
//! and position, environment overrides and defaults.

use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::json;
use switchyard_plugin_api::FieldType;
use tempfile::TempDir;

use super::*;

/// Writes `text` as `config.toml` in a fresh folder and loads it.
fn load_text_env(text: &str, env: &[(&str, &str)]) -> (TempDir, Result<Loaded, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let loaded = load_with_env(&path, env);
    (dir, loaded)
}

fn ok(text: &str) -> Loaded {
    let (_dir, loaded) = load_text_env(text, &[]);
    match loaded {
        Ok(loaded) => loaded,
        Err(e) => panic!("{e}: {:#?}", e.problems()),
    }
}

fn problems_env(text: &str, env: &[(&str, &str)]) -> Vec<Problem> {
    match load_text_env(text, env).1 {
        Ok(_) => panic!("expected problems"),
        Err(ConfigError::Invalid(problems)) => problems,
        Err(e) => panic!("unexpected {e}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    problems_env(text, &[])
}

/// The problem on `key`, failing with the full list when there is none.
fn on<'p>(problems: &'p [Problem], key: &str) -> &'p Problem {
    problems
        .iter()
        .find(|p| p.key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no problem on {key}: {problems:#?}"))
}

/// A file that sets nothing; an empty one is refused.
const NOTHING_SET: &str = "# every key takes its default\n";

#[test]
fn an_empty_file_is_refused() {
    for text in ["", " \n\n"] {
        let (_dir, loaded) = load_text_env(text, &[]);
        let e = loaded.unwrap_err();
        assert!(matches!(e, ConfigError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("is empty"), "{e}");
    }
}

#[test]
fn a_file_of_comments_takes_every_default() {
    let loaded = ok(NOTHING_SET);
    let c = &loaded.config;
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(loaded.overridden_keys.is_empty());
    let s = &c.server;
    assert_eq!(s.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(s.tls, None);
    assert!(s.trusted_proxies.is_empty());
    assert_eq!(
        (s.max_message_bytes, s.max_publish_bytes, s.max_event_bytes),
        (65536, 1_048_576, 65536)
    );
    assert_eq!(s.max_json_depth, 32);
    assert_eq!((s.send_queue, s.send_queue_bytes), (1024, 8_388_608));
    assert_eq!((s.max_patterns, s.max_pattern_bytes), (128, 128));
    assert_eq!((s.heartbeat_interval_s, s.handshake_timeout_s), (30, 10));
    assert_eq!(s.max_header_bytes, 32_768);
    assert_eq!(
        (s.max_pending_handshakes, s.max_connections),
        (1024, 100_000)
    );
    assert_eq!(s.shutdown_timeout_s, 10);
    assert_eq!(s.client_rate_limit.messages_per_s, 50.0);
    assert_eq!(s.client_rate_limit.burst, 100);
    assert_eq!(s.publish_rate_limit.requests_per_s, 1000.0);
    assert_eq!(s.publish_rate_limit.burst, 2000);
    assert_eq!(s.idempotency_window_s, 300);
    let a = &c.auth;
    assert_eq!(a.mode, AuthMode::Optional);
    assert_eq!(a.max_connections_per_user, 5);
    assert_eq!(a.on_user_limit, OnUserLimit::Refuse);
    assert_eq!(a.max_anonymous_per_ip, 100);
    assert!(a.allowed_origins.is_empty());
    assert_eq!(a.api_keys_env.as_deref(), Some("SWITCHYARD_API_KEYS"));
    assert_eq!(
        (&a.api_keys_file, &a.admin_keys_env, &a.admin_keys_file),
        (&None, &None, &None)
    );
    assert_eq!(a.jwt.algorithm, JwtAlgorithm::Hs256);
    assert_eq!(a.jwt.secret_env.as_deref(), Some("SWITCHYARD_JWT_SECRET"));
    assert_eq!((&a.jwt.secret_file, &a.jwt.public_key_file), (&None, &None));
    assert_eq!((&a.jwt.issuer, &a.jwt.audience), (&None, &None));
    assert_eq!(a.jwt.leeway_s, 5);
    assert!(a.jwt.keys.is_empty());
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.cluster.engine, ClusterEngine::Memory);
    assert_eq!(c.cluster.redis_url, None);
    assert!(c.source.is_absolute());
    assert_eq!(c.plugin_dir, c.folder().join("target/release"));
    assert!(c.channels.is_empty() && c.endpoints.is_empty() && c.plugins.is_empty());
    assert!(c.event_types.is_empty() && c.routes.is_empty());
}

#[test]
fn channel_defaults_match_an_implicit_channel() {
    let loaded = ok("[[channels]]\nname = \"alerts\"\n");
    assert_eq!(
        loaded.config.channels[0],
        ChannelConfig::with_defaults("alerts")
    );
    let d = ChannelConfig::with_defaults("x");
    assert_eq!(
        (d.history, d.history_ttl_s, d.history_max_bytes),
        (1000, 300, 16_777_216)
    );
    assert_eq!(d.slow_consumer, SlowConsumer::DropOldest);
    assert!(!d.require_auth);
}

#[test]
fn every_enum_lists_its_allowed_values() {
    let ps = problems(
        r#"
[auth]
mode = "sometimes"
on_user_limit = "evict_newest"
[auth.jwt]
algorithm = "HS512"
[log]
format = "xml"
[cluster]
engine = "etcd"
[[channels]]
name = "a"
[[channels]]
name = "b"
[[channels]]
name = "c"
slow_consumer = "fast"
"#,
    );
    assert_eq!(
        on(&ps, "channels[2].slow_consumer").to_string(),
        "line 17, column 1: channels[2].slow_consumer = \"fast\": must be one of drop_oldest, disconnect"
    );
    assert!(on(&ps, "auth.mode")
        .problem
        .contains("none, optional, required"));
    let limit = &on(&ps, "auth.on_user_limit").problem;
    assert!(limit.contains("refuse, evict_oldest"), "{limit}");
    assert!(limit.contains("did you mean evict_oldest?"), "{limit}");
    assert!(on(&ps, "auth.jwt.algorithm")
        .problem
        .contains("HS256, RS256, ES256"));
    assert!(on(&ps, "log.format").problem.contains("text, json"));
    assert!(on(&ps, "cluster.engine").problem.contains("memory, redis"));
    assert_eq!(ps.len(), 6, "{ps:#?}");
    // Positions point at the key in the file.
    let p = on(&ps, "channels[2].slow_consumer");
    assert_eq!((p.line, p.column), (Some(17), Some(1)));
}

#[test]
fn several_problems_are_reported_together() {
    let ps = problems(
        r#"
[server]
listen = "localhost:8080"
send_queue = 0
max_connections = "many"
heartbeat_interval_s = -1
max_event_bytes = 1.5
client_rate_limit = { messages_per_s = 0, burst = 0 }
trusted_proxies = ["10.0.0.0/8", "192.168.1.1", "not-an-ip"]
[[endpoints]]
path = "ws/events"
channels = []
"#,
    );
    let keys: Vec<&str> = ps.iter().filter_map(|p| p.key.as_deref()).collect();
    for key in [
        "server.listen",
        "server.send_queue",
        "server.max_connections",
        "server.heartbeat_interval_s",
        "server.max_event_bytes",
        "server.client_rate_limit.messages_per_s",
        "server.client_rate_limit.burst",
        "server.trusted_proxies[2]",
        "endpoints[0].path",
        "endpoints[0].channels",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert_eq!(ps.len(), 10, "{ps:#?}");
    let p = on(&ps, "server.max_connections");
    assert_eq!(p.value, Some(json!("many")));
    assert_eq!(p.problem, "must be a whole number, not a string");
    assert_eq!(on(&ps, "server.send_queue").problem, "must be at least 1");
    assert_eq!(
        on(&ps, "server.heartbeat_interval_s").problem,
        "must not be negative"
    );
    assert!(on(&ps, "endpoints[0].path")
        .problem
        .contains("must start with /"));
}

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    let ps = problems(
        r#"
plugin_dri = "x"
[server]
lisen = "127.0.0.1:1"
[[channels]]
name = "a"
histroy = 5
[[plugins]]
name = "p"
library = "x"
[plugins.config]
AnythingGoes = 1
"#,
    );
    assert_eq!(ps.len(), 3, "{ps:#?}");
    let p = on(&ps, "server.lisen");
    assert_eq!(p.problem, "unknown key in [server]; did you mean listen?");
    assert_eq!(p.value, Some(json!("127.0.0.1:1")));
    assert_eq!((p.line, p.column), (Some(4), Some(1)));
    assert!(on(&ps, "plugin_dri")
        .problem
        .contains("did you mean plugin_dir?"));
    assert!(on(&ps, "channels[0].histroy")
        .problem
        .contains("did you mean history?"));
    let ps = problems("channels = [\"alerts\"]\nroutes = [1]\n");
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert!(on(&ps, "channels[0]").problem.contains("must be a table"));
    assert!(on(&ps, "routes[0]").problem.contains("must be a table"));
    let ps = problems("[sever]\nlisten = \"127.0.0.1:1\"\n");
    assert!(on(&ps, "sever").problem.contains("did you mean server?"));
}

#[test]
fn a_syntax_error_has_line_and_column() {
    let ps = problems("[server]\nlisten = \"127.0.0.1:8080\"\nsend_queue = = 3\n");
    assert_eq!(ps.len(), 1);
    let p = &ps[0];
    assert_eq!(p.key, None);
    assert_eq!(p.line, Some(3));
    assert!(p.column.is_some_and(|c| c >= 12), "{p:?}");
    assert!(p.to_string().starts_with("line 3, column"), "{p}");
    let ps = problems("[server]\nlisten = 1\nlisten = 2\n");
    assert_eq!(
        (ps[0].key.as_deref(), ps[0].line),
        (None, Some(3)),
        "{ps:?}"
    );
}

#[test]
fn the_environment_overrides_keys() {
    let text = "[server]\nlisten = \"127.0.0.1:8080\"\n";
    let env = [
        ("SWITCHYARD__SERVER__LISTEN", "0.0.0.0:9000"),
        ("SWITCHYARD__SERVER__MAX_CONNECTIONS", "77"),
        (
            "SWITCHYARD__AUTH__ALLOWED_ORIGINS",
            "https://a.example, https://b.example",
        ),
        (
            "SWITCHYARD__SERVER__CLIENT_RATE_LIMIT__MESSAGES_PER_S",
            "2.5",
        ),
        ("SWITCHYARD__CHANNELS", "ignored?"),
        ("SWITCHYARD_CONFIG", "/elsewhere.toml"),
        ("SWITCHYARD_API_KEYS", "secret"),
        ("HOME", "/root"),
    ];
    // `channels` from the environment is a string, not a list of tables.
    let ps = problems_env(text, &env);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert!(ps[0]
        .problem
        .contains("set by the environment variable SWITCHYARD__CHANNELS"));
    let (_dir, loaded) = load_text_env(text, &env[..4]);
    let loaded = loaded.unwrap();
    let c = &loaded.config;
    assert_eq!(
        c.server.listen,
        "0.0.0.0:9000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.server.max_connections, 77);
    assert_eq!(c.server.client_rate_limit.messages_per_s, 2.5);
    assert_eq!(
        c.auth.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(
        loaded.overridden_keys,
        [
            "auth.allowed_origins",
            "server.client_rate_limit.messages_per_s",
            "server.listen",
            "server.max_connections",
        ]
    );
    // Listening beyond loopback with auth on and no TLS is worth a warning.
    assert!(
        loaded.warnings.iter().any(|w| w.contains("not loopback")),
        "{loaded:?}"
    );
}

#[test]
fn single_underscore_variables_are_not_keys() {
    let (_dir, loaded) = load_text_env(
        NOTHING_SET,
        &[
            ("SWITCHYARD_CONFIG", "x"),
            ("SWITCHYARD_SERVER_LISTEN", "0.0.0.0:1"),
        ],
    );
    let loaded = loaded.unwrap();
    assert!(loaded.overridden_keys.is_empty());
    assert_eq!(loaded.config.server.listen.port(), 8080);
}

#[test]
fn a_bad_override_names_its_variable() {
    let ps = problems_env(NOTHING_SET, &[("SWITCHYARD__SERVER__SEND_QUEUE", "lots")]);
    let p = on(&ps, "server.send_queue");
    assert_eq!(
        p.problem,
        "must be a whole number (set by the environment variable SWITCHYARD__SERVER__SEND_QUEUE)"
    );
    assert_eq!(p.line, None);
    let ps = problems_env(NOTHING_SET, &[("SWITCHYARD__SERVER__LISTN", "x")]);
    assert!(on(&ps, "server.listn")
        .problem
        .contains("did you mean listen?"));
}

#[test]
fn plugin_config_reaches_the_plugin_verbatim() {
    let text = r#"
[[plugins]]
name = "detection"
library = "switchyard_detection"
[plugins.config]
listen = "127.0.0.1:9101"
CamelCase = 1
UPPER_KEY = "Kept As Is"
ratio = 2.0
count = 2
when = 2026-11-23T06:00:00Z
"dotted.Key" = { "X[0]" = [] }
simulate = { cameras = 4, rate_per_s = 2, Nested = { deepKey = [1, 2.5, "x", { A = true }] } }

[[plugins]]
name = "bare"
library = "lib/custom.so"
enabled = false
stop_timeout_s = 9
"#;
    // An override elsewhere must not disturb the plugin's table.
    let (_dir, loaded) = load_text_env(text, &[("SWITCHYARD__LOG__LEVEL", "debug")]);
    let loaded = loaded.unwrap();
    assert_eq!(loaded.config.log.level, "debug");
    let plugins = &loaded.config.plugins;
    let config = &plugins[0].config;
    assert_eq!(
        *config,
        json!({
            "listen": "127.0.0.1:9101",
            "CamelCase": 1,
            "UPPER_KEY": "Kept As Is",
            "ratio": 2.0,
            "count": 2,
            "when": "2026-11-23T06:00:00Z",
            "dotted.Key": {"X[0]": []},
            "simulate": {"cameras": 4, "rate_per_s": 2,
                         "Nested": {"deepKey": [1, 2.5, "x", {"A": true}]}}
        })
    );
    assert!(config["count"].is_u64() && config["ratio"].is_f64());
    assert!(config["simulate"]["Nested"]["deepKey"][0].is_u64());
    assert!(plugins[0].enabled);
    assert_eq!(plugins[0].stop_timeout_s, 5);
    assert_eq!(plugins[1].config, json!({}));
    assert!(!plugins[1].enabled);
    assert_eq!(plugins[1].stop_timeout_s, 9);
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("etc");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("switchyard.toml");
    std::fs::write(
        &path,
        r#"
plugin_dir = "../plugins"
[server]
tls = { cert_file = "tls/cert.pem", key_file = "/abs/key.pem" }
[auth]
api_keys_file = "keys/api"
admin_keys_file = ""
[auth.jwt]
secret_file = "jwt.secret"
keys = [
  { kid = "a", secret_env = "JWT_A" },
  { kid = "b", algorithm = "RS256", public_key_file = "keys/b.pem" },
]
[[plugins]]
name = "stem"
library = "switchyard_detection"
[[plugins]]
name = "path"
library = "../build/libthing.so"
[[plugins]]
name = "suffix"
library = "thing"
"#,
    )
    .unwrap();
    // A path relative to the working directory must still give absolute
    // results: the test makes it relative by going through the folder.
    let loaded = load_with_env(&path, Vec::new()).unwrap();
    let c = &loaded.config;
    assert_eq!(c.source, path);
    assert_eq!(c.folder(), sub);
    assert_eq!(c.plugin_dir, sub.join("../plugins"));
    let tls = c.server.tls.as_ref().unwrap();
    assert_eq!(tls.cert_file, sub.join("tls/cert.pem"));
    assert_eq!(tls.key_file, PathBuf::from("/abs/key.pem"));
    assert_eq!(c.auth.api_keys_file, Some(sub.join("keys/api")));
    assert_eq!(c.auth.admin_keys_file, None);
    assert_eq!(c.auth.jwt.secret_file, Some(sub.join("jwt.secret")));
    let keys = &c.auth.jwt.keys;
    assert_eq!(keys[0].source, KeySource::SecretEnv("JWT_A".into()));
    assert_eq!(keys[0].algorithm, JwtAlgorithm::Hs256);
    assert_eq!(
        keys[1].source,
        KeySource::PublicKeyFile(sub.join("keys/b.pem"))
    );
    let lib = |stem: &str| format!("{DLL_PREFIX}{stem}{DLL_SUFFIX}");
    assert_eq!(
        c.plugins[0].library,
        sub.join("../plugins").join(lib("switchyard_detection"))
    );
    assert_eq!(c.plugins[1].library, sub.join("../build/libthing.so"));
    assert_eq!(
        c.plugins[2].library,
        sub.join("../plugins").join(lib("thing"))
    );
    assert_eq!(c.plugin("path").map(|p| p.name.as_str()), Some("path"));
}

#[test]
fn a_relative_config_path_is_made_absolute() {
    let (_dir, loaded) = load_text_env(NOTHING_SET, &[]);
    let c = loaded.unwrap().config;
    assert!(c.source.is_absolute() && c.plugin_dir.is_absolute());
    let err = load_with_env(Path::new("no/such/config.toml"), Vec::new()).unwrap_err();
    match err {
        ConfigError::Read { path, .. } => assert!(path.is_absolute()),
        other => panic!("{other}"),
    }
}

#[test]
fn duplicate_and_reserved_names_are_refused() {
    let ps = problems(
        r#"
[[channels]]
name = "alerts"
[[channels]]
name = "alerts"
[[channels]]
name = "connection"
[[channels]]
name = "Bad.Name"
[[endpoints]]
path = "/ws/a"
channels = ["alerts", "alerts", "nowhere"]
[[endpoints]]
path = "/ws/a"
channels = ["alerts"]
[[endpoints]]
path = "/api/ws"
channels = ["alerts"]
[[event_types]]
name = "x.created"
[[event_types]]
name = "x.created"
[[event_types]]
name = "connection.lagged"
[[plugins]]
name = "p"
library = "a"
[[plugins]]
name = "p"
library = "b"
[[plugins]]
name = "config"
library = "c"
"#,
    );
    assert!(on(&ps, "channels[1].name")
        .problem
        .contains("channels[0] declares it already"));
    assert!(on(&ps, "channels[2].name").problem.contains("reserved"));
    assert!(on(&ps, "channels[3].name")
        .problem
        .contains("not a valid channel name"));
    assert!(on(&ps, "endpoints[0].channels[1]")
        .problem
        .contains("listed twice"));
    assert!(on(&ps, "endpoints[1].path")
        .problem
        .contains("endpoints[0]"));
    assert!(on(&ps, "endpoints[2].path").problem.contains("HTTP API"));
    assert!(on(&ps, "event_types[1].name")
        .problem
        .contains("event_types[0]"));
    assert!(on(&ps, "event_types[2].name").problem.contains("reserved"));
    assert!(on(&ps, "plugins[1].name").problem.contains("plugins[0]"));
    assert!(on(&ps, "plugins[2].name").problem.contains("reserved"));
    // An unknown channel in an endpoint is the registry's to judge.
    assert!(
        ps.iter().all(|p| p.value != Some(json!("nowhere"))),
        "{ps:#?}"
    );
    assert_eq!(ps.len(), 10, "{ps:#?}");
}

#[test]
fn alias_conflicts_are_refused() {
    let ps = problems(
        r#"
[[event_types]]
name = "job.started"
aliases = ["job_started", "job_started"]
[[event_types]]
name = "job.progress"
aliases = ["job_started", "job.started", "Job-Progress", "connection.x.y"]
"#,
    );
    assert!(on(&ps, "event_types[0].aliases[1]")
        .problem
        .contains("listed twice"));
    assert!(on(&ps, "event_types[1].aliases[0]")
        .problem
        .contains("alias of job.started"));
    assert!(on(&ps, "event_types[1].aliases[1]")
        .problem
        .contains("type name form"));
    assert!(on(&ps, "event_types[1].aliases[2]").problem.contains("a-z"));
    assert!(on(&ps, "event_types[1].aliases[3]")
        .problem
        .contains("connection"));
    assert_eq!(ps.len(), 5, "{ps:#?}");
}

#[test]
fn payload_declarations_are_checked() {
    let ps = problems(
        r#"
[[event_types]]
name = "alert.created"
[event_types.payload]
id = { type = "strng", required = true }
severity = { type = "string", enum = ["low", 3] }
count = { required = true }
extra = { type = "integer", requird = true }
"#,
    );
    assert!(on(&ps, "event_types[0].channel")
        .problem
        .contains("payload"));
    assert!(on(&ps, "event_types[0].payload.id.type")
        .problem
        .contains("did you mean string?"));
    assert!(on(&ps, "event_types[0].payload.count.type")
        .problem
        .contains("is required"));
    assert!(on(&ps, "event_types[0].payload.extra.requird")
        .problem
        .contains("did you mean required?"));
    assert!(on(&ps, "event_types[0].payload")
        .problem
        .contains("severity"));
    assert_eq!(ps.len(), 5, "{ps:#?}");

    let loaded = ok(r#"
[[event_types]]
name = "alert.created"
channel = "alerts"
description = "New alert"
aliases = ["alert_created"]
deprecated = "use alert.opened"
additional_fields = true
[event_types.payload]
id = { type = "string", required = true, description = "Alert id" }
severity = { type = "string", enum = ["low", "high"] }
[[event_types]]
name = "camera.online"
channel = "cameras"
"#);
    let t = &loaded.config.event_types[0];
    assert_eq!(t.channel.as_deref(), Some("alerts"));
    assert_eq!(t.aliases, ["alert_created"]);
    assert_eq!(t.deprecated.as_deref(), Some("use alert.opened"));
    assert!(t.additional_fields);
    let payload = t.payload.as_ref().unwrap();
    assert!(payload["id"].required);
    assert_eq!(payload["id"].description.as_deref(), Some("Alert id"));
    assert_eq!(payload["severity"].field_type, FieldType::String);
    assert_eq!(
        payload["severity"].allowed,
        Some(vec![json!("low"), json!("high")])
    );
    assert_eq!(loaded.config.event_types[1].payload, None);
}

#[test]
fn routes_need_a_known_sink_and_valid_patterns() {
    let ps = problems(
        r#"
[server]
max_pattern_bytes = 16
[[plugins]]
name = "audit-log"
library = "switchyard_audit_log"
[[routes]]
sink = "audit-lgo"
events = ["alert.*", "*.created", "alert*", "a_very_long_domain_name.*", ""]
[[routes]]
sink = "audit-log"
events = []
[[routes]]
sink = "audit-log"
"#,
    );
    assert!(on(&ps, "routes[0].sink")
        .problem
        .contains("did you mean audit-log?"));
    assert!(on(&ps, "routes[0].events[1]")
        .problem
        .contains("not a valid pattern"));
    assert!(on(&ps, "routes[0].events[2]")
        .problem
        .contains("not a valid pattern"));
    assert!(on(&ps, "routes[0].events[3]")
        .problem
        .contains("at most 16 bytes"));
    assert!(on(&ps, "routes[0].events[4]").problem.contains("empty"));
    assert!(on(&ps, "routes[1].events").problem.contains("at least one"));
    assert!(on(&ps, "routes[2].events").problem.contains("is required"));
    assert_eq!(ps.len(), 7, "{ps:#?}");

    let loaded = ok(r#"
[[plugins]]
name = "audit-log"
library = "switchyard_audit_log"
enabled = false
[[routes]]
sink = "audit-log"
events = ["alert.*", "job_progress", "*"]
"#);
    assert_eq!(
        loaded.config.routes[0].events,
        ["alert.*", "job_progress", "*"]
    );
    assert!(
        loaded.warnings[0].contains("disabled"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn auth_keys_and_cluster_are_checked() {
    let ps = problems(
        r#"
[server]
tls = { cert_file = "cert.pem", key_file = "" }
[auth]
allowed_origins = ["*", "https://ok.example:8443", "https://bad.example/", "nope"]
api_keys_env = "SWITCHYARD__KEYS"
[auth.jwt]
keys = [
  { kid = "a", secret_env = "A", public_key_file = "a.pem" },
  { kid = "b", algorithm = "ES256", secret_file = "b" },
  { kid = "c", secret_env = "C" },
  { kid = "c", secret_env = "C2" },
  { secret_env = "D" },
]
[cluster]
engine = "redis"
"#,
    );
    assert!(on(&ps, "server.tls.key_file").problem.contains("cert_file"));
    assert!(on(&ps, "auth.allowed_origins[2]")
        .problem
        .contains("no path"));
    assert!(on(&ps, "auth.allowed_origins[3]")
        .problem
        .contains("origin"));
    assert!(on(&ps, "auth.api_keys_env")
        .problem
        .contains("single underscore"));
    assert!(on(&ps, "auth.jwt.keys[0]").problem.contains("exactly one"));
    assert!(on(&ps, "auth.jwt.keys[1]")
        .problem
        .contains("public_key_file"));
    assert!(on(&ps, "auth.jwt.keys[3].kid")
        .problem
        .contains("auth.jwt.keys[2]"));
    assert!(on(&ps, "auth.jwt.keys[4].kid").problem.contains("required"));
    assert!(on(&ps, "cluster.redis_url").problem.contains("required"));
    assert_eq!(ps.len(), 9, "{ps:#?}");

    let ps = problems("[auth.jwt]\nalgorithm = \"RS256\"\n[log]\nlevel = \"inf\"\n");
    assert!(on(&ps, "auth.jwt.public_key_file")
        .problem
        .contains("public key"));
    assert!(on(&ps, "log.level").problem.contains("did you mean info?"));
    // With auth off nothing needs a key.
    let loaded = ok(r#"
[auth]
mode = "none"
[auth.jwt]
algorithm = "RS256"
[log]
level = "warn,switchyard=debug"
[cluster]
engine = "redis"
redis_url = "redis://127.0.0.1:6379"
[[endpoints]]
path = "/ws/private"
channels = ["alerts"]
require_auth = true
"#);
    assert_eq!(
        loaded.config.cluster.redis_url.as_deref(),
        Some("redis://127.0.0.1:6379")
    );
    assert!(
        loaded.warnings[0].contains("require_auth has no effect"),
        "{:?}",
        loaded.warnings
    );
    assert!(loaded.config.endpoint("/ws/private").is_some());
}

#[test]
fn the_shipped_config_is_valid() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml"));
    let loaded = match load_with_env(path, Vec::new()) {
        Ok(loaded) => loaded,
        Err(e) => panic!("{e}: {:#?}", e.problems()),
    };
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = &loaded.config;
    let channels: Vec<&str> = c.channels.iter().map(|ch| ch.name.as_str()).collect();
    assert_eq!(
        channels,
        [
            "alerts",
            "cameras",
            "jobs",
            "system",
            "events",
            "detections",
            "scene_changes",
            "workers",
            "infrastructure",
            "summaries"
        ]
    );
    assert!(c.channels.iter().all(|ch| !ch.description.is_empty()));
    let events = c.endpoint("/ws/events").unwrap();
    assert_eq!(
        events.channels,
        [
            "alerts",
            "cameras",
            "jobs",
            "events",
            "detections",
            "scene_changes",
            "workers",
            "infrastructure",
            "summaries"
        ]
    );
    let system = c.endpoint("/ws/system").unwrap();
    assert_eq!(system.channels, ["system", "workers", "infrastructure"]);
    assert_eq!(c.auth.mode, AuthMode::Optional);
    let mut defaults = ok(NOTHING_SET).config.server;
    defaults.max_connections = 15000;
    assert_eq!(
        c.server, defaults,
        "only max_connections differs from the defaults"
    );
    let detection = c.plugin("detection").unwrap();
    assert!(detection.enabled);
    assert_eq!(
        detection.config,
        json!({"listen": "127.0.0.1:9101", "simulate": {"cameras": 4, "rate_per_s": 2}})
    );
    let sinks: Vec<&str> = c.routes.iter().map(|r| r.sink.as_str()).collect();
    assert_eq!(sinks, ["summary", "audit-log"]);
    let plugins: Vec<&str> = c.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        plugins,
        ["detection", "worker", "prometheus", "summary", "audit-log"]
    );
    // Every catalogue type that no plugin declares is here, with a
    // description, a channel, and a payload.
    let declared: Vec<&str> = c.event_types.iter().map(|t| t.name.as_str()).collect();
    for name in [
        "detection.new",
        "batch.opened",
        "scene_change.detected",
        "worker.started",
        "infrastructure.alert",
        "summary.hourly",
    ] {
        assert!(
            !declared.contains(&name),
            "{name} is the plugin's to declare"
        );
    }
    assert_eq!(declared.len(), 27, "{declared:?}");
    for t in &c.event_types {
        assert!(!t.description.is_empty(), "{}", t.name);
        assert!(
            t.payload.as_ref().is_some_and(|p| !p.is_empty()),
            "{}",
            t.name
        );
        let channel = t.channel.as_deref().unwrap();
        assert!(c.channel(channel).is_some(), "{}", t.name);
    }
    let job = c
        .event_types
        .iter()
        .find(|t| t.name == "job.progress")
        .unwrap();
    assert_eq!(job.aliases, ["job_progress"]);
    let queue = c
        .event_types
        .iter()
        .find(|t| t.name == "queue.metrics")
        .unwrap();
    assert!(queue
        .payload
        .as_ref()
        .unwrap()
        .values()
        .all(|f| !f.required));
}

#[test]
fn cluster_keys_have_defaults_and_bounds() {
    let c = ok("[log]\nlevel = \"info\"\n").config.cluster;
    assert_eq!(c.key_prefix, "switchyard");
    assert_eq!(c.node_id, None);
    assert_eq!(c.heartbeat_interval, std::time::Duration::from_millis(1000));
    assert_eq!(c.unhealthy_after, std::time::Duration::from_millis(3000));
    let ps = problems(
        r#"
[cluster]
engine = "redis"
redis_url = "redis://127.0.0.1:6379"
key_prefix = "my app"
node_id = "node/1"
heartbeat_interval_ms = 1000
unhealthy_after_ms = 1500
"#,
    );
    assert!(on(&ps, "cluster.key_prefix").problem.contains("letters"));
    assert!(on(&ps, "cluster.node_id").problem.contains("letters"));
    assert!(on(&ps, "cluster.unhealthy_after_ms")
        .problem
        .contains("twice cluster.heartbeat_interval_ms"));
    assert_eq!(ps.len(), 3, "{ps:#?}");
    let c = ok(r#"
[cluster]
engine = "redis"
redis_url = "redis://127.0.0.1:6379"
redis_password_env = "REDIS_PASSWORD"
key_prefix = "team-a:events"
node_id = "eu-1"
heartbeat_interval_ms = 250
unhealthy_after_ms = 750
"#)
    .config
    .cluster;
    assert_eq!(c.redis_password_env.as_deref(), Some("REDIS_PASSWORD"));
    assert_eq!(c.node_id.as_deref(), Some("eu-1"));
    assert_eq!(c.unhealthy_after, std::time::Duration::from_millis(750));
}
