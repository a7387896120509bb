//! When a connection's token runs out: its `exp` (Unix seconds) plus
//! `auth.jwt.leeway_s`, placed on the process's monotonic clock to the
//! millisecond. Whole seconds of wall time would put it up to a second
//! late, on top of the connection clock's own rounding (docs/protocol.md,
//! "Keep-alive"). Both transports close with 4001 at this instant.

use std::time::{Duration, Instant};

/// The wall clock now, in milliseconds since the Unix epoch.
pub fn unix_now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The wall-clock millisecond at which a token of `exp` runs out.
fn runs_out_ms(exp: i64, leeway_s: u32) -> i64 {
    exp.saturating_add(leeway_s.into()).saturating_mul(1000)
}

/// The instant a token of `exp` runs out, seen from `now`, whose wall time
/// is `unix_now_ms`; `now` itself once it has.
pub fn runs_out(now: Instant, unix_now_ms: i64, exp: i64, leeway_s: u32) -> Instant {
    let left = runs_out_ms(exp, leeway_s).saturating_sub(unix_now_ms);
    now + Duration::from_millis(u64::try_from(left).unwrap_or(0))
}

/// Whether a token of `exp` has run out at wall time `unix_now_ms`.
pub fn has_run_out(unix_now_ms: i64, exp: i64, leeway_s: u32) -> bool {
    unix_now_ms >= runs_out_ms(exp, leeway_s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_runs_out_at_its_exp_plus_leeway_to_the_millisecond() {
        let now = Instant::now();
        // 999 ms past second 1,000: exp 1,003 + 2 s of leeway is 4,001 ms on.
        assert_eq!(
            runs_out(now, 1_000_999, 1_003, 2),
            now + Duration::from_millis(4_001)
        );
        assert_eq!(runs_out(now, 1_006_000, 1_003, 2), now);
        assert!(!has_run_out(1_004_999, 1_003, 2));
        assert!(has_run_out(1_005_000, 1_003, 2));
    }
}
