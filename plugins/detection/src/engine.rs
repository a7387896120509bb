//! The engine thread: owns the [`Batcher`], turns inputs into events and
//! emits them; plus the shared [`Counters`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_plugin_api::{
    bump, count_emit, counters, emit_counted, timestamp, EmitError, Emitter, LogLevel,
};

use crate::batcher::{Batcher, Now, Out};
use crate::events::{
    new_id, DetectionBatch, DetectionNew, SceneChangeDetected, BATCH_CLOSED, BATCH_OPENED,
    BATCH_PROGRESS, DETECTION_BATCH, DETECTION_NEW, SCENE_CHANGE_DETECTED,
};
use crate::input::Input;

/// How often the engine checks batch windows, idleness and progress.
const TICK: Duration = Duration::from_millis(100);
/// How often the counters are logged when they changed.
const STATS_EVERY: Duration = Duration::from_secs(60);

counters! {
    /// What happened so far, shared by all of an instance's threads.
    pub(crate) struct Counters;
    /// The counters of a running instance at one moment (see [`Service::counters`](crate::Service::counters)).
    pub struct CounterSnapshot {
        /// Detections received (TCP and simulator).
        detections,
        /// Scene changes received.
        scene_changes,
        /// Input lines that were not valid detections or scene changes.
        bad_lines,
        /// Input lines over `max_line_bytes`, skipped.
        oversized_lines,
        /// Connections refused by `allow_from`.
        refused_connections,
        /// Connections closed to make room for a new one at `max_connections`.
        evicted_connections,
        /// Connections closed after `idle_timeout_s` of silence.
        idle_connections_closed,
        /// Closed batches too large for one event, sent in parts.
        split_batches,
    }
}

/// A message to the engine thread.
pub(crate) enum Msg {
    /// A parsed input record.
    Input(Input),
    /// Close open batches (reason `stopped`), emit, and exit.
    Stop,
}

/// The engine: run on its own thread by [`Engine::run`].
pub(crate) struct Engine<E> {
    emitter: E,
    batcher: Batcher,
    counters: Arc<Counters>,
    shutdown: Arc<AtomicBool>,
}

/// The router stopped taking events: the engine must exit.
struct Stopped;

impl<E: Emitter> Engine<E> {
    /// An engine with no open batches.
    pub fn new(
        emitter: E,
        batcher: Batcher,
        counters: Arc<Counters>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        Engine {
            emitter,
            batcher,
            counters,
            shutdown,
        }
    }

    /// Processes messages and ticks until [`Msg::Stop`] (or every sender
    /// is gone), then closes the open batches with reason `stopped`.
    pub fn run(mut self, rx: Receiver<Msg>) {
        let mut next_tick = Instant::now() + TICK;
        let mut next_stats = Instant::now() + STATS_EVERY;
        let mut logged = self.counters.snapshot();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let step = match rx.recv_timeout(wait) {
                Ok(Msg::Input(input)) => self.on_input(input),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => Ok(()),
            };
            let step = step.and_then(|()| {
                let now = Instant::now();
                if now < next_tick {
                    return Ok(());
                }
                next_tick = now + TICK;
                if now >= next_stats {
                    next_stats = now + STATS_EVERY;
                    let snapshot = self.counters.snapshot();
                    if snapshot != logged {
                        self.emitter
                            .log(LogLevel::Info, &format!("detection: {snapshot}"));
                        logged = snapshot;
                    }
                }
                let out = self.batcher.tick(Now::system());
                self.emit_outs(out)
            });
            if step.is_err() {
                // The router refuses further events: stop the inputs too.
                self.shutdown.store(true, Ordering::SeqCst);
                self.emitter.log(
                    LogLevel::Info,
                    "detection: the router stopped this instance; engine exiting",
                );
                return;
            }
        }
        let open = self.batcher.open_count();
        let out = self.batcher.close_all(Now::system());
        let _ = self.emit_outs(out);
        self.emitter.log(
            LogLevel::Info,
            &format!(
                "detection: stopped ({open} open batches closed); {}",
                self.counters.snapshot()
            ),
        );
    }

    fn on_input(&mut self, input: Input) -> Result<(), Stopped> {
        let now = Now::system();
        match input {
            Input::Detection(d) => {
                bump(&self.counters.detections);
                let detection_id = new_id("det");
                let detected_at = d.detected_at.unwrap_or(now.wall);
                let (batch_id, out) = self.batcher.on_detection(
                    now,
                    &d.camera_id,
                    &detection_id,
                    &d.label,
                    detected_at,
                );
                self.emit_outs(out)?;
                self.emit(
                    DETECTION_NEW,
                    &DetectionNew {
                        detection_id,
                        camera_id: d.camera_id,
                        label: d.label,
                        confidence: d.confidence,
                        bbox: d.bbox,
                        detected_at: timestamp(detected_at),
                        batch_id,
                    },
                )
            }
            Input::SceneChange(s) => {
                bump(&self.counters.scene_changes);
                self.emit(
                    SCENE_CHANGE_DETECTED,
                    &SceneChangeDetected {
                        camera_id: s.camera_id,
                        change_type: s.change_type,
                        similarity_score: s.similarity_score,
                        detected_at: timestamp(s.detected_at.unwrap_or(now.wall)),
                    },
                )
            }
        }
    }

    fn emit_outs(&self, out: Vec<Out>) -> Result<(), Stopped> {
        for o in out {
            match &o {
                Out::Opened(p) => self.emit(BATCH_OPENED, p),
                Out::Progress(p) => self.emit(BATCH_PROGRESS, p),
                Out::Batch(p) => self.emit_batch(p),
                Out::Closed(p) => self.emit(BATCH_CLOSED, p),
            }?;
        }
        Ok(())
    }

    /// Emits a closed batch as one `detection.batch`, or, when the router
    /// finds that too large (`server.max_event_bytes`), as several: the
    /// number of parts doubles until the first (largest) part is taken,
    /// then the others follow. Nothing is emitted twice: the first part is
    /// only ever taken once, and the others only after it.
    fn emit_batch(&self, batch: &DetectionBatch) -> Result<(), Stopped> {
        let mut parts = 1;
        loop {
            let pieces = batch.split(parts);
            let Ok(first) = serde_json::to_string(&pieces[0]) else {
                return self.emit(DETECTION_BATCH, &pieces[0]);
            };
            match self.emitter.emit_json(DETECTION_BATCH, &first) {
                Err(EmitError::TooLarge) if pieces[0].detection_ids.len() > 1 => {
                    parts *= 2;
                    continue;
                }
                result => count_emit(
                    &self.emitter,
                    &self.counters.emit,
                    "detection",
                    DETECTION_BATCH,
                    "",
                    result,
                )
                .map_err(|_| Stopped)?,
            }
            if pieces.len() > 1 {
                bump(&self.counters.split_batches);
            }
            return pieces[1..]
                .iter()
                .try_for_each(|piece| self.emit(DETECTION_BATCH, piece));
        }
    }

    fn emit(&self, event_type: &str, payload: &impl Serialize) -> Result<(), Stopped> {
        emit_counted(
            &self.emitter,
            &self.counters.emit,
            "detection",
            event_type,
            "",
            payload,
        )
        .map_err(|_| Stopped)
    }
}
