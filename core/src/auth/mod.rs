//! Who may do what: API keys for the publish and admin routes, and the
//! client address rules (loopback, trusted proxies) they depend on.

pub mod client_addr;
pub mod jwt;
pub mod keys;

pub use client_addr::client_addr;
pub use keys::{ApiKeys, KeyCheck};
