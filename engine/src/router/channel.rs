//! The in-memory [`ChannelLog`]: a channel's epoch, sequence, history and
//! idempotency keys in this process, outliving reloads.
//!
//! The channel's mutex is held while an event is stamped *and* handed over
//! to the fan-out, so every recipient sees a channel's events in sequence
//! order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use rand::distr::{Alphanumeric, SampleString};

use crate::config::ChannelConfig;
use crate::text::Text;

use super::log::{Appended, Appending, ChannelLog, LogError};

/// How many idempotency keys a channel remembers at most (oldest forgotten first).
const MAX_IDEMPOTENCY_KEYS: usize = 100_000;
/// How many evicted events' types a channel remembers, so that recovery can
/// tell whether anything a client wants was lost (beyond that: `too_old`).
const MAX_EVICTED: usize = 65_536;

/// A channel's live state.
#[derive(Debug)]
pub struct Channel {
    /// The channel name.
    pub name: Arc<str>,
    /// The epoch: new whenever the channel's history is lost; never reused.
    pub epoch: Arc<str>,
    inner: Mutex<Inner>,
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
    sequence: u64,
    history: VecDeque<Stored>,
    history_bytes: usize,
    /// Sequence and type of events no longer in history, oldest first.
    evicted: VecDeque<(u64, Arc<str>)>,
    idempotency: HashMap<String, (u64, Instant)>,
    idempotency_order: VecDeque<(String, Instant)>,
}

/// The channel locked for stamping: sequence, history and idempotency keys.
struct Stamping<'a> {
    inner: MutexGuard<'a, Inner>,
}

impl Channel {
    /// A channel with a fresh epoch, sequence 0 and empty history.
    pub fn new(name: &str) -> Channel {
        Channel {
            name: name.into(),
            epoch: new_epoch().into(),
            inner: Mutex::new(Inner::default()),
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
}

impl ChannelLog for Channel {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn epoch(&self) -> Arc<str> {
        self.epoch.clone()
    }

    /// The last assigned sequence (0 if none yet).
    fn sequence(&self) -> u64 {
        self.inner.lock().sequence
    }

    /// The oldest sequence still kept or remembered as evicted.
    fn oldest_kept(&self) -> u64 {
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
    fn recoverable(&self, after: u64, ttl: Option<Duration>) -> Recoverable {
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
            lost: (after + 1 >= first_known).then_some(lost),
        }
    }

    fn append(
        &self,
        event: Appending<'_>,
        hand_over: &mut dyn FnMut(&Stored),
    ) -> Result<Appended, LogError> {
        let mut stamping = self.lock();
        let key = event.idempotency_key;
        if let Some(first) = key.and_then(|k| stamping.idempotent(k, event.idempotency_window)) {
            return Ok(Appended::Repeated(first));
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
        hand_over(&stored);
        stamping.keep(stored, event.settings);
        Ok(Appended::New(sequence))
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

/// A fresh epoch: 16 random alphanumerics, so never reused in practice.
fn new_epoch() -> String {
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
        assert_ne!(Channel::new("a").epoch, Channel::new("a").epoch);
        assert!(Channel::new("a")
            .epoch
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
        ch.append(appending, &mut |stored| seen.push(stored.sequence))
            .unwrap()
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
