//! Panics inside a plugin reach the router's log, not stderr.
//!
//! A plugin library carries its own copy of std, and with it its own panic
//! hook: left alone, that hook prints `thread '…' panicked at …` straight to
//! stderr, past the router's log format (JSON lines included). The SDK
//! replaces it, once per library, with a hook that sends the message and its
//! location through the host's `log` callback instead. The panic still
//! unwinds to the `catch_unwind` at the boundary (or in [`crate::Host::spawn`]),
//! which turns it into a status code as before, and the location recorded
//! here goes into that status's message too. [`Host::spawn`], a plugin
//! thread whose panic is contained, is defined here with the rest, so that
//! the host's handle does not import the hook that logs through it.

use std::cell::{Cell, RefCell};
use std::panic::PanicHookInfo;
use std::sync::{Mutex, Once};

use crate::host::{Host, LogLevel};

thread_local! {
    /// The host of the instance this thread is working for, when known.
    static THREAD_HOST: Cell<Option<Host>> = const { Cell::new(None) };
    /// The last panic on this thread, with its location.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A host of this library (the last one started), for panics on threads
/// that are not working for a known instance (threads a plugin spawned with
/// plain `std::thread`, say).
static ANY_HOST: Mutex<Option<Host>> = Mutex::new(None);

static INSTALL: Once = Once::new();

/// Replaces this library's panic hook (once; later calls do nothing).
pub(crate) fn install_hook() {
    INSTALL.call_once(|| std::panic::set_hook(Box::new(hook)));
}

/// Remembers a started instance's host for panics on unknown threads.
pub(crate) fn remember(host: Host) {
    if let Ok(mut any) = ANY_HOST.lock() {
        *any = Some(host);
    }
}

/// Runs `body` with `host` as this thread's host (for the hook), restoring
/// the previous one after.
pub(crate) fn with_host<R>(host: Option<Host>, body: impl FnOnce() -> R) -> R {
    let previous = THREAD_HOST.with(|h| h.replace(host.or(h.get())));
    let result = body();
    THREAD_HOST.with(|h| h.set(previous));
    result
}

impl Host {
    /// Spawns a plugin thread whose panic is contained: instead of unwinding
    /// silently, it is logged through the router (with its location) and
    /// reported with [`Host::report_failure`].
    pub fn spawn<F>(&self, name: &str, body: F) -> std::io::Result<std::thread::JoinHandle<()>>
    where
        F: FnOnce() + Send + 'static,
    {
        let host = *self;
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let run = std::panic::AssertUnwindSafe(|| with_host(Some(host), body));
                if let Err(payload) = std::panic::catch_unwind(run) {
                    let message = caught(&*payload);
                    host.report_failure(&format!("plugin thread {message}"));
                }
            })
    }
}

/// The message of the panic just caught on this thread, with its location
/// when the hook saw it (`panicked at src/lib.rs:10:5: boom`), else the
/// payload alone.
pub(crate) fn caught(payload: &(dyn std::any::Any + Send)) -> String {
    LAST_PANIC
        .with(|last| last.borrow_mut().take())
        .unwrap_or_else(|| format!("panicked: {}", payload_text(payload)))
}

/// The text of a panic's payload.
pub(crate) fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

fn hook(info: &PanicHookInfo<'_>) {
    let location = info
        .location()
        .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_default();
    let message = format!("panicked{location}: {}", payload_text(info.payload()));
    let host = THREAD_HOST
        .with(Cell::get)
        .or_else(|| ANY_HOST.try_lock().ok().and_then(|h| *h));
    if let Some(host) = host {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        host.log(
            LogLevel::Error,
            &format!("plugin {message} (thread `{name}`)"),
        );
    }
    // No host yet (a panic in `create`): the message reaches the router in
    // the error reply of the call that caught it.
    LAST_PANIC.with(|last| *last.borrow_mut() = Some(message));
}
