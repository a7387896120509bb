//! The counting itself, free of threads and clocks: every method takes the
//! current time (milliseconds since the Unix epoch), so tests drive it with
//! any clock they like.
//!
//! Each series (hourly, daily) keeps its open periods in order. A period is
//! `[start, start + period)` with `start` a multiple of the period since the
//! epoch. An event counts in the period holding its router `timestamp`
//! (when that period is still open; otherwise in the oldest open one). A
//! period is due once its end plus a short settling time has passed, so that
//! events accepted just before the boundary and delivered just after it
//! still count where they belong.

use std::collections::{BTreeMap, VecDeque};

use chrono::DateTime;
use serde_json::{json, Value};
use switchyard_plugin_api::timestamp;

use crate::config::Config;
use crate::OTHER_KEY;

/// The most periods of one series that a jump of the clock (or a machine
/// that slept) makes due at once; older empty periods are skipped.
const MAX_CATCHUP: i64 = 24;

/// Which summary a period feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `summary.hourly` (`hourly_period_s`).
    Hourly,
    /// `summary.daily` (`daily_period_s`).
    Daily,
}

impl Kind {
    /// The event type this kind of summary is emitted as.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::Hourly => crate::SUMMARY_HOURLY,
            Kind::Daily => crate::SUMMARY_DAILY,
        }
    }
}

/// What one routed event contributes to the counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The canonical event type (`alert.created`).
    pub event_type: String,
    /// `payload.camera_id`, when present.
    pub camera_id: Option<String>,
    /// `payload.severity`, when present.
    pub severity: Option<String>,
    /// When the router accepted it, in ms since the epoch (`None`: unknown,
    /// counted at the time of delivery).
    pub at_ms: Option<i64>,
}

/// The counts of one period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events counted.
    pub total: u64,
    /// By event type.
    pub by_type: BTreeMap<String, u64>,
    /// By `payload.camera_id` (events without one are not in it).
    pub by_camera: BTreeMap<String, u64>,
    /// By `payload.severity` (events without one are not in it).
    pub by_severity: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, obs: &Observation, max_keys: usize) {
        self.total += 1;
        bump(&mut self.by_type, &obs.event_type, max_keys);
        if let Some(camera) = &obs.camera_id {
            bump(&mut self.by_camera, camera, max_keys);
        }
        if let Some(severity) = &obs.severity {
            bump(&mut self.by_severity, severity, max_keys);
        }
    }
}

/// Counts `key`, or [`OTHER_KEY`] once `max_keys` distinct keys are held.
fn bump(map: &mut BTreeMap<String, u64>, key: &str, max_keys: usize) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
        return;
    }
    let held = map.len() - usize::from(map.contains_key(OTHER_KEY));
    let key = if held < max_keys { key } else { OTHER_KEY };
    *map.entry(key.to_owned()).or_insert(0) += 1;
}

/// One finished period, ready to emit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Hourly or daily.
    pub kind: Kind,
    /// Period start, ms since the epoch (a multiple of the period).
    pub start_ms: i64,
    /// Period end (exclusive), ms since the epoch.
    pub end_ms: i64,
    /// Counting began after `start_ms` (the plugin started mid-period).
    pub partial: bool,
    /// What was counted.
    pub counts: Counts,
}

impl Summary {
    /// The event payload (see the crate documentation).
    pub fn payload(&self) -> Value {
        json!({
            "period_start": rfc3339(self.start_ms),
            "period_end": rfc3339(self.end_ms),
            "total": self.counts.total,
            "by_type": self.counts.by_type,
            "by_camera": self.counts.by_camera,
            "by_severity": self.counts.by_severity,
            "partial": self.partial,
        })
    }
}

/// Milliseconds since the Unix epoch as an event [`timestamp`] (RFC 3339
/// UTC with milliseconds and `Z`, like the envelope's `timestamp`); one out
/// of chrono's range reads as the epoch.
pub fn rfc3339(ms: i64) -> String {
    timestamp(DateTime::from_timestamp_millis(ms).unwrap_or_default())
}

/// The start of the period holding `t`.
pub fn period_start(t: i64, period: i64) -> i64 {
    t.div_euclid(period) * period
}

#[derive(Debug)]
struct Open {
    start: i64,
    partial: bool,
    counts: Counts,
}

/// The open periods of one kind, oldest first (never empty).
#[derive(Debug)]
struct Series {
    kind: Kind,
    period: i64,
    open: VecDeque<Open>,
}

impl Series {
    fn new(kind: Kind, period_s: u64, now: i64) -> Series {
        let period = i64::try_from(period_s.saturating_mul(1000)).unwrap_or(i64::MAX / 4);
        let start = period_start(now, period);
        let mut open = VecDeque::new();
        open.push_back(Open {
            start,
            partial: start != now,
            counts: Counts::default(),
        });
        Series { kind, period, open }
    }

    fn newest_start(&self) -> i64 {
        self.open.back().map_or(i64::MIN, |o| o.start)
    }

    /// Opens every period up to the one holding `now`.
    fn advance(&mut self, now: i64) {
        let target = period_start(now, self.period);
        let mut next = self.newest_start() + self.period;
        if target < next {
            return;
        }
        next = next.max(target - (MAX_CATCHUP - 1) * self.period);
        while next <= target {
            self.open.push_back(Open {
                start: next,
                partial: false,
                counts: Counts::default(),
            });
            next += self.period;
        }
    }

    fn record(&mut self, obs: &Observation, now: i64, max_keys: usize) {
        self.advance(now);
        let at = obs.at_ms.unwrap_or(now);
        let open = match self.open.iter().rposition(|o| o.start <= at) {
            Some(i) => &mut self.open[i],
            // Older than every open period: a late event counts in the oldest.
            None => &mut self.open[0],
        };
        open.counts.add(obs, max_keys);
    }

    /// Removes and returns the periods that ended at least `settle` ms ago.
    fn take_due(&mut self, now: i64, settle: i64, out: &mut Vec<Summary>) {
        self.advance(now);
        while self.open.len() > 1 && self.open[0].start + self.period + settle <= now {
            let Some(done) = self.open.pop_front() else {
                break;
            };
            out.push(Summary {
                kind: self.kind,
                start_ms: done.start,
                end_ms: done.start + self.period,
                partial: done.partial,
                counts: done.counts,
            });
        }
    }

    fn next_due(&self, settle: i64) -> i64 {
        self.open
            .front()
            .map_or(i64::MAX, |o| o.start + self.period)
            + settle
    }
}

/// The hourly and daily counts of one running instance.
#[derive(Debug)]
pub struct Tally {
    hourly: Series,
    daily: Series,
    max_keys: usize,
    settle_ms: i64,
    ignored: u64,
}

impl Tally {
    /// Starts counting at `now`: the first period of each series is partial
    /// unless `now` is exactly on its boundary. A period is due `settle_ms`
    /// after it ends.
    pub fn new(config: &Config, now: i64, settle_ms: i64) -> Tally {
        Tally {
            hourly: Series::new(Kind::Hourly, config.hourly_period_s, now),
            daily: Series::new(Kind::Daily, config.daily_period_s, now),
            max_keys: config.max_keys,
            settle_ms,
            ignored: 0,
        }
    }

    /// Counts one event, delivered at `now`. `summary.*` events are ignored
    /// (returns false).
    pub fn record(&mut self, obs: &Observation, now: i64) -> bool {
        if obs.event_type.starts_with("summary.") {
            self.ignored += 1;
            return false;
        }
        self.hourly.record(obs, now, self.max_keys);
        self.daily.record(obs, now, self.max_keys);
        true
    }

    /// Removes and returns every period that ended (and settled) by `now`,
    /// oldest first within each series, hourly before daily.
    pub fn take_due(&mut self, now: i64) -> Vec<Summary> {
        let mut out = Vec::new();
        self.hourly.take_due(now, self.settle_ms, &mut out);
        self.daily.take_due(now, self.settle_ms, &mut out);
        out
    }

    /// Removes and returns every period that ended by `now`, without waiting
    /// for it to settle (used at stop). The period holding `now` stays.
    pub fn take_ended(&mut self, now: i64) -> Vec<Summary> {
        let mut out = Vec::new();
        self.hourly.take_due(now, 0, &mut out);
        self.daily.take_due(now, 0, &mut out);
        out
    }

    /// When the next period becomes due (ms since the epoch).
    pub fn next_due(&self) -> i64 {
        self.hourly
            .next_due(self.settle_ms)
            .min(self.daily.next_due(self.settle_ms))
    }

    /// `summary.*` events ignored so far.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: i64 = 250;

    fn config(hourly: u64, daily: u64) -> Config {
        Config {
            hourly_period_s: hourly,
            daily_period_s: daily,
            max_keys: 256,
        }
    }

    fn obs(t: &str, camera: Option<&str>, severity: Option<&str>, at: i64) -> Observation {
        Observation {
            event_type: t.to_owned(),
            camera_id: camera.map(str::to_owned),
            severity: severity.map(str::to_owned),
            at_ms: Some(at),
        }
    }

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    }

    /// 2026-11-23T06:00:00Z in ms.
    const T0: i64 = 1_795_413_600_000;

    #[test]
    fn periods_align_to_multiples_of_the_period_since_the_epoch() {
        assert_eq!(period_start(T0 + 1_234_567, 3_600_000), T0);
        assert_eq!(period_start(T0 + 3_600_000, 3_600_000), T0 + 3_600_000);
        assert_eq!(
            period_start(T0 + 5 * 3_600_000, 86_400_000),
            T0 - 6 * 3_600_000
        );
        assert_eq!(period_start(-1, 1000), -1000);
        assert_eq!(rfc3339(T0), "2026-11-23T06:00:00.000Z");
        // A 7 s period: boundaries at multiples of 7 s since the epoch.
        let start = period_start(T0 + 10_000, 7_000);
        assert_eq!(start % 7_000, 0);
        assert!(start <= T0 + 10_000 && T0 + 10_000 < start + 7_000);
    }

    #[test]
    fn the_first_period_after_start_is_partial_the_next_ones_are_not() {
        let start = T0 + 1_500; // mid-period for a 2 s period
        let mut tally = Tally::new(&config(2, 10), start, SETTLE);
        assert!(tally.take_due(T0 + 2_000).is_empty(), "not settled yet");
        assert_eq!(tally.next_due(), T0 + 2_000 + SETTLE);
        let due = tally.take_due(T0 + 2_000 + SETTLE);
        assert_eq!(due.len(), 1);
        let first = &due[0];
        assert_eq!(first.kind, Kind::Hourly);
        assert_eq!((first.start_ms, first.end_ms), (T0, T0 + 2_000));
        assert!(first.partial);
        assert_eq!(first.counts.total, 0);
        let due = tally.take_due(T0 + 4_300);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].start_ms, due[0].partial), (T0 + 2_000, false));
        // The daily (10 s) series: its first period [T0, T0+10s) is partial too.
        let due = tally.take_due(T0 + 10_000 + SETTLE);
        let kinds: Vec<(Kind, i64, bool)> = due
            .iter()
            .map(|s| (s.kind, s.start_ms, s.partial))
            .collect();
        assert_eq!(
            kinds,
            [
                (Kind::Hourly, T0 + 4_000, false),
                (Kind::Hourly, T0 + 6_000, false),
                (Kind::Hourly, T0 + 8_000, false),
                (Kind::Daily, T0, true),
            ]
        );
    }

    #[test]
    fn a_start_exactly_on_a_boundary_is_not_partial() {
        let mut tally = Tally::new(&config(2, 4), T0, SETTLE);
        let due = tally.take_due(T0 + 4_000 + SETTLE);
        assert_eq!(due.len(), 3);
        assert!(due.iter().all(|s| !s.partial), "{due:?}");
    }

    #[test]
    fn counts_by_type_camera_and_severity() {
        let mut tally = Tally::new(&config(3600, 86_400), T0 + 10, SETTLE);
        let now = T0 + 1_000;
        for o in [
            obs("alert.created", None, Some("high"), now),
            obs("alert.created", None, Some("low"), now),
            obs("alert.created", Some("front"), Some("high"), now),
            obs("detection.new", Some("front"), None, now),
            obs("detection.new", Some("back"), None, now),
            obs("job.progress", None, None, now),
        ] {
            assert!(tally.record(&o, now));
        }
        // Its own kind of event is ignored, defensively.
        assert!(!tally.record(&obs("summary.hourly", None, None, now), now));
        assert_eq!(tally.ignored(), 1);
        let due = tally.take_due(T0 + 86_400_000 + SETTLE);
        assert_eq!(due.len(), 25, "24 hourly periods and one day");
        let hour = &due[0];
        assert_eq!(hour.counts.total, 6);
        assert_eq!(
            hour.counts.by_type,
            counts(&[
                ("alert.created", 3),
                ("detection.new", 2),
                ("job.progress", 1)
            ])
        );
        assert_eq!(hour.counts.by_camera, counts(&[("back", 1), ("front", 2)]));
        assert_eq!(hour.counts.by_severity, counts(&[("high", 2), ("low", 1)]));
        assert!(due[1..24].iter().all(|s| s.counts.total == 0));
        let day = &due[24];
        assert_eq!(day.kind, Kind::Daily);
        assert_eq!(day.counts, hour.counts);
        // T0 is 06:00 UTC: the day is aligned to midnight UTC.
        assert_eq!(rfc3339(day.start_ms), "2026-11-23T00:00:00.000Z");
        assert_eq!(rfc3339(day.end_ms), "2026-11-24T00:00:00.000Z");
        let payload = hour.payload();
        assert_eq!(payload["period_start"], "2026-11-23T06:00:00.000Z");
        assert_eq!(payload["period_end"], "2026-11-23T07:00:00.000Z");
        assert_eq!(payload["total"], 6);
        assert_eq!(payload["by_severity"]["high"], 2);
        assert_eq!(payload["by_camera"]["front"], 2);
        assert_eq!(payload["partial"], true);
    }

    #[test]
    fn events_count_in_the_period_of_their_timestamp_while_it_is_open() {
        let mut tally = Tally::new(&config(2, 3600), T0 + 100, SETTLE);
        // Accepted just before the boundary, delivered just after it.
        assert!(tally.record(&obs("a.x", None, None, T0 + 1_999), T0 + 2_010));
        // Accepted after the boundary.
        assert!(tally.record(&obs("a.y", None, None, T0 + 2_001), T0 + 2_020));
        // No timestamp: the time of delivery.
        let mut untimed = obs("a.z", None, None, 0);
        untimed.at_ms = None;
        assert!(tally.record(&untimed, T0 + 2_030));
        let due = tally.take_due(T0 + 2_000 + SETTLE);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].counts.by_type, counts(&[("a.x", 1)]));
        // Too late for its period (already emitted): the oldest open one.
        assert!(tally.record(&obs("a.late", None, None, T0 + 1_500), T0 + 2_400));
        // A timestamp ahead of the clock: the newest open period.
        assert!(tally.record(&obs("a.future", None, None, T0 + 60_000), T0 + 2_500));
        let due = tally.take_due(T0 + 4_000 + SETTLE);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].counts.by_type,
            counts(&[("a.future", 1), ("a.late", 1), ("a.y", 1), ("a.z", 1)])
        );
    }

    #[test]
    fn stop_takes_ended_periods_but_never_the_current_half() {
        let mut tally = Tally::new(&config(2, 3600), T0 + 100, SETTLE);
        tally.record(&obs("a.x", None, None, T0 + 500), T0 + 500);
        tally.record(&obs("a.x", None, None, T0 + 2_050), T0 + 2_060);
        // 100 ms after the boundary: the ended period is not settled, but
        // stop takes it; the one in progress is left out.
        let ended = tally.take_ended(T0 + 2_100);
        assert_eq!(ended.len(), 1);
        assert_eq!((ended[0].start_ms, ended[0].counts.total), (T0, 1));
        assert!(tally.take_ended(T0 + 2_100).is_empty());
    }

    #[test]
    fn a_long_gap_emits_at_most_a_bounded_number_of_periods() {
        let mut tally = Tally::new(&config(1, 1_000_000), T0, SETTLE);
        let due = tally.take_due(T0 + 1_000_000 + SETTLE);
        assert_eq!(due.len() as i64, MAX_CATCHUP);
        assert_eq!(
            due[0].start_ms, T0,
            "the first period (with counts) is kept"
        );
        assert_eq!(due[1].start_ms, T0 + 977_000, "then the latest ones");
        let last = due.last().unwrap();
        assert_eq!(last.end_ms, T0 + 1_000_000);
    }

    #[test]
    fn breakdowns_are_bounded_by_max_keys() {
        let mut c = config(3600, 86_400);
        c.max_keys = 2;
        let mut tally = Tally::new(&c, T0, SETTLE);
        for cam in ["a", "b", "c", "d", "a"] {
            tally.record(&obs("x.y", Some(cam), None, T0), T0);
        }
        let due = tally.take_due(T0 + 3_600_000 + SETTLE);
        assert_eq!(
            due[0].counts.by_camera,
            counts(&[("a", 2), ("b", 1), (OTHER_KEY, 2)])
        );
        assert_eq!(due[0].counts.total, 5);
    }
}
