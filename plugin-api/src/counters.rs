//! The [`counters!`](crate::counters!) macro: a plugin's shared counters and
//! their snapshot, declared once.
//!
//! Every service keeps the same two structs: atomics its threads bump, and a
//! `Copy` snapshot of them that tests read and the log prints as
//! `name=value …`. Written by hand, each counter is named in four places
//! (two structs, the snapshot, the log line) that must agree; the macro
//! names it once. The [`EmitCounters`](crate::EmitCounters) kept by
//! [`emit_counted`](crate::emit_counted) are always included, last.

/// Declares a plugin's shared counters and their snapshot.
///
/// From one list of counter names it generates:
/// - the counters struct: `#[derive(Debug, Default)]`, one `AtomicU64` per
///   name (with the struct's visibility) and `emit:`
///   [`EmitCounters`](crate::EmitCounters) for [`emit_counted`](crate::emit_counted);
/// - the snapshot struct: `#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]`,
///   one public `u64` per name, then `dropped_backpressure` and `emit_errors`;
/// - `snapshot(&self)` on the counters (relaxed loads);
/// - `Display` for the snapshot: `name=value` pairs in that order, separated
///   by spaces, for the log.
///
/// A counter's doc comment documents both of its fields.
///
/// ```
/// use switchyard_plugin_api::{bump, counters};
///
/// counters! {
///     /// What happened so far, shared by all threads.
///     pub struct Counters;
///     /// The counters at one moment.
///     pub struct CounterSnapshot {
///         /// Lines read.
///         lines,
///         /// Lines that did not parse.
///         bad_lines,
///     }
/// }
///
/// let counters = Counters::default();
/// bump(&counters.lines);
/// bump(&counters.emit.emit_errors);
/// let snapshot = counters.snapshot();
/// assert_eq!(snapshot.lines, 1);
/// assert_eq!(
///     snapshot.to_string(),
///     "lines=1 bad_lines=0 dropped_backpressure=0 emit_errors=1"
/// );
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$counters_meta:meta])*
        $counters_vis:vis struct $counters:ident;
        $(#[$snapshot_meta:meta])*
        $snapshot_vis:vis struct $snapshot:ident {
            $(
                $(#[$field_meta:meta])*
                $field:ident
            ),+ $(,)?
        }
    ) => {
        $(#[$counters_meta])*
        #[derive(Debug, Default)]
        $counters_vis struct $counters {
            $(
                $(#[$field_meta])*
                $counters_vis $field: ::std::sync::atomic::AtomicU64,
            )+
            /// Events not sent: dropped on backpressure, or refused (logged).
            $counters_vis emit: $crate::EmitCounters,
        }

        $(#[$snapshot_meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $snapshot_vis struct $snapshot {
            $(
                $(#[$field_meta])*
                pub $field: u64,
            )+
            /// Events dropped because the router signalled backpressure.
            pub dropped_backpressure: u64,
            /// Events the router refused for another reason, or that did not
            /// serialize (logged as errors).
            pub emit_errors: u64,
        }

        impl $counters {
            /// The current values.
            $counters_vis fn snapshot(&self) -> $snapshot {
                let get = |c: &::std::sync::atomic::AtomicU64| {
                    c.load(::std::sync::atomic::Ordering::Relaxed)
                };
                $snapshot {
                    $($field: get(&self.$field),)+
                    dropped_backpressure: get(&self.emit.dropped_backpressure),
                    emit_errors: get(&self.emit.emit_errors),
                }
            }
        }

        impl ::std::fmt::Display for $snapshot {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                $(
                    write!(f, concat!(stringify!($field), "={} "), self.$field)?;
                )+
                write!(
                    f,
                    "dropped_backpressure={} emit_errors={}",
                    self.dropped_backpressure, self.emit_errors
                )
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::bump;

    crate::counters! {
        /// Crate-private counters, as plugins declare them.
        pub(crate) struct Counters;
        /// Their snapshot.
        pub(crate) struct Snapshot {
            /// One.
            first,
            /// Two.
            second
        }
    }

    #[test]
    fn snapshots_read_every_counter_in_order() {
        let counters = Counters::default();
        bump(&counters.first);
        bump(&counters.second);
        bump(&counters.second);
        bump(&counters.emit.dropped_backpressure);
        let snapshot = counters.snapshot();
        assert_eq!(
            snapshot,
            Snapshot {
                first: 1,
                second: 2,
                dropped_backpressure: 1,
                emit_errors: 0,
            }
        );
        assert_eq!(
            snapshot.to_string(),
            "first=1 second=2 dropped_backpressure=1 emit_errors=0"
        );
        assert_eq!(Snapshot::default(), Counters::default().snapshot());
    }
}
