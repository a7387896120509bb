//! The validated configuration: what the rest of the router reads.
//!
//! Every value here has passed validation and every relative path has been
//! resolved, so readers never re-check or re-resolve. The types derive
//! `PartialEq` so a reload can tell which parts changed (a plugin whose
//! entry changed is restarted; `server.listen` and `cluster` need a restart).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use switchyard_plugin_api::EventTypeDecl;

/// A whole configuration, validated and immutable.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file it came from, absolute (not canonicalized, so a symlinked
    /// ConfigMap keeps its own path).
    pub source: PathBuf,
    /// Where plugin libraries named by stem are looked up, resolved against
    /// the config file's folder.
    pub plugin_dir: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[reload]`.
    pub reload: ReloadConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// `[[channels]]`, in file order.
    pub channels: Vec<ChannelConfig>,
    /// `[[endpoints]]`, in file order.
    pub endpoints: Vec<EndpointConfig>,
    /// `[[event_types]]`, in file order (index `i` is `event_types[i]`).
    pub event_types: Vec<EventTypeConfig>,
    /// `[[plugins]]`, in file order (index `i` is `plugins[i]`).
    pub plugins: Vec<PluginConfig>,
    /// `[[routes]]`, in file order.
    pub routes: Vec<RouteConfig>,
}

impl Config {
    /// The declared channel of that name.
    pub fn channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.name == name)
    }

    /// The endpoint at that path.
    pub fn endpoint(&self, path: &str) -> Option<&EndpointConfig> {
        self.endpoints.iter().find(|e| e.path == path)
    }

    /// The plugin instance of that name.
    pub fn plugin(&self, name: &str) -> Option<&PluginConfig> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// The folder relative paths are resolved against.
    pub fn folder(&self) -> &Path {
        self.source.parent().unwrap_or(Path::new("/"))
    }
}

/// `[server]`: listening, limits and rates.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Certificate and key for serving TLS directly; `None` when absent or
    /// both paths are empty.
    pub tls: Option<TlsConfig>,
    /// Peers whose `X-Forwarded-For` is believed; a bare IP is a /32 or /128.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest client→server WebSocket message, in bytes.
    pub max_message_bytes: usize,
    /// Largest `POST /api/events` body, in bytes.
    pub max_publish_bytes: usize,
    /// Largest serialized event envelope, in bytes.
    pub max_event_bytes: usize,
    /// Deepest JSON nesting accepted (the top-level value is depth 1).
    pub max_json_depth: usize,
    /// Per-connection outbound queue bound, in events.
    pub send_queue: usize,
    /// Per-connection outbound queue bound, in bytes.
    pub send_queue_bytes: usize,
    /// `SO_SNDBUF` of each client socket (0: the kernel's autotuned
    /// buffer, which may grow to megabytes for a client that stalls).
    pub socket_send_buffer: usize,
    /// Patterns held per connection.
    pub max_patterns: usize,
    /// Longest pattern, in bytes.
    pub max_pattern_bytes: usize,
    /// Seconds between server pings.
    pub heartbeat_interval_s: u64,
    /// Seconds from accept to a completed upgrade or HTTP response.
    pub handshake_timeout_s: u64,
    /// Largest request line plus headers, in bytes; over it: 431.
    pub max_header_bytes: usize,
    /// TCP connections not yet upgraded or answered.
    pub max_pending_handshakes: usize,
    /// WebSocket connections held at once.
    pub max_connections: usize,
    /// Longest flush of send queues at shutdown, in seconds.
    pub shutdown_timeout_s: u64,
    /// Per-connection limit on client messages.
    pub client_rate_limit: ClientRateLimit,
    /// Per-key (or per-IP without auth) limit on publish requests.
    pub publish_rate_limit: PublishRateLimit,
    /// Seconds an `idempotency_key` is remembered per channel.
    pub idempotency_window_s: u64,
    /// How long a publisher may wait for the routing table, in ms, before
    /// it is answered `503 overloaded` (plugins: `backpressure`).
    pub publish_wait_ms: u64,
}

/// `server.tls`: the files are read by the server, not here, so that a
/// reload re-reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsConfig {
    /// PEM certificate chain, resolved against the config file's folder.
    pub cert_file: PathBuf,
    /// PEM private key, resolved against the config file's folder.
    pub key_file: PathBuf,
}

/// `server.client_rate_limit`: a token bucket per connection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientRateLimit {
    /// Sustained messages per second.
    pub messages_per_s: f64,
    /// Messages allowed in a burst.
    pub burst: u32,
}

/// `server.publish_rate_limit`: a token bucket per API key.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PublishRateLimit {
    /// Sustained requests per second.
    pub requests_per_s: f64,
    /// Requests allowed in a burst.
    pub burst: u32,
}

/// `auth.mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// Tokens are ignored; publish routes need no key.
    None,
    /// Anonymous connections are allowed; a bad token is still refused.
    Optional,
    /// Every connection needs a valid token.
    Required,
}

/// `auth.on_user_limit`: what happens past `max_connections_per_user`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnUserLimit {
    /// The new connection is refused.
    Refuse,
    /// The user's oldest connection is closed with 1008 "replaced".
    EvictOldest,
}

/// `[auth]`. Key material is not read here: the auth module reads the
/// variables and files named, on start and on every reload.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthConfig {
    /// Whether and how clients authenticate.
    pub mode: AuthMode,
    /// Connections per JWT `sub`.
    pub max_connections_per_user: usize,
    /// What to do past that limit.
    pub on_user_limit: OnUserLimit,
    /// Anonymous connections per client IP.
    pub max_anonymous_per_ip: usize,
    /// Allowed `Origin`s: empty = same origin only, `*` = any.
    pub allowed_origins: Vec<String>,
    /// Variable holding the publish keys; `None` when empty.
    pub api_keys_env: Option<String>,
    /// File holding the publish keys, resolved; `None` when empty.
    pub api_keys_file: Option<PathBuf>,
    /// Variable holding the admin keys; `None` when empty.
    pub admin_keys_env: Option<String>,
    /// File holding the admin keys, resolved; `None` when empty.
    pub admin_keys_file: Option<PathBuf>,
    /// `[auth.jwt]`.
    pub jwt: JwtConfig,
}

/// A JWT signature algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, verified with a public key.
    Rs256,
    /// ECDSA P-256 with SHA-256, verified with a public key.
    Es256,
}

/// `[auth.jwt]`.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtConfig {
    /// Algorithm of the default key.
    pub algorithm: JwtAlgorithm,
    /// Variable holding the HS256 secret; `None` when empty.
    pub secret_env: Option<String>,
    /// File holding the HS256 secret, resolved; `None` when empty.
    pub secret_file: Option<PathBuf>,
    /// PEM public key for RS256/ES256, resolved; `None` when empty.
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Keys chosen by the token's `kid`.
    pub keys: Vec<JwtKeyConfig>,
}

/// One `auth.jwt.keys` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtKeyConfig {
    /// The `kid` header value that selects this key (unique).
    pub kid: String,
    /// Its algorithm; `auth.jwt.algorithm` when not given.
    pub algorithm: JwtAlgorithm,
    /// Where its secret or public key comes from.
    pub source: KeySource,
}

/// Where one JWT key comes from; exactly one per key, and the kind matches
/// the algorithm (a secret for HS256, a public key otherwise).
#[derive(Clone, Debug, PartialEq)]
pub enum KeySource {
    /// An environment variable holding the HS256 secret.
    SecretEnv(String),
    /// A file holding the HS256 secret, resolved.
    SecretFile(PathBuf),
    /// A PEM public key file, resolved.
    PublicKeyFile(PathBuf),
}

/// `log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// A `tracing` filter directive (`RUST_LOG` overrides it).
    pub level: String,
    /// Line format.
    pub format: LogFormat,
}

/// `[reload]`: how the watched file is picked up.
#[derive(Clone, Debug, PartialEq)]
pub struct ReloadConfig {
    /// Reload when the file changes (`false`: `SIGHUP` and the admin route only).
    pub watch: bool,
    /// How long the file must be quiet (no further change) before it is read.
    pub debounce: std::time::Duration,
}

/// `cluster.engine`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEngine {
    /// Everything in this process.
    Memory,
    /// Sequences, epochs and history shared through Redis.
    Redis,
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// Which engine.
    pub engine: ClusterEngine,
    /// Redis URL; always set when the engine is Redis.
    pub redis_url: Option<String>,
    /// The environment variable holding Redis's password, if any (never
    /// the password itself: it stays out of the file).
    pub redis_password_env: Option<String>,
    /// Every Redis key and pub/sub channel starts with it, so several
    /// systems can share one Redis.
    pub key_prefix: String,
    /// This node's name; `None`: host name and process id.
    pub node_id: Option<String>,
    /// How often a node announces itself through Redis pub/sub.
    pub heartbeat_interval: std::time::Duration,
    /// A node that has not seen its own heartbeat come back for this long
    /// is unhealthy.
    pub unhealthy_after: std::time::Duration,
}

/// `slow_consumer`: what a full send queue does to this channel's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Queued events of the channel are dropped, oldest first.
    DropOldest,
    /// The slow connection is closed with 4008.
    Disconnect,
}

/// One `[[channels]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelConfig {
    /// Unique channel name.
    pub name: String,
    /// What the channel carries.
    pub description: String,
    /// Events kept for recovery; 0 keeps none.
    pub history: usize,
    /// Oldest event kept, in seconds; 0 sets no age limit.
    pub history_ttl_s: u64,
    /// Serialized envelopes kept, in bytes.
    pub history_max_bytes: usize,
    /// Behaviour when a connection's queue is full.
    pub slow_consumer: SlowConsumer,
    /// Whether anonymous connections never receive it.
    pub require_auth: bool,
}

impl ChannelConfig {
    /// Default `history`.
    pub const DEFAULT_HISTORY: usize = 1000;
    /// Default `history_ttl_s`.
    pub const DEFAULT_HISTORY_TTL_S: u64 = 300;
    /// Default `history_max_bytes`.
    pub const DEFAULT_HISTORY_MAX_BYTES: usize = 16 * 1024 * 1024;

    /// A channel with every `[[channels]]` default, for a channel that an
    /// event type names but the config does not declare.
    pub fn with_defaults(name: &str) -> ChannelConfig {
        ChannelConfig {
            name: name.to_owned(),
            description: String::new(),
            history: Self::DEFAULT_HISTORY,
            history_ttl_s: Self::DEFAULT_HISTORY_TTL_S,
            history_max_bytes: Self::DEFAULT_HISTORY_MAX_BYTES,
            slow_consumer: SlowConsumer::DropOldest,
            require_auth: false,
        }
    }
}

/// One `[[endpoints]]` entry. Its channel names are well-formed and unique
/// but not yet checked to exist: types of plugins may create channels, so
/// the registry checks that.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointConfig {
    /// URL path, starting with `/`, unique.
    pub path: String,
    /// What the endpoint is for.
    pub description: String,
    /// Channels it carries, in file order.
    pub channels: Vec<String>,
    /// Whether connections must authenticate.
    pub require_auth: bool,
}

/// One `[[event_types]]` entry: the same shape as a plugin's declaration.
/// Without `payload` it only overrides a plugin type's channel,
/// description, aliases and deprecation.
pub type EventTypeConfig = EventTypeDecl;

/// One `[[plugins]]` instance.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    /// Unique instance name (routes, `/health`, metrics, `producer`).
    pub name: String,
    /// The shared library, resolved: a stem becomes
    /// `<plugin_dir>/<prefix><stem><suffix>`, a path is taken against the
    /// config file's folder.
    pub library: PathBuf,
    /// `library` as written in the file, for messages that quote it.
    pub library_as_written: String,
    /// Whether the instance is loaded and started.
    pub enabled: bool,
    /// Seconds `stop` may take before the instance is abandoned.
    pub stop_timeout_s: u64,
    /// `[plugins.config]` exactly as written (`{}` when absent), handed to
    /// the plugin's `create`.
    pub config: serde_json::Value,
}

/// One `[[routes]]` entry: events matching any pattern go to the sink.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// The `[[plugins]]` instance receiving the events.
    pub sink: String,
    /// Patterns, each already checked to parse.
    pub events: Vec<String>,
}
