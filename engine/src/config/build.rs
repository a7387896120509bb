//! Builds a [`Config`] from the merged key tree, checking every section.
//!
//! Static checks only: whatever needs the plugins' own declarations (type
//! conflicts, whether an endpoint's channel exists) is the registry's, once
//! the plugins are loaded.

use std::collections::BTreeMap;
use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{json, Map, Value};
use switchyard_plugin_api::{EventTypeDecl, Field, FieldType};

use super::model::*;
use super::read::{suggestion, Reader, Tab};
use crate::names::{is_alias, is_channel_name, is_type_name, Pattern};
use crate::registry::schema::check_declaration;

/// The channel, and type domain, that the router keeps for its control
/// messages.
const CONTROL: &str = "connection";

/// serde_json refuses nesting deeper than this whatever the router allows,
/// so a larger `max_json_depth` would fail with a different error.
const SERDE_JSON_MAX_DEPTH: u64 = 127;

/// Paths the HTTP API answers; an endpoint there would never be reached.
const RESERVED_PATHS: [&str; 3] = ["/health", "/metrics", "/api"];

/// The `producer` of types declared in `[[event_types]]`, so no plugin
/// instance may take that name.
const CONFIG_PRODUCER: &str = "config";

/// Reads the whole tree; problems go to the reader, warnings to `warnings`.
pub(super) fn config(
    r: &mut Reader<'_>,
    root: &Map<String, Value>,
    source: &Path,
    warnings: &mut Vec<String>,
) -> Config {
    let folder = source.parent().unwrap_or(Path::new("/"));
    let mut top = Tab::root(root);
    let plugin_dir = r.string_or(&mut top, "plugin_dir", "target/release");
    if plugin_dir.is_empty() {
        r.problem(
            "plugin_dir",
            Some(&Value::from("")),
            "must not be empty; use \".\" for the config file's folder",
        );
    }
    let plugin_dir = folder.join(plugin_dir);
    let server = server(r, &mut top, folder, warnings);
    let auth = auth(r, &mut top, folder, &server, warnings);
    let log = log(r, &mut top);
    let reload = reload(r, &mut top);
    let cluster = cluster(r, &mut top, warnings);
    let channels = channels(r, &mut top, &auth, warnings);
    let endpoints = endpoints(r, &mut top, &auth, warnings);
    let event_types = event_types(r, &mut top);
    let plugins = plugins(r, &mut top, folder, &plugin_dir);
    let routes = routes(r, &mut top, &plugins, server.max_pattern_bytes, warnings);
    r.finish(top);
    Config {
        source: source.to_path_buf(),
        plugin_dir,
        server,
        auth,
        log,
        reload,
        cluster,
        channels,
        endpoints,
        event_types,
        plugins,
        routes,
    }
}

fn server(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    folder: &Path,
    warnings: &mut Vec<String>,
) -> ServerConfig {
    let mut t = r.table(top, "server");
    let listen = r.parsed(
        &mut t,
        "listen",
        SocketAddr::from(([127, 0, 0, 1], 8080)),
        "an IP address and port such as 127.0.0.1:8080 or [::]:8080 (not a host name)",
    );
    let tls = tls(r, &mut t, folder);
    let trusted_proxies = r
        .strings(&mut t, "trusted_proxies")
        .into_iter()
        .filter_map(|(key, text)| {
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            if net.is_err() {
                r.problem(
                    &key,
                    Some(&Value::from(text)),
                    "must be a CIDR such as 10.0.0.0/8 or an IP address",
                );
            }
            net.ok()
        })
        .collect();
    let max_message_bytes = r.size(&mut t, "max_message_bytes", 65_536, 1);
    let max_publish_bytes = r.size(&mut t, "max_publish_bytes", 1_048_576, 1);
    let max_event_bytes = r.size(&mut t, "max_event_bytes", 65_536, 1);
    let max_json_depth = r.uint(&mut t, "max_json_depth", 32, 1, SERDE_JSON_MAX_DEPTH);
    let send_queue = r.size(&mut t, "send_queue", 1024, 1);
    let send_queue_bytes = r.size(&mut t, "send_queue_bytes", 8_388_608, 1);
    let socket_send_buffer = r.size(&mut t, "socket_send_buffer", 65_536, 0);
    let max_patterns = r.size(&mut t, "max_patterns", 128, 1);
    let max_pattern_bytes = r.size(&mut t, "max_pattern_bytes", 128, 1);
    let heartbeat_interval_s = r.uint(&mut t, "heartbeat_interval_s", 30, 1, u64::MAX);
    let handshake_timeout_s = r.uint(&mut t, "handshake_timeout_s", 10, 1, u64::MAX);
    let max_header_bytes = r.size(&mut t, "max_header_bytes", 32_768, 1024);
    let max_pending_handshakes = r.size(&mut t, "max_pending_handshakes", 1024, 1);
    let max_connections = r.size(&mut t, "max_connections", 100_000, 1);
    let shutdown_timeout_s = r.uint(&mut t, "shutdown_timeout_s", 10, 0, u64::MAX);
    let mut c = r.table(&mut t, "client_rate_limit");
    let client_rate_limit = ClientRateLimit {
        messages_per_s: r.rate(&mut c, "messages_per_s", 50.0),
        burst: burst(r, &mut c, 100),
    };
    r.finish(c);
    let mut p = r.table(&mut t, "publish_rate_limit");
    let publish_rate_limit = PublishRateLimit {
        requests_per_s: r.rate(&mut p, "requests_per_s", 1000.0),
        burst: burst(r, &mut p, 2000),
    };
    r.finish(p);
    let idempotency_window_s = r.uint(&mut t, "idempotency_window_s", 300, 0, u64::MAX);
    r.finish(t);
    if send_queue_bytes < max_event_bytes {
        warnings.push(format!(
            "server.send_queue_bytes ({send_queue_bytes}) is below server.max_event_bytes \
             ({max_event_bytes}): an event larger than the queue can never be delivered"
        ));
    }
    ServerConfig {
        listen,
        tls,
        trusted_proxies,
        max_message_bytes,
        max_publish_bytes,
        max_event_bytes,
        max_json_depth: usize::try_from(max_json_depth).unwrap_or(32),
        send_queue,
        send_queue_bytes,
        socket_send_buffer,
        max_patterns,
        max_pattern_bytes,
        heartbeat_interval_s,
        handshake_timeout_s,
        max_header_bytes,
        max_pending_handshakes,
        max_connections,
        shutdown_timeout_s,
        client_rate_limit,
        publish_rate_limit,
        idempotency_window_s,
    }
}

/// A token bucket's burst: at least 1, or nothing would ever pass.
fn burst(r: &mut Reader<'_>, t: &mut Tab<'_>, default: u32) -> u32 {
    let n = r.uint(t, "burst", u64::from(default), 1, u64::from(u32::MAX));
    u32::try_from(n).unwrap_or(default)
}

fn tls(r: &mut Reader<'_>, server: &mut Tab<'_>, folder: &Path) -> Option<TlsConfig> {
    let mut t = r.table(server, "tls");
    let cert = r.optional(&mut t, "cert_file", "");
    let key = r.optional(&mut t, "key_file", "");
    let (cert_key, key_key) = (t.key("cert_file"), t.key("key_file"));
    r.finish(t);
    match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert_file: folder.join(cert),
            key_file: folder.join(key),
        }),
        (Some(_), None) => {
            let text = format!("is required when {cert_key} is set");
            r.problem(&key_key, None, text);
            None
        }
        (None, Some(_)) => {
            let text = format!("is required when {key_key} is set");
            r.problem(&cert_key, None, text);
            None
        }
    }
}

fn auth(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    folder: &Path,
    server: &ServerConfig,
    warnings: &mut Vec<String>,
) -> AuthConfig {
    let mut t = r.table(top, "auth");
    let mode = r.choice(
        &mut t,
        "mode",
        AuthMode::Optional,
        &[
            ("none", AuthMode::None),
            ("optional", AuthMode::Optional),
            ("required", AuthMode::Required),
        ],
    );
    let max_connections_per_user = r.size(&mut t, "max_connections_per_user", 5, 1);
    let on_user_limit = r.choice(
        &mut t,
        "on_user_limit",
        OnUserLimit::Refuse,
        &[
            ("refuse", OnUserLimit::Refuse),
            ("evict_oldest", OnUserLimit::EvictOldest),
        ],
    );
    let max_anonymous_per_ip = r.size(&mut t, "max_anonymous_per_ip", 100, 0);
    let allowed_origins = r
        .strings(&mut t, "allowed_origins")
        .into_iter()
        .filter(|(key, origin)| {
            let ok = origin == "*" || is_origin(origin);
            if !ok {
                r.problem(
                    key,
                    Some(&Value::from(origin.as_str())),
                    "must be \"*\" or an origin such as https://example.com \
                     (scheme, host and optional port; no path, no trailing /)",
                );
            }
            ok
        })
        .map(|(_, origin)| origin)
        .collect();
    let api_keys_env = env_name(r, &mut t, "api_keys_env", "SWITCHYARD_API_KEYS");
    let api_keys_file = r
        .optional(&mut t, "api_keys_file", "")
        .map(|f| folder.join(f));
    let admin_keys_env = env_name(r, &mut t, "admin_keys_env", "");
    let admin_keys_file = r
        .optional(&mut t, "admin_keys_file", "")
        .map(|f| folder.join(f));
    let jwt = jwt(r, &mut t, folder, mode);
    r.finish(t);
    if mode != AuthMode::None && server.tls.is_none() && !server.listen.ip().is_loopback() {
        warnings.push(format!(
            "server.listen = \"{}\" is not loopback and auth is on without server.tls: tokens \
             and keys cross the network in clear unless a reverse proxy terminates TLS",
            server.listen
        ));
    }
    AuthConfig {
        mode,
        max_connections_per_user,
        on_user_limit,
        max_anonymous_per_ip,
        allowed_origins,
        api_keys_env,
        api_keys_file,
        admin_keys_env,
        admin_keys_file,
        jwt,
    }
}

/// Whether `text` is `scheme://host[:port]`, the form browsers send in
/// `Origin`, so a comparison with the header can succeed.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    scheme_ok && !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '@'])
}

/// The name of an environment variable holding secrets; empty = unset.
fn env_name(
    r: &mut Reader<'_>,
    t: &mut Tab<'_>,
    key: &'static str,
    default: &str,
) -> Option<String> {
    let name = r.optional(t, key, default)?;
    if name.contains(['=', '\0']) {
        r.problem(
            &t.key(key),
            Some(&Value::from(name.as_str())),
            "must be an environment variable name (no = or NUL)",
        );
    } else if name.to_ascii_lowercase().starts_with("switchyard__") {
        // Such a variable would also be read as a configuration key.
        r.problem(
            &t.key(key),
            Some(&Value::from(name.as_str())),
            "must not start with SWITCHYARD__ (double underscore), which is read as a \
             configuration override; use a single underscore",
        );
    }
    Some(name)
}

const ALGORITHMS: [(&str, JwtAlgorithm); 3] = [
    ("HS256", JwtAlgorithm::Hs256),
    ("RS256", JwtAlgorithm::Rs256),
    ("ES256", JwtAlgorithm::Es256),
];

fn jwt(r: &mut Reader<'_>, auth: &mut Tab<'_>, folder: &Path, mode: AuthMode) -> JwtConfig {
    let mut t = r.table(auth, "jwt");
    let algorithm = r.choice(&mut t, "algorithm", JwtAlgorithm::Hs256, &ALGORITHMS);
    let secret_env = env_name(r, &mut t, "secret_env", "SWITCHYARD_JWT_SECRET");
    let secret_file = r
        .optional(&mut t, "secret_file", "")
        .map(|f| folder.join(f));
    let public_key_file = r
        .optional(&mut t, "public_key_file", "")
        .map(|f| folder.join(f));
    let issuer = r.optional(&mut t, "issuer", "");
    let audience = r.optional(&mut t, "audience", "");
    let leeway_s = r.uint(&mut t, "leeway_s", 5, 0, u64::MAX);
    let mut keys: Vec<JwtKeyConfig> = Vec::new();
    let mut kids: BTreeMap<String, String> = BTreeMap::new();
    for mut k in r.tables(&mut t, "keys") {
        let kid = r.required(&mut k, "kid");
        let key_algorithm = r.choice(&mut k, "algorithm", algorithm, &ALGORITHMS);
        let env = env_name(r, &mut k, "secret_env", "");
        let file = r.optional(&mut k, "secret_file", "");
        let public = r.optional(&mut k, "public_key_file", "");
        let source = key_source(r, &k, key_algorithm, env, file, public, folder);
        if let Some(kid) = &kid {
            if let Some(first) = kids.get(kid) {
                let text = format!("kid is used twice; {first} has it already");
                r.problem(&k.key("kid"), Some(&Value::from(kid.as_str())), text);
            } else {
                kids.insert(kid.clone(), k.path().to_owned());
            }
        }
        r.finish(k);
        if let (Some(kid), Some(source)) = (kid, source) {
            keys.push(JwtKeyConfig {
                kid,
                algorithm: key_algorithm,
                source,
            });
        }
    }
    let path = t.path().to_owned();
    r.finish(t);
    // Only the default key is checked here when no `keys` are listed: with
    // keys, the default fields are unused.
    if mode != AuthMode::None && keys.is_empty() && kids.is_empty() {
        match algorithm {
            JwtAlgorithm::Hs256 if secret_env.is_none() && secret_file.is_none() => {
                r.problem(
                    &format!("{path}.secret_env"),
                    None,
                    "HS256 needs a secret: set secret_env or secret_file (or list keys)",
                );
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 if public_key_file.is_none() => {
                r.problem(
                    &format!("{path}.public_key_file"),
                    None,
                    "RS256 and ES256 need a public key: set public_key_file (or list keys)",
                );
            }
            _ => {}
        }
    }
    JwtConfig {
        algorithm,
        secret_env,
        secret_file,
        public_key_file,
        issuer,
        audience,
        leeway_s,
        keys,
    }
}

/// The one source of a listed key, matching its algorithm.
fn key_source(
    r: &mut Reader<'_>,
    k: &Tab<'_>,
    algorithm: JwtAlgorithm,
    env: Option<String>,
    file: Option<String>,
    public: Option<String>,
    folder: &Path,
) -> Option<KeySource> {
    let given = [env.is_some(), file.is_some(), public.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        r.problem(
            k.path(),
            None,
            "needs exactly one of secret_env, secret_file or public_key_file",
        );
        return None;
    }
    let hmac = algorithm == JwtAlgorithm::Hs256;
    match (env, file, public) {
        (Some(env), _, _) if hmac => Some(KeySource::SecretEnv(env)),
        (_, Some(file), _) if hmac => Some(KeySource::SecretFile(folder.join(file))),
        (_, _, Some(public)) if !hmac => Some(KeySource::PublicKeyFile(folder.join(public))),
        _ => {
            let text = if hmac {
                "HS256 verifies with a shared secret: use secret_env or secret_file, \
                 not public_key_file"
            } else {
                "RS256 and ES256 verify with a public key: use public_key_file, \
                 not a secret"
            };
            r.problem(k.path(), None, text);
            None
        }
    }
}

/// The levels `tracing` knows, for checking `log.level`.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

fn log(r: &mut Reader<'_>, top: &mut Tab<'_>) -> LogConfig {
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

fn reload(r: &mut Reader<'_>, top: &mut Tab<'_>) -> ReloadConfig {
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

fn cluster(r: &mut Reader<'_>, top: &mut Tab<'_>, warnings: &mut Vec<String>) -> ClusterConfig {
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
    ClusterConfig { engine, redis_url }
}

/// Checks one channel name (declared, or listed by an endpoint or a type).
fn check_channel_name(r: &mut Reader<'_>, key: &str, name: &str) -> bool {
    let why = if name == CONTROL {
        "is reserved for the router's control messages"
    } else if !is_channel_name(name) {
        "is not a valid channel name: a lower-case letter, then lower-case letters, \
         digits, _ or -, at most 64 bytes"
    } else {
        return true;
    };
    r.problem(key, Some(&Value::from(name)), why);
    false
}

fn channels(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    auth: &AuthConfig,
    warnings: &mut Vec<String>,
) -> Vec<ChannelConfig> {
    let mut out = Vec::new();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for mut t in r.tables(top, "channels") {
        let name = r.required(&mut t, "name").unwrap_or_default();
        if !name.is_empty() && check_channel_name(r, &t.key("name"), &name) {
            unique(r, &mut first, &t.key("name"), &name, t.path(), "channel");
        }
        let description = r.string_or(&mut t, "description", "");
        let history = r.size(&mut t, "history", ChannelConfig::DEFAULT_HISTORY, 0);
        let history_ttl_s = r.uint(
            &mut t,
            "history_ttl_s",
            ChannelConfig::DEFAULT_HISTORY_TTL_S,
            0,
            u64::MAX,
        );
        let history_max_bytes = r.size(
            &mut t,
            "history_max_bytes",
            ChannelConfig::DEFAULT_HISTORY_MAX_BYTES,
            1,
        );
        let slow_consumer = r.choice(
            &mut t,
            "slow_consumer",
            SlowConsumer::DropOldest,
            &[
                ("drop_oldest", SlowConsumer::DropOldest),
                ("disconnect", SlowConsumer::Disconnect),
            ],
        );
        let require_auth = r.boolean(&mut t, "require_auth", false);
        if require_auth && auth.mode == AuthMode::None {
            warnings.push(format!(
                "{} ({name}): require_auth has no effect while auth.mode = \"none\"",
                t.path()
            ));
        }
        r.finish(t);
        out.push(ChannelConfig {
            name,
            description,
            history,
            history_ttl_s,
            history_max_bytes,
            slow_consumer,
            require_auth,
        });
    }
    out
}

/// Records `name` as first declared at `path`, or reports the repeat.
fn unique(
    r: &mut Reader<'_>,
    first: &mut BTreeMap<String, String>,
    key: &str,
    name: &str,
    path: &str,
    what: &str,
) {
    match first.get(name) {
        Some(earlier) => {
            let text = format!("{what} {name} is declared twice; {earlier} declares it already");
            r.problem(key, Some(&Value::from(name)), text);
        }
        None => {
            first.insert(name.to_owned(), path.to_owned());
        }
    }
}

fn endpoints(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    auth: &AuthConfig,
    warnings: &mut Vec<String>,
) -> Vec<EndpointConfig> {
    let mut out = Vec::new();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for mut t in r.tables(top, "endpoints") {
        let path = r.required(&mut t, "path").unwrap_or_default();
        let key = t.key("path");
        if !path.is_empty() {
            if let Some(why) = bad_endpoint_path(&path) {
                r.problem(&key, Some(&Value::from(path.as_str())), why);
            } else {
                unique(r, &mut first, &key, &path, t.path(), "endpoint");
            }
        }
        let description = r.string_or(&mut t, "description", "");
        let listed = r.raw(&mut t, "channels");
        let mut channels: Vec<String> = Vec::new();
        for (entry_key, name) in r.strings(&mut t, "channels") {
            if !check_channel_name(r, &entry_key, &name) {
                continue;
            }
            if channels.contains(&name) {
                let text = "is listed twice in this endpoint";
                r.problem(&entry_key, Some(&Value::from(name.as_str())), text);
                continue;
            }
            channels.push(name);
        }
        match listed {
            None if t.is_table() => r.problem(
                &t.key("channels"),
                None,
                "is required: the channels it carries",
            ),
            Some(Value::Array(items)) if items.is_empty() => r.problem(
                &t.key("channels"),
                Some(&json!([])),
                "must list at least one channel",
            ),
            _ => {}
        }
        let require_auth = r.boolean(&mut t, "require_auth", false);
        if require_auth && auth.mode == AuthMode::None {
            warnings.push(format!(
                "{} ({path}): require_auth has no effect while auth.mode = \"none\"",
                t.path()
            ));
        }
        r.finish(t);
        out.push(EndpointConfig {
            path,
            description,
            channels,
            require_auth,
        });
    }
    out
}

/// Why `path` cannot be a WebSocket endpoint, if it cannot.
fn bad_endpoint_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some("must start with /, such as /ws/events".to_owned());
    }
    if path.contains(|c: char| c.is_whitespace() || c.is_control() || c == '?' || c == '#') {
        return Some("must be a plain URL path: no spaces, ? or #".to_owned());
    }
    RESERVED_PATHS
        .iter()
        .find(|reserved| {
            path == **reserved
                || path
                    .strip_prefix(**reserved)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .map(|reserved| format!("is inside {reserved}, which the HTTP API answers"))
}

const FIELD_TYPES: [(&str, FieldType); 6] = [
    ("string", FieldType::String),
    ("integer", FieldType::Integer),
    ("number", FieldType::Number),
    ("boolean", FieldType::Boolean),
    ("object", FieldType::Object),
    ("array", FieldType::Array),
];

fn event_types(r: &mut Reader<'_>, top: &mut Tab<'_>) -> Vec<EventTypeConfig> {
    let mut out = Vec::new();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    // (key, alias, declaring type), checked once every entry is read so a
    // conflict with a later entry is found too.
    let mut aliases: Vec<(String, String, String)> = Vec::new();
    for mut t in r.tables(top, "event_types") {
        let name = r.required(&mut t, "name").unwrap_or_default();
        let name_key = t.key("name");
        if !name.is_empty() {
            if name.split('.').next() == Some(CONTROL) {
                r.problem(
                    &name_key,
                    Some(&Value::from(name.as_str())),
                    "the connection domain is reserved for the router's control messages",
                );
            } else if !is_type_name(&name) {
                r.problem(
                    &name_key,
                    Some(&Value::from(name.as_str())),
                    "must be {domain}.{action}: two segments of a-z, 0-9 and _, each \
                     starting with a letter, at most 64 bytes (e.g. alert.created)",
                );
            } else {
                unique(r, &mut first, &name_key, &name, t.path(), "event type");
            }
        }
        let channel = r.string(&mut t, "channel");
        if let Some(channel) = &channel {
            check_channel_name(r, &t.key("channel"), channel);
        }
        let description = r.string_or(&mut t, "description", "");
        let payload = r
            .raw(&mut t, "payload")
            .map(|value| payload(r, t.key("payload"), value));
        if payload.is_some() && channel.is_none() {
            r.problem(
                &t.key("channel"),
                None,
                "is required for a type that declares a payload (only a type without \
                 payload may leave it to the plugin that declares it)",
            );
        }
        let alias_list: Vec<String> = r
            .strings(&mut t, "aliases")
            .into_iter()
            .filter_map(|(key, alias)| {
                if !is_alias(&alias) || alias.starts_with("connection.") {
                    let why = if is_type_name(&alias) {
                        "is in the type name form {domain}.{action}; an alias must not be"
                    } else {
                        "must be a-z, 0-9, _ and . only, at most 64 bytes, and not in \
                         the connection domain"
                    };
                    r.problem(&key, Some(&Value::from(alias.as_str())), why);
                    return None;
                }
                aliases.push((key, alias.clone(), name.clone()));
                Some(alias)
            })
            .collect();
        let deprecated = r.string(&mut t, "deprecated");
        if deprecated.as_deref() == Some("") {
            r.problem(
                &t.key("deprecated"),
                Some(&Value::from("")),
                "must name the replacement, or be left out",
            );
        }
        let additional_fields = r.boolean(&mut t, "additional_fields", false);
        r.finish(t);
        out.push(EventTypeDecl {
            name,
            channel,
            description,
            payload,
            aliases: alias_list,
            deprecated,
            additional_fields,
        });
    }
    // Type names cannot collide with aliases (is_alias excludes the type
    // name form), so only aliases among themselves can.
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, alias, owner) in &aliases {
        match seen.get(alias.as_str()) {
            Some(other) => {
                let text = if other == owner {
                    "is listed twice".to_owned()
                } else {
                    format!("is already an alias of {other}")
                };
                r.problem(key, Some(&Value::from(alias.as_str())), text);
            }
            None => {
                seen.insert(alias, owner);
            }
        }
    }
    out
}

/// One type's `payload` table: field name → declaration.
fn payload(r: &mut Reader<'_>, path: String, value: &Value) -> BTreeMap<String, Field> {
    let Value::Object(fields) = value else {
        r.problem(
            &path,
            Some(value),
            "must be a table of fields, such as { id = { type = \"string\", required = true } }",
        );
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, spec) in fields {
        let mut f = r.table_value(format!("{path}.{name}"), Some(spec));
        let declared_type = r.raw(&mut f, "type").is_some();
        let field_type = r.choice(&mut f, "type", FieldType::String, &FIELD_TYPES);
        if !declared_type && spec.is_object() {
            let names: Vec<&str> = FIELD_TYPES.iter().map(|(n, _)| *n).collect();
            let text = format!("is required: one of {}", names.join(", "));
            r.problem(&f.key("type"), None, text);
        }
        let required = r.boolean(&mut f, "required", false);
        let allowed = match r.raw(&mut f, "enum") {
            None => None,
            Some(Value::Array(values)) => Some(values.clone()),
            Some(other) => {
                r.problem(
                    &f.key("enum"),
                    Some(other),
                    "must be a list of allowed values",
                );
                None
            }
        };
        let description = r.string(&mut f, "description");
        r.finish(f);
        out.insert(
            name.clone(),
            Field {
                field_type,
                required,
                allowed,
                description,
            },
        );
    }
    for why in check_declaration(&out) {
        r.problem(&path, None, why);
    }
    out
}

/// A plugin instance name: it appears in metrics labels, `/health` keys and
/// as a type's `producer`, so it is kept to a plain, unambiguous form.
fn is_instance_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

fn plugins(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    folder: &Path,
    plugin_dir: &Path,
) -> Vec<PluginConfig> {
    let mut out = Vec::new();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for mut t in r.tables(top, "plugins") {
        let name = r.required(&mut t, "name").unwrap_or_default();
        let key = t.key("name");
        if !name.is_empty() {
            if name == CONFIG_PRODUCER {
                r.problem(
                    &key,
                    Some(&Value::from(name.as_str())),
                    "is reserved: `config` is the producer of types declared in [[event_types]]",
                );
            } else if !is_instance_name(&name) {
                r.problem(
                    &key,
                    Some(&Value::from(name.as_str())),
                    "must be a lower-case letter, then lower-case letters, digits, _ or -, \
                     at most 64 bytes",
                );
            } else {
                unique(r, &mut first, &key, &name, t.path(), "plugin instance");
            }
        }
        let written = r.required(&mut t, "library");
        let library = written
            .as_deref()
            .map(|lib| library_path(folder, plugin_dir, lib))
            .unwrap_or_default();
        let library_as_written = written.unwrap_or_default();
        let enabled = r.boolean(&mut t, "enabled", true);
        let stop_timeout_s = r.uint(&mut t, "stop_timeout_s", 5, 1, u64::MAX);
        // Taken whole and never typed: it belongs to the plugin, which
        // validates it in `create`.
        let config = match r.raw(&mut t, "config") {
            None => json!({}),
            Some(value @ Value::Object(_)) => value.clone(),
            Some(other) => {
                r.problem(
                    &t.key("config"),
                    Some(other),
                    "must be a table ([plugins.config]) of the plugin's own keys",
                );
                json!({})
            }
        };
        r.finish(t);
        out.push(PluginConfig {
            name,
            library,
            library_as_written,
            enabled,
            stop_timeout_s,
            config,
        });
    }
    out
}

/// Where a plugin's library is: a bare stem is looked up in `plugin_dir`
/// with the platform's prefix and extension; anything that looks like a
/// path is taken against the config file's folder.
fn library_path(folder: &Path, plugin_dir: &Path, library: &str) -> PathBuf {
    let is_path = library.contains('/')
        || library.contains(std::path::MAIN_SEPARATOR)
        || library.ends_with(DLL_SUFFIX);
    if is_path {
        folder.join(library)
    } else {
        plugin_dir.join(format!("{DLL_PREFIX}{library}{DLL_SUFFIX}"))
    }
}

fn routes(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    plugins: &[PluginConfig],
    max_pattern_bytes: usize,
    warnings: &mut Vec<String>,
) -> Vec<RouteConfig> {
    let mut out = Vec::new();
    for mut t in r.tables(top, "routes") {
        let sink = r.required(&mut t, "sink").unwrap_or_default();
        if !sink.is_empty() {
            match plugins.iter().find(|p| p.name == sink) {
                Some(plugin) if !plugin.enabled => warnings.push(format!(
                    "{}: sink {sink} is disabled, so these events go nowhere",
                    t.path()
                )),
                Some(_) => {}
                None => {
                    let hint = suggestion(&sink, plugins.iter().map(|p| p.name.as_str()));
                    let text = format!("names no [[plugins]] instance{hint}");
                    r.problem(&t.key("sink"), Some(&Value::from(sink.as_str())), text);
                }
            }
        }
        let listed = r.raw(&mut t, "events");
        let mut events = Vec::new();
        for (key, pattern) in r.strings(&mut t, "events") {
            match Pattern::parse(&pattern, max_pattern_bytes) {
                Ok(_) => events.push(pattern),
                Err(e) => r.problem(&key, Some(&Value::from(pattern.as_str())), e.to_string()),
            }
        }
        match listed {
            None if t.is_table() => r.problem(
                &t.key("events"),
                None,
                "is required: the patterns routed to the sink, such as [\"alert.*\"]",
            ),
            Some(Value::Array(items)) if items.is_empty() => r.problem(
                &t.key("events"),
                Some(&json!([])),
                "must list at least one pattern, such as \"alert.*\"",
            ),
            _ => {}
        }
        r.finish(t);
        out.push(RouteConfig { sink, events });
    }
    out
}
