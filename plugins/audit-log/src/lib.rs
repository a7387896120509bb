//! Switchyard's `audit-log` plugin (being written).
