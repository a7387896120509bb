//! Connection counts shared by the nodes, for `max_connections_per_user`
//! and `max_anonymous_per_ip` (docs/cluster.md, "Limits").
//!
//! Each node keeps its counts in two hashes of its own,
//! `P:node:<node>:users` (user → connections) and `P:node:<node>:ips`
//! (address → anonymous connections). They are leases: every heartbeat the
//! node writes them whole and sets them to expire after three heartbeat
//! intervals, so the counts of a node that died lapse by themselves. A
//! connection opened or closed changes its count at once too, so another
//! node sees it before the next heartbeat. The sorted set `P:members`
//! (node → lease end, ms) says which nodes to look at: what a node needs
//! to know of the others without waiting to hear their heartbeats.

use std::net::IpAddr;
use std::sync::LazyLock;

use super::sequencer::unix_millis;
use super::Shared;
use crate::connection::Connection;
use crate::router::{ConnectRequest, Counts};

/// How many heartbeat intervals a lease outlives its last renewal.
const LEASE_BEATS: u32 = 3;

/// The kind of count of an authenticated user's connections.
const USERS: &str = "users";
/// The kind of count of anonymous connections per address.
const IPS: &str = "ips";

/// What a connection counts against on every node: the kind of count and
/// its field (the user, or the anonymous client's address).
fn counted_as(user: Option<&str>, ip: IpAddr) -> (&'static str, String) {
    match user {
        Some(user) => (USERS, user.to_owned()),
        None => (IPS, ip.to_string()),
    }
}

fn lease_ms(shared: &Shared) -> u64 {
    (shared.heartbeat * LEASE_BEATS).as_millis() as u64
}

/// Adds up one field of every other member's hash of one kind. ARGV: the
/// members key, now (ms), the key prefix, this node, `users` or `ips`, the
/// field.
static ELSEWHERE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ELSEWHERE_LUA));

const ELSEWHERE_LUA: &str = r#"
local sum = 0
for _, node in ipairs(redis.call('ZRANGEBYSCORE', ARGV[1], ARGV[2], '+inf')) do
  if node ~= ARGV[4] then
    local n = redis.call('HGET', ARGV[3] .. ':node:' .. node .. ':' .. ARGV[5], ARGV[6])
    if n then sum = sum + tonumber(n) end
  end
end
return sum
"#;

/// The nodes whose leases are current, this one among them.
pub async fn members(shared: &Shared) -> redis::RedisResult<Vec<String>> {
    let mut conn = shared.conn.clone();
    redis::cmd("ZRANGEBYSCORE")
        .arg(shared.keys.members())
        .arg(unix_millis())
        .arg("+inf")
        .query_async(&mut conn)
        .await
}

/// How many connections like `req` the other live nodes hold. While Redis
/// is out of reach this node counts only its own.
pub async fn elsewhere(shared: &Shared, req: &ConnectRequest) -> usize {
    if shared.health.status().is_err() {
        return 0;
    }
    let (kind, field) = counted_as(req.user.as_deref(), req.ip);
    let mut conn = shared.conn.clone();
    ELSEWHERE
        .arg(shared.keys.members())
        .arg(unix_millis())
        .arg(shared.keys.prefix())
        .arg(&shared.node)
        .arg(kind)
        .arg(field)
        .invoke_async(&mut conn)
        .await
        .unwrap_or(0)
}

/// Counts a connection opened (`+1`) or closed (`-1`) at once. Awaited on
/// open, before the client hears `connection.established`, so that a
/// client that then connects to another node is counted there.
pub async fn change(shared: &Shared, conn: &Connection, by: i64) {
    let (kind, field) = counted_as(conn.user.as_deref(), conn.ip);
    let key = shared.keys.node_counts(&shared.node, kind);
    let mut redis = shared.conn.clone();
    let lease = lease_ms(shared) as i64;
    let _: redis::RedisResult<()> = redis::pipe()
        .hincr(&key, field, by)
        .ignore()
        .pexpire(&key, lease)
        .ignore()
        .query_async(&mut redis)
        .await;
}

/// Writes this node's counts whole and renews their leases.
pub async fn renew(shared: &Shared, counts: &Counts) -> redis::RedisResult<()> {
    let users = shared.keys.node_counts(&shared.node, USERS);
    let ips = shared.keys.node_counts(&shared.node, IPS);
    let lease = lease_ms(shared) as i64;
    let mut pipe = redis::pipe();
    let members = shared.keys.members();
    let now = unix_millis();
    pipe.atomic()
        .zadd(&members, &shared.node, now + lease as u64)
        .ignore()
        .zrembyscore(&members, "-inf", now)
        .ignore()
        .del(&users)
        .ignore()
        .del(&ips)
        .ignore();
    if !counts.users.is_empty() {
        pipe.hset_multiple(&users, &counts.users).ignore();
        pipe.pexpire(&users, lease).ignore();
    }
    let anonymous: Vec<(String, usize)> = counts
        .anonymous
        .iter()
        .map(|(ip, n)| (ip.to_string(), *n))
        .collect();
    if !anonymous.is_empty() {
        pipe.hset_multiple(&ips, &anonymous).ignore();
        pipe.pexpire(&ips, lease).ignore();
    }
    let mut conn = shared.conn.clone();
    pipe.query_async(&mut conn).await
}
