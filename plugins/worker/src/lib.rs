//! Switchyard's `worker` plugin (being written).
