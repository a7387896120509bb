//! Loading plugin libraries and reading their descriptors. With
//! `instance.rs` and `inbound.rs`, the only place in the core with `unsafe`.
//!
//! Libraries are never unloaded (unloading a library that used a
//! thread-local crashes later on glibc). A library whose file changed since
//! it was loaded is copied to a private path and loaded from there as a new
//! library, so a rebuilt plugin takes effect on the next reload.

use std::collections::{HashMap, HashSet};
use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use switchyard_plugin_api::abi::{self, EntryFn, PluginDescriptor, Str};
use switchyard_plugin_api::{EventTypeDecl, Role};

use super::PluginError;
use crate::files::{self, FileError};
use crate::names::did_you_mean;

/// A loaded plugin library and what its descriptor says.
pub struct Library {
    /// The file it was loaded from (as configured).
    pub path: PathBuf,
    /// The plugin's name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// Producer, sink or both.
    pub role: Role,
    /// The ABI minor version it was built with.
    pub abi_minor: u32,
    /// The default event types of its instances.
    pub default_types: Vec<EventTypeDecl>,
    pub(super) descriptor: &'static PluginDescriptor,
}

// SAFETY: the descriptor is immutable for the life of the process (the
// library is never unloaded), and the ABI requires its functions to be
// callable from any thread (no two at once per instance, which `Instance`
// enforces).
unsafe impl Send for Library {}
// SAFETY: as above: shared access only reads the immutable descriptor.
unsafe impl Sync for Library {}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Library")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The file's identity, to notice a rebuilt library.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// Loads libraries once each and reloads rebuilt ones.
#[derive(Debug, Default)]
pub struct Loader {
    loaded: Mutex<HashMap<PathBuf, (Stamp, Arc<Library>)>>,
    /// Every path handed to the dynamic loader, refused ones included: a
    /// library stays mapped even when its descriptor was refused, and the
    /// dynamic loader answers a second open of that path with it.
    opened: Mutex<HashSet<PathBuf>>,
    copies: Mutex<u64>,
}

impl Loader {
    /// The library at `path` (`written` is the config's `library` value,
    /// quoted by errors): the one already loaded if the file is unchanged,
    /// otherwise loaded (anew) now.
    pub fn load(&self, written: &str, path: &Path) -> Result<Arc<Library>, PluginError> {
        // The dynamic loader (and the copy of a rebuilt library) would block
        // forever on a named pipe; a missing file is reported just below.
        if let Err(e @ FileError::NotRegular { .. }) = files::regular(path) {
            return Err(PluginError::Load {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
        let meta = std::fs::metadata(path).map_err(|e| PluginError::NotFound {
            library: written.to_owned(),
            path: path.to_owned(),
            reason: e.to_string(),
            did_you_mean: close_library(written, path),
        })?;
        let stamp = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        let mut loaded = self.loaded.lock();
        if let Some((seen, lib)) = loaded.get(path) {
            if *seen == stamp {
                return Ok(lib.clone());
            }
            tracing::info!(
                library = %path.display(),
                was = ?seen,
                now = ?stamp,
                "the library file changed since it was loaded: loading it anew"
            );
        }
        let load_from = if self.opened.lock().insert(path.to_owned()) {
            path.to_owned()
        } else {
            self.private_copy(path)?
        };
        let lib = Arc::new(open(path, &load_from)?);
        loaded.insert(path.to_owned(), (stamp, lib.clone()));
        Ok(lib)
    }

    /// Copies a rebuilt library to a fresh private path, because loading the
    /// same path twice would return the old, still-mapped library.
    fn private_copy(&self, path: &Path) -> Result<PathBuf, PluginError> {
        let mut n = self.copies.lock();
        *n += 1;
        let dir = std::env::temp_dir().join(format!("switchyard-plugins-{}", std::process::id()));
        let fail = |e: std::io::Error| PluginError::Load {
            path: path.to_owned(),
            reason: format!("cannot copy the rebuilt library to {}: {e}", dir.display()),
        };
        std::fs::create_dir_all(&dir).map_err(fail)?;
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let copy = dir.join(format!("{n}-{file}"));
        std::fs::copy(path, &copy).map_err(fail)?;
        Ok(copy)
    }
}

/// A library next to the missing `path` whose name is close to `written`,
/// spelled the way `written` is: a stem when `written` is a stem looked up
/// in `plugin_dir`, a path with the close file name otherwise.
fn close_library(written: &str, path: &Path) -> Option<String> {
    let folder = path.parent()?;
    let as_stem = path.file_name()? == format!("{DLL_PREFIX}{written}{DLL_SUFFIX}").as_str();
    let files: Vec<String> = std::fs::read_dir(folder)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|file| file.ends_with(DLL_SUFFIX))
        .collect();
    if as_stem {
        let stems = files
            .iter()
            .filter_map(|file| file.strip_prefix(DLL_PREFIX)?.strip_suffix(DLL_SUFFIX));
        return did_you_mean(written, stems).map(str::to_owned);
    }
    let (dir, file) = match written.rsplit_once('/') {
        Some((dir, file)) => (Some(dir), file),
        None => (None, written),
    };
    let close = did_you_mean(file, files.iter().map(String::as_str))?;
    Some(dir.map_or_else(|| close.to_owned(), |dir| format!("{dir}/{close}")))
}

/// What to do about a missing library: take the close name, or build it.
pub(super) fn missing_library_advice(close: Option<&str>) -> String {
    let build = "build the plugins with `cargo build --release`, or fix `library` or `plugin_dir`";
    match close {
        Some(close) => format!("did you mean `{close}`? Otherwise {build}"),
        None => build.to_owned(),
    }
}

/// Opens a library (never closed) and validates its descriptor.
fn open(path: &Path, load_from: &Path) -> Result<Library, PluginError> {
    // SAFETY: loading a library runs its initialisers; plugins are trusted
    // code (docs/plugins.md, "5. The rules"), and this is the documented
    // way in.
    let lib = unsafe { libloading::Library::new(load_from) }.map_err(|e| PluginError::Load {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: the symbol, if present, has the `EntryFn` signature by the
    // ABI's definition; the library is never unloaded, so the pointer stays valid.
    let entry = match unsafe { lib.get::<EntryFn>(abi::ENTRY_SYMBOL.as_bytes()) } {
        Ok(entry) => *entry,
        Err(_) => return Err(other_major(lib, path)),
    };
    // SAFETY: `entry` is the plugin's entry function; it takes no arguments.
    let descriptor = unsafe { entry() };
    if descriptor.is_null() {
        return Err(bad(path, "the entry function returned a null descriptor"));
    }
    // SAFETY: non-null and, by the ABI, valid for the life of the library,
    // which is never unloaded. Only `struct_size` and `abi_major` (the first
    // fields of every version) are read before the size is checked.
    let descriptor: &'static PluginDescriptor = unsafe { &*descriptor };
    if descriptor.abi_major != abi::ABI_MAJOR {
        return Err(PluginError::AbiMismatch {
            path: path.to_owned(),
            found: descriptor.abi_major,
            expected: abi::ABI_MAJOR,
        });
    }
    if descriptor.struct_size < std::mem::size_of::<PluginDescriptor>() {
        return Err(bad(path, "its descriptor is smaller than ABI 1.0's"));
    }
    describe(path, descriptor)
}

/// Names the major version a library was built for, when it is not ours.
fn other_major(lib: &libloading::Library, path: &Path) -> PluginError {
    for major in (0..16).filter(|m| *m != abi::ABI_MAJOR) {
        let symbol = format!("{}{major}", abi::ENTRY_SYMBOL_PREFIX);
        // SAFETY: only the symbol's presence is checked; it is never called.
        if unsafe { lib.get::<EntryFn>(symbol.as_bytes()) }.is_ok() {
            return PluginError::AbiMismatch {
                path: path.to_owned(),
                found: major,
                expected: abi::ABI_MAJOR,
            };
        }
    }
    PluginError::NotAPlugin {
        path: path.to_owned(),
    }
}

fn bad(path: &Path, why: &str) -> PluginError {
    PluginError::BadDescriptor {
        path: path.to_owned(),
        why: why.to_owned(),
    }
}

fn text(path: &Path, s: Str, what: &str) -> Result<String, PluginError> {
    // SAFETY: the descriptor's strings live as long as the library.
    let bytes = unsafe { s.as_bytes() };
    String::from_utf8(bytes.to_vec()).map_err(|_| bad(path, &format!("its {what} is not UTF-8")))
}

fn describe(path: &Path, d: &'static PluginDescriptor) -> Result<Library, PluginError> {
    let role = match d.role {
        abi::ROLE_PRODUCER => Role::Producer,
        abi::ROLE_SINK => Role::Sink,
        abi::ROLE_BOTH => Role::Both,
        other => return Err(bad(path, &format!("unknown role {other}"))),
    };
    let types_json = text(path, d.event_types_json, "event type list")?;
    let default_types = if types_json.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&types_json)
            .map_err(|e| bad(path, &format!("its event types are not valid: {e}")))?
    };
    Ok(Library {
        path: path.to_owned(),
        name: text(path, d.name, "name")?,
        version: text(path, d.version, "version")?,
        role,
        abi_minor: d.abi_minor,
        default_types,
        descriptor: d,
    })
}
