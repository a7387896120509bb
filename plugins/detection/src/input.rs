//! Parsing one input line (a JSON object) into a detection or a scene change.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// One parsed input record.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Input {
    /// An object detection (`kind` absent or `"detection"`).
    Detection(DetectionIn),
    /// A scene change (`kind = "scene_change"`).
    SceneChange(SceneChangeIn),
}

/// A detection as received.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DetectionIn {
    pub camera_id: String,
    pub label: String,
    pub confidence: f64,
    pub bbox: BBox,
    /// `None` = "now", filled in when the detection is processed.
    pub detected_at: Option<DateTime<Utc>>,
}

/// A bounding box in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub(crate) struct BBox {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// A scene change as received.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SceneChangeIn {
    pub camera_id: String,
    pub change_type: ChangeType,
    pub similarity_score: f64,
    pub detected_at: Option<DateTime<Utc>>,
}

/// The kinds of scene change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChangeType {
    ViewBlocked,
    AngleChanged,
    ViewTampered,
    Unknown,
}

impl ChangeType {
    /// Every value, in the order of [`ChangeType::NAMES`].
    pub const ALL: [ChangeType; 4] = [
        ChangeType::ViewBlocked,
        ChangeType::AngleChanged,
        ChangeType::ViewTampered,
        ChangeType::Unknown,
    ];
    /// The wire names (the `change_type` enum of `scene_change.detected`).
    pub const NAMES: [&'static str; 4] =
        ["view_blocked", "angle_changed", "view_tampered", "unknown"];

    fn from_name(name: &str) -> Option<ChangeType> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
    }
}

/// Parses one line (without its newline). The error says what is wrong.
pub(crate) fn parse_line(line: &[u8]) -> Result<Input, String> {
    let value: Value = serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".to_owned());
    };
    match obj.get("kind") {
        None | Some(Value::Null) => parse_detection(&obj),
        Some(Value::String(k)) if k == "detection" => parse_detection(&obj),
        Some(Value::String(k)) if k == "scene_change" => parse_scene_change(&obj),
        Some(other) => Err(format!(
            "`kind` must be \"detection\" or \"scene_change\", got {other}"
        )),
    }
}

fn parse_detection(obj: &Map<String, Value>) -> Result<Input, String> {
    let camera_id = text(obj, "camera_id")?;
    let label = text(obj, "label")?;
    let confidence = unit(obj, "confidence")?;
    let bbox = match obj.get("bbox") {
        Some(Value::Object(b)) => BBox {
            x: finite(b, "x", "bbox.x")?,
            y: finite(b, "y", "bbox.y")?,
            width: non_negative(b, "width", "bbox.width")?,
            height: non_negative(b, "height", "bbox.height")?,
        },
        None | Some(Value::Null) => return Err("missing `bbox`".to_owned()),
        Some(_) => return Err("`bbox` must be an object {x, y, width, height}".to_owned()),
    };
    Ok(Input::Detection(DetectionIn {
        camera_id,
        label,
        confidence,
        bbox,
        detected_at: timestamp(obj)?,
    }))
}

fn parse_scene_change(obj: &Map<String, Value>) -> Result<Input, String> {
    let change_type = text(obj, "change_type")?;
    let change_type = ChangeType::from_name(&change_type).ok_or_else(|| {
        format!(
            "`change_type` must be one of {}, got {change_type:?}",
            ChangeType::NAMES.join(", ")
        )
    })?;
    Ok(Input::SceneChange(SceneChangeIn {
        camera_id: text(obj, "camera_id")?,
        change_type,
        similarity_score: unit(obj, "similarity_score")?,
        detected_at: timestamp(obj)?,
    }))
}

fn text(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("`{key}` is empty")),
        None | Some(Value::Null) => Err(format!("missing `{key}`")),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn finite(obj: &Map<String, Value>, key: &str, name: &str) -> Result<f64, String> {
    match obj.get(key) {
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .ok_or_else(|| format!("`{name}` is out of range")),
        None | Some(Value::Null) => Err(format!("missing `{name}`")),
        Some(_) => Err(format!("`{name}` must be a number")),
    }
}

fn non_negative(obj: &Map<String, Value>, key: &str, name: &str) -> Result<f64, String> {
    let n = finite(obj, key, name)?;
    if n < 0.0 {
        return Err(format!("`{name}` must not be negative"));
    }
    Ok(n)
}

fn unit(obj: &Map<String, Value>, key: &str) -> Result<f64, String> {
    let n = finite(obj, key, key)?;
    if !(0.0..=1.0).contains(&n) {
        return Err(format!("`{key}` must be between 0 and 1, got {n}"));
    }
    Ok(n)
}

fn timestamp(obj: &Map<String, Value>) -> Result<Option<DateTime<Utc>>, String> {
    match obj.get("detected_at") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| format!("`detected_at` must be an RFC 3339 timestamp, got {s:?}")),
        Some(_) => Err("`detected_at` must be an RFC 3339 timestamp string".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Input, String> {
        parse_line(s.as_bytes())
    }

    #[test]
    fn detection_line() {
        let line = r#"{"camera_id":"front_door","label":"person","confidence":0.93,"bbox":{"x":10,"y":20,"width":100,"height":200},"detected_at":"2026-11-23T06:00:00Z","frame_id":"f-1"}"#;
        let Input::Detection(d) = parse(line).unwrap() else {
            panic!("not a detection")
        };
        assert_eq!(d.camera_id, "front_door");
        assert_eq!(d.label, "person");
        assert_eq!(d.confidence, 0.93);
        assert_eq!(
            d.bbox,
            BBox {
                x: 10.0,
                y: 20.0,
                width: 100.0,
                height: 200.0
            }
        );
        assert_eq!(
            d.detected_at.unwrap().to_rfc3339(),
            "2026-11-23T06:00:00+00:00"
        );
    }

    #[test]
    fn detection_defaults_and_offsets() {
        let line = r#"{"kind":"detection","camera_id":"c","label":"car","confidence":1,"bbox":{"x":0,"y":0,"width":0,"height":0}}"#;
        let Input::Detection(d) = parse(line).unwrap() else {
            panic!("not a detection")
        };
        assert_eq!(d.detected_at, None);
        let line = r#"{"camera_id":"c","label":"car","confidence":0.5,"bbox":{"x":-1,"y":0,"width":1,"height":1},"detected_at":"2026-11-23T08:00:00+02:00"}"#;
        let Input::Detection(d) = parse(line).unwrap() else {
            panic!("not a detection")
        };
        assert_eq!(
            d.detected_at.unwrap().to_rfc3339(),
            "2026-11-23T06:00:00+00:00"
        );
    }

    #[test]
    fn scene_change_line() {
        let line = r#"{"kind":"scene_change","camera_id":"front_door","change_type":"view_blocked","similarity_score":0.31}"#;
        assert_eq!(
            parse(line).unwrap(),
            Input::SceneChange(SceneChangeIn {
                camera_id: "front_door".into(),
                change_type: ChangeType::ViewBlocked,
                similarity_score: 0.31,
                detected_at: None,
            })
        );
        for (name, ty) in ChangeType::NAMES.iter().zip(ChangeType::ALL) {
            assert_eq!(serde_json::to_value(ty).unwrap(), *name);
        }
    }

    #[test]
    fn bad_lines() {
        let bbox = r#""bbox":{"x":1,"y":2,"width":3,"height":4}"#;
        let cases = [
            ("not json".to_owned(), "JSON"),
            ("[1,2]".to_owned(), "object"),
            (
                format!(r#"{{"label":"person","confidence":0.5,{bbox}}}"#),
                "`camera_id`",
            ),
            (
                format!(r#"{{"camera_id":"","label":"person","confidence":0.5,{bbox}}}"#),
                "`camera_id`",
            ),
            (
                format!(r#"{{"camera_id":7,"label":"person","confidence":0.5,{bbox}}}"#),
                "`camera_id`",
            ),
            (
                format!(r#"{{"camera_id":"c","confidence":0.5,{bbox}}}"#),
                "`label`",
            ),
            (
                format!(r#"{{"camera_id":"c","label":"p","confidence":"high",{bbox}}}"#),
                "`confidence`",
            ),
            (
                format!(r#"{{"camera_id":"c","label":"p","confidence":1.5,{bbox}}}"#),
                "`confidence`",
            ),
            (
                r#"{"camera_id":"c","label":"p","confidence":0.5}"#.to_owned(),
                "`bbox`",
            ),
            (
                r#"{"camera_id":"c","label":"p","confidence":0.5,"bbox":{"x":1,"y":2,"width":3}}"#
                    .to_owned(),
                "`bbox.height`",
            ),
            (
                r#"{"camera_id":"c","label":"p","confidence":0.5,"bbox":{"x":1,"y":2,"width":-3,"height":1}}"#
                    .to_owned(),
                "`bbox.width`",
            ),
            (
                format!(
                    r#"{{"camera_id":"c","label":"p","confidence":0.5,{bbox},"detected_at":"yesterday"}}"#
                ),
                "`detected_at`",
            ),
            (
                r#"{"kind":"other","camera_id":"c"}"#.to_owned(),
                "`kind`",
            ),
            (
                r#"{"kind":"scene_change","camera_id":"c","change_type":"exploded","similarity_score":0.2}"#
                    .to_owned(),
                "`change_type`",
            ),
            (
                r#"{"kind":"scene_change","camera_id":"c","change_type":"unknown"}"#.to_owned(),
                "`similarity_score`",
            ),
        ];
        for (line, needle) in cases {
            let e = parse(&line).unwrap_err();
            assert!(e.contains(needle), "{line} -> {e}");
        }
    }
}
