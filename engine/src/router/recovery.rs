//! Recovery: what a connection missed on a channel, and what it was sent.
//!
//! A connection's record of what it was sent is kept compactly as
//! *coverage clauses* — "on channel C, every event with a sequence in
//! (from, to] that this subscription set matched was queued to it" — plus the
//! outbox's list of what it then dropped. Clauses change only when the
//! subscription set or the receivable channels change, so an idle or steady
//! connection holds one clause per channel, whatever the event rate.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::channel::Channel;
use super::channel::Stored;
use crate::config::ChannelConfig;
use crate::connection::Connection;
use crate::protocol::Position;
use crate::registry::Registry;
use crate::subscriptions::SubscriptionSet;

/// Events of `channel` in (from, to] matched by `subs` were queued.
#[derive(Debug)]
struct Clause {
    channel: Arc<str>,
    from: u64,
    to: Option<u64>,
    subs: Arc<SubscriptionSet>,
}

/// One connection's record of what it was sent.
#[derive(Debug, Default)]
pub(super) struct SentRecord {
    clauses: Vec<Clause>,
}

impl SentRecord {
    /// From `at` on, the connection receives `channel` through `subs`.
    pub(super) fn open(&mut self, channel: &Arc<str>, at: u64, subs: &Arc<SubscriptionSet>) {
        // Exactly as many as held: a record lives as long as its connection
        // and changes only on (un)subscribes and reloads.
        self.clauses.reserve_exact(1);
        self.clauses.push(Clause {
            channel: channel.clone(),
            from: at,
            to: None,
            subs: subs.clone(),
        });
    }

    /// Ends the open clause of `channel` at `at`.
    pub(super) fn close(&mut self, channel: &str, at: u64) {
        for c in self
            .clauses
            .iter_mut()
            .filter(|c| c.to.is_none() && *c.channel == *channel)
        {
            c.to = Some(at);
        }
        self.clauses.retain(|c| c.to.is_none_or(|to| to > c.from));
        self.clauses.shrink_to_fit();
    }

    /// Records that every event in (from, to] matched by `subs` was sent
    /// (live or replayed).
    pub(super) fn covered(
        &mut self,
        channel: &Arc<str>,
        from: u64,
        to: u64,
        subs: &Arc<SubscriptionSet>,
    ) {
        if to > from {
            self.clauses.push(Clause {
                channel: channel.clone(),
                from,
                to: Some(to),
                subs: subs.clone(),
            });
        }
    }

    /// Forgets a channel that no longer exists: a channel re-added later is
    /// a new incarnation whose sequences mean other events.
    pub(super) fn forget(&mut self, channel: &str) {
        self.clauses.retain(|c| *c.channel != *channel);
    }

    /// Forgets closed clauses that end before `oldest` (nothing there can
    /// be replayed any more).
    pub(super) fn prune(&mut self, channel: &str, oldest: u64) {
        self.clauses
            .retain(|c| *c.channel != *channel || c.to.is_none_or(|to| to >= oldest));
    }

    fn queued(&self, channel: &str, sequence: u64, type_name: &str, registry: &Registry) -> bool {
        let Some(t) = registry.resolve(type_name) else {
            return false;
        };
        self.clauses.iter().any(|c| {
            *c.channel == *channel
                && sequence > c.from
                && c.to.is_none_or(|to| sequence <= to)
                && c.subs.wants(t)
        })
    }
}

/// Why a channel could not be recovered.
pub(super) type Reason = &'static str;

/// What to replay on one channel, or why it cannot be recovered.
pub(super) fn plan(
    ch: &Channel,
    settings: &ChannelConfig,
    pos: &Position,
    subs: &SubscriptionSet,
    record: &SentRecord,
    conn: &Connection,
    registry: &Registry,
) -> Result<Vec<Stored>, Reason> {
    if *ch.epoch() != pos.epoch {
        return Err("epoch_changed");
    }
    if pos.sequence > ch.sequence() {
        return Err("invalid_position");
    }
    let ttl = (settings.history_ttl_s > 0).then(|| Duration::from_secs(settings.history_ttl_s));
    let history = ch.recoverable(pos.sequence, ttl);
    let dropped = conn
        .outbox
        .dropped_after(ch.name(), pos.sequence)
        .ok_or("too_old")?;
    let needed = |sequence: u64, type_name: &str| {
        let wanted = registry.resolve(type_name).is_some_and(|t| subs.wants(t));
        let sent =
            record.queued(ch.name(), sequence, type_name, registry) && !dropped.contains(&sequence);
        wanted && !sent
    };
    let lost = history.lost.ok_or("too_old")?;
    if lost.iter().any(|(seq, t)| needed(*seq, t)) {
        return Err("too_old");
    }
    Ok(history
        .kept
        .into_iter()
        .filter(|s| needed(s.sequence, &s.type_name))
        .collect())
}

/// The sequences of a replay, to clear them from the drop record.
pub(super) fn sequences(replay: &[Stored]) -> HashSet<u64> {
    replay.iter().map(|s| s.sequence).collect()
}
