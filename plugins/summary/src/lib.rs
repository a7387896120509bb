//! Switchyard's `summary` plugin (being written).
