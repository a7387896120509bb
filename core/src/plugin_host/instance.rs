//! One plugin instance and its lifecycle calls across the ABI.

use std::ffi::c_void;
use std::sync::Arc;

use serde_json::Value;
use switchyard_plugin_api::abi::{self, HostVtable, Reply, Str};
use switchyard_plugin_api::EventTypeDecl;

use super::loader::Library;
use super::PluginError;

/// What a call wrote back through its [`Reply`].
#[derive(Default)]
struct Replies {
    error: Option<String>,
    event_types: Option<String>,
}

/// Copies text a plugin hands back during a call.
unsafe extern "C" fn write_reply(ctx: *mut c_void, kind: u32, text: Str) {
    let copy = || {
        // SAFETY: `ctx` is the `Replies` passed with this call, alive until the
        // call returns; `text` is lent for this callback only and copied here.
        let (replies, bytes) = unsafe { (&mut *ctx.cast::<Replies>(), text.as_bytes()) };
        let text = String::from_utf8_lossy(bytes).into_owned();
        match kind {
            abi::REPLY_ERROR => replies.error = Some(text),
            abi::REPLY_EVENT_TYPES => replies.event_types = Some(text),
            _ => {}
        }
    };
    // A panic must not unwind into the plugin's frames.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(copy));
}

/// Runs one call with a [`Reply`] the plugin can write to.
fn with_reply(call: impl FnOnce(*const Reply) -> abi::Status) -> (abi::Status, Replies) {
    let mut replies = Replies::default();
    let reply = Reply {
        ctx: (&mut replies as *mut Replies).cast(),
        write: write_reply,
    };
    let status = call(&reply);
    (status, replies)
}

fn failure(status: abi::Status, replies: Replies, what: &str) -> String {
    let detail = replies.error.unwrap_or_else(|| "no reason given".into());
    if status == abi::STATUS_PANIC {
        format!("panicked in {what}: {detail}")
    } else {
        detail
    }
}

/// The plugin's opaque instance pointer.
struct Raw(*mut c_void);

// SAFETY: the ABI lets the host call an instance from any thread as long as
// no two calls overlap, which `Instance`'s `&mut self` methods guarantee.
unsafe impl Send for Raw {}

/// A created plugin instance.
pub struct Instance {
    /// The instance name (`[[plugins]].name`).
    pub name: String,
    /// The library behind it.
    pub library: Arc<Library>,
    /// The types it declares (its own list, or the library's defaults).
    pub types: Vec<EventTypeDecl>,
    raw: Raw,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Calls the plugin's `create` (no side effects: docs/plugins.md, "5. The
    /// rules").
    pub fn create(
        library: &Arc<Library>,
        name: &str,
        config: &Value,
    ) -> Result<Instance, PluginError> {
        let json = config.to_string();
        let mut raw: *mut c_void = std::ptr::null_mut();
        let (status, replies) = with_reply(|reply| {
            // SAFETY: the descriptor is valid for the process; `json` and
            // `reply` outlive the call; `raw` is a valid out-pointer.
            unsafe { (library.descriptor.create)(Str::new(&json), reply, &mut raw) }
        });
        if status != abi::STATUS_OK || raw.is_null() {
            return Err(PluginError::Create {
                instance: name.to_owned(),
                message: failure(status, replies, "create"),
            });
        }
        let mut instance = Instance {
            name: name.to_owned(),
            library: library.clone(),
            types: library.default_types.clone(),
            raw: Raw(raw),
        };
        if let Some(json) = replies.event_types {
            instance.types = serde_json::from_str(&json).map_err(|e| PluginError::Create {
                instance: name.to_owned(),
                message: format!("its event type list is not valid: {e}"),
            })?;
        }
        Ok(instance)
    }

    /// Calls `start` with the host's callbacks.
    pub fn start(&mut self, host: &'static HostVtable) -> Result<(), String> {
        let (status, replies) = with_reply(|reply| {
            // SAFETY: `raw` came from `create`; `host` lives for the process.
            unsafe { (self.library.descriptor.start)(self.raw.0, host, reply) }
        });
        match status {
            abi::STATUS_OK => Ok(()),
            s => Err(failure(s, replies, "start")),
        }
    }

    /// Hands one event to a sink.
    pub fn deliver(&mut self, event_json: &str) -> Result<(), String> {
        // SAFETY: `raw` came from `create`; the event is lent for the call.
        match unsafe { (self.library.descriptor.deliver)(self.raw.0, Str::new(event_json)) } {
            abi::STATUS_OK => Ok(()),
            abi::STATUS_PANIC => Err("panicked in deliver".into()),
            s => Err(format!("deliver failed with status {s}")),
        }
    }

    /// Calls `stop`.
    pub fn stop(&mut self) -> Result<(), String> {
        // SAFETY: `raw` came from `create`.
        match unsafe { (self.library.descriptor.stop)(self.raw.0) } {
            abi::STATUS_OK => Ok(()),
            abi::STATUS_PANIC => Err("panicked in stop".into()),
            s => Err(format!("stop failed with status {s}")),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `create` and is destroyed exactly once, here.
        unsafe { (self.library.descriptor.destroy)(self.raw.0) }
    }
}
