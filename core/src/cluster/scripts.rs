//! The Lua scripts that make each cluster step one atomic Redis operation,
//! and the names of the keys they touch (docs/cluster.md, "In Redis").
//!
//! Per channel C, under the prefix P:
//! - `P:ch:{C}:meta`, a hash: `epoch`, `seq` (the last sequence stamped)
//!   and `run` (the Redis server's `run_id` when the epoch began);
//! - `P:ch:{C}:stream`, the history: a stream capped at the channel's
//!   `history`, one entry per event with the id `<seq>-1`, so a range of
//!   sequences is a range of ids;
//! - `P:ch:{C}:idem:<key>`, an idempotency key's `epoch:seq`, expiring
//!   after `server.idempotency_window_s`.
//!
//! Events go to every node on the pub/sub channel `P:events`; heartbeats
//! on `P:nodes`; questions between nodes on `P:commands`, answered on
//! `P:replies:<node>`. Connection counts are leased per node in
//! `P:node:<node>:users` and `P:node:<node>:ips`, the nodes with current
//! leases in `P:members` (see `super::leases`).

use redis::Script;

/// Where a channel's state lives; see the module documentation.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// What every key starts with (`cluster.key_prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The channel's epoch and last sequence.
    pub fn meta(&self, channel: &str) -> String {
        format!("{}:ch:{{{channel}}}:meta", self.prefix)
    }

    /// The channel's history.
    pub fn stream(&self, channel: &str) -> String {
        format!("{}:ch:{{{channel}}}:stream", self.prefix)
    }

    /// One idempotency key of the channel.
    pub fn idempotency(&self, channel: &str, key: &str) -> String {
        format!("{}:ch:{{{channel}}}:idem:{key}", self.prefix)
    }

    /// The pub/sub channel every event is published on.
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// `node`'s hash of connection counts of one kind (`users`, `ips`),
    /// leased (see `super::leases`).
    pub fn node_counts(&self, node: &str, kind: &str) -> String {
        format!("{}:node:{node}:{kind}", self.prefix)
    }

    /// The sorted set of nodes whose leases are current.
    pub fn members(&self) -> String {
        format!("{}:members", self.prefix)
    }

    /// The pub/sub channel of questions to every node.
    pub fn commands(&self) -> String {
        format!("{}:commands", self.prefix)
    }

    /// The pub/sub channel of answers to `node`'s questions.
    pub fn replies(&self, node: &str) -> String {
        format!("{}:replies:{node}", self.prefix)
    }

    /// The pub/sub channel of node heartbeats.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
}

/// Shared by both scripts: the Redis server's identity, and a channel's
/// epoch made sure of. A channel without state (never used, or lost:
/// restart without persistence, `FLUSHALL`), or whose epoch began on
/// another Redis server (a restart or failover, which may have lost the
/// last events even where the sequence survived), starts `candidate` as a
/// new epoch with an empty history.
const ENSURE_EPOCH: &str = r#"
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local function ensure(meta, stream, candidate)
  local m = redis.call('HMGET', meta, 'epoch', 'seq', 'run')
  if m[1] and m[3] == run_id then
    return m[1], tonumber(m[2])
  end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'epoch', candidate, 'seq', 0, 'run', run_id)
  return candidate, 0
end
"#;

/// Stamps a publish's events in order, all in one step, unless it comes
/// past its deadline (the node has given up on it, or is about to: see
/// `super::clock`), which is refused with an `EXPIRED` error and stamps
/// nothing. KEYS, per event: meta, stream, idempotency key (the meta key
/// again when it has none). ARGV: the events channel, this node, the time
/// in ms, the deadline in Redis's ms, then per event: channel, type, head,
/// tail, emitter, has-key, window ms, history, a candidate epoch. Answers
/// per event: epoch, sequence, repeated (0/1).
const APPEND: &str = r#"
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[4]) then
  return redis.error_reply('EXPIRED the publish reached Redis after its node gave up on it; nothing was stamped')
end
local out = {}
local n = (#ARGV - 4) / 9
for i = 0, n - 1 do
  local meta, stream, idem = KEYS[3*i+1], KEYS[3*i+2], KEYS[3*i+3]
  local a = 4 + 9*i
  local channel, etype, head, tail = ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4]
  local emitter, has_key, window = ARGV[a+5], ARGV[a+6], ARGV[a+7]
  local history, candidate = ARGV[a+8], ARGV[a+9]
  local epoch = ensure(meta, stream, candidate)
  local first = nil
  if has_key == '1' then
    local prev = redis.call('GET', idem)
    if prev then
      local e, s = string.match(prev, '^(.*):(%d+)$')
      if e == epoch then first = s end
    end
  end
  if first then
    table.insert(out, epoch); table.insert(out, first); table.insert(out, 1)
  else
    local seq = redis.call('HINCRBY', meta, 'seq', 1)
    local frame = head .. seq .. tail
    redis.call('XADD', stream, 'MAXLEN', history, seq .. '-1',
      'f', frame, 't', etype, 'a', ARGV[3], 'e', emitter, 'n', ARGV[2], 'p', epoch)
    if has_key == '1' then
      redis.call('SET', idem, epoch .. ':' .. seq, 'PX', window)
    end
    redis.call('PUBLISH', ARGV[1], channel .. '\n' .. epoch .. '\n' .. seq .. '\n' ..
      etype .. '\n' .. emitter .. '\n' .. ARGV[2] .. '\n' .. ARGV[3] .. '\n' .. frame)
    table.insert(out, epoch); table.insert(out, seq); table.insert(out, 0)
  end
end
return out
"#;

/// Every channel's position, epochs made sure of. KEYS, per channel: meta,
/// stream. ARGV, per channel: a candidate epoch. Answers per channel:
/// epoch, sequence.
const POSITIONS: &str = r#"
local out = {}
for i = 0, #ARGV - 1 do
  local epoch, seq = ensure(KEYS[2*i+1], KEYS[2*i+2], ARGV[i+1])
  table.insert(out, epoch); table.insert(out, seq)
end
return out
"#;

/// Starts a new epoch of a channel whose sequence in Redis went back
/// under the epoch a node holds (its keys restored from an older copy
/// into the running server, which keeps its `run_id`): positions of that
/// epoch would name two events. Only if it is still so, as another node
/// may have started one already. KEYS: meta, stream. ARGV: the epoch, the
/// sequence the node delivered, a candidate epoch. Answers the channel's
/// epoch and sequence.
const RESTART: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if m[1] == ARGV[1] and tonumber(m[2]) < tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[3], 'seq', 0, 'run', run_id)
  return {ARGV[3], 0}
end
local epoch, seq = ensure(KEYS[1], KEYS[2], ARGV[3])
return {epoch, seq}
"#;

/// The append script (see `APPEND`).
pub fn append() -> Script {
    Script::new(&format!("{ENSURE_EPOCH}{APPEND}"))
}

/// The positions script (see `POSITIONS`).
pub fn positions() -> Script {
    Script::new(&format!("{ENSURE_EPOCH}{POSITIONS}"))
}

/// The restart script (see `RESTART`).
pub fn restart() -> Script {
    Script::new(&format!("{ENSURE_EPOCH}{RESTART}"))
}
