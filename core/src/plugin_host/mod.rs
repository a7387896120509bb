//! The plugin host: loads libraries, creates, starts and stops instances,
//! and tracks each instance's state for `/health`. Events a plugin emits
//! enter the router in `inbound.rs`; events for sinks leave in `sink.rs`.
//!
//! A reload is planned first ([`PluginHost::plan`]: libraries loaded and
//! `create` called for every added or changed instance, nothing started),
//! so that a config that cannot create its instances is refused whole; the
//! old instances are then stopped and the new ones started around the swap.

mod inbound;
mod instance;
mod lifecycle;
mod loader;
mod sink;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;

pub use inbound::HostContext;
pub use instance::Instance;
pub use lifecycle::{State, Status};
pub use loader::{Library, Loader};
pub use sink::SinkQueue;

use crate::config::{Config, PluginConfig, Problem};
use crate::registry::InstanceTypes;
use crate::router::{Router, Sink};
use lifecycle::{Ending, Managed};
use switchyard_plugin_api::Role;

/// Why a plugin could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The library file is not there (or cannot be read).
    #[error(
        "plugin library `{library}` cannot be read: tried {path} ({reason}); {advice}",
        advice = loader::missing_library_advice(did_you_mean.as_deref())
    )]
    NotFound {
        /// `library` as written in the config.
        library: String,
        /// The path tried.
        path: PathBuf,
        /// The OS error.
        reason: String,
        /// A library of a close name that is there, written as `library` would be.
        did_you_mean: Option<String>,
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

/// What a reload does to plugin instances, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PluginChanges {
    /// Instances that start (new names).
    pub started: Vec<String>,
    /// Instances that stop (gone, or disabled).
    pub stopped: Vec<String>,
    /// Instances restarted with a changed entry.
    pub restarted: Vec<String>,
}

impl Plan {
    /// The instances this plan starts, stops and restarts.
    pub fn changes(&self) -> PluginChanges {
        let created: Vec<&String> = self.created.iter().map(|c| &c.config.name).collect();
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v
        };
        PluginChanges {
            started: sorted(
                created
                    .iter()
                    .filter(|n| !self.outgoing.contains(n))
                    .map(|n| (*n).clone())
                    .collect(),
            ),
            stopped: sorted(
                self.outgoing
                    .iter()
                    .filter(|n| !created.contains(n))
                    .cloned()
                    .collect(),
            ),
            restarted: sorted(
                self.outgoing
                    .iter()
                    .filter(|n| created.contains(n))
                    .cloned()
                    .collect(),
            ),
        }
    }

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

/// Until when sinks that go away are drained into.
fn drain_deadline(router: &Router) -> Instant {
    let bound = router.snapshot().config.server.shutdown_timeout_s;
    Instant::now() + Duration::from_secs(bound)
}

/// How long a shutdown waits, once the sinks stopped, for what this node
/// stamped meanwhile to come back, so that it is counted.
const LATE_ECHOES: Duration = Duration::from_secs(1);

/// Waits until `deadline` for the events this node has stamped in a
/// cluster store so far to come back through its feed (nothing to wait
/// for with the memory engine); how many may not have.
fn wait_to_come_back(router: &Router, deadline: Instant) -> u64 {
    let marks = router.stamped_marks();
    loop {
        let behind = router.not_back(&marks);
        if behind == 0 || Instant::now() >= deadline {
            return behind;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Stops instances side by side, each on a thread of its own, and waits
/// for all of them.
fn stop_together(instances: Vec<(Managed, Ending)>) {
    let handles: Vec<_> = instances
        .into_iter()
        .map(|(mut m, ending)| std::thread::spawn(move || m.stop(ending)))
        .collect();
    for h in handles {
        let _ = h.join();
    }
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

/// A problem with plugin `index`'s `key`; `value` is what was written
/// there, when it fits in a line (a `config` table does not: its problem
/// names the instance instead).
fn plugin_problem(index: usize, key: &str, value: Option<&str>, why: String) -> Problem {
    Problem {
        key: Some(format!("plugins[{index}].{key}")),
        value: value.map(|v| json!(v)),
        problem: why,
        line: None,
        column: None,
    }
}

/// What [`PluginHost::plan`] needs of an instance that runs now: a copy
/// of its entry.
struct Current {
    config: PluginConfig,
    library: Arc<Library>,
    types: Vec<switchyard_plugin_api::EventTypeDecl>,
    sink: Option<Arc<SinkQueue>>,
}

impl Current {
    fn of(m: &Managed) -> Current {
        Current {
            config: m.config.clone(),
            library: m.library.clone(),
            types: m.types.clone(),
            sink: m.sink.clone(),
        }
    }

    /// Whether the instance runs on under `entry`, loaded as `library`:
    /// the same entry and the same file. Says at debug level why not, for
    /// an operator asking why a reload restarted it.
    fn is_kept_for(&self, entry: &PluginConfig, library: &Arc<Library>) -> bool {
        let entry_changed = self.config != *entry;
        let library_changed = !Arc::ptr_eq(&self.library, library);
        if entry_changed || library_changed {
            tracing::debug!(
                plugin = %entry.name,
                entry_changed,
                library_changed,
                "the instance is replaced"
            );
        }
        !entry_changed && !library_changed
    }
}

impl PluginHost {
    /// Loads and creates (never starts) what `config` needs beyond what runs.
    /// Works from a copy of what runs: `create` may take its time, and the
    /// table stays free meanwhile for `/health` ([`PluginHost::statuses`]).
    /// Reloads, previews and restarts are serialized by the caller
    /// (`App::reload_lock`), so nothing changes it meanwhile.
    pub fn plan(&self, config: &Config) -> Result<Plan, Vec<Problem>> {
        let running: BTreeMap<String, Current> = self
            .managed
            .lock()
            .iter()
            .map(|(name, m)| (name.clone(), Current::of(m)))
            .collect();
        let mut plan = Plan::default();
        let mut problems = Vec::new();
        for (index, pc) in config.plugins.iter().enumerate() {
            if !pc.enabled {
                continue;
            }
            let library = match self.loader.load(&pc.library_as_written, &pc.library) {
                Ok(lib) => lib,
                Err(e) => {
                    let written = &pc.library_as_written;
                    problems.push(plugin_problem(
                        index,
                        "library",
                        Some(written),
                        e.to_string(),
                    ));
                    continue;
                }
            };
            let unchanged = running
                .get(&pc.name)
                .filter(|m| m.is_kept_for(pc, &library));
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
                    // A changed instance takes over its predecessor's queue,
                    // so what was accepted for it is delivered by the new one.
                    let predecessor = running.get(&pc.name).and_then(|m| m.sink.clone());
                    let sink = is_sink(&library)
                        .then(|| predecessor.unwrap_or_else(|| SinkQueue::new(&pc.name)));
                    if let Some(sink) = &sink {
                        plan.sinks.insert(pc.name.clone(), sink.clone());
                    }
                    plan.created.push(Created {
                        config: pc.clone(),
                        instance,
                        sink,
                    });
                }
                Err(e) => problems.push(plugin_problem(index, "config", None, e.to_string())),
            }
        }
        plan.outgoing = running
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
    /// `stop_timeout_s`, or abandoned), while their types are still
    /// registered. A replaced sink hands its queue to its successor; a
    /// removed one is drained into first (within `server.shutdown_timeout_s`),
    /// after the others stopped, so that it still gets the final events
    /// they emit while they stop (as at shutdown).
    pub fn stop_outgoing(&self, plan: &Plan, router: &Arc<Router>) {
        let (removed_sinks, others): (Vec<Managed>, Vec<Managed>) = {
            let mut managed = self.managed.lock();
            plan.outgoing
                .iter()
                .filter_map(|n| managed.remove(n))
                .partition(|m| {
                    let handed_over = m.sink.as_ref().is_some_and(|old| {
                        plan.sinks.get(&m.config.name).is_some_and(|new| {
                            std::ptr::addr_eq(Arc::as_ptr(old), Arc::as_ptr(new))
                        })
                    });
                    m.sink.is_some() && !handed_over
                })
        };
        stop_together(
            others
                .into_iter()
                // A replaced sink keeps its queue; a producer has none.
                .map(|m| (m, Ending::HandOver))
                .collect(),
        );
        if removed_sinks.is_empty() {
            return;
        }
        // In a cluster, those final events reach the sinks once they come
        // back from the store.
        wait_to_come_back(router, drain_deadline(router));
        let deadline = drain_deadline(router);
        stop_together(
            removed_sinks
                .into_iter()
                .map(|m| {
                    let router = router.clone();
                    (m, Ending::Drain { deadline, router })
                })
                .collect(),
        );
    }

    /// Starts the instances a plan created.
    pub fn start_incoming(&self, plan: Plan, router: &Arc<Router>) {
        for Created {
            config,
            instance,
            sink,
        } in plan.created
        {
            let mut m = Managed::new(config, instance, sink);
            m.start(router);
            self.managed.lock().insert(m.config.name.clone(), m);
        }
    }

    /// Restarts every failed instance whose backoff has passed. Call it
    /// with reloads held off, so that the two never meet.
    pub fn restart_due(&self, router: &Arc<Router>) {
        let now = std::time::Instant::now();
        let due: Vec<String> = self
            .managed
            .lock()
            .iter()
            .filter(|(_, m)| m.status.lock().restart_due(now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let Some(mut m) = self.managed.lock().remove(&name) else {
                continue;
            };
            m.restart(router);
            self.managed.lock().insert(name, m);
        }
    }

    /// Stops every instance (at shutdown): producers first, so that their
    /// last events still reach the sinks; in a cluster, waits for what this
    /// node stamped until then to come back from the store (only then is
    /// it offered to the sinks); then the sinks, each drained into. Each
    /// step within `server.shutdown_timeout_s`. What comes back after the
    /// sinks stopped (from an instance that is both, say) is waited for
    /// briefly, so that it is counted as `sink_shutdown`, and the total the
    /// sinks did not get is logged.
    pub fn stop_all(&self, router: &Arc<Router>) {
        let (sinks, producers): (Vec<Managed>, Vec<Managed>) =
            std::mem::take(&mut *self.managed.lock())
                .into_values()
                .partition(|m| m.sink.is_some());
        let drain = |ms: Vec<Managed>| {
            let deadline = drain_deadline(router);
            let ending = || Ending::Drain {
                deadline,
                router: router.clone(),
            };
            ms.into_iter().map(|m| (m, ending())).collect::<Vec<_>>()
        };
        let dropped = router.metrics().dropped_counter("sink_shutdown");
        let before = dropped.get();
        stop_together(drain(producers));
        if sinks.is_empty() {
            return;
        }
        let behind = wait_to_come_back(router, drain_deadline(router));
        if behind > 0 {
            tracing::warn!(
                events = behind,
                "stopping the sinks with up to {behind} events this node stamped not yet back \
                 from the cluster store: the sinks do not get those"
            );
        }
        stop_together(drain(sinks));
        wait_to_come_back(router, Instant::now() + LATE_ECHOES);
        let lost = dropped.get() - before;
        if lost > 0 {
            tracing::warn!(
                dropped = lost,
                "shutdown: {lost} event(s) routed to sinks were not delivered \
                 (switchyard_dropped_total{{reason=\"sink_shutdown\"}})"
            );
        }
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
