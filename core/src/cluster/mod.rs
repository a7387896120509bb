//! The Redis cluster engine (`[cluster] engine = "redis"`): several router
//! nodes on one Redis behave as one router (docs/cluster.md).
//!
//! Events enter on any node and are stamped in Redis by one script per
//! publish ([`sequencer`]); every node, the publisher included, gets them
//! back through pub/sub and checks each channel's continuity, filling gaps
//! from the channel's history stream ([`feed`]); heartbeats tell each node
//! whether it is still in the cluster ([`health`]); connection counts are
//! leased per node ([`leases`]); operators' questions span the nodes
//! ([`ask`]).

pub mod ask;
pub mod clock;
pub mod feed;
pub mod health;
pub mod leases;
pub mod scripts;
pub mod sequencer;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo};

use serde_json::json;

use crate::config::{ClusterConfig, Config, Problem};
use crate::router::fresh_epoch;
use clock::RedisClock;
use health::Health;
use scripts::Keys;

/// Why the cluster engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.redis_url` cannot be read as a Redis URL.
    #[error("cluster.redis_url {url:?} is not a Redis URL: {reason}")]
    BadUrl {
        /// The URL as written, any password in it masked ([`redacted`]):
        /// this message reaches logs.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `cluster.redis_password_env` names a variable that is not set.
    #[error("cluster.redis_password_env names {0}, which is not set")]
    MissingPassword(String),
    /// Redis did not answer.
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// What the connection attempt answered.
        reason: String,
    },
}

impl ClusterError {
    /// The error as a problem of the configuration, naming its key and
    /// the value written there (a URL with its password masked).
    pub fn problem(&self) -> Problem {
        let (key, value, why) = match self {
            ClusterError::BadUrl { url, reason } => (
                "cluster.redis_url",
                Some(json!(url)),
                format!("not a Redis URL: {reason}"),
            ),
            ClusterError::MissingPassword(var) => (
                "cluster.redis_password_env",
                Some(json!(var)),
                "names a variable that is not set".to_owned(),
            ),
            ClusterError::Unreachable { .. } => ("cluster", None, self.to_string()),
        };
        Problem {
            key: Some(key.to_owned()),
            value,
            problem: why,
            line: None,
            column: None,
        }
    }
}

/// What the engine's parts share: the connection, the key names and the
/// node's standing.
#[derive(Debug)]
pub struct Shared {
    /// This node's name.
    pub node: String,
    /// This node in this process's life: its name and a random token. What
    /// an accepted event is marked with, so that only the process that
    /// accepted it offers it to sinks — not the same node restarted.
    pub origin: String,
    /// Where each channel's state lives.
    pub keys: Keys,
    /// The URL, for messages.
    pub url: String,
    /// Commands and scripts: one multiplexed connection that pipelines
    /// concurrent requests and reconnects by itself.
    pub conn: ConnectionManager,
    /// For the pub/sub connection, which is the feed's own.
    pub client: Client,
    /// Whether this node is in the cluster now.
    pub health: Health,
    /// `cluster.heartbeat_interval_ms`.
    pub heartbeat: Duration,
    /// Questions asked of the other nodes, waiting for answers.
    pub pending: ask::Pending,
    /// Redis's clock, for the deadline a publish carries.
    pub clock: RedisClock,
}

impl Shared {
    /// What an operator reads when a Redis call failed.
    pub fn unreachable(&self, e: &redis::RedisError) -> String {
        format!("cannot reach Redis at {}: {e}", self.url)
    }
}

/// The engine's handle: what `/health` and the app hold.
#[derive(Debug)]
pub struct Cluster {
    /// The shared parts.
    pub shared: Arc<Shared>,
}

/// Longest wait between reconnection attempts (SPEC: at most 5 s).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Cluster {
    /// Connects to Redis, or says plainly why not.
    pub async fn connect(config: &Config) -> Result<Cluster, ClusterError> {
        let cluster = &config.cluster;
        let url = cluster.redis_url.clone().unwrap_or_default();
        let client = client(cluster, &url)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(cluster.unhealthy_after))
            .set_max_delay(MAX_BACKOFF)
            .set_number_of_retries(2);
        let unreachable = |e: redis::RedisError| ClusterError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        };
        let mut conn = client
            .get_connection_manager_with_config(manager)
            .await
            .map_err(unreachable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unreachable)?;
        let clock = RedisClock::new(cluster.unhealthy_after);
        clock.measure(&mut conn).await.map_err(unreachable)?;
        let node = cluster.node_id.clone().unwrap_or_else(default_node_id);
        Ok(Cluster {
            shared: Arc::new(Shared {
                origin: format!("{node}/{}", &fresh_epoch()[..8]),
                health: Health::new(&node, cluster.heartbeat_interval, cluster.unhealthy_after),
                node,
                keys: Keys::new(&cluster.key_prefix),
                url,
                conn,
                client,
                heartbeat: cluster.heartbeat_interval,
                pending: ask::Pending::default(),
                clock,
            }),
        })
    }
}

/// A client for `url`, with the password from `redis_password_env`. It
/// does not connect: [`check`] calls it to judge a configuration.
fn client(cluster: &ClusterConfig, url: &str) -> Result<Client, ClusterError> {
    let bad = |reason: String| ClusterError::BadUrl {
        url: redacted(url),
        reason,
    };
    let mut info = url.into_connection_info().map_err(|e| bad(e.to_string()))?;
    if info.redis_settings().password().is_some() {
        return Err(bad(
            "it holds a password; put it in the variable named by cluster.redis_password_env"
                .into(),
        ));
    }
    if let Some(var) = &cluster.redis_password_env {
        let password =
            std::env::var(var).map_err(|_| ClusterError::MissingPassword(var.clone()))?;
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    Client::open(info).map_err(|e| bad(e.to_string()))
}

/// Whether `cluster` names a Redis URL and password this node could use,
/// so that `switchyard check`, a reload and start-up refuse the same
/// files (a reload does not apply `[cluster]`, but the next start would).
pub fn check(cluster: &ClusterConfig) -> Result<(), ClusterError> {
    let url = cluster.redis_url.as_deref().unwrap_or_default();
    client(cluster, url).map(drop)
}

/// `url` with the password of its user information masked as `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Host name and process id: unique among running nodes, readable in logs.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterEngine;

    fn cluster(password_env: Option<&str>) -> ClusterConfig {
        ClusterConfig {
            engine: ClusterEngine::Redis,
            redis_url: None,
            redis_password_env: password_env.map(str::to_owned),
            key_prefix: "switchyard".into(),
            node_id: None,
            heartbeat_interval: Duration::from_secs(1),
            unhealthy_after: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_url_that_cannot_be_used_says_why() {
        let inline = client(&cluster(None), "redis://user:secret@127.0.0.1:6379").unwrap_err();
        assert!(
            inline.to_string().contains("redis_password_env"),
            "{inline}"
        );
        assert!(!inline.to_string().contains("secret"), "{inline}");
        let garbled = client(&cluster(None), "redis://127.0.0.1:notaport").unwrap_err();
        assert!(
            garbled.to_string().contains("is not a Redis URL"),
            "{garbled}"
        );
        let unset = client(
            &cluster(Some("SY_TEST_UNSET_REDIS_PASSWORD")),
            "redis://127.0.0.1:6379",
        )
        .unwrap_err();
        assert_eq!(
            unset.to_string(),
            "cluster.redis_password_env names SY_TEST_UNSET_REDIS_PASSWORD, which is not set"
        );
        std::env::set_var("SY_TEST_SET_REDIS_PASSWORD", "pw");
        let mut named = cluster(Some("SY_TEST_SET_REDIS_PASSWORD"));
        named.redis_url = Some("redis://127.0.0.1:6379/2".into());
        assert!(check(&named).is_ok());
        assert!(client(
            &cluster(Some("SY_TEST_SET_REDIS_PASSWORD")),
            "redis://127.0.0.1:6379"
        )
        .is_ok());
    }

    #[test]
    fn only_a_password_is_masked() {
        assert_eq!(
            redacted("redis://:pw@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("rediss://ann:p:w@db.example:6380"),
            "rediss://ann:***@db.example:6380"
        );
        for plain in [
            "redis://ann@127.0.0.1",
            "redis://127.0.0.1:6379",
            "unix:/tmp/r.sock",
        ] {
            assert_eq!(redacted(plain), plain);
        }
    }
}
