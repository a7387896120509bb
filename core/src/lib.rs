//! Switchyard core.
