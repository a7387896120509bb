//! The event types this plugin emits: their declarations (the schemas the
//! router validates against) and the payload structs that must match them.

use rand::Rng;
use serde::Serialize;
use switchyard_plugin_api::{EventTypeDecl, Field};

use crate::input::{BBox, ChangeType};

/// Channel of the detection and batch events.
pub(crate) const DETECTIONS: &str = "detections";
/// Channel of the scene change events.
pub(crate) const SCENE_CHANGES: &str = "scene_changes";

/// `detection.new`
pub(crate) const DETECTION_NEW: &str = "detection.new";
/// `detection.batch`
pub(crate) const DETECTION_BATCH: &str = "detection.batch";
/// `batch.opened`
pub(crate) const BATCH_OPENED: &str = "batch.opened";
/// `batch.progress`
pub(crate) const BATCH_PROGRESS: &str = "batch.progress";
/// `batch.closed`
pub(crate) const BATCH_CLOSED: &str = "batch.closed";
/// `scene_change.detected`
pub(crate) const SCENE_CHANGE_DETECTED: &str = "scene_change.detected";

/// Why a batch closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CloseReason {
    /// `batch_window_s` passed since the batch opened.
    Window,
    /// No detection for `batch_idle_s`.
    Idle,
    /// The plugin stopped.
    Stopped,
}

const CLOSE_REASONS: [&str; 3] = ["window", "idle", "stopped"];

/// Payload of `detection.new`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct DetectionNew {
    pub detection_id: String,
    pub camera_id: String,
    pub label: String,
    pub confidence: f64,
    pub bbox: BBox,
    pub detected_at: String,
    pub batch_id: String,
}

/// Payload of `batch.opened`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct BatchOpened {
    pub batch_id: String,
    pub camera_id: String,
    pub started_at: String,
}

/// Payload of `batch.progress`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct BatchProgress {
    pub batch_id: String,
    pub camera_id: String,
    pub detection_count: u64,
    pub last_detection_at: String,
}

/// Payload of `detection.batch`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct DetectionBatch {
    pub batch_id: String,
    pub camera_id: String,
    pub detection_ids: Vec<String>,
    pub detection_count: u64,
    pub labels: Vec<String>,
    pub started_at: String,
    pub closed_at: String,
    /// This part's number (1-based), when the batch is sent in parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<u64>,
    /// How many parts the batch is sent in, when more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parts: Option<u64>,
}

impl DetectionBatch {
    /// The batch in about `parts` parts of consecutive detection ids (fewer
    /// when there are fewer ids), each numbered; one part is the batch
    /// itself. The first part is the largest, and every id has the same
    /// length, so when the first part fits in one event every part does.
    pub(crate) fn split(&self, parts: usize) -> Vec<DetectionBatch> {
        if parts <= 1 || self.detection_ids.len() <= 1 {
            return vec![self.clone()];
        }
        let size = self.detection_ids.len().div_ceil(parts);
        let chunks: Vec<&[String]> = self.detection_ids.chunks(size).collect();
        let total = chunks.len() as u64;
        chunks
            .into_iter()
            .zip(1..)
            .map(|(ids, part)| DetectionBatch {
                detection_ids: ids.to_vec(),
                part: Some(part),
                parts: Some(total),
                ..self.clone()
            })
            .collect()
    }
}

/// Payload of `batch.closed`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct BatchClosed {
    pub batch_id: String,
    pub camera_id: String,
    pub detection_count: u64,
    pub reason: CloseReason,
}

/// Payload of `scene_change.detected`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct SceneChangeDetected {
    pub camera_id: String,
    pub change_type: ChangeType,
    pub similarity_score: f64,
    pub detected_at: String,
}

/// A fresh random id such as `det-3f2a…` (128 random bits, UUID-shaped).
pub(crate) fn new_id(prefix: &str) -> String {
    let n: u128 = rand::rng().random();
    let hex = format!("{n:032x}");
    format!(
        "{prefix}-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn id(what: &str) -> Field {
    Field::string().required().describe(what)
}

fn at(what: &str) -> Field {
    Field::string()
        .required()
        .describe(&format!("{what} (RFC 3339, UTC)"))
}

/// The declarations of every event type this plugin emits.
pub(crate) fn declarations() -> Vec<EventTypeDecl> {
    let batch_id = || id("The batch's unique id");
    let camera_id = || id("The camera the detections come from");
    let count = |what: &str| Field::integer().required().describe(what);
    vec![
        EventTypeDecl::new(
            DETECTION_NEW,
            DETECTIONS,
            "An object was detected by a camera",
        )
        .field("detection_id", id("Unique id of this detection"))
        .field("camera_id", camera_id())
        .field("label", id("What was detected, e.g. person or car"))
        .field(
            "confidence",
            Field::number()
                .required()
                .describe("Detector confidence from 0 to 1"),
        )
        .field(
            "bbox",
            Field::object()
                .required()
                .describe("Bounding box in pixels: {x, y, width, height}"),
        )
        .field("detected_at", at("When the object was detected"))
        .field("batch_id", id("The open batch this detection belongs to")),
        EventTypeDecl::new(
            DETECTION_BATCH,
            DETECTIONS,
            "A camera's batch of detections closed; lists what it contained",
        )
        .field("batch_id", batch_id())
        .field("camera_id", camera_id())
        .field(
            "detection_ids",
            Field::array()
                .required()
                .describe("Ids of the batch's detections, in arrival order"),
        )
        .field(
            "detection_count",
            count("Number of detections in the batch"),
        )
        .field(
            "labels",
            Field::array()
                .required()
                .describe("The distinct labels detected in the batch, sorted"),
        )
        .field("started_at", at("When the batch opened"))
        .field("closed_at", at("When the batch closed"))
        .field(
            "part",
            Field::integer().describe(
                "When a batch is too large for one event (server.max_event_bytes) it is sent \
                 as several detection.batch events with the same batch_id: this one's number, \
                 from 1. Absent for a batch sent whole",
            ),
        )
        .field(
            "parts",
            Field::integer().describe(
                "How many detection.batch events the batch is sent in; absent for a batch \
                 sent whole. detection_ids lists this part's ids; detection_count and labels \
                 are always the whole batch's",
            ),
        ),
        EventTypeDecl::new(
            BATCH_OPENED,
            DETECTIONS,
            "A camera's first detection opened a new batch",
        )
        .field("batch_id", batch_id())
        .field("camera_id", camera_id())
        .field("started_at", at("When the batch opened")),
        EventTypeDecl::new(
            BATCH_PROGRESS,
            DETECTIONS,
            "An open batch grew (at most one per batch per progress interval)",
        )
        .field("batch_id", batch_id())
        .field("camera_id", camera_id())
        .field("detection_count", count("Detections in the batch so far"))
        .field(
            "last_detection_at",
            at("detected_at of the batch's latest detection"),
        ),
        EventTypeDecl::new(BATCH_CLOSED, DETECTIONS, "A batch closed")
            .field("batch_id", batch_id())
            .field("camera_id", camera_id())
            .field(
                "detection_count",
                count("Number of detections in the batch"),
            )
            .field(
                "reason",
                Field::string().required().one_of(&CLOSE_REASONS).describe(
                    "window: batch_window_s passed since it opened; idle: no detection for \
                     batch_idle_s; stopped: the plugin stopped",
                ),
            ),
        EventTypeDecl::new(
            SCENE_CHANGE_DETECTED,
            SCENE_CHANGES,
            "A camera's view changed: blocked, moved or tampered with",
        )
        .field("camera_id", id("The camera whose view changed"))
        .field(
            "change_type",
            Field::string()
                .required()
                .one_of(&ChangeType::NAMES)
                .describe("What kind of change"),
        )
        .field(
            "similarity_score",
            Field::number()
                .required()
                .describe("Similarity of the new view to the reference, 0 to 1"),
        )
        .field("detected_at", at("When the change was detected")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use switchyard_plugin_api::timestamp;

    /// Checks `payload` against `decl` with the router's own rules
    /// ([`EventTypeDecl::check_payload`]), and that every field is described.
    fn check(decl: &EventTypeDecl, payload: &impl Serialize) {
        let value = serde_json::to_value(payload).unwrap();
        let problems = decl.check_payload(&value);
        assert!(
            problems.is_empty(),
            "{}: {problems:?} in {value}",
            decl.name
        );
        for (name, field) in decl.payload.as_ref().unwrap() {
            assert!(
                field.description.is_some(),
                "{}.{name}: no description",
                decl.name
            );
        }
    }

    #[test]
    fn payloads_match_their_declarations() {
        let decls = declarations();
        let decl = |name: &str| decls.iter().find(|d| d.name == name).unwrap();
        let now = timestamp(Utc::now());
        check(
            decl(DETECTION_NEW),
            &DetectionNew {
                detection_id: new_id("det"),
                camera_id: "c".into(),
                label: "person".into(),
                confidence: 0.5,
                bbox: BBox {
                    x: 1.0,
                    y: 2.0,
                    width: 3.0,
                    height: 4.0,
                },
                detected_at: now.clone(),
                batch_id: new_id("batch"),
            },
        );
        check(
            decl(BATCH_OPENED),
            &BatchOpened {
                batch_id: "b".into(),
                camera_id: "c".into(),
                started_at: now.clone(),
            },
        );
        check(
            decl(BATCH_PROGRESS),
            &BatchProgress {
                batch_id: "b".into(),
                camera_id: "c".into(),
                detection_count: 2,
                last_detection_at: now.clone(),
            },
        );
        check(
            decl(DETECTION_BATCH),
            &DetectionBatch {
                batch_id: "b".into(),
                camera_id: "c".into(),
                detection_ids: vec!["d".into()],
                detection_count: 1,
                labels: vec!["car".into()],
                started_at: now.clone(),
                closed_at: now.clone(),
                part: Some(1),
                parts: Some(2),
            },
        );
        for reason in [CloseReason::Window, CloseReason::Idle, CloseReason::Stopped] {
            check(
                decl(BATCH_CLOSED),
                &BatchClosed {
                    batch_id: "b".into(),
                    camera_id: "c".into(),
                    detection_count: 1,
                    reason,
                },
            );
        }
        for change_type in ChangeType::ALL {
            check(
                decl(SCENE_CHANGE_DETECTED),
                &SceneChangeDetected {
                    camera_id: "c".into(),
                    change_type,
                    similarity_score: 0.3,
                    detected_at: now.clone(),
                },
            );
        }
        assert_eq!(decls.len(), 6);
        for d in &decls {
            assert!(!d.description.is_empty());
            let channel = d.channel.as_deref().unwrap();
            let expected = if d.name == SCENE_CHANGE_DETECTED {
                SCENE_CHANGES
            } else {
                DETECTIONS
            };
            assert_eq!(channel, expected, "{}", d.name);
        }
    }

    #[test]
    fn ids_are_prefixed_and_fresh() {
        let a = new_id("det");
        assert!(a.starts_with("det-") && a.len() == 4 + 36, "{a}");
        assert_ne!(a, new_id("det"));
    }
}
