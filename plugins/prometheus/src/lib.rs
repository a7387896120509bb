//! Switchyard's `prometheus` plugin (being written).
