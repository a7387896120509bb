//! The one timestamp format of Switchyard events.

use chrono::{DateTime, SecondsFormat, Utc};

/// `at` as RFC 3339 UTC with milliseconds and `Z`, e.g.
/// `2026-11-23T06:00:00.000Z`: the format of the router's envelope
/// `timestamp`, so that every time in an event reads and sorts alike.
///
/// ```
/// use switchyard_plugin_api::timestamp;
///
/// let at = "2026-11-23T07:00:00.5+01:00".parse().unwrap();
/// assert_eq!(timestamp(at), "2026-11-23T06:00:00.500Z");
/// ```
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let t = DateTime::parse_from_rfc3339("2026-11-23T06:00:00Z").unwrap();
        assert_eq!(timestamp(t.with_timezone(&Utc)), "2026-11-23T06:00:00.000Z");
        let t = DateTime::parse_from_rfc3339("2026-11-23T06:00:00.123456Z").unwrap();
        assert_eq!(timestamp(t.with_timezone(&Utc)), "2026-11-23T06:00:00.123Z");
    }
}
