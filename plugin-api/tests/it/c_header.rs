//! `include/switchyard_plugin.h` against the Rust definitions in `src/abi.rs`.
//!
//! `tests/layout.c` prints the size, alignment and every field's offset and
//! size of each struct in the header, and the value of every `#define`
//! constant. It is compiled with the system C compiler as C99 and C11, and
//! as C++11 with `c++`, with warnings as errors, run, and each line is
//! compared with `size_of`, `align_of`, `offset_of!` and the constants of
//! `switchyard_plugin_api::abi`. A mismatch names the item and both values.
//! A missing compiler fails the test rather than skipping it (scripts/test
//! installs gcc and g++).
//!
//! Completeness is checked too: the Rust field lists below are exhaustive
//! patterns (adding a field to a Rust struct without listing it here does not
//! compile), they must equal the header's field lists in order, and every
//! `#define SY_…` of the header and every top-level `pub const` of `abi.rs`
//! must be among the compared constants.

use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard_plugin_api::abi::{self, EntryFn, HostVtable, PluginDescriptor, Reply, Str};

/// Facts by name (`offsetof SyStr.len`) → value as text.
type Facts = BTreeMap<String, String>;

/// One struct's C name and its fields in declaration order.
type FieldList = (&'static str, Vec<&'static str>);

/// Constants of `abi.rs` with no counterpart in the header, and why.
const RUST_ONLY: &[&str] = &[
    // The host's probe for other majors; a C plugin exports one fixed name.
    "ENTRY_SYMBOL_PREFIX",
];

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The size of the field a projection selects, without needing a value.
fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Records the layout of Rust struct `$ty` under the C name `$c`; the field
/// list must name every field (the pattern in `exhaustive` is checked by the
/// compiler).
macro_rules! rust_layout {
    ($facts:ident, $ty:ident as $c:literal { $($field:ident),+ $(,)? }) => {{
        #[allow(dead_code)]
        fn exhaustive(value: &$ty) {
            let $ty { $($field: _),+ } = value;
        }
        $facts.insert(format!("sizeof {}", $c), size_of::<$ty>().to_string());
        $facts.insert(format!("alignof {}", $c), align_of::<$ty>().to_string());
        $(
            $facts.insert(
                format!("offsetof {}.{}", $c, stringify!($field)),
                offset_of!($ty, $field).to_string(),
            );
            $facts.insert(
                format!("sizeof {}.{}", $c, stringify!($field)),
                field_size(|v: &$ty| &v.$field).to_string(),
            );
        )+
        let fields: FieldList = ($c, vec![$(stringify!($field)),+]);
        fields
    }};
}

/// Every integer constant the header must define, with its Rust value.
fn rust_constants() -> Vec<(&'static str, i64)> {
    vec![
        ("SY_ABI_MAJOR", abi::ABI_MAJOR.into()),
        ("SY_ABI_MINOR", abi::ABI_MINOR.into()),
        ("SY_STATUS_OK", abi::STATUS_OK.into()),
        ("SY_STATUS_ERROR", abi::STATUS_ERROR.into()),
        ("SY_STATUS_PANIC", abi::STATUS_PANIC.into()),
        ("SY_EMIT_OK", abi::EMIT_OK.into()),
        ("SY_EMIT_UNKNOWN_TYPE", abi::EMIT_UNKNOWN_TYPE.into()),
        ("SY_EMIT_INVALID_PAYLOAD", abi::EMIT_INVALID_PAYLOAD.into()),
        ("SY_EMIT_BACKPRESSURE", abi::EMIT_BACKPRESSURE.into()),
        ("SY_EMIT_STOPPED", abi::EMIT_STOPPED.into()),
        ("SY_EMIT_TOO_LARGE", abi::EMIT_TOO_LARGE.into()),
        ("SY_ROLE_PRODUCER", abi::ROLE_PRODUCER.into()),
        ("SY_ROLE_SINK", abi::ROLE_SINK.into()),
        ("SY_ROLE_BOTH", abi::ROLE_BOTH.into()),
        ("SY_LOG_ERROR", abi::LOG_ERROR.into()),
        ("SY_LOG_WARN", abi::LOG_WARN.into()),
        ("SY_LOG_INFO", abi::LOG_INFO.into()),
        ("SY_LOG_DEBUG", abi::LOG_DEBUG.into()),
        ("SY_LOG_TRACE", abi::LOG_TRACE.into()),
        ("SY_REPLY_ERROR", abi::REPLY_ERROR.into()),
        ("SY_REPLY_EVENT_TYPES", abi::REPLY_EVENT_TYPES.into()),
    ]
}

/// The names of every constant compared (integers and the entry symbol).
fn compared_constants() -> Vec<&'static str> {
    let mut names: Vec<&str> = rust_constants().into_iter().map(|(n, _)| n).collect();
    names.push("SY_ENTRY_SYMBOL");
    names
}

/// What `layout.c` should print, computed from the Rust side, and the
/// struct field lists.
fn rust_facts() -> (Facts, Vec<FieldList>) {
    let mut facts = Facts::new();
    let structs = vec![
        rust_layout!(facts, Str as "SyStr" { ptr, len }),
        rust_layout!(facts, Reply as "SyReply" { ctx, write }),
        rust_layout!(facts, HostVtable as "SyHostVtable" {
            struct_size, ctx, emit, log, report_failure, config_dir,
        }),
        rust_layout!(facts, PluginDescriptor as "SyPluginDescriptor" {
            struct_size, abi_major, abi_minor, name, version, role, event_types_json,
            create, start, deliver, stop, destroy,
        }),
    ];
    facts.insert("sizeof SyEntryFn".into(), size_of::<EntryFn>().to_string());
    for (name, value) in rust_constants() {
        facts.insert(format!("define {name}"), value.to_string());
    }
    facts.insert(
        "define SY_ENTRY_SYMBOL".into(),
        abi::ENTRY_SYMBOL.to_owned(),
    );
    (facts, structs)
}

/// Parses `layout.c`'s output: `<kind> <item> <value>` per line.
fn parse_facts(output: &str) -> Facts {
    output
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (key, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("layout.c printed a malformed line: {line:?}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Every difference between the C and the Rust facts, one line each.
fn mismatches(c: &Facts, rust: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    for (key, rust_value) in rust {
        match c.get(key) {
            None => out.push(format!(
                "{key}: missing from the C side (Rust: {rust_value})"
            )),
            Some(c_value) if c_value != rust_value => {
                out.push(format!("{key}: C has {c_value}, Rust has {rust_value}"))
            }
            Some(_) => {}
        }
    }
    for (key, c_value) in c {
        if !rust.contains_key(key) && !key.starts_with("SY_STR ") {
            out.push(format!("{key}: missing from the Rust side (C: {c_value})"));
        }
    }
    out
}

/// A C or C++ compiler run.
struct Compiler {
    program: &'static str,
    args: &'static [&'static str],
    label: &'static str,
}

const WARNINGS: &[&str] = &["-Wall", "-Wextra", "-Werror", "-pedantic"];

/// Compiles `tests/layout.c` with `compiler` into `dir`; returns the binary.
fn compile_layout(compiler: &Compiler, dir: &Path) -> PathBuf {
    let source = manifest_dir().join("tests/layout.c");
    let include = manifest_dir().join("include");
    let binary = dir.join(format!("layout-{}", compiler.label));
    let out = Command::new(compiler.program)
        .args(compiler.args)
        .args(WARNINGS)
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", compiler.program));
    assert!(
        out.status.success(),
        "{} ({}) rejected the header or layout.c:\n{}",
        compiler.program,
        compiler.label,
        String::from_utf8_lossy(&out.stderr)
    );
    binary
}

/// Compiles and runs `layout.c`, and asserts its output equals the Rust side.
fn check_layout(compiler: &Compiler) {
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = compile_layout(compiler, dir.path());
    let out = Command::new(&binary).output().expect("run layout binary");
    assert!(out.status.success(), "layout binary failed: {out:?}");
    let stdout = String::from_utf8(out.stdout).expect("layout.c prints UTF-8");
    let c = parse_facts(&stdout);
    let (rust, _) = rust_facts();
    let problems = mismatches(&c, &rust);
    assert!(
        problems.is_empty(),
        "include/switchyard_plugin.h ({}) disagrees with src/abi.rs:\n  {}",
        compiler.label,
        problems.join("\n  ")
    );
    if !compiler.label.starts_with("c++") {
        assert_eq!(
            c.get("SY_STR len").map(String::as_str),
            Some("5"),
            "SY_STR(\"hello\") must have length 5 (no NUL)"
        );
    }
}

#[test]
fn header_layout_matches_rust_as_c99() {
    check_layout(&Compiler {
        program: "cc",
        args: &["-std=c99", "-Wstrict-prototypes"],
        label: "c99",
    });
}

#[test]
fn header_layout_matches_rust_as_c11() {
    check_layout(&Compiler {
        program: "cc",
        args: &["-std=c11", "-Wstrict-prototypes"],
        label: "c11",
    });
}

#[test]
fn header_layout_matches_rust_as_cxx() {
    check_layout(&Compiler {
        program: "c++",
        args: &["-x", "c++", "-std=c++11"],
        label: "c++11",
    });
}

/// The fields of each `typedef struct X { … } X;` in the header, in order.
fn header_fields(header: &str) -> BTreeMap<String, Vec<String>> {
    let mut structs = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in header.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("typedef struct ") {
            if let Some(name) = rest.strip_suffix('{') {
                current = Some((name.trim().to_owned(), Vec::new()));
            }
            continue;
        }
        let Some((name, fields)) = current.as_mut() else {
            continue;
        };
        if line.starts_with('}') {
            structs.insert(name.clone(), std::mem::take(fields));
            current = None;
        } else if let Some(decl) = line.strip_suffix(';') {
            let field = match decl.split_once("(*") {
                // A function pointer: `ret (*name)(args)`.
                Some((_, rest)) => rest.split(')').next().unwrap_or_default(),
                None => decl.rsplit([' ', '*']).next().unwrap_or_default(),
            };
            fields.push(field.trim().to_owned());
        }
    }
    structs
}

#[test]
fn every_header_struct_field_and_constant_is_compared() {
    let header = std::fs::read_to_string(manifest_dir().join("include/switchyard_plugin.h"))
        .expect("read the header");
    let (_, rust_structs) = rust_facts();

    // Struct fields: the header's lists equal the (exhaustive) Rust lists.
    let header_structs = header_fields(&header);
    let rust_structs: BTreeMap<String, Vec<String>> = rust_structs
        .into_iter()
        .map(|(c, fields)| (c.to_owned(), fields.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(
        header_structs, rust_structs,
        "the header's structs and fields (left) differ from abi.rs (right)"
    );

    // Every object-like `#define SY_…` is compared.
    let compared = compared_constants();
    for line in header.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#define") {
            continue;
        }
        let name = words.next().unwrap_or_default();
        if !name.starts_with("SY_") || name.contains('(') {
            continue; // the include guard, or a function-like macro (SY_STR)
        }
        assert!(
            compared.contains(&name),
            "the header defines {name}, which tests/it/c_header.rs does not compare with abi.rs"
        );
    }

    // Every top-level `pub const` of abi.rs has its `SY_` counterpart.
    let abi_rs =
        std::fs::read_to_string(manifest_dir().join("src/abi.rs")).expect("read src/abi.rs");
    for line in abi_rs.lines() {
        let Some(rest) = line.strip_prefix("pub const ") else {
            continue;
        };
        let name = rest.split(':').next().unwrap_or_default().trim();
        if RUST_ONLY.contains(&name) {
            continue;
        }
        let c_name = format!("SY_{name}");
        assert!(
            compared.contains(&c_name.as_str()),
            "abi.rs defines {name}, but {c_name} is not compared with the header"
        );
    }
}

#[test]
fn both_versioned_structs_begin_with_struct_size() {
    // A minor version may add fields at the end because both structs start
    // with `struct_size` (docs/plugins.md, "5. The rules", ABI versions).
    assert_eq!(offset_of!(PluginDescriptor, struct_size), 0);
    assert_eq!(offset_of!(HostVtable, struct_size), 0);
    assert_eq!(
        abi::ENTRY_SYMBOL,
        format!("switchyard_plugin_entry_v{}", abi::ABI_MAJOR)
    );
}

#[test]
fn a_mismatch_names_the_field_and_both_values() {
    let (rust, _) = rust_facts();
    let mut c = rust.clone();
    c.insert("offsetof SyPluginDescriptor.role".into(), "52".into());
    c.remove("sizeof SyReply.write");
    let problems = mismatches(&c, &rust);
    assert_eq!(
        problems,
        [
            format!(
                "offsetof SyPluginDescriptor.role: C has 52, Rust has {}",
                offset_of!(PluginDescriptor, role)
            ),
            format!(
                "sizeof SyReply.write: missing from the C side (Rust: {})",
                size_of::<usize>()
            ),
        ],
    );
}
