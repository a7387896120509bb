//! The detection simulator: `cameras` cameras (`cam-1` … `cam-N`) emitting
//! random detections at `rate_per_s` in total, and now and then a scene
//! change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::SimulateConfig;
use crate::engine::Msg;
use crate::input::{BBox, ChangeType, DetectionIn, Input, SceneChangeIn};

const LABELS: [&str; 8] = [
    "person",
    "car",
    "truck",
    "bicycle",
    "motorcycle",
    "dog",
    "cat",
    "package",
];
/// Chance that one simulated record is a scene change instead of a detection.
const SCENE_CHANGE_CHANCE: f64 = 0.002;
/// The longest sleep, so the thread notices shutdown promptly.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How far behind schedule the simulator may fall before it stops catching up.
const MAX_LAG: Duration = Duration::from_secs(1);

/// One random record from one of `cameras` cameras.
pub(crate) fn generate(rng: &mut impl Rng, cameras: u32) -> Input {
    let camera_id = format!("cam-{}", rng.random_range(1..=cameras));
    if rng.random_bool(SCENE_CHANGE_CHANCE) {
        return Input::SceneChange(SceneChangeIn {
            camera_id,
            change_type: ChangeType::ALL[rng.random_range(0..ChangeType::ALL.len())],
            similarity_score: round3(rng.random_range(0.05..0.6)),
            detected_at: None,
        });
    }
    let width = rng.random_range(20..400);
    let height = rng.random_range(20..400);
    Input::Detection(DetectionIn {
        camera_id,
        label: LABELS[rng.random_range(0..LABELS.len())].to_owned(),
        confidence: round3(rng.random_range(0.5..0.99)),
        bbox: BBox {
            x: f64::from(rng.random_range(0..1920 - width)),
            y: f64::from(rng.random_range(0..1080 - height)),
            width: f64::from(width),
            height: f64::from(height),
        },
        detected_at: None,
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Sends records to the engine on schedule until shutdown or the engine is gone.
pub(crate) fn run(config: SimulateConfig, tx: SyncSender<Msg>, shutdown: &AtomicBool) {
    let mut rng = rand::rng();
    let interval = Duration::from_secs_f64(1.0 / config.rate_per_s);
    let mut next = Instant::now() + interval;
    while !shutdown.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now.saturating_duration_since(next) > MAX_LAG {
            next = now;
        }
        while next <= now {
            if tx
                .send(Msg::Input(generate(&mut rng, config.cameras)))
                .is_err()
            {
                return;
            }
            next += interval;
        }
        std::thread::sleep(next.saturating_duration_since(now).min(MAX_SLEEP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::mpsc::sync_channel;
    use std::sync::Arc;

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn generates_valid_records_for_every_camera() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut cameras = BTreeSet::new();
        let mut scene_changes = 0;
        for _ in 0..20_000 {
            match generate(&mut rng, 3) {
                Input::Detection(d) => {
                    cameras.insert(d.camera_id);
                    assert!(LABELS.contains(&d.label.as_str()));
                    assert!((0.0..=1.0).contains(&d.confidence));
                    assert!(d.bbox.x + d.bbox.width <= 1920.0);
                    assert!(d.bbox.y + d.bbox.height <= 1080.0);
                }
                Input::SceneChange(s) => {
                    scene_changes += 1;
                    assert!((0.0..=1.0).contains(&s.similarity_score));
                }
            }
        }
        let expected: BTreeSet<String> = ["cam-1", "cam-2", "cam-3"].map(String::from).into();
        assert_eq!(cameras, expected);
        assert!((1..200).contains(&scene_changes), "{scene_changes}");
    }

    #[test]
    fn emits_at_the_configured_rate_and_stops() {
        let (tx, rx) = sync_channel(10_000);
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&shutdown);
        let config = SimulateConfig {
            cameras: 2,
            rate_per_s: 200.0,
        };
        let thread = std::thread::spawn(move || run(config, tx, &flag));
        std::thread::sleep(Duration::from_millis(500));
        shutdown.store(true, Ordering::SeqCst);
        let started = Instant::now();
        thread.join().unwrap();
        assert!(started.elapsed() < Duration::from_millis(500));
        let n = rx.try_iter().count();
        assert!((60..=200).contains(&n), "{n} records in 0.5 s at 200/s");
    }
}
