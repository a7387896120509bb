//! Where a publish is stamped in Redis: one script call per publish, all of
//! its events or none, answered to the publisher only once Redis took it.
//! Concurrent publishes share one connection, so they are pipelined.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;

use super::scripts;
use super::Shared;
use crate::router::{fresh_epoch, Appended, Batch, LogError, Placed, Sequencer, Settle};

/// Stamps batches through the append script.
#[derive(Debug)]
pub struct RedisSequencer {
    shared: Arc<Shared>,
    script: Arc<redis::Script>,
    runtime: tokio::runtime::Handle,
}

impl RedisSequencer {
    /// A sequencer on `shared`'s connection, spawning on the current runtime.
    pub fn new(shared: Arc<Shared>) -> RedisSequencer {
        RedisSequencer {
            shared,
            script: Arc::new(scripts::append()),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl Sequencer for RedisSequencer {
    fn node(&self) -> &str {
        &self.shared.node
    }

    fn sequence(&self, batch: Batch, settle: Settle) {
        let channel = batch
            .events
            .first()
            .map(|e| e.channel.to_string())
            .unwrap_or_default();
        if let Err(reason) = self.shared.health.status() {
            settle(Err(LogError::Unavailable { channel, reason }));
            return;
        }
        let shared = self.shared.clone();
        let script = self.script.clone();
        self.runtime.spawn(async move {
            let result = append(&shared, &script, &batch).await;
            settle(result.map_err(|e| LogError::Unavailable {
                channel,
                reason: format!("Redis at {} answered: {e}", shared.url),
            }));
        });
    }
}

/// Runs the append script for `batch`.
async fn append(
    shared: &Shared,
    script: &redis::Script,
    batch: &Batch,
) -> redis::RedisResult<Vec<Placed>> {
    let keys = &shared.keys;
    let mut call = script.prepare_invoke();
    call.arg(keys.events())
        .arg(&shared.origin)
        .arg(unix_millis())
        .arg(shared.clock.deadline_ms());
    let window = batch.idempotency_window.as_millis().max(1) as u64;
    for e in &batch.events {
        let meta = keys.meta(&e.channel);
        call.key(&meta).key(keys.stream(&e.channel));
        match &e.idempotency_key {
            Some(key) => call.key(keys.idempotency(&e.channel, key)),
            None => call.key(&meta),
        };
        call.arg(&*e.channel)
            .arg(&*e.type_name)
            .arg(&e.head)
            .arg(&e.tail)
            .arg(e.emitter.as_deref().unwrap_or(""))
            .arg(if e.idempotency_key.is_some() {
                "1"
            } else {
                "0"
            })
            .arg(window)
            .arg(e.history)
            .arg(fresh_epoch());
    }
    let mut conn = shared.conn.clone();
    let answer: Vec<Value> = call.invoke_async(&mut conn).await?;
    answer
        .chunks(3)
        .map(|each| {
            let epoch: String = redis::from_redis_value_ref(&each[0])?;
            let sequence = number(&each[1])?;
            let appended = if number(&each[2])? == 1 {
                Appended::Repeated(sequence)
            } else {
                Appended::New(sequence)
            };
            Ok(Placed {
                appended,
                epoch: epoch.into(),
            })
        })
        .collect()
}

/// A number Lua answered as an integer or a string.
fn number(value: &Value) -> redis::RedisResult<u64> {
    Ok(redis::from_redis_value_ref(value)?)
}

/// Milliseconds since the Unix epoch: when the event was accepted.
pub(super) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
