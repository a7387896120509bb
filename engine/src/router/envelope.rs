//! The client envelope: one JSON text per event, serialized once and shared
//! by every recipient.

use serde_json::Value;

/// An event validated and ready to stamp.
#[derive(Debug)]
pub struct Prepared {
    /// The registered type.
    pub event_type: std::sync::Arc<crate::registry::EventType>,
    /// The payload, already serialized.
    pub payload_json: String,
    /// The producer's correlation id.
    pub correlation_id: Option<String>,
    /// The publisher's idempotency key.
    pub idempotency_key: Option<String>,
    /// The plugin instance that emitted it, so its own sink skips it.
    pub emitter: Option<String>,
}

/// Longest decimal sequence number, for the size bound before stamping.
const MAX_SEQUENCE_DIGITS: usize = 20;
/// `2026-11-23T06:00:00.123Z`.
const TIMESTAMP_LEN: usize = 24;

fn quoted(s: &str) -> String {
    Value::from(s).to_string()
}

/// The envelope's text.
pub fn render(p: &Prepared, timestamp: &str, sequence: u64) -> String {
    let mut out = head(p, timestamp);
    out.push_str(&sequence.to_string());
    push_tail(p, &mut out);
    out
}

/// The envelope's text before and after its sequence number, for a
/// cluster store that decides the number (docs/cluster.md).
pub fn render_around_sequence(p: &Prepared, timestamp: &str) -> (String, String) {
    let mut tail = String::new();
    push_tail(p, &mut tail);
    (head(p, timestamp), tail)
}

fn head(p: &Prepared, timestamp: &str) -> String {
    let mut out = String::with_capacity(p.payload_json.len() + 128);
    out.push_str("{\"type\":");
    out.push_str(&quoted(&p.event_type.name));
    out.push_str(",\"payload\":");
    out.push_str(&p.payload_json);
    out.push_str(",\"timestamp\":\"");
    out.push_str(timestamp);
    out.push_str("\",\"channel\":");
    out.push_str(&quoted(&p.event_type.channel));
    out.push_str(",\"sequence\":");
    out
}

fn push_tail(p: &Prepared, out: &mut String) {
    if let Some(cid) = &p.correlation_id {
        out.push_str(",\"correlation_id\":");
        out.push_str(&quoted(cid));
    }
    out.push('}');
}

/// The most bytes the envelope can take, known before it is stamped.
pub fn max_len(p: &Prepared) -> usize {
    let fixed = render(p, "", 0).len();
    fixed - 1 + MAX_SEQUENCE_DIGITS + TIMESTAMP_LEN
}
