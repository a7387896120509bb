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

/// Closed clauses a record keeps, over all its channels. Each may hold a
/// subscription set of its own (up to `max_patterns` × `max_pattern_bytes`),
/// so a client that changed its patterns on a busy channel would otherwise
/// make the router keep one set per change, for as far back as history
/// reaches; past this, the oldest are let go and what they recorded is
/// no longer known.
const MAX_CLOSED: usize = 16;

/// One connection's record of what it was sent.
#[derive(Debug, Default)]
pub(super) struct SentRecord {
    clauses: Vec<Clause>,
    /// Per channel, the sequence up to which what was sent is no longer
    /// known (its clauses were let go past [`MAX_CLOSED`]): recovery from
    /// before it answers `too_old` rather than guess. Usually empty.
    forgotten: Box<[(Arc<str>, u64)]>,
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
        self.keep_bounded();
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
            self.keep_bounded();
        }
    }

    /// Forgets a channel that no longer exists: a channel re-added later is
    /// a new incarnation whose sequences mean other events.
    pub(super) fn forget(&mut self, channel: &str) {
        self.clauses.retain(|c| *c.channel != *channel);
        self.keep_forgotten(|ch, _| *ch != *channel);
    }

    /// Forgets closed clauses that end before `oldest` (nothing there can
    /// be replayed any more).
    pub(super) fn prune(&mut self, channel: &str, oldest: u64) {
        self.clauses
            .retain(|c| *c.channel != *channel || c.to.is_none_or(|to| to >= oldest));
        self.keep_forgotten(|ch, at| *ch != *channel || at >= oldest);
    }

    /// Up to which sequence of `channel` what was sent is no longer known
    /// (0: all of it is).
    pub(super) fn unknown_through(&self, channel: &str) -> u64 {
        self.forgotten
            .iter()
            .find(|(ch, _)| **ch == *channel)
            .map_or(0, |(_, at)| *at)
    }

    /// Lets the oldest closed clauses go past [`MAX_CLOSED`], noting up to
    /// where each channel's record is then unknown.
    fn keep_bounded(&mut self) {
        let closed = self.clauses.iter().filter(|c| c.to.is_some()).count();
        for _ in MAX_CLOSED..closed {
            let Some(oldest) = self.clauses.iter().position(|c| c.to.is_some()) else {
                return;
            };
            let gone = self.clauses.remove(oldest);
            let through = gone.to.unwrap_or(gone.from);
            let mut forgotten = std::mem::take(&mut self.forgotten).into_vec();
            match forgotten.iter_mut().find(|(ch, _)| *ch == gone.channel) {
                Some((_, at)) => *at = (*at).max(through),
                None => forgotten.push((gone.channel, through)),
            }
            self.forgotten = forgotten.into_boxed_slice();
        }
    }

    fn keep_forgotten(&mut self, keep: impl Fn(&str, u64) -> bool) {
        if self.forgotten.iter().any(|(ch, at)| !keep(ch, *at)) {
            let kept = std::mem::take(&mut self.forgotten).into_vec();
            self.forgotten = kept.into_iter().filter(|(ch, at)| keep(ch, *at)).collect();
        }
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
    if pos.sequence < record.unknown_through(ch.name()) {
        return Err("too_old");
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A client changing its patterns on a busy channel, an event between
    /// each change, leaves one closed clause per change: the record keeps
    /// [`MAX_CLOSED`] of them, and what the ones let go recorded is known
    /// to be unknown.
    #[test]
    fn a_record_keeps_a_bounded_number_of_clauses() {
        let channel: Arc<str> = "alerts".into();
        let mut record = SentRecord::default();
        record.open(&channel, 0, &Arc::new(SubscriptionSet::default()));
        for at in 1..=100 {
            record.close(&channel, at);
            record.open(&channel, at, &Arc::new(SubscriptionSet::default()));
        }
        assert_eq!(record.clauses.len(), MAX_CLOSED + 1, "and the open one");
        assert_eq!(record.unknown_through("alerts"), 100 - MAX_CLOSED as u64);
        assert_eq!(record.unknown_through("jobs"), 0);
        let recent = &record.clauses[0];
        assert_eq!((recent.from, recent.to), (84, Some(85)));

        record.prune("alerts", 90);
        assert_eq!(record.unknown_through("alerts"), 0, "history has moved on");
        record.covered(&channel, 100, 101, &Arc::new(SubscriptionSet::default()));
        record.forget("alerts");
        assert!(record.clauses.is_empty() && record.forgotten.is_empty());
    }
}
