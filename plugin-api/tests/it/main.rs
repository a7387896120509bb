//! The integration tests of `switchyard-plugin-api`, as one test binary (the
//! layout ripgrep uses): each module below was a test file of its own.
//!
//! Run one module with a filter: `cargo test -p switchyard-plugin-api --test it c_header::`.

mod c_header;
mod panic_abort;
