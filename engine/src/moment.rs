//! Instants in eight bytes rather than [`Instant`]'s sixteen, for the clocks
//! every connection keeps (its heartbeat, its rate limit): a connection's
//! task is most of its memory (BENCHMARKS.md, "Idle connections").
//!
//! A [`Moment`] counts nanoseconds from an origin taken once per process,
//! signed, so that an instant read before the origin still converts, and
//! converts back to the same [`Instant`] exactly.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Where every [`Moment`] counts from: the first time one is made.
static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// An instant of the monotonic clock, within 292 years of the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(i64);

impl Moment {
    /// The moment now.
    pub fn now() -> Moment {
        Instant::now().into()
    }
}

impl From<Instant> for Moment {
    fn from(instant: Instant) -> Moment {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        let origin = *ORIGIN;
        match instant.checked_duration_since(origin) {
            Some(after) => Moment(nanos(after)),
            None => Moment(-nanos(origin - instant)),
        }
    }
}

impl From<Moment> for Instant {
    fn from(moment: Moment) -> Instant {
        let offset = Duration::from_nanos(moment.0.unsigned_abs());
        if moment.0 >= 0 {
            *ORIGIN + offset
        } else {
            *ORIGIN - offset
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_before_and_after_the_origin_convert_back_exactly() {
        let before = Instant::now();
        let origin = Instant::from(Moment::now());
        let after = origin + Duration::from_nanos(1_234_567_891);
        for instant in [before, origin, after] {
            assert_eq!(Instant::from(Moment::from(instant)), instant);
        }
        assert!(Moment::from(before) <= Moment::from(origin));
        assert!(Moment::from(origin) < Moment::from(after));
        assert_eq!(std::mem::size_of::<Moment>(), 8);
    }
}
