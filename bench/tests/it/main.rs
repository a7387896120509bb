//! The integration tests of `switchyard-bench`, as one test binary (the
//! layout ripgrep uses): each module below was a test file of its own, and
//! they share [`support`], compiled once.
//!
//! Run one module with a filter: `cargo test -p switchyard-bench --test it floor_smoke::`.

mod support;

mod compare_smoke;
mod floor_smoke;
mod smoke;
