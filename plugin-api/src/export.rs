//! The C-ABI shims [`crate::export_plugin!`] wires a [`Plugin`] into. Not a
//! public API: plugin authors use the macro.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use crate::abi::{self, HostVtable, PluginDescriptor, Reply, Status, Str};
use crate::host::Host;
use crate::panic;
use crate::plugin::{Plugin, Role, Running};
use crate::PluginError;

/// An instance as the host holds it: where it is in its lifecycle and,
/// once started, its host, so that a panic in any later call is logged for
/// this instance.
struct Hosted<P: Plugin> {
    stage: Stage<P>,
    host: Option<Host>,
}

/// The typed lifecycle ([`Plugin`] then [`Running`]) as one value the C
/// calls can step through, whatever order a (broken) host calls them in.
enum Stage<P: Plugin> {
    /// Created, not started.
    Created(P),
    /// Started.
    Running(P::Running),
    /// Stopped, or its start failed: nothing is left to call.
    Done,
}

impl<P: Plugin> Hosted<P> {
    /// Takes the created plugin out to start it; `None` once it was started.
    fn take_created(&mut self) -> Option<P> {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Created(plugin) => Some(plugin),
            other => {
                self.stage = other;
                None
            }
        }
    }

    /// Takes the running plugin out to stop it, leaving the instance done.
    fn take_running(&mut self) -> Option<P::Running> {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Running(running) => Some(running),
            _ => None,
        }
    }
}

/// The descriptor together with the strings it points into.
pub struct Exported {
    descriptor: PluginDescriptor,
    _owned: [String; 3],
}

// SAFETY: the descriptor's pointers point into `_owned`, which is never
// mutated after construction, so sharing it between threads is sound.
unsafe impl Sync for Exported {}
// SAFETY: as above; moving the owned strings does not move their heap bytes.
unsafe impl Send for Exported {}

/// Builds (once) and returns the descriptor of plugin `P`.
pub fn descriptor<P: Plugin>(cell: &'static OnceLock<Exported>) -> *const PluginDescriptor {
    let exported = cell.get_or_init(|| {
        // The host reads the descriptor before any other call: the first
        // moment the library's own panic hook can be replaced.
        panic::install_hook();
        let info = P::info();
        let types = serde_json::to_string(&info.event_types).expect("event types serialize");
        let owned = [info.name, info.version, types];
        let descriptor = PluginDescriptor {
            struct_size: std::mem::size_of::<PluginDescriptor>(),
            abi_major: abi::ABI_MAJOR,
            abi_minor: abi::ABI_MINOR,
            name: Str::new(&owned[0]),
            version: Str::new(&owned[1]),
            role: match info.role {
                Role::Producer => abi::ROLE_PRODUCER,
                Role::Sink => abi::ROLE_SINK,
                Role::Both => abi::ROLE_BOTH,
            },
            event_types_json: Str::new(&owned[2]),
            create: create::<P>,
            start: start::<P>,
            deliver: deliver::<P>,
            stop: stop::<P>,
            destroy: destroy::<P>,
        };
        Exported {
            descriptor,
            _owned: owned,
        }
    });
    &exported.descriptor
}

fn write_reply(reply: *const Reply, kind: u32, text: &str) {
    if reply.is_null() {
        return;
    }
    // SAFETY: a non-null `reply` is valid for the current call (ABI rule);
    // `text` is borrowed only for the callback, which copies it.
    unsafe { ((*reply).write)((*reply).ctx, kind, Str::new(text)) }
}

/// Runs `body`, turning an `Err` or a panic into a status and a reply.
fn guarded(reply: *const Reply, body: impl FnOnce() -> Result<(), PluginError>) -> Status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(error)) => {
            write_reply(reply, abi::REPLY_ERROR, &error.to_string());
            abi::STATUS_ERROR
        }
        Err(payload) => {
            let message = format!("plugin {}", panic::caught(&*payload));
            write_reply(reply, abi::REPLY_ERROR, &message);
            abi::STATUS_PANIC
        }
    }
}

/// # Safety
/// `instance` must be a live pointer created by [`create`] for the same `P`,
/// and no other call may use it concurrently (the ABI's lifecycle rule).
unsafe fn instance<'a, P: Plugin>(instance: *mut c_void) -> &'a mut Hosted<P> {
    // SAFETY: guaranteed by the caller.
    unsafe { &mut *instance.cast::<Hosted<P>>() }
}

unsafe extern "C" fn create<P: Plugin>(
    config_json: Str,
    reply: *const Reply,
    out_instance: *mut *mut c_void,
) -> Status {
    guarded(reply, || {
        // SAFETY: the host lends `config_json` for this call.
        let bytes = unsafe { config_json.as_bytes() };
        let config = if bytes.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_slice(bytes).map_err(PluginError::ConfigJson)?
        };
        let plugin = P::create(config)?;
        if let Some(types) = plugin.event_types() {
            let json = serde_json::to_string(&types).expect("event types serialize");
            write_reply(reply, abi::REPLY_EVENT_TYPES, &json);
        }
        let hosted = Hosted::<P> {
            stage: Stage::Created(plugin),
            host: None,
        };
        // SAFETY: the host passes a valid out-pointer for the instance.
        unsafe { *out_instance = Box::into_raw(Box::new(hosted)).cast() };
        Ok(())
    })
}

unsafe extern "C" fn start<P: Plugin>(
    this: *mut c_void,
    host: *const HostVtable,
    reply: *const Reply,
) -> Status {
    guarded(reply, || {
        if host.is_null() {
            return Err(PluginError::NullHost);
        }
        // SAFETY: `this` came from `create`; the host vtable lives for the process.
        let (hosted, host) = unsafe { (instance::<P>(this), Host::from_raw(host)) };
        let plugin = hosted.take_created().ok_or(PluginError::AlreadyStarted)?;
        hosted.host = Some(host);
        panic::remember(host);
        let running = panic::with_host(Some(host), || plugin.start(host))?;
        hosted.stage = Stage::Running(running);
        Ok(())
    })
}

unsafe extern "C" fn deliver<P: Plugin>(this: *mut c_void, event_json: Str) -> Status {
    guarded(std::ptr::null(), || {
        // SAFETY: `this` came from `create`; `event_json` is lent for this call.
        let (hosted, bytes) = unsafe { (instance::<P>(this), event_json.as_bytes()) };
        let text = std::str::from_utf8(bytes).map_err(PluginError::EventNotUtf8)?;
        let Stage::Running(running) = &mut hosted.stage else {
            return Err(PluginError::NotRunning);
        };
        panic::with_host(hosted.host, || running.deliver(text))
    })
}

unsafe extern "C" fn stop<P: Plugin>(this: *mut c_void) -> Status {
    guarded(std::ptr::null(), || {
        // SAFETY: `this` came from `create`.
        let hosted = unsafe { instance::<P>(this) };
        if let Some(running) = hosted.take_running() {
            panic::with_host(hosted.host, || running.stop());
        }
        Ok(())
    })
}

unsafe extern "C" fn destroy<P: Plugin>(this: *mut c_void) {
    let _ = guarded(std::ptr::null(), || {
        if !this.is_null() {
            // SAFETY: `this` came from `Box::into_raw` in `create` and is destroyed once.
            let hosted = unsafe { Box::from_raw(this.cast::<Hosted<P>>()) };
            panic::with_host(hosted.host, || drop(hosted));
        }
        Ok(())
    });
}

/// Exports a [`Plugin`] implementation as a Switchyard plugin library: the
/// one line a plugin author writes beside `crate-type = ["cdylib"]`.
///
/// Refuses to compile with `panic = "abort"`, because then a panic could not
/// be caught at the boundary and would take the whole router down.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(panic = "abort")]
        compile_error!(
            "Switchyard plugins must be built with panic = \"unwind\": a panic must be caught at the plugin boundary, not abort the router"
        );

        /// The plugin's entry point (ABI major version 1).
        #[unsafe(no_mangle)]
        pub extern "C" fn switchyard_plugin_entry_v1() -> *const $crate::abi::PluginDescriptor {
            static EXPORTED: ::std::sync::OnceLock<$crate::export::Exported> =
                ::std::sync::OnceLock::new();
            $crate::export::descriptor::<$plugin>(&EXPORTED)
        }
    };
}

#[cfg(test)]
mod tests {
    //! The C shims step a [`Plugin`] through its typed lifecycle whatever
    //! order the host calls them in.

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::abi::EmitStatus;
    use crate::{PluginInfo, Running};

    static STARTS: AtomicUsize = AtomicUsize::new(0);
    static DELIVERED: AtomicUsize = AtomicUsize::new(0);
    static STOPS: AtomicUsize = AtomicUsize::new(0);

    struct Counting;
    struct CountingRunning;

    impl Plugin for Counting {
        type Running = CountingRunning;
        fn info() -> PluginInfo {
            PluginInfo::new("counting", "0", Role::Sink)
        }
        fn create(_config: serde_json::Value) -> Result<Self, PluginError> {
            Ok(Counting)
        }
        fn start(self, _host: Host) -> Result<CountingRunning, PluginError> {
            STARTS.fetch_add(1, Ordering::SeqCst);
            Ok(CountingRunning)
        }
    }

    impl Running for CountingRunning {
        fn deliver(&mut self, _event: &str) -> Result<(), PluginError> {
            DELIVERED.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn stop(self) {
            STOPS.fetch_add(1, Ordering::SeqCst);
        }
    }

    unsafe extern "C" fn emit(_: *const c_void, _: Str, _: Str, _: Str) -> EmitStatus {
        abi::EMIT_OK
    }
    unsafe extern "C" fn log(_: *const c_void, _: u32, _: Str) {}
    unsafe extern "C" fn report_failure(_: *const c_void, _: Str) {}

    /// Appends the reply's text to the `String` that `ctx` points to.
    unsafe extern "C" fn write(ctx: *mut c_void, _kind: u32, text: Str) {
        // SAFETY: `ctx` is the `String` the test lent for this call, and
        // `text` is valid for the call.
        unsafe { (*ctx.cast::<String>()).push_str(&String::from_utf8_lossy(text.as_bytes())) }
    }

    #[test]
    fn a_second_start_is_refused_and_events_reach_only_a_running_instance() {
        let vtable = HostVtable {
            struct_size: std::mem::size_of::<HostVtable>(),
            ctx: std::ptr::null(),
            emit,
            log,
            report_failure,
            config_dir: Str::EMPTY,
        };
        let mut said = String::new();
        let reply = Reply {
            ctx: (&raw mut said).cast(),
            write,
        };
        let mut this: *mut c_void = std::ptr::null_mut();
        // SAFETY: the calls follow the ABI: valid reply and out-pointer,
        // `this` from `create`, a vtable that outlives every call, and one
        // call at a time; `destroy` is last.
        unsafe {
            assert_eq!(
                create::<Counting>(Str::EMPTY, &reply, &mut this),
                abi::STATUS_OK
            );
            assert_eq!(deliver::<Counting>(this, Str::new("{}")), abi::STATUS_ERROR);
            assert_eq!(start::<Counting>(this, &vtable, &reply), abi::STATUS_OK);
            assert_eq!(start::<Counting>(this, &vtable, &reply), abi::STATUS_ERROR);
            assert_eq!(said, "the instance was already started");
            assert_eq!(deliver::<Counting>(this, Str::new("{}")), abi::STATUS_OK);
            assert_eq!(stop::<Counting>(this), abi::STATUS_OK);
            assert_eq!(
                stop::<Counting>(this),
                abi::STATUS_OK,
                "a second stop is a no-op"
            );
            assert_eq!(deliver::<Counting>(this, Str::new("{}")), abi::STATUS_ERROR);
            destroy::<Counting>(this);
        }
        let counts = [&STARTS, &DELIVERED, &STOPS].map(|c| c.load(Ordering::SeqCst));
        assert_eq!(counts, [1, 1, 1]);
    }
}
