//! The plugin host: loads libraries, creates, starts and stops instances,
//! and tracks each instance's state for `/health`.
//!
//! A reload is planned first ([`PluginHost::plan`]: libraries loaded and
//! `create` called for every added or changed instance, nothing started),
//! so that a config that cannot create its instances is refused whole; the
//! old instances are then stopped and the new ones started around the swap.

mod host_api;
mod instance;
mod loader;
mod sink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;

pub use host_api::HostContext;
pub use instance::Instance;
pub use loader::{Library, Loader};
pub use sink::SinkQueue;

use crate::config::{Config, PluginConfig, Problem};
use crate::registry::InstanceTypes;
use crate::router::{Router, Sink};
use switchyard_plugin_api::Role;

/// Why a plugin could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The library file is not there.
    #[error("plugin library {path} cannot be read ({reason}); build it with `cargo build --release` or fix `library`")]
    NotFound {
        /// The configured path.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The dynamic loader refused the file.
    #[error("cannot load plugin library {path}: {reason}")]
    Load {
        /// The configured path.
        path: PathBuf,
        /// The loader's error.
        reason: String,
    },
    /// The library exports no entry symbol at all.
    #[error(
        "{path} is not a Switchyard plugin: it exports no `switchyard_plugin_entry_v*` function"
    )]
    NotAPlugin {
        /// The configured path.
        path: PathBuf,
    },
    /// The library was built for another ABI major version.
    #[error("{path} was built for plugin ABI version {found}.x, but this router speaks ABI version {expected}.x: rebuild the plugin against switchyard-plugin-api {expected}.x")]
    AbiMismatch {
        /// The configured path.
        path: PathBuf,
        /// The plugin's major version.
        found: u32,
        /// The router's major version.
        expected: u32,
    },
    /// The descriptor cannot be read.
    #[error("{path} has a malformed plugin descriptor: {why}")]
    BadDescriptor {
        /// The configured path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `create` refused the config or panicked.
    #[error("plugin `{instance}` could not be created: {message}")]
    Create {
        /// The instance name.
        instance: String,
        /// The plugin's reason.
        message: String,
    },
}

/// An instance's state as `/health` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Started and working.
    Running,
    /// Failed (panic, `start` error, a dead thread).
    Failed,
    /// Stopped or not started.
    Stopped,
}

/// What `/health` shows for one instance.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Its state.
    pub state: State,
    /// How often it was restarted.
    pub restarts: u32,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// An instance shared between its delivery thread and its lifecycle calls;
/// the mutex keeps the ABI's rule that no two calls overlap.
type SharedInstance = Arc<Mutex<Option<Instance>>>;

/// A running (or failed) instance the host manages.
struct Managed {
    config: PluginConfig,
    library: Arc<Library>,
    types: Vec<switchyard_plugin_api::EventTypeDecl>,
    instance: SharedInstance,
    context: Option<&'static HostContext>,
    status: Arc<Mutex<Status>>,
    sink: Option<Arc<SinkQueue>>,
    delivery: Option<std::thread::JoinHandle<()>>,
}

/// An instance created for a reload, not yet started.
struct Created {
    config: PluginConfig,
    instance: Instance,
    sink: Option<Arc<SinkQueue>>,
}

/// What a reload will do to the instances.
#[derive(Default)]
pub struct Plan {
    created: Vec<Created>,
    kept: Vec<String>,
    outgoing: Vec<String>,
    types: Vec<InstanceTypes>,
    sinks: BTreeMap<String, Arc<dyn Sink>>,
}

impl Plan {
    /// Every enabled instance's declared types, for the registry.
    pub fn instance_types(&self) -> &[InstanceTypes] {
        &self.types
    }

    /// The sink of every enabled sink instance, for the routes.
    pub fn sinks(&self) -> BTreeMap<String, Arc<dyn Sink>> {
        self.sinks.clone()
    }
}

fn is_sink(library: &Library) -> bool {
    matches!(library.role, Role::Sink | Role::Both)
}

/// The plugin host.
#[derive(Default)]
pub struct PluginHost {
    loader: Loader,
    managed: Mutex<BTreeMap<String, Managed>>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost").finish_non_exhaustive()
    }
}

fn plugin_problem(index: usize, key: &str, value: &PluginConfig, why: String) -> Problem {
    Problem {
        key: Some(format!("plugins[{index}].{key}")),
        value: Some(json!(value.name)),
        problem: why,
        line: None,
        column: None,
    }
}

impl PluginHost {
    /// Loads and creates (never starts) what `config` needs beyond what runs.
    pub fn plan(&self, config: &Config) -> Result<Plan, Vec<Problem>> {
        let managed = self.managed.lock();
        let mut plan = Plan::default();
        let mut problems = Vec::new();
        for (index, pc) in config.plugins.iter().enumerate() {
            if !pc.enabled {
                continue;
            }
            let library = match self.loader.load(&pc.library) {
                Ok(lib) => lib,
                Err(e) => {
                    problems.push(plugin_problem(index, "library", pc, e.to_string()));
                    continue;
                }
            };
            let unchanged = managed
                .get(&pc.name)
                .filter(|m| m.config == *pc && Arc::ptr_eq(&m.library, &library));
            if let Some(m) = unchanged {
                plan.kept.push(pc.name.clone());
                if let Some(sink) = &m.sink {
                    plan.sinks.insert(pc.name.clone(), sink.clone());
                }
                plan.types.push(InstanceTypes {
                    index,
                    instance: pc.name.clone(),
                    types: m.types.clone(),
                });
                continue;
            }
            match Instance::create(&library, &pc.name, &pc.config) {
                Ok(instance) => {
                    plan.types.push(InstanceTypes {
                        index,
                        instance: pc.name.clone(),
                        types: instance.types.clone(),
                    });
                    let sink = is_sink(&library).then(|| SinkQueue::new(&pc.name));
                    if let Some(sink) = &sink {
                        plan.sinks.insert(pc.name.clone(), sink.clone());
                    }
                    plan.created.push(Created {
                        config: pc.clone(),
                        instance,
                        sink,
                    });
                }
                Err(e) => problems.push(plugin_problem(index, "config", pc, e.to_string())),
            }
        }
        plan.outgoing = managed
            .keys()
            .filter(|name| !plan.kept.contains(name))
            .cloned()
            .collect();
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(problems)
        }
    }

    /// Stops the instances a plan replaces or removes (each within its
    /// `stop_timeout_s`, or abandoned), while their types are still registered.
    pub fn stop_outgoing(&self, plan: &Plan) {
        let outgoing: Vec<Managed> = {
            let mut managed = self.managed.lock();
            plan.outgoing
                .iter()
                .filter_map(|n| managed.remove(n))
                .collect()
        };
        let handles: Vec<_> = outgoing
            .into_iter()
            .map(|m| std::thread::spawn(move || stop_managed(m)))
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }

    /// Starts the instances a plan created.
    pub fn start_incoming(&self, plan: Plan, router: &Arc<Router>) {
        for Created {
            config,
            instance,
            sink,
        } in plan.created
        {
            let status = Arc::new(Mutex::new(Status {
                state: State::Stopped,
                restarts: 0,
                last_error: None,
            }));
            let mut m = Managed {
                library: instance.library.clone(),
                types: instance.types.clone(),
                config,
                instance: Arc::new(Mutex::new(Some(instance))),
                context: None,
                status,
                sink,
                delivery: None,
            };
            start_managed(&mut m, router);
            self.managed.lock().insert(m.config.name.clone(), m);
        }
    }

    /// Stops every instance (at shutdown).
    pub fn stop_all(&self) {
        let plan = Plan {
            outgoing: self.managed.lock().keys().cloned().collect(),
            ..Plan::default()
        };
        self.stop_outgoing(&plan);
    }

    /// Each instance's status, by name.
    pub fn statuses(&self) -> BTreeMap<String, Status> {
        self.managed
            .lock()
            .iter()
            .map(|(name, m)| (name.clone(), m.status.lock().clone()))
            .collect()
    }
}

fn start_managed(m: &mut Managed, router: &Arc<Router>) {
    let name = m.config.name.clone();
    let status = m.status.clone();
    let on_failure = Box::new(move |message: String| {
        tracing::error!(plugin = %name, "plugin failed: {message}");
        let mut s = status.lock();
        s.state = State::Failed;
        s.last_error = Some(message);
    });
    let (context, vtable) = HostContext::leak(&m.config.name, router, on_failure);
    m.context = Some(context);
    let result = match m.instance.lock().as_mut() {
        Some(instance) => instance.start(vtable),
        None => return,
    };
    match result {
        Ok(()) => {
            tracing::info!(plugin = %m.config.name, library = %m.library.path.display(), "plugin started");
            m.status.lock().state = State::Running;
            m.delivery = serve_sink(m);
        }
        Err(e) => {
            tracing::error!(plugin = %m.config.name, "plugin failed to start: {e}");
            let mut s = m.status.lock();
            s.state = State::Failed;
            s.last_error = Some(e);
        }
    }
}

/// Starts the delivery thread of a sink instance.
fn serve_sink(m: &Managed) -> Option<std::thread::JoinHandle<()>> {
    let sink = m.sink.as_ref()?;
    let (name, status) = (m.config.name.clone(), m.status.clone());
    let on_error = move |e: String| {
        tracing::error!(plugin = %name, "sink failed to take an event: {e}");
        let mut s = status.lock();
        s.state = State::Failed;
        s.last_error = Some(e);
    };
    sink.serve(m.instance.clone(), on_error)
        .map_err(|e| tracing::error!(plugin = %m.config.name, "cannot start the sink's delivery thread: {e}"))
        .ok()
}

/// Ends delivery, then calls `stop`, on a thread of its own, waiting at
/// most `stop_timeout_s`; an instance that does not return in time is
/// abandoned, never destroyed.
fn stop_managed(m: Managed) {
    let name = m.config.name.clone();
    let context = m.context;
    let instance = m.instance.clone();
    let (sink, delivery) = (m.sink.clone(), m.delivery);
    let abandoned = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gave_up = abandoned.clone();
    let (done, returned) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("stop-{name}"))
        .spawn(move || {
            if let Some(sink) = sink {
                sink.close();
            }
            if let Some(delivery) = delivery {
                let _ = delivery.join();
            }
            let mut guard = instance.lock();
            let result = guard.as_mut().map(Instance::stop);
            if let Some(ctx) = context {
                ctx.mark_stopped();
            }
            match guard.take() {
                // Abandoned: the host gave up waiting, so it must not be destroyed.
                Some(late) if gave_up.load(std::sync::atomic::Ordering::SeqCst) => {
                    std::mem::forget(late)
                }
                other => drop(other),
            }
            let _ = done.send(result);
        });
    if spawned.is_err() {
        tracing::error!(plugin = %name, "cannot spawn a thread to stop the plugin; abandoning it");
        return;
    }
    match returned.recv_timeout(Duration::from_secs(m.config.stop_timeout_s)) {
        Ok(result) => {
            if let Some(Err(e)) = result {
                tracing::warn!(plugin = %name, "plugin stop: {e}");
            }
            m.status.lock().state = State::Stopped;
            tracing::info!(plugin = %name, "plugin stopped");
        }
        Err(_) => {
            abandoned.store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(ctx) = context {
                ctx.mark_stopped();
            }
            tracing::error!(plugin = %name, timeout_s = m.config.stop_timeout_s, "plugin did not stop in time; abandoned");
        }
    }
}
