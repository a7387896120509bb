//! [`Host`]: the safe handle through which a plugin emits events and logs.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::abi::{self, HostVtable, Str};

/// Why the router refused an emitted event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EmitError {
    /// The type is not one this instance declared.
    UnknownType,
    /// The payload breaks the type's schema (or, from a router older than
    /// ABI 1.2, a size bound).
    InvalidPayload,
    /// The event's envelope would be over the router's
    /// `server.max_event_bytes`: send less in one event.
    TooLarge,
    /// The router cannot take more right now; retry later or drop.
    Backpressure,
    /// The instance was stopped.
    Stopped,
    /// A status this SDK does not know (a newer host).
    Other(i32),
}

impl fmt::Display for EmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EmitError::UnknownType => f.write_str("unknown event type"),
            EmitError::InvalidPayload => f.write_str("invalid payload"),
            EmitError::TooLarge => f.write_str("event too large (server.max_event_bytes)"),
            EmitError::Backpressure => f.write_str("router overloaded (backpressure)"),
            EmitError::Stopped => f.write_str("plugin instance stopped"),
            EmitError::Other(code) => write!(f, "emit failed with status {code}"),
        }
    }
}

impl std::error::Error for EmitError {}

/// Severity of a log line sent to the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for debugging.
    Debug,
    /// Very fine detail.
    Trace,
}

impl LogLevel {
    fn code(self) -> u32 {
        match self {
            LogLevel::Error => abi::LOG_ERROR,
            LogLevel::Warn => abi::LOG_WARN,
            LogLevel::Info => abi::LOG_INFO,
            LogLevel::Debug => abi::LOG_DEBUG,
            LogLevel::Trace => abi::LOG_TRACE,
        }
    }
}

/// The router's callbacks, handed to [`crate::Plugin::start`]. Cheap to clone
/// and usable from any thread; no call blocks.
#[derive(Clone, Copy)]
pub struct Host {
    vtable: &'static HostVtable,
}

// SAFETY: the ABI requires every host callback to be thread-safe, and the
// vtable is immutable and valid for the life of the process.
unsafe impl Send for Host {}
// SAFETY: as above; `Host` only reads the vtable and calls thread-safe functions.
unsafe impl Sync for Host {}

impl Host {
    /// Wraps the vtable the host passed to `start`.
    ///
    /// # Safety
    /// `vtable` must be non-null and valid (with valid callbacks) for the
    /// life of the process, as the ABI promises for the pointer given to `start`.
    pub(crate) unsafe fn from_raw(vtable: *const HostVtable) -> Host {
        Host {
            // SAFETY: guaranteed by the caller.
            vtable: unsafe { &*vtable },
        }
    }

    /// The folder of the router's configuration file: relative file paths
    /// in the plugin's `[plugins.config]` table are relative to it
    /// (docs/configuration.md, "The plugins' keys"), but the table reaches
    /// the plugin verbatim, so the plugin
    /// resolves them (see [`Host::resolve`]). `None` from a router built
    /// before ABI 1.1.
    pub fn config_dir(&self) -> Option<&'static Path> {
        let end = std::mem::offset_of!(HostVtable, config_dir) + std::mem::size_of::<Str>();
        if self.vtable.struct_size < end {
            return None;
        }
        // SAFETY: the host's `struct_size` covers the field, and the ABI
        // keeps its text valid as long as the vtable, i.e. the process.
        let bytes: &'static [u8] = unsafe { self.vtable.config_dir.as_bytes() };
        std::str::from_utf8(bytes)
            .ok()
            .filter(|dir| !dir.is_empty())
            .map(Path::new)
    }

    /// A file path from the plugin's table, resolved against
    /// [`Host::config_dir`] when relative (unchanged when absolute, or when
    /// the router does not say).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match self.config_dir() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// Emits one event whose payload is any serializable value.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        event_type: &str,
        payload: &T,
        correlation_id: Option<&str>,
    ) -> Result<(), EmitError> {
        let json = serde_json::to_string(payload).map_err(|_| EmitError::InvalidPayload)?;
        self.emit_json(event_type, &json, correlation_id)
    }

    /// Emits one event whose payload is already JSON text.
    pub fn emit_json(
        &self,
        event_type: &str,
        payload_json: &str,
        correlation_id: Option<&str>,
    ) -> Result<(), EmitError> {
        let cid = correlation_id.map(Str::new).unwrap_or(Str::EMPTY);
        // SAFETY: the vtable is valid for the process (see `from_raw`); the
        // strings are borrowed for this call only, as the ABI requires.
        let status = unsafe {
            (self.vtable.emit)(
                self.vtable.ctx,
                Str::new(event_type),
                Str::new(payload_json),
                cid,
            )
        };
        match status {
            abi::EMIT_OK => Ok(()),
            abi::EMIT_UNKNOWN_TYPE => Err(EmitError::UnknownType),
            abi::EMIT_INVALID_PAYLOAD => Err(EmitError::InvalidPayload),
            abi::EMIT_BACKPRESSURE => Err(EmitError::Backpressure),
            abi::EMIT_STOPPED => Err(EmitError::Stopped),
            abi::EMIT_TOO_LARGE => Err(EmitError::TooLarge),
            other => Err(EmitError::Other(other)),
        }
    }

    /// Writes a line to the router's log (plugins' own `tracing` output goes nowhere).
    pub fn log(&self, level: LogLevel, message: &str) {
        // SAFETY: as in `emit_json`.
        unsafe { (self.vtable.log)(self.vtable.ctx, level.code(), Str::new(message)) }
    }

    /// Logs at info level.
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message);
    }

    /// Logs at warn level.
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message);
    }

    /// Logs at error level.
    pub fn error(&self, message: &str) {
        self.log(LogLevel::Error, message);
    }

    /// Tells the router this instance is broken, so it is restarted with backoff.
    pub fn report_failure(&self, message: &str) {
        // SAFETY: as in `emit_json`.
        unsafe { (self.vtable.report_failure)(self.vtable.ctx, Str::new(message)) }
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::c_void;

    unsafe extern "C" fn emit(_: *const c_void, _: Str, _: Str, _: Str) -> abi::EmitStatus {
        abi::EMIT_OK
    }
    unsafe extern "C" fn log(_: *const c_void, _: u32, _: Str) {}
    unsafe extern "C" fn report_failure(_: *const c_void, _: Str) {}

    fn host(struct_size: usize, dir: &'static str) -> Host {
        let vtable: &'static HostVtable = Box::leak(Box::new(HostVtable {
            struct_size,
            ctx: std::ptr::null(),
            emit,
            log,
            report_failure,
            config_dir: Str::new(dir),
        }));
        // SAFETY: the vtable is leaked, so valid for the process, and its
        // callbacks are valid functions.
        unsafe { Host::from_raw(vtable) }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let h = host(std::mem::size_of::<HostVtable>(), "/etc/switchyard");
        assert_eq!(h.config_dir(), Some(Path::new("/etc/switchyard")));
        assert_eq!(
            h.resolve(Path::new("var/audit.log")),
            Path::new("/etc/switchyard/var/audit.log")
        );
        assert_eq!(h.resolve(Path::new("/abs.log")), Path::new("/abs.log"));
    }

    #[test]
    fn a_1_0_host_has_no_config_folder_and_paths_stay_as_given() {
        let h = host(std::mem::offset_of!(HostVtable, config_dir), "/ignored");
        assert_eq!(h.config_dir(), None);
        assert_eq!(h.resolve(Path::new("a.log")), Path::new("a.log"));
    }
}
