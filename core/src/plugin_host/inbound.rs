//! What comes in from a started plugin instance, through the callbacks the
//! router lends it: events (`emit`, where plugin events enter the router),
//! log lines (`log`) and failure reports (`report_failure`). Each callback
//! catches panics, because unwinding into a plugin's frames would abort the
//! process.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use switchyard_plugin_api::abi::{self, EmitStatus, HostVtable, Str};

use crate::router::{Incoming, Origin, PublishError, Router};

/// The target of this module's log lines, plugins' own messages among them.
/// It is the one they have always carried, so `log.level` directives and
/// log searches that name it keep matching (docs/plugins.md, "5. The
/// rules", shows such a line).
const LOG_TARGET: &str = "switchyard::plugin_host::host_api";

/// What the host knows about one started instance.
pub struct HostContext {
    /// The instance name.
    pub instance: String,
    /// The ABI minor version its library was built for: statuses newer
    /// than it are answered in the older form.
    abi_minor: u32,
    router: Weak<Router>,
    stopped: AtomicBool,
    on_failure: Box<dyn Fn(String) + Send + Sync>,
}

impl HostContext {
    /// Leaks a context and its vtable: the ABI promises the `host` handle
    /// stays valid for the life of the process, and a few hundred bytes per
    /// (re)start is the price.
    pub fn leak(
        instance: &str,
        abi_minor: u32,
        router: &Arc<Router>,
        on_failure: Box<dyn Fn(String) + Send + Sync>,
    ) -> (&'static HostContext, &'static HostVtable) {
        let ctx: &'static HostContext = Box::leak(Box::new(HostContext {
            instance: instance.to_owned(),
            abi_minor,
            router: Arc::downgrade(router),
            stopped: AtomicBool::new(false),
            on_failure,
        }));
        let source = router.snapshot().config.source.clone();
        let folder = source.parent().unwrap_or(std::path::Path::new("/"));
        let config_dir: &'static str = Box::leak(folder.to_string_lossy().into_owned().into());
        let vtable = Box::leak(Box::new(HostVtable {
            struct_size: std::mem::size_of::<HostVtable>(),
            ctx: (ctx as *const HostContext).cast(),
            emit,
            log,
            report_failure,
            config_dir: Str::new(config_dir),
        }));
        (ctx, vtable)
    }

    /// From now on every `emit` answers `stopped`.
    pub fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn emit(&self, event_type: &[u8], payload: &[u8], correlation_id: &[u8]) -> EmitStatus {
        if self.stopped.load(Ordering::SeqCst) {
            return abi::EMIT_STOPPED;
        }
        let Some(router) = self.router.upgrade() else {
            return abi::EMIT_STOPPED;
        };
        // Refused before the router sees it: counted and logged here, as
        // the router does for what it refuses itself.
        let unreadable = |why: String| {
            router.metrics().refuse("invalid_json");
            tracing::warn!(target: LOG_TARGET, plugin = %self.instance, "emit refused: {why}");
            abi::EMIT_INVALID_PAYLOAD
        };
        let (Ok(event_type), Ok(correlation_id)) = (
            std::str::from_utf8(event_type),
            std::str::from_utf8(correlation_id),
        ) else {
            return unreadable("the event type or correlation id is not UTF-8".into());
        };
        let max_depth = router.snapshot().config.server.max_json_depth;
        if let Err(e) = crate::json_depth::check_depth(payload, max_depth) {
            return unreadable(format!("{event_type}: {e}"));
        }
        let payload = match serde_json::from_slice(payload) {
            Ok(payload) => payload,
            Err(e) => {
                return unreadable(format!("{event_type}: the payload is not valid JSON: {e}"))
            }
        };
        let incoming = Incoming {
            type_name: event_type.to_owned(),
            payload,
            correlation_id: (!correlation_id.is_empty()).then(|| correlation_id.to_owned()),
            idempotency_key: None,
        };
        match router
            .publish(vec![incoming], &Origin::Plugin(self.instance.clone()))
            .wait()
        {
            Ok(_) => abi::EMIT_OK,
            // Both mean "not now": a plugin retries or holds the event.
            Err(PublishError::Overloaded | PublishError::Unavailable { .. }) => {
                abi::EMIT_BACKPRESSURE
            }
            Err(e @ (PublishError::UnknownType { .. } | PublishError::Forbidden { .. })) => {
                tracing::warn!(target: LOG_TARGET, plugin = %self.instance, "emit refused: {}", refusal(&e));
                abi::EMIT_UNKNOWN_TYPE
            }
            // Told apart only for plugins that know the status (ABI 1.2).
            Err(e @ PublishError::TooLarge { .. }) if self.abi_minor >= 2 => {
                tracing::debug!(target: LOG_TARGET, plugin = %self.instance, "emit refused: {e}");
                abi::EMIT_TOO_LARGE
            }
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, plugin = %self.instance, "emit refused: {}", refusal(&e));
                abi::EMIT_INVALID_PAYLOAD
            }
        }
    }
}

/// Why an emitted event was refused, each invalid field named, for the log.
fn refusal(e: &PublishError) -> String {
    match e {
        PublishError::Invalid { fields } => {
            let each: Vec<String> = fields
                .iter()
                .map(|f| format!("{} {} (expected {})", f.field, f.problem, f.expected))
                .collect();
            format!("{e}: {}", each.join("; "))
        }
        other => other.to_string(),
    }
}

/// # Safety
/// `ctx` must be the pointer stored in the vtable built by [`HostContext::leak`].
unsafe fn context<'a>(ctx: *const c_void) -> &'a HostContext {
    // SAFETY: guaranteed by the caller; contexts are leaked, so never freed.
    unsafe { &*ctx.cast::<HostContext>() }
}

unsafe extern "C" fn emit(
    ctx: *const c_void,
    event_type: Str,
    payload: Str,
    correlation_id: Str,
) -> EmitStatus {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin passes back our own ctx and lends the strings for this call.
        let (ctx, t, p, c) = unsafe {
            (
                context(ctx),
                event_type.as_bytes(),
                payload.as_bytes(),
                correlation_id.as_bytes(),
            )
        };
        ctx.emit(t, p, c)
    }))
    .unwrap_or(abi::EMIT_INVALID_PAYLOAD)
}

unsafe extern "C" fn log(ctx: *const c_void, level: u32, message: Str) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `emit`.
        let (ctx, bytes) = unsafe { (context(ctx), message.as_bytes()) };
        let message = String::from_utf8_lossy(bytes);
        let plugin = ctx.instance.as_str();
        match level {
            abi::LOG_ERROR => tracing::error!(target: LOG_TARGET, plugin, "{message}"),
            abi::LOG_WARN => tracing::warn!(target: LOG_TARGET, plugin, "{message}"),
            abi::LOG_INFO => tracing::info!(target: LOG_TARGET, plugin, "{message}"),
            abi::LOG_DEBUG => tracing::debug!(target: LOG_TARGET, plugin, "{message}"),
            _ => tracing::trace!(target: LOG_TARGET, plugin, "{message}"),
        }
    }));
}

unsafe extern "C" fn report_failure(ctx: *const c_void, message: Str) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `emit`.
        let (ctx, bytes) = unsafe { (context(ctx), message.as_bytes()) };
        // A stopped instance's late failures do not concern its successor.
        if !ctx.stopped.load(Ordering::SeqCst) {
            (ctx.on_failure)(String::from_utf8_lossy(bytes).into_owned());
        }
    }));
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// A log writer that keeps what it is given.
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plugin_log_lines_keep_the_target_the_docs_show() {
        let ctx = HostContext {
            instance: "tk".to_owned(),
            abi_minor: abi::ABI_MINOR,
            router: Weak::new(),
            stopped: AtomicBool::new(false),
            on_failure: Box::new(|_| {}),
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || Capture(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let ctx: *const HostContext = &ctx;
            // SAFETY: `ctx` is a live context for the whole call and the
            // message is borrowed for it, as in a plugin's own calls.
            unsafe { log(ctx.cast(), abi::LOG_WARN, Str::new("hello")) };
        });
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(r#""target":"switchyard::plugin_host::host_api""#),
            "{text}"
        );
        assert!(
            text.contains(r#""message":"hello","plugin":"tk""#),
            "{text}"
        );
    }
}
