//! A channel's state in this process: epoch, sequence, history and
//! idempotency keys, outliving reloads.
//!
//! An event joins a channel in one of two ways. With the memory engine the
//! channel stamps it ([`Channel::append`]); with a cluster engine it was
//! stamped elsewhere and the channel is a copy of the shared log that
//! checks continuity ([`Channel::accept`]): the next sequence is delivered,
//! a repeat skipped, a gap reported to be filled first. Either way the
//! channel's mutex is held while an event is kept *and* handed over to the
//! fan-out, so every recipient sees a channel's events in sequence order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use rand::distr::{Alphanumeric, SampleString};

use crate::config::ChannelConfig;
use crate::text::Text;

use super::log::{Appended, Received, Sequenced};

/// How many idempotency keys a channel remembers at most (oldest forgotten first).
const MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// How many evicted events' types a channel remembers, so that recovery can
/// tell whether anything a client wants was lost (beyond that: `too_old`).
const MAX_EVICTED: usize = 65_536;
/// How many replaced epochs a channel remembers, so that a late event of
/// one is skipped rather than taken for a newer epoch.
const MAX_RETIRED_EPOCHS: usize = 16;

/// A channel's live state.
#[derive(Debug)]
pub struct Channel {
    /// The channel name.
    pub name: Arc<str>,
    inner: Mutex<Inner>,
}

/// One event for the memory engine to stamp.
pub struct Appending<'a> {
    /// Its canonical type name, remembered in history for recovery.
    pub type_name: &'a Arc<str>,
    /// Its `idempotency_key`, if it has one.
    pub idempotency_key: Option<&'a str>,
    /// How long a key is remembered (`server.idempotency_window_s`).
    pub idempotency_window: Duration,
    /// Renders the envelope once the sequence is known.
    pub render: &'a dyn Fn(u64) -> Text,
    /// The channel's settings in force: its history bounds.
    pub settings: &'a ChannelConfig,
}

/// One event kept for recovery.
#[derive(Clone, Debug)]
pub struct Stored {
    /// Its sequence on the channel.
    pub sequence: u64,
    /// Its canonical type name.
    pub type_name: Arc<str>,
    /// The serialized envelope.
    pub frame: Text,
    /// When it was accepted.
    pub at: Instant,
}

/// An event handed to [`Channel::accept`] starts an epoch the channel has
/// not had: the channel must be reset to it first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewEpoch;

/// What history can say about the events after a position.
#[derive(Debug)]
pub struct Recoverable {
    /// Events still kept, oldest first.
    pub kept: Vec<Stored>,
    /// Types of the events after the position that are no longer kept, in
    /// order; `None` when not even their types are remembered.
    pub lost: Option<Vec<(u64, Arc<str>)>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The epoch: new whenever the channel's history is lost; never reused.
    epoch: Arc<str>,
    /// Epochs this channel had before, newest last.
    retired: VecDeque<Arc<str>>,
    sequence: u64,
    /// Events up to this sequence were lost without even their types
    /// known (a cluster gap history could not fill): recovery from before
    /// it is `too_old`.
    forgotten: u64,
    history: VecDeque<Stored>,
    history_bytes: usize,
    /// Sequence and type of events no longer in history, oldest first.
    evicted: VecDeque<(u64, Arc<str>)>,
    idempotency: HashMap<String, (u64, Instant)>,
    idempotency_order: VecDeque<(String, Instant)>,
}

/// The channel locked for stamping: sequence, history and idempotency keys
/// (its epoch is read through it, never through [`Channel::epoch`], which
/// would lock again).
struct Stamping<'a> {
    inner: MutexGuard<'a, Inner>,
}

impl Inner {
    /// Whether `epoch` is neither the channel's current one nor one it
    /// had before.
    fn is_new_epoch(&self, epoch: &str) -> bool {
        *self.epoch != *epoch && !self.retired.iter().any(|e| **e == *epoch)
    }
}

impl Channel {
    /// A channel with a fresh epoch, sequence 0 and empty history.
    pub fn new(name: &str) -> Channel {
        Channel {
            name: name.into(),
            inner: Mutex::new(Inner {
                epoch: fresh_epoch().into(),
                ..Inner::default()
            }),
        }
    }

    /// Locks the channel to stamp events; hand over while holding it.
    fn lock(&self) -> Stamping<'_> {
        Stamping {
            inner: self.inner.lock(),
        }
    }

    /// The events kept in history with a sequence above `after`, oldest first.
    #[cfg(test)]
    fn history_after(&self, after: u64) -> Vec<Stored> {
        self.recoverable(after, None).kept
    }

    /// The channel's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The current epoch.
    pub fn epoch(&self) -> Arc<str> {
        self.inner.lock().epoch.clone()
    }

    /// The last sequence kept under the current epoch (0 if none yet).
    pub fn sequence(&self) -> u64 {
        self.inner.lock().sequence
    }

    /// The oldest sequence still kept or remembered as evicted.
    pub fn oldest_kept(&self) -> u64 {
        let inner = self.inner.lock();
        inner
            .evicted
            .front()
            .map(|(seq, _)| *seq)
            .or_else(|| inner.history.front().map(|s| s.sequence))
            .unwrap_or(inner.sequence)
    }

    /// Everything after `after`: what is kept (none older than `ttl`) and
    /// what was lost.
    pub fn recoverable(&self, after: u64, ttl: Option<Duration>) -> Recoverable {
        let inner = self.inner.lock();
        let expired = |s: &Stored| ttl.is_some_and(|ttl| s.at.elapsed() > ttl);
        let mut lost: Vec<(u64, Arc<str>)> = inner
            .evicted
            .iter()
            .filter(|(seq, _)| *seq > after)
            .cloned()
            .collect();
        let mut kept = Vec::new();
        for s in inner.history.iter().filter(|s| s.sequence > after) {
            if expired(s) {
                lost.push((s.sequence, s.type_name.clone()));
            } else {
                kept.push(s.clone());
            }
        }
        let first_known = inner
            .evicted
            .front()
            .map(|(seq, _)| *seq)
            .or_else(|| inner.history.front().map(|s| s.sequence))
            .unwrap_or(inner.sequence + 1);
        Recoverable {
            kept,
            lost: (after + 1 >= first_known && after >= inner.forgotten).then_some(lost),
        }
    }

    /// Stamps one event and hands it to `hand_over` in order (memory
    /// engine). An event whose key was appended within the window is not
    /// appended again: the answer is the first one's sequence.
    pub fn append(
        &self,
        event: Appending<'_>,
        hand_over: &mut dyn FnMut(&Stored, &Arc<str>),
    ) -> Appended {
        let mut stamping = self.lock();
        let key = event.idempotency_key;
        if let Some(first) = key.and_then(|k| stamping.idempotent(k, event.idempotency_window)) {
            return Appended::Repeated(first);
        }
        let sequence = stamping.next_sequence();
        if let Some(key) = key {
            stamping.remember_key(key, sequence);
        }
        let stored = Stored {
            sequence,
            type_name: event.type_name.clone(),
            frame: (event.render)(sequence),
            at: Instant::now(),
        };
        hand_over(&stored, &stamping.inner.epoch);
        stamping.keep(stored, event.settings);
        Appended::New(sequence)
    }

    /// Whether `epoch` is newer than the channel's: neither its current
    /// one nor one it had before.
    pub fn is_new_epoch(&self, epoch: &str) -> bool {
        self.inner.lock().is_new_epoch(epoch)
    }

    /// Starts `epoch` (cluster engine: the shared store lost the channel's
    /// state): sequence 0, history empty, the old epoch retired.
    pub fn reset(&self, epoch: &str) {
        let mut inner = self.inner.lock();
        let old = std::mem::replace(&mut inner.epoch, epoch.into());
        inner.retired.push_back(old);
        if inner.retired.len() > MAX_RETIRED_EPOCHS {
            inner.retired.pop_front();
        }
        let retired = std::mem::take(&mut inner.retired);
        let epoch = inner.epoch.clone();
        *inner = Inner {
            epoch,
            retired,
            ..Inner::default()
        };
    }

    /// Takes an event stamped elsewhere (cluster engine) if it is the next
    /// one: kept, and handed to `hand_over`. See [`Received`]; `Err` when
    /// the event starts an epoch the channel has not had yet, which the
    /// caller [resets](Self::reset) it to before handing the event in again.
    /// One look under the lock decides both, so that receiving an event
    /// locks its channel once.
    pub fn accept(
        &self,
        event: &Sequenced,
        settings: &ChannelConfig,
        hand_over: &mut dyn FnMut(&Stored, &Arc<str>),
    ) -> Result<Received, NewEpoch> {
        let mut stamping = self.lock();
        let inner = &*stamping.inner;
        if inner.is_new_epoch(&event.epoch) {
            return Err(NewEpoch);
        }
        if *inner.epoch != *event.epoch || event.sequence <= inner.sequence {
            return Ok(Received::Stale);
        }
        if event.sequence > inner.sequence + 1 {
            return Ok(Received::Missing {
                after: inner.sequence,
            });
        }
        stamping.inner.sequence = event.sequence;
        let stored = Stored {
            sequence: event.sequence,
            type_name: event.type_name.as_str().into(),
            frame: event.frame.clone(),
            at: Instant::now()
                .checked_sub(event.age)
                .unwrap_or_else(Instant::now),
        };
        hand_over(&stored, &stamping.inner.epoch);
        stamping.keep(stored, settings);
        Ok(Received::Delivered)
    }

    /// Declares the events after the last delivered one up to `until` lost
    /// (cluster engine: history no longer holds them); the next one
    /// expected is `until + 1`.
    pub fn lose(&self, until: u64) {
        let mut inner = self.inner.lock();
        if until > inner.sequence {
            inner.sequence = until;
            inner.forgotten = until;
        }
    }
}

impl Stamping<'_> {
    /// The sequence the next event will get.
    pub fn next_sequence(&mut self) -> u64 {
        self.inner.sequence += 1;
        self.inner.sequence
    }

    /// The first sequence stamped under `key` within `window`, if any.
    pub fn idempotent(&mut self, key: &str, window: Duration) -> Option<u64> {
        let now = Instant::now();
        let inner = &mut *self.inner;
        while let Some((old, at)) = inner.idempotency_order.front() {
            if now.duration_since(*at) <= window
                && inner.idempotency_order.len() <= MAX_IDEMPOTENCY_KEYS
            {
                break;
            }
            if inner.idempotency.get(old).is_some_and(|(_, t)| t == at) {
                inner.idempotency.remove(old);
            }
            inner.idempotency_order.pop_front();
        }
        inner.idempotency.get(key).map(|(seq, _)| *seq)
    }

    /// Remembers that `key` was stamped as `sequence`.
    pub fn remember_key(&mut self, key: &str, sequence: u64) {
        let now = Instant::now();
        self.inner
            .idempotency
            .insert(key.to_owned(), (sequence, now));
        self.inner
            .idempotency_order
            .push_back((key.to_owned(), now));
    }

    /// Keeps `stored` in history within the channel's bounds.
    pub fn keep(&mut self, stored: Stored, settings: &ChannelConfig) {
        let inner = &mut *self.inner;
        if settings.history == 0 {
            evict(inner, stored.sequence, stored.type_name);
            return;
        }
        inner.history_bytes += stored.frame.len();
        inner.history.push_back(stored);
        let ttl = Duration::from_secs(settings.history_ttl_s);
        while let Some(front) = inner.history.front() {
            let too_many = inner.history.len() > settings.history;
            let too_big = inner.history_bytes > settings.history_max_bytes;
            let too_old = settings.history_ttl_s > 0 && front.at.elapsed() > ttl;
            if !(too_many || too_big || too_old) {
                break;
            }
            inner.history_bytes -= front.frame.len();
            let gone = inner.history.pop_front().expect("front exists");
            evict(inner, gone.sequence, gone.type_name);
        }
    }
}

/// Remembers the type of an event that left history.
fn evict(inner: &mut Inner, sequence: u64, type_name: Arc<str>) {
    inner.evicted.push_back((sequence, type_name));
    if inner.evicted.len() > MAX_EVICTED {
        inner.evicted.pop_front();
    }
}

/// A fresh epoch: 16 random alphanumerics, so never reused in practice
/// (a cluster engine draws its candidates here too).
pub fn fresh_epoch() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64) -> Stored {
        Stored {
            sequence: seq,
            type_name: "alert.created".into(),
            frame: Text::from(format!("event {seq}")),
            at: Instant::now(),
        }
    }

    #[test]
    fn sequences_start_at_one_and_have_no_gap() {
        let ch = Channel::new("alerts");
        let mut s = ch.lock();
        assert_eq!(s.next_sequence(), 1);
        assert_eq!(s.next_sequence(), 2);
        drop(s);
        assert_eq!(ch.sequence(), 2);
    }

    #[test]
    fn epochs_differ_between_channels_and_incarnations() {
        assert_ne!(Channel::new("a").epoch(), Channel::new("a").epoch());
        assert!(Channel::new("a")
            .epoch()
            .chars()
            .all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn history_keeps_the_last_n_events() {
        let ch = Channel::new("alerts");
        let mut settings = ChannelConfig::with_defaults("alerts");
        settings.history = 3;
        let mut s = ch.lock();
        for seq in 1..=5 {
            s.keep(stored(seq), &settings);
        }
        drop(s);
        let seqs: Vec<u64> = ch.history_after(0).iter().map(|s| s.sequence).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        assert_eq!(ch.history_after(4).len(), 1);
    }

    #[test]
    fn recovery_knows_what_was_lost() {
        let ch = Channel::new("alerts");
        let mut settings = ChannelConfig::with_defaults("alerts");
        settings.history = 2;
        let mut s = ch.lock();
        for seq in 1..=4 {
            s.next_sequence();
            s.keep(stored(seq), &settings);
        }
        drop(s);
        let r = ch.recoverable(1, None);
        assert_eq!(
            r.kept.iter().map(|s| s.sequence).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(
            r.lost
                .unwrap()
                .iter()
                .map(|(seq, _)| *seq)
                .collect::<Vec<_>>(),
            vec![2]
        );
        assert!(ch.recoverable(4, None).kept.is_empty());
        let expired = ch.recoverable(0, Some(Duration::ZERO));
        assert!(expired.kept.is_empty());
        assert_eq!(expired.lost.unwrap().len(), 4);
    }

    #[test]
    fn history_zero_keeps_nothing() {
        let ch = Channel::new("alerts");
        let mut settings = ChannelConfig::with_defaults("alerts");
        settings.history = 0;
        ch.lock().keep(stored(1), &settings);
        assert!(ch.history_after(0).is_empty());
    }

    #[test]
    fn idempotency_keys_return_the_first_sequence() {
        let ch = Channel::new("alerts");
        let mut s = ch.lock();
        let window = Duration::from_secs(300);
        assert_eq!(s.idempotent("k", window), None);
        s.remember_key("k", 7);
        assert_eq!(s.idempotent("k", window), Some(7));
        assert_eq!(s.idempotent("k", Duration::ZERO), None);
    }

    fn append(ch: &Channel, key: Option<&str>, seen: &mut Vec<u64>) -> Appended {
        let settings = ChannelConfig::with_defaults("alerts");
        let type_name: Arc<str> = "alert.created".into();
        let render = |seq| Text::from(format!("event {seq}"));
        let appending = Appending {
            type_name: &type_name,
            idempotency_key: key,
            idempotency_window: Duration::from_secs(300),
            render: &render,
            settings: &settings,
        };
        ch.append(appending, &mut |stored, _| seen.push(stored.sequence))
    }

    #[test]
    fn appends_are_handed_over_in_order_and_kept() {
        let ch = Channel::new("alerts");
        let mut seen = Vec::new();
        for expected in 1..=3 {
            assert_eq!(append(&ch, None, &mut seen), Appended::New(expected));
        }
        assert_eq!(seen, [1, 2, 3]);
        let kept = ch.recoverable(0, None).kept;
        assert_eq!(
            kept.iter().map(|s| s.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(&*kept[1].frame, "event 2", "rendered with its own sequence");
        assert_eq!(ch.sequence(), 3);
    }

    #[test]
    fn a_repeated_key_is_answered_with_its_first_sequence_and_not_handed_over() {
        let ch = Channel::new("alerts");
        let mut seen = Vec::new();
        assert_eq!(append(&ch, Some("k"), &mut seen), Appended::New(1));
        assert_eq!(append(&ch, None, &mut seen), Appended::New(2));
        assert_eq!(append(&ch, Some("k"), &mut seen), Appended::Repeated(1));
        assert_eq!(seen, [1, 2]);
        assert_eq!(ch.sequence(), 2);
    }
}
