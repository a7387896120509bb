//! The stable C ABI between the router (the host) and a plugin library.
//!
//! Rules that keep it stable across compilers and versions:
//! - only C types cross: integers, `(pointer, length)` strings of UTF-8 or
//!   JSON, function pointers and opaque handles;
//! - data is borrowed for the duration of one call, and the receiver copies
//!   what it keeps, so memory never changes owner and two allocators never meet;
//! - both [`PluginDescriptor`] and [`HostVtable`] begin with `struct_size`: a
//!   minor version may add fields at the end, and each side reads only the
//!   fields the other's `struct_size` covers;
//! - the entry symbol's name carries the major version, and the descriptor
//!   repeats it, so a library built for another major version is refused with
//!   a clear error rather than misread.
//!
//! The host never calls two lifecycle functions of one instance at the same
//! time: `create` → `start` → `deliver`* → `stop` → `destroy`.
//!
//! `include/switchyard_plugin.h` is the same ABI for C; a test checks that the
//! two agree on every size and offset.

use std::ffi::c_void;

/// Major ABI version: a host refuses a plugin whose major version differs.
pub const ABI_MAJOR: u32 = 1;
/// Minor ABI version: additions at the end of the structs; any minor loads.
pub const ABI_MINOR: u32 = 2;
/// Name of the entry function every plugin exports (carries [`ABI_MAJOR`]).
pub const ENTRY_SYMBOL: &str = "switchyard_plugin_entry_v1";
/// Prefix of the entry symbol; the host probes other majors to name them in errors.
pub const ENTRY_SYMBOL_PREFIX: &str = "switchyard_plugin_entry_v";

/// A borrowed UTF-8 (or JSON) string: valid only for the call it is passed to.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Str {
    /// First byte; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Length in bytes.
    pub len: usize,
}

impl Str {
    /// The empty string (also "absent" where a field is optional).
    pub const EMPTY: Str = Str {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `s` for one call.
    pub fn new(s: &str) -> Str {
        Str {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// The bytes this string points to.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a` (the ABI
    /// guarantees this for the duration of the call that received it).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        // SAFETY: the caller guarantees `ptr` is valid for `len` bytes for 'a.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Result of a lifecycle call.
pub type Status = i32;
/// The call succeeded.
pub const STATUS_OK: Status = 0;
/// The call failed; the reason was written to the [`Reply`].
pub const STATUS_ERROR: Status = 1;
/// The plugin panicked inside the call; the panic was caught at the boundary.
pub const STATUS_PANIC: Status = 2;

/// Result of [`HostVtable::emit`].
pub type EmitStatus = i32;
/// The event was accepted.
pub const EMIT_OK: EmitStatus = 0;
/// The type is not one this instance declared.
pub const EMIT_UNKNOWN_TYPE: EmitStatus = 1;
/// The payload is not valid JSON or breaks the type's schema or a size bound.
pub const EMIT_INVALID_PAYLOAD: EmitStatus = 2;
/// The router cannot take more events right now; try again later.
pub const EMIT_BACKPRESSURE: EmitStatus = 3;
/// The instance has been stopped; nothing more is accepted from it.
pub const EMIT_STOPPED: EmitStatus = 4;
/// The event's envelope would be over the router's `server.max_event_bytes`
/// (ABI 1.2; a host answers it only to plugins built for 1.2 or later, and
/// [`EMIT_INVALID_PAYLOAD`] to older ones).
pub const EMIT_TOO_LARGE: EmitStatus = 5;

/// The plugin emits events.
pub const ROLE_PRODUCER: u32 = 1;
/// The plugin receives routed events through `deliver`.
pub const ROLE_SINK: u32 = 2;
/// Both of the above.
pub const ROLE_BOTH: u32 = 3;

/// Log levels for [`HostVtable::log`].
pub const LOG_ERROR: u32 = 1;
/// Warning level.
pub const LOG_WARN: u32 = 2;
/// Info level.
pub const LOG_INFO: u32 = 3;
/// Debug level.
pub const LOG_DEBUG: u32 = 4;
/// Trace level.
pub const LOG_TRACE: u32 = 5;

/// [`Reply`] kind: an error message explaining a failed call.
pub const REPLY_ERROR: u32 = 1;
/// [`Reply`] kind: the instance's own event types (a JSON array), from `create`.
pub const REPLY_EVENT_TYPES: u32 = 2;

/// Where a call hands text back to its caller. The plugin calls `write`
/// during the call; the host copies the text before `write` returns.
#[repr(C)]
pub struct Reply {
    /// The host's context; passed back unchanged.
    pub ctx: *mut c_void,
    /// Records `text` of the given `REPLY_*` kind.
    pub write: unsafe extern "C" fn(ctx: *mut c_void, kind: u32, text: Str),
}

/// What a plugin library describes itself with. Returned by the entry symbol;
/// lives (unchanged) as long as the library is loaded.
#[repr(C)]
pub struct PluginDescriptor {
    /// `size_of::<PluginDescriptor>()` as the plugin was built.
    pub struct_size: usize,
    /// Must equal the host's [`ABI_MAJOR`].
    pub abi_major: u32,
    /// The plugin's [`ABI_MINOR`].
    pub abi_minor: u32,
    /// Plugin name, e.g. `detection`.
    pub name: Str,
    /// Plugin version, e.g. `0.1.0`.
    pub version: Str,
    /// One of the `ROLE_*` constants.
    pub role: u32,
    /// The default event types, a JSON array of declarations (see the SDK's
    /// `EventTypeDecl` for the shape).
    pub event_types_json: Str,
    /// Parses and validates `config_json` (an object) and creates an instance,
    /// with no side effects (no threads, sockets or files). Writes the
    /// instance to `out_instance`, or an error to `reply`. May write
    /// `REPLY_EVENT_TYPES` to replace the default types for this instance.
    pub create: unsafe extern "C" fn(
        config_json: Str,
        reply: *const Reply,
        out_instance: *mut *mut c_void,
    ) -> Status,
    /// Acquires resources (threads, sockets, files) and returns promptly.
    /// `host` stays valid for the life of the process.
    pub start: unsafe extern "C" fn(
        instance: *mut c_void,
        host: *const HostVtable,
        reply: *const Reply,
    ) -> Status,
    /// Hands one routed event (the client envelope, JSON) to a sink; may take its time.
    pub deliver: unsafe extern "C" fn(instance: *mut c_void, event_json: Str) -> Status,
    /// Releases what `start` acquired; must return within the instance's `stop_timeout_s`.
    pub stop: unsafe extern "C" fn(instance: *mut c_void) -> Status,
    /// Frees the instance.
    pub destroy: unsafe extern "C" fn(instance: *mut c_void),
}

/// Callbacks the host lends a started instance. All are thread-safe and
/// never block.
#[repr(C)]
pub struct HostVtable {
    /// `size_of::<HostVtable>()` as the host was built.
    pub struct_size: usize,
    /// The host's per-instance context; pass it back unchanged.
    pub ctx: *const c_void,
    /// Offers one event: its type (name or alias), payload (JSON object) and
    /// correlation id (empty = none). Returns an `EMIT_*` status.
    pub emit: unsafe extern "C" fn(
        ctx: *const c_void,
        event_type: Str,
        payload_json: Str,
        correlation_id: Str,
    ) -> EmitStatus,
    /// Writes one line to the router's log at a `LOG_*` level.
    pub log: unsafe extern "C" fn(ctx: *const c_void, level: u32, message: Str),
    /// Tells the host that the instance is broken (e.g. one of its threads
    /// died): the host marks it failed and restarts it with backoff.
    pub report_failure: unsafe extern "C" fn(ctx: *const c_void, message: Str),
    /// Since 1.1: the folder of the router's configuration file (absolute).
    /// Relative file paths in the plugin's `[plugins.config]` table resolve
    /// against it (docs/configuration.md, "The plugins' keys"); the table
    /// itself is passed verbatim. Valid as long as the vtable. Read it only
    /// when `struct_size` covers it: a 1.0 host does not have it.
    pub config_dir: Str,
}

/// Signature of the entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginDescriptor;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_symbol_carries_the_major_version() {
        assert_eq!(ENTRY_SYMBOL, format!("{ENTRY_SYMBOL_PREFIX}{ABI_MAJOR}"));
    }

    #[test]
    fn empty_str_reads_as_no_bytes() {
        // SAFETY: EMPTY has a null pointer and length 0, which as_bytes handles.
        assert!(unsafe { Str::EMPTY.as_bytes() }.is_empty());
        let s = "héllo";
        // SAFETY: `s` outlives the borrow.
        assert_eq!(unsafe { Str::new(s).as_bytes() }, s.as_bytes());
    }
}
