//! Batch aggregation: a pure state machine with time passed in, so tests
//! need no sleeping.
//!
//! Each camera has at most one open batch. Its first detection opens it
//! (`batch.opened`); while it is open, [`Batcher::tick`] reports growth with
//! at most one `batch.progress` per progress interval; it closes
//! (`detection.batch` then `batch.closed`) when `window` has passed since it
//! opened or `idle` has passed since its last detection, or on stop.
//!
//! Batch timing uses the arrival time of detections (a monotonic clock), not
//! their `detected_at`, so late or skewed client timestamps cannot close or
//! hold open a batch.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use switchyard_plugin_api::timestamp;

use crate::events::{new_id, BatchClosed, BatchOpened, BatchProgress, CloseReason, DetectionBatch};

/// A moment: the monotonic clock for timing, the wall clock for timestamps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Now {
    pub mono: Instant,
    pub wall: DateTime<Utc>,
}

impl Now {
    /// The current moment.
    pub fn system() -> Now {
        Now {
            mono: Instant::now(),
            wall: Utc::now(),
        }
    }
}

/// The batch timing settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub window: Duration,
    pub idle: Duration,
    pub progress_interval: Duration,
}

/// One event the batcher wants emitted.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Out {
    Opened(BatchOpened),
    Progress(BatchProgress),
    Batch(DetectionBatch),
    Closed(BatchClosed),
}

struct OpenBatch {
    batch_id: String,
    started: Instant,
    started_at: DateTime<Utc>,
    last_seen: Instant,
    last_detection_at: DateTime<Utc>,
    detection_ids: Vec<String>,
    labels: BTreeSet<String>,
    last_progress: Instant,
    reported: usize,
}

/// The open batches, by camera.
pub(crate) struct Batcher {
    timing: Timing,
    open: BTreeMap<String, OpenBatch>,
}

impl Batcher {
    /// No open batches.
    pub fn new(timing: Timing) -> Batcher {
        Batcher {
            timing,
            open: BTreeMap::new(),
        }
    }

    /// Adds a detection to its camera's batch, first closing that batch if
    /// it has expired and opening one if there is none. Returns the batch id
    /// the detection belongs to and the events to emit before it.
    pub fn on_detection(
        &mut self,
        now: Now,
        camera_id: &str,
        detection_id: &str,
        label: &str,
        detected_at: DateTime<Utc>,
    ) -> (String, Vec<Out>) {
        let mut out = Vec::new();
        if let Some(reason) = self.open.get(camera_id).and_then(|b| self.expiry(b, now)) {
            let batch = self.open.remove(camera_id).expect("batch is open");
            close(camera_id, batch, reason, now, &mut out);
        }
        let batch = self.open.entry(camera_id.to_owned()).or_insert_with(|| {
            let batch = OpenBatch {
                batch_id: new_id("batch"),
                started: now.mono,
                started_at: now.wall,
                last_seen: now.mono,
                last_detection_at: detected_at,
                detection_ids: Vec::new(),
                labels: BTreeSet::new(),
                last_progress: now.mono,
                // batch.opened reports the first detection.
                reported: 1,
            };
            out.push(Out::Opened(BatchOpened {
                batch_id: batch.batch_id.clone(),
                camera_id: camera_id.to_owned(),
                started_at: timestamp(now.wall),
            }));
            batch
        });
        batch.last_seen = now.mono;
        batch.last_detection_at = detected_at;
        batch.detection_ids.push(detection_id.to_owned());
        if !batch.labels.contains(label) {
            batch.labels.insert(label.to_owned());
        }
        (batch.batch_id.clone(), out)
    }

    /// Closes expired batches and reports progress where it is due.
    pub fn tick(&mut self, now: Now) -> Vec<Out> {
        let mut out = Vec::new();
        let expired: Vec<(String, CloseReason)> = self
            .open
            .iter()
            .filter_map(|(camera, b)| self.expiry(b, now).map(|r| (camera.clone(), r)))
            .collect();
        for (camera, reason) in expired {
            let batch = self.open.remove(&camera).expect("batch is open");
            close(&camera, batch, reason, now, &mut out);
        }
        for (camera, b) in &mut self.open {
            let count = b.detection_ids.len();
            if count > b.reported
                && now.mono.saturating_duration_since(b.last_progress)
                    >= self.timing.progress_interval
            {
                b.reported = count;
                b.last_progress = now.mono;
                out.push(Out::Progress(BatchProgress {
                    batch_id: b.batch_id.clone(),
                    camera_id: camera.clone(),
                    detection_count: count as u64,
                    last_detection_at: timestamp(b.last_detection_at),
                }));
            }
        }
        out
    }

    /// Closes every open batch with reason `stopped`.
    pub fn close_all(&mut self, now: Now) -> Vec<Out> {
        let mut out = Vec::new();
        for (camera, batch) in std::mem::take(&mut self.open) {
            close(&camera, batch, CloseReason::Stopped, now, &mut out);
        }
        out
    }

    /// Number of open batches.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    fn expiry(&self, b: &OpenBatch, now: Now) -> Option<CloseReason> {
        if now.mono.saturating_duration_since(b.started) >= self.timing.window {
            Some(CloseReason::Window)
        } else if now.mono.saturating_duration_since(b.last_seen) >= self.timing.idle {
            Some(CloseReason::Idle)
        } else {
            None
        }
    }
}

fn close(camera_id: &str, b: OpenBatch, reason: CloseReason, now: Now, out: &mut Vec<Out>) {
    let count = b.detection_ids.len() as u64;
    out.push(Out::Batch(DetectionBatch {
        batch_id: b.batch_id.clone(),
        camera_id: camera_id.to_owned(),
        detection_ids: b.detection_ids,
        detection_count: count,
        labels: b.labels.into_iter().collect(),
        started_at: timestamp(b.started_at),
        closed_at: timestamp(now.wall),
        part: None,
        parts: None,
    }));
    out.push(Out::Closed(BatchClosed {
        batch_id: b.batch_id,
        camera_id: camera_id.to_owned(),
        detection_count: count,
        reason,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    struct Clock(Now);

    impl Clock {
        fn new() -> Clock {
            Clock(Now::system())
        }
        fn at(&self, d: Duration) -> Now {
            Now {
                mono: self.0.mono + d,
                wall: self.0.wall + chrono::Duration::from_std(d).unwrap(),
            }
        }
    }

    fn batcher() -> Batcher {
        Batcher::new(Timing {
            window: 90 * S,
            idle: 30 * S,
            progress_interval: S,
        })
    }

    fn detect(
        b: &mut Batcher,
        now: Now,
        camera: &str,
        id: &str,
        label: &str,
    ) -> (String, Vec<Out>) {
        b.on_detection(now, camera, id, label, now.wall)
    }

    fn progress_counts(out: &[Out]) -> Vec<u64> {
        out.iter()
            .filter_map(|o| match o {
                Out::Progress(p) => Some(p.detection_count),
                _ => None,
            })
            .collect()
    }

    fn closed(out: &[Out]) -> (&DetectionBatch, &BatchClosed) {
        match out {
            [Out::Batch(batch), Out::Closed(closed)] => (batch, closed),
            other => panic!("expected a close, got {other:?}"),
        }
    }

    #[test]
    fn first_detection_opens_a_batch_per_camera() {
        let c = Clock::new();
        let mut b = batcher();
        let (id1, out) = detect(&mut b, c.at(Duration::ZERO), "cam-1", "d1", "person");
        match out.as_slice() {
            [Out::Opened(o)] => {
                assert_eq!(o.batch_id, id1);
                assert_eq!(o.camera_id, "cam-1");
                assert_eq!(o.started_at, timestamp(c.at(Duration::ZERO).wall));
            }
            other => panic!("{other:?}"),
        }
        let (again, out) = detect(&mut b, c.at(S), "cam-1", "d2", "car");
        assert_eq!(again, id1);
        assert!(out.is_empty());
        let (id2, out) = detect(&mut b, c.at(S), "cam-2", "d3", "car");
        assert_ne!(id2, id1);
        assert!(matches!(out.as_slice(), [Out::Opened(_)]));
        assert_eq!(b.open_count(), 2);
    }

    #[test]
    fn progress_is_throttled_to_one_per_interval() {
        let c = Clock::new();
        let mut b = batcher();
        detect(&mut b, c.at(Duration::ZERO), "cam-1", "d1", "person");
        // Nothing new since batch.opened: no progress even after the interval.
        assert!(b.tick(c.at(2 * S)).is_empty());
        // Several detections within one interval: one progress.
        let ms = Duration::from_millis;
        detect(&mut b, c.at(ms(2100)), "cam-1", "d2", "person");
        detect(&mut b, c.at(ms(2200)), "cam-1", "d3", "person");
        let out = b.tick(c.at(ms(2300)));
        assert_eq!(progress_counts(&out), vec![3]);
        match &out[0] {
            Out::Progress(p) => {
                assert_eq!(p.camera_id, "cam-1");
                assert_eq!(p.last_detection_at, timestamp(c.at(ms(2200)).wall));
            }
            other => panic!("{other:?}"),
        }
        detect(&mut b, c.at(ms(2400)), "cam-1", "d4", "person");
        assert!(b.tick(c.at(ms(2500))).is_empty(), "within the interval");
        assert!(
            b.tick(c.at(ms(3200))).is_empty(),
            "still within the interval"
        );
        assert_eq!(progress_counts(&b.tick(c.at(ms(3300)))), vec![4]);
        assert!(b.tick(c.at(ms(5000))).is_empty(), "nothing new");
    }

    #[test]
    fn window_close() {
        let c = Clock::new();
        let mut b = batcher();
        let (id, _) = detect(&mut b, c.at(Duration::ZERO), "cam-1", "d0", "person");
        // Keep it busy so idle never fires.
        for i in 1..=89 {
            detect(&mut b, c.at(i * S), "cam-1", &format!("d{i}"), "person");
            let out = b.tick(c.at(i * S));
            assert!(out.iter().all(|o| matches!(o, Out::Progress(_))), "{out:?}");
        }
        let out = b.tick(c.at(90 * S));
        let (batch, closed) = closed(&out);
        assert_eq!(batch.batch_id, id);
        assert_eq!(batch.detection_count, 90);
        assert_eq!(batch.detection_ids.len(), 90);
        assert_eq!(batch.started_at, timestamp(c.at(Duration::ZERO).wall));
        assert_eq!(batch.closed_at, timestamp(c.at(90 * S).wall));
        assert_eq!(closed.reason, CloseReason::Window);
        assert_eq!(closed.detection_count, 90);
        assert_eq!(b.open_count(), 0);
    }

    #[test]
    fn expired_batch_closes_before_the_next_detection_opens_a_new_one() {
        let c = Clock::new();
        let mut b = batcher();
        let (first, _) = detect(&mut b, c.at(Duration::ZERO), "cam-1", "d1", "person");
        for i in 1..=89 {
            detect(&mut b, c.at(i * S), "cam-1", &format!("x{i}"), "person");
        }
        // The window passes with no tick in between.
        assert_eq!(b.open_count(), 1);
        let (second, out) = detect(&mut b, c.at(91 * S), "cam-1", "late", "car");
        assert_ne!(second, first);
        match out.as_slice() {
            [Out::Batch(batch), Out::Closed(closed), Out::Opened(opened)] => {
                assert_eq!(batch.batch_id, first);
                assert_eq!(closed.reason, CloseReason::Window);
                assert_eq!(opened.batch_id, second);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn idle_close() {
        let c = Clock::new();
        let mut b = batcher();
        let (id, _) = detect(&mut b, c.at(Duration::ZERO), "cam-1", "d1", "person");
        detect(&mut b, c.at(10 * S), "cam-1", "d2", "car");
        let out = b.tick(c.at(39 * S));
        assert_eq!(progress_counts(&out), vec![2]);
        let out = b.tick(c.at(40 * S));
        let (batch, closed) = closed(&out);
        assert_eq!(batch.batch_id, id);
        assert_eq!(closed.batch_id, id);
        assert_eq!(closed.reason, CloseReason::Idle);
        assert_eq!(batch.detection_ids, vec!["d1", "d2"]);
        // The next detection opens a new batch.
        let (next, out) = detect(&mut b, c.at(41 * S), "cam-1", "d3", "person");
        assert_ne!(next, id);
        assert!(matches!(out.as_slice(), [Out::Opened(_)]));
    }

    #[test]
    fn stop_closes_everything_with_ids_count_and_labels() {
        let c = Clock::new();
        let mut b = batcher();
        let (id1, _) = detect(&mut b, c.at(Duration::ZERO), "cam-1", "d1", "person");
        detect(&mut b, c.at(S), "cam-1", "d2", "car");
        detect(&mut b, c.at(2 * S), "cam-1", "d3", "person");
        let (id2, _) = detect(&mut b, c.at(2 * S), "cam-2", "d4", "dog");
        let out = b.close_all(c.at(3 * S));
        assert_eq!(out.len(), 4);
        let (batch, closed1) = closed(&out[..2]);
        assert_eq!(batch.batch_id, id1);
        assert_eq!(batch.camera_id, "cam-1");
        assert_eq!(batch.detection_ids, vec!["d1", "d2", "d3"]);
        assert_eq!(batch.detection_count, 3);
        assert_eq!(batch.labels, vec!["car", "person"]);
        assert_eq!(closed1.reason, CloseReason::Stopped);
        assert_eq!(closed1.detection_count, 3);
        let (batch, closed2) = closed(&out[2..]);
        assert_eq!(batch.batch_id, id2);
        assert_eq!(batch.labels, vec!["dog"]);
        assert_eq!(closed2.reason, CloseReason::Stopped);
        assert_eq!(b.open_count(), 0);
        assert!(b.close_all(c.at(4 * S)).is_empty());
    }
}
