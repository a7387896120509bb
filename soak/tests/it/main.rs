//! The soak tool's tests, as one test binary: a short soak against one
//! router, and one against a small cluster through a Redis restart.

mod cluster;
mod smoke;
mod support;
