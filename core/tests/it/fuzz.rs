//! Fuzz-style tests on the stable toolchain: bounded `proptest` targets for
//! the four places where untrusted text enters the router, plus a replay of
//! every seed input kept under `tests/corpus/<target>/`.
//!
//! Targets:
//! - `parser`: the client message parser (`client_message::parse`);
//! - `pattern`: subscription patterns (`names::Pattern::parse`);
//! - `publish`: publish batches with payload schemas (`Router::publish`);
//! - `config`: configuration files (`config::load_with_env`).
//!
//! Each target runs a fixed number of cases from a fixed seed, so a run is
//! reproducible; a failure found by a target is persisted under
//! `tests/corpus/<target>/regressions` and replayed first on the next run.
//! Seed files are replayed as they are: a name starting with `ok-` must be
//! accepted and one starting with `bad-` refused; any other seed only has
//! to keep the target's invariants.
//!
//! "The contract" below is the documented behaviour, read independently of
//! the router's code: docs/protocol.md ("Client messages and replies",
//! "Patterns and subscriptions", "Publishing over HTTP") and
//! docs/configuration.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use futures_util::FutureExt;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, RngSeed, TestCaseError};
use serde_json::{json, Map, Value};
use switchyard::client_message::{self, ClientMessage, Request};
use switchyard::config::{self, Config, ConfigError};
use switchyard::connection::ConnRef;
use switchyard::json_depth;
use switchyard::names::{self, Pattern, PatternError};
use switchyard::protocol::Position;
use switchyard::registry::Registry;
use switchyard::router::{ConnectRequest, Incoming, Origin, PublishError, Router, Snapshot};

/// The JSON depth limit clients get by default (`server.max_json_depth`).
const MAX_DEPTH: usize = 32;
/// The pattern length limit clients get by default (`server.max_pattern_bytes`).
const MAX_PATTERN_BYTES: usize = 128;

/// A bounded, reproducible configuration for one target.
fn config(cases: u32, regressions: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        rng_seed: RngSeed::Fixed(0x5717_c4ad),
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// The seed files of one target, sorted, without the regressions file.
fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "regressions"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seed in {}", dir.display());
    files
}

/// What a seed's name says about it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Accepted,
    Refused,
    Either,
}

fn verdict(path: &Path) -> Verdict {
    let name = path.file_name().unwrap().to_string_lossy();
    if name.starts_with("ok-") {
        Verdict::Accepted
    } else if name.starts_with("bad-") {
        Verdict::Refused
    } else {
        Verdict::Either
    }
}

/// Runs `check` on every seed of `target`, naming each one that fails.
fn replay(target: &str, check: impl Fn(&Path, &[u8]) -> Result<bool, TestCaseError>) {
    let mut failures = Vec::new();
    for path in seeds(target) {
        let bytes = std::fs::read(&path).unwrap();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&path, &bytes)));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match outcome {
            Err(_) => failures.push(format!("{name}: panicked")),
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Ok(Ok(accepted)) => match verdict(&path) {
                Verdict::Accepted if !accepted => failures.push(format!("{name}: refused")),
                Verdict::Refused if accepted => failures.push(format!("{name}: accepted")),
                _ => {}
            },
        }
    }
    assert!(
        failures.is_empty(),
        "{target} seeds:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Shared generators.

/// Strings that tend to break parsers: control characters, escapes, BOMs,
/// surrogates written as escapes, non-BMP characters, long runs.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9_.*-]{0,12}",
        "\\PC{0,16}",
        "[\\x00-\\x1f\"\\\\/]{0,8}",
        Just("\u{feff}".to_owned()),
        Just("\u{1F600}\u{0301}\u{202e}".to_owned()),
        Just("\\ud800".to_owned()),
        Just("x".repeat(70)),
    ]
}

/// Numbers at the edges of what JSON and serde_json represent.
fn nasty_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(json!(0)),
        Just(json!(-0.0)),
        Just(json!(3.0)),
        Just(json!(1e300)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(9_007_199_254_740_993_u64)),
        Just(json!(2.5)),
    ]
}

/// Any JSON value, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        nasty_number(),
        nasty_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An array nested `depth` levels deep (`[[…]]`); depth 0 is `0`.
fn nested(depth: usize) -> String {
    format!("{}0{}", "[".repeat(depth), "]".repeat(depth))
}

/// Small edits of a text: truncation, insertion, deletion, duplication.
#[derive(Clone, Debug)]
enum Edit {
    Truncate(Index),
    Insert(Index, String),
    Delete(Index, usize),
    Duplicate(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::Truncate),
        (
            any::<Index>(),
            prop_oneof![
                nasty_string(),
                Just("{".to_owned()),
                Just("}".to_owned()),
                Just("\"".to_owned()),
                Just(",".to_owned()),
                Just("\\".to_owned()),
                Just("\u{0}".to_owned()),
                Just("[".repeat(40)),
            ]
        )
            .prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<Index>(), 1..8usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<Index>(), 1..40usize).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

/// The char boundary nearest below the index's position in `text`.
fn boundary(text: &str, at: &Index) -> usize {
    if text.is_empty() {
        return 0;
    }
    let mut i = at.index(text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply_edit(text: &mut String, e: &Edit) {
    match e {
        Edit::Truncate(at) => {
            let i = boundary(text, at);
            text.truncate(i);
        }
        Edit::Insert(at, s) => {
            let i = boundary(text, at);
            text.insert_str(i, s);
        }
        Edit::Delete(at, n) | Edit::Duplicate(at, n) => {
            let start = boundary(text, at);
            let mut end = (start + n).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            if matches!(e, Edit::Delete(..)) {
                text.replace_range(start..end, "");
            } else {
                let piece = text[start..end].to_owned();
                text.insert_str(end, &piece);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// (a) The client message parser.

/// A reference reading of a client message straight from docs/protocol.md
/// ("Client messages and replies"): the request, or the refusal's code and
/// echoed id.
fn reference_parse(value: &Value) -> Result<Request, (&'static str, Option<Value>)> {
    let Value::Object(obj) = value else {
        return Err(("invalid_json", None));
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(v @ Value::String(s)) if s.len() <= 64 => Some(v.clone()),
        Some(v @ Value::Number(n)) if n.is_i64() || n.is_u64() => Some(v.clone()),
        Some(_) => return Err(("invalid_json", None)),
    };
    // `action` wins over `type`; a verb that is not a string is no verb.
    let (verb, legacy) = match (obj.get("action"), obj.get("type")) {
        (Some(Value::String(a)), _) => (a.as_str(), false),
        (None, Some(Value::String(t))) => (t.as_str(), true),
        _ => return Err(("unknown_action", id)),
    };
    let invalid = |id: &Option<Value>| ("invalid_json", id.clone());
    let patterns = |id: &Option<Value>| {
        let key = if legacy && obj.contains_key("event_types") {
            "event_types"
        } else {
            "events"
        };
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| invalid(id)),
            Some(_) => Err(invalid(id)),
        }
    };
    let message = match verb {
        "subscribe" => {
            let events = patterns(&id)?.unwrap_or_default();
            let since = match obj.get("since") {
                None | Some(Value::Null) => None,
                Some(Value::Object(map)) => Some(
                    map.iter()
                        .map(|(ch, v)| Some((ch.clone(), reference_position(v)?)))
                        .collect::<Option<BTreeMap<_, _>>>()
                        .ok_or_else(|| invalid(&id))?,
                ),
                Some(_) => return Err(invalid(&id)),
            };
            ClientMessage::Subscribe { events, since }
        }
        "unsubscribe" => ClientMessage::Unsubscribe {
            events: patterns(&id)?,
        },
        "ping" => ClientMessage::Ping,
        "refresh" => match obj.get("token") {
            Some(Value::String(t)) => ClientMessage::Refresh { token: t.clone() },
            _ => return Err(invalid(&id)),
        },
        _ => return Err(("unknown_action", id)),
    };
    Ok(Request { id, message })
}

/// `{"epoch": string, "sequence": non-negative integer}`; serde's tuple form
/// `["epoch", 41]` is tolerated too (the parser deserializes a struct).
fn reference_position(v: &Value) -> Option<Position> {
    let (epoch, sequence) = match v {
        Value::Object(o) => (o.get("epoch")?, o.get("sequence")?),
        Value::Array(a) if a.len() == 2 => (&a[0], &a[1]),
        _ => return None,
    };
    Some(Position {
        epoch: epoch.as_str()?.to_owned(),
        sequence: sequence.as_u64()?,
    })
}

/// Checks one text against the parser's contract; true when accepted.
fn check_parse(text: &str) -> Result<bool, TestCaseError> {
    let outcome = client_message::parse(text, MAX_DEPTH);
    match &outcome {
        Ok(_) => {}
        Err(r) => {
            prop_assert!(
                r.code == "invalid_json" || r.code == "unknown_action",
                "code {:?} for {:?}",
                r.code,
                text
            );
            prop_assert!(
                !r.message.is_empty(),
                "empty refusal message for {:?}",
                text
            );
        }
    }
    // Whatever parses as JSON within the depth limit must match the reference.
    if json_depth::check_depth(text.as_bytes(), MAX_DEPTH).is_ok() {
        if let Ok(value) = serde_json::from_str::<Value>(text) {
            let expected = reference_parse(&value);
            match (&outcome, &expected) {
                (Ok(got), Ok(want)) => prop_assert_eq!(got, want, "for {:?}", text),
                (Err(got), Err((code, id))) => {
                    prop_assert_eq!(got.code, *code, "for {:?}", text);
                    prop_assert_eq!(&got.id, id, "id echoed for {:?}", text);
                }
                _ => prop_assert!(
                    false,
                    "parse gave {:?}, the contract says {:?}, for {:?}",
                    outcome,
                    expected,
                    text
                ),
            }
        } else {
            prop_assert_eq!(
                outcome.as_ref().map_err(|r| r.code).err(),
                Some("invalid_json")
            );
        }
    } else {
        prop_assert_eq!(
            outcome.as_ref().map_err(|r| r.code).err(),
            Some("invalid_json"),
            "too deep but not refused: {:?}",
            text
        );
    }
    Ok(outcome.is_ok())
}

/// A client message object whose keys are the ones the parser reads, each
/// with a value that is right, nearly right, or anything.
fn message_value() -> impl Strategy<Value = Value> {
    let verb = prop_oneof![
        4 => prop_oneof![
            Just("subscribe"),
            Just("unsubscribe"),
            Just("ping"),
            Just("refresh"),
            Just("Subscribe"),
            Just("dance"),
            Just(""),
        ]
        .prop_map(Value::from),
        1 => arb_json(),
    ];
    let pattern_list = prop_oneof![
        3 => prop::collection::vec("[a-z_.*]{0,10}", 0..4).prop_map(|v| json!(v)),
        1 => prop::collection::vec(arb_json(), 0..3).prop_map(Value::Array),
        1 => arb_json(),
    ];
    let position = prop_oneof![
        3 => ("[A-Za-z0-9_-]{0,8}", any::<u64>())
            .prop_map(|(e, s)| json!({"epoch": e, "sequence": s})),
        1 => ("[A-Za-z0-9]{0,4}", any::<u64>()).prop_map(|(e, s)| json!([e, s])),
        1 => Just(json!({"epoch": "E", "sequence": -1})),
        1 => Just(json!({"epoch": "E", "sequence": 4.0})),
        1 => Just(json!({"epoch": 7, "sequence": 4})),
        1 => Just(json!({"epoch": "E"})),
        1 => arb_json(),
    ];
    let since = prop_oneof![
        3 => prop::collection::btree_map("[a-z]{1,6}", position, 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => arb_json(),
    ];
    let id = prop_oneof![
        "\\PC{0,64}".prop_map(Value::from),
        "[a-z]{60,70}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        nasty_number(),
        arb_json(),
    ];
    let token = prop_oneof![nasty_string().prop_map(Value::from), arb_json()];
    (
        prop::option::of(verb.clone()),
        prop::option::of(verb),
        prop::option::of(pattern_list.clone()),
        prop::option::of(pattern_list),
        prop::option::of(since),
        prop::option::of(id),
        prop::option::of(token),
        prop::option::of(arb_json()),
    )
        .prop_map(|(action, ty, events, legacy, since, id, token, extra)| {
            let mut obj = Map::new();
            let fields = [
                ("action", action),
                ("type", ty),
                ("events", events),
                ("event_types", legacy),
                ("since", since),
                ("id", id),
                ("token", token),
                ("extra", extra),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    obj.insert(key.to_owned(), value);
                }
            }
            Value::Object(obj)
        })
}

/// A valid message, how it is written, and what it must parse to.
fn valid_message() -> impl Strategy<Value = (String, Request)> {
    let patterns = prop::collection::vec("\\PC{0,12}", 0..5);
    let since = prop::option::of(prop::collection::btree_map(
        "\\PC{1,8}",
        ("[A-Za-z0-9_-]{1,32}", any::<u64>())
            .prop_map(|(epoch, sequence)| Position { epoch, sequence }),
        0..4,
    ));
    let message = prop_oneof![
        (patterns.clone(), since)
            .prop_map(|(events, since)| ClientMessage::Subscribe { events, since }),
        prop::option::of(patterns).prop_map(|events| ClientMessage::Unsubscribe { events }),
        Just(ClientMessage::Ping),
        "\\PC{0,40}".prop_map(|token| ClientMessage::Refresh { token }),
    ];
    let id = prop::option::of(prop_oneof![
        "\\PC{0,16}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
    ])
    .prop_filter("id of at most 64 bytes", |id| {
        id.as_ref()
            .and_then(Value::as_str)
            .is_none_or(|s| s.len() <= 64)
    });
    // Form: 0 = `action`, 1 = legacy `type` + `event_types`, 2 = both keys.
    (message, id, 0..3u8, any::<bool>()).prop_map(|(message, id, form, pretty)| {
        let mut obj = Map::new();
        let legacy = form == 1 && !matches!(message, ClientMessage::Refresh { .. });
        let list_key = if legacy { "event_types" } else { "events" };
        let verb = match &message {
            ClientMessage::Subscribe { events, since } => {
                obj.insert(list_key.into(), json!(events));
                if let Some(since) = since {
                    obj.insert("since".into(), serde_json::to_value(since).unwrap());
                }
                "subscribe"
            }
            ClientMessage::Unsubscribe { events } => {
                if let Some(events) = events {
                    obj.insert(list_key.into(), json!(events));
                }
                "unsubscribe"
            }
            ClientMessage::Ping => "ping",
            ClientMessage::Refresh { token } => {
                obj.insert("token".into(), json!(token));
                "refresh"
            }
        };
        match (legacy, form) {
            (true, _) => obj.insert("type".into(), json!(verb)),
            (false, 2) => {
                obj.insert("type".into(), json!("dance"));
                obj.insert("action".into(), json!(verb))
            }
            _ => obj.insert("action".into(), json!(verb)),
        };
        if let Some(id) = &id {
            obj.insert("id".into(), id.clone());
        }
        let value = Value::Object(obj);
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            value.to_string()
        };
        (text, Request { id, message })
    })
}

fn parser_seed() -> impl Strategy<Value = String> {
    let texts: Vec<String> = seeds("parser")
        .iter()
        .filter_map(|p| String::from_utf8(std::fs::read(p).unwrap()).ok())
        .collect();
    prop::sample::select(texts)
}

proptest! {
    #![proptest_config(config(2000, "tests/corpus/parser/regressions"))]

    /// Any string: no panic, only the two client-error codes, and agreement
    /// with the contract wherever the text is JSON.
    #[test]
    fn parser_any_string(text in prop_oneof![any::<String>(), "[{}\\[\\]\",:a-z0-9 \\\\]{0,40}"]) {
        check_parse(&text)?;
    }
}

proptest! {
    #![proptest_config(config(1000, "tests/corpus/parser/regressions"))]

    /// Any object built from the keys the parser reads: the exact request or
    /// refusal code (with the id echoed) that the contract gives.
    #[test]
    fn parser_structured(value in message_value(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&value).unwrap() } else { value.to_string() };
        prop_assert_eq!(check_parse(&text)?, reference_parse(&value).is_ok());
    }

}

proptest! {
    #![proptest_config(config(2000, "tests/corpus/parser/regressions"))]

    /// Every valid message round-trips to the message it was built from.
    #[test]
    fn parser_round_trip((text, expected) in valid_message()) {
        let got = client_message::parse(&text, MAX_DEPTH);
        prop_assert_eq!(got.as_ref(), Ok(&expected), "for {}", text);
    }

    /// Nesting beyond the limit is refused as `invalid_json`; within it a
    /// message is read (serde_json's own limit of 128 aside).
    #[test]
    fn parser_depth(depth in 0..300usize, max in 0..200usize, in_string in any::<bool>()) {
        let inner = nested(depth);
        let inner = if in_string { Value::from(inner).to_string() } else { inner };
        let text = format!("{{\"action\":\"ping\",\"x\":{inner}}}");
        let total = if in_string { 1 } else { depth + 1 };
        let got = client_message::parse(&text, max);
        if total > max {
            prop_assert_eq!(got.map_err(|r| r.code).err(), Some("invalid_json"));
        } else if total <= 100 {
            prop_assert_eq!(got.map(|r| r.message), Ok(ClientMessage::Ping));
        } else {
            prop_assert!(got.is_ok() || got.unwrap_err().code == "invalid_json");
        }
    }

    /// Seeds broken by truncation, insertion, deletion and duplication.
    #[test]
    fn parser_mutated_seeds(seed in parser_seed(), edits in prop::collection::vec(edit(), 1..4)) {
        let mut text = seed;
        for e in &edits {
            apply_edit(&mut text, e);
        }
        check_parse(&text)?;
    }
}

#[test]
fn parser_seeds() {
    replay("parser", |_, bytes| match std::str::from_utf8(bytes) {
        Ok(text) => check_parse(text),
        // A frame that is not UTF-8 arrives as binary: refused upstream.
        Err(_) => Ok(false),
    });
}

// ---------------------------------------------------------------------------
// (b) Subscription patterns.

fn is_segment(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The grammar of docs/protocol.md ("Patterns and subscriptions"), written
/// independently of `names.rs`.
fn reference_pattern(text: &str, max: usize) -> Option<Pattern> {
    if text.is_empty() || text.len() > max {
        return None;
    }
    if text == "*" {
        return Some(Pattern::All);
    }
    if let Some(domain) = text.strip_suffix(".*") {
        return is_segment(domain).then(|| Pattern::Domain(domain.to_owned()));
    }
    if text.len() > 64 {
        return None;
    }
    let type_name = matches!(text.split_once('.'), Some((d, a)) if is_segment(d) && is_segment(a));
    let alias = text
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    (type_name || alias).then(|| Pattern::Exact(text.to_owned()))
}

/// Checks one pattern text; true when accepted.
fn check_pattern(text: &str, max: usize) -> Result<bool, TestCaseError> {
    let got = Pattern::parse(text, max);
    let expected = reference_pattern(text, max);
    match (&got, &expected) {
        (Ok(p), Some(want)) => {
            prop_assert_eq!(p, want);
            prop_assert_eq!(p.to_string(), text);
            let again = Pattern::parse(&p.to_string(), max);
            prop_assert_eq!(again.as_ref(), Ok(p));
            match p {
                Pattern::All => prop_assert!(p.matches("a.b")),
                Pattern::Domain(d) => {
                    let name = format!("{d}.x");
                    prop_assert!(p.matches(&name));
                    let other = format!("{d}x.x");
                    prop_assert!(!p.matches(&other));
                }
                Pattern::Exact(n) => {
                    prop_assert!(p.matches(n));
                    let other = format!("{n}x");
                    prop_assert!(!p.matches(&other));
                }
            }
        }
        (Err(e), None) => {
            match e {
                PatternError::Empty => prop_assert!(text.is_empty()),
                PatternError::TooLong { len, max: m } => {
                    prop_assert_eq!((*len, *m), (text.len(), max));
                    prop_assert!(text.len() > max);
                }
                PatternError::Malformed { pattern, why } => {
                    prop_assert_eq!(pattern, text);
                    prop_assert!(!why.is_empty());
                    prop_assert!(!text.is_empty() && text.len() <= max);
                }
            }
            prop_assert!(!e.to_string().is_empty());
        }
        _ => prop_assert!(
            false,
            "{:?}: parse gave {:?}, the grammar says {:?}",
            text,
            got,
            expected
        ),
    }
    Ok(got.is_ok())
}

/// Patterns from the grammar: `*`, `domain.*`, type names, aliases.
fn grammar_pattern() -> impl Strategy<Value = String> {
    let segment = "[a-z][a-z0-9_]{0,20}";
    prop_oneof![
        Just("*".to_owned()),
        segment.prop_map(|d| format!("{d}.*")),
        (segment, segment).prop_map(|(d, a)| format!("{d}.{a}")),
        "[a-z0-9_.]{1,64}",
        "[a-z][a-z0-9_]{0,40}\\.[a-z][a-z0-9_]{0,40}",
    ]
}

/// Near misses: the grammar's alphabet plus the characters people get wrong.
fn near_miss() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_.*\\- ]{0,12}",
        "[a-z.*]{0,6}",
        "[a-z0-9_.]{60,140}",
        "[a-z]{1,70}\\.\\*",
        grammar_pattern().prop_map(|p| p.to_uppercase()),
        (grammar_pattern(), "[*. A-Z\u{e9}-]").prop_map(|(p, c)| format!("{p}{c}")),
        (grammar_pattern(), "[*. A-Z\u{e9}-]").prop_map(|(p, c)| format!("{c}{p}")),
    ]
}

proptest! {
    #![proptest_config(config(2000, "tests/corpus/pattern/regressions"))]

    /// Accepted exactly when the grammar allows it, and round-trips.
    #[test]
    fn pattern_from_grammar(text in grammar_pattern(), max in prop_oneof![Just(MAX_PATTERN_BYTES), 1..80usize]) {
        check_pattern(&text, max)?;
    }

    #[test]
    fn pattern_near_misses(text in near_miss(), max in prop_oneof![Just(MAX_PATTERN_BYTES), 1..80usize]) {
        check_pattern(&text, max)?;
    }

    #[test]
    fn pattern_any_string(text in any::<String>()) {
        check_pattern(&text, MAX_PATTERN_BYTES)?;
        check_pattern(&text, usize::MAX)?;
    }
}

#[test]
fn pattern_seeds() {
    replay("pattern", |_, bytes| {
        let text = String::from_utf8_lossy(bytes);
        check_pattern(&text, MAX_PATTERN_BYTES)
    });
}

// ---------------------------------------------------------------------------
// (c) Publishing with payload schemas.

const PUBLISH_CONFIG: &str = r#"
[server]
max_event_bytes = 4096

[[channels]]
name = "alerts"

[[channels]]
name = "metrics"

[[endpoints]]
path = "/ws/all"
channels = ["alerts", "metrics"]

[[event_types]]
name = "alert.created"
channel = "alerts"
aliases = ["alert_created"]
[event_types.payload]
id = { type = "string", required = true }
severity = { type = "string", required = true, enum = ["low", "high"] }
count = { type = "integer" }
ratio = { type = "number" }
flag = { type = "boolean" }
meta = { type = "object" }
tags = { type = "array" }

[[event_types]]
name = "metric.sample"
channel = "metrics"
additional_fields = true
[event_types.payload]
value = { type = "number", required = true }
level = { type = "integer", enum = [1, 2, 3] }
"#;

const MAX_EVENT_BYTES: usize = 4096;

fn load_toml(text: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    config::load_with_env(&path, Vec::new())
        .unwrap_or_else(|e| panic!("{e}: {:?}", e.problems()))
        .config
}

static PUBLISH: LazyLock<Config> = LazyLock::new(|| load_toml(PUBLISH_CONFIG));

fn publish_router() -> Router {
    let config = PUBLISH.clone();
    let built = Registry::build(&config, &[]).unwrap();
    Router::new(Snapshot {
        version: 1,
        loaded_at: chrono::Utc::now(),
        config: Arc::new(config),
        registry: built.registry,
        warnings: built.warnings,
        sinks: BTreeMap::new(),
    })
}

/// A declared payload field: (name, JSON type, required, enum).
type Declared = (&'static str, &'static str, bool, Option<Value>);

/// The declared fields of a type, and whether it takes additional fields.
fn declared(type_name: &str) -> (Vec<Declared>, bool) {
    match type_name {
        "alert.created" => (
            vec![
                ("count", "integer", false, None),
                ("flag", "boolean", false, None),
                ("id", "string", true, None),
                ("meta", "object", false, None),
                ("ratio", "number", false, None),
                ("severity", "string", true, Some(json!(["low", "high"]))),
                ("tags", "array", false, None),
            ],
            false,
        ),
        "metric.sample" => (
            vec![
                ("level", "integer", false, Some(json!([1, 2, 3]))),
                ("value", "number", true, None),
            ],
            true,
        ),
        other => unreachable!("{other}"),
    }
}

fn canonical(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "alert.created" | "alert_created" => Some(("alert.created", "alerts")),
        "metric.sample" => Some(("metric.sample", "metrics")),
        _ => None,
    }
}

fn has_json_type(v: &Value, ty: &str) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => v
            .as_f64()
            .is_some_and(|f| v.is_i64() || v.is_u64() || (f.is_finite() && f.fract() == 0.0)),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => unreachable!(),
    }
}

fn numeric_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The contract's verdict on one payload: (field, problem) pairs, as an
/// `invalid_payload` refusal lists them (docs/protocol.md, "Publishing over
/// HTTP").
fn payload_problems(type_name: &str, payload: &Value) -> Vec<(String, &'static str)> {
    let Some(obj) = payload.as_object() else {
        return vec![("payload".into(), "wrong_type")];
    };
    let (fields, additional) = declared(type_name);
    let mut out = Vec::new();
    for (name, ty, required, allowed) in &fields {
        match obj.get(*name) {
            None | Some(Value::Null) if *required => out.push((name.to_string(), "missing")),
            None | Some(Value::Null) => {}
            Some(v) if !has_json_type(v, ty) => out.push((name.to_string(), "wrong_type")),
            Some(v) => {
                if let Some(Value::Array(allowed)) = allowed {
                    if !allowed.iter().any(|a| numeric_eq(a, v)) {
                        out.push((name.to_string(), "not_in_enum"));
                    }
                }
            }
        }
    }
    if !additional {
        for key in obj.keys() {
            if !fields.iter().any(|(n, ..)| n == key) {
                out.push((key.clone(), "unknown"));
            }
        }
    }
    out
}

fn quoted(s: &str) -> usize {
    Value::from(s).to_string().len()
}

/// The envelope's exact size with a one-digit sequence.
fn envelope_len(type_name: &str, channel: &str, ev: &Incoming) -> usize {
    r#"{"type":,"payload":,"timestamp":"","channel":,"sequence":0}"#.len()
        + quoted(type_name)
        + ev.payload.to_string().len()
        + 24
        + quoted(channel)
        + ev.correlation_id
            .as_deref()
            .map_or(0, |c| r#","correlation_id":"#.len() + quoted(c))
}

/// What the router must do with one batch, given what it already holds.
#[derive(Debug)]
enum Expected {
    Forbidden,
    UnknownType,
    Invalid(Vec<(usize, String, &'static str)>),
    /// Over `max_event_bytes` for sure.
    TooLarge,
    /// Accepted: each event's (type, channel, Some(sequence of the earlier
    /// event it duplicates) or None for a new one). When `near_limit`, an
    /// envelope is within 19 bytes of `max_event_bytes` (the bound is checked
    /// before the sequence is known), so `too_large` is right too.
    Accepted {
        plan: Vec<(&'static str, &'static str, Option<u64>)>,
        near_limit: bool,
    },
}

/// Per channel: last sequence and the idempotency keys seen.
#[derive(Default, Debug)]
struct PublishModel {
    sequences: BTreeMap<&'static str, u64>,
    keys: BTreeMap<(&'static str, String), u64>,
}

fn expected_publish(model: &PublishModel, batch: &[Incoming]) -> Expected {
    if batch
        .iter()
        .any(|e| names::domain_of(&e.type_name) == "connection")
    {
        return Expected::Forbidden;
    }
    let mut problems = Vec::new();
    let mut unknown = false;
    for (index, ev) in batch.iter().enumerate() {
        let Some((name, _)) = canonical(&ev.type_name) else {
            unknown = true;
            problems.push((index, "type".to_owned(), "unknown_type"));
            continue;
        };
        for (field, problem) in payload_problems(name, &ev.payload) {
            problems.push((index, field, problem));
        }
        if ev.idempotency_key.as_ref().is_some_and(|k| k.len() > 128) {
            problems.push((index, "idempotency_key".to_owned(), "wrong_type"));
        }
    }
    if unknown && problems.iter().all(|p| p.2 == "unknown_type") {
        return Expected::UnknownType;
    }
    if !problems.is_empty() {
        problems.sort();
        return Expected::Invalid(problems);
    }
    let mut maybe_large = false;
    for ev in batch {
        let (name, channel) = canonical(&ev.type_name).unwrap();
        let len = envelope_len(name, channel, ev);
        if len > MAX_EVENT_BYTES {
            return Expected::TooLarge;
        }
        maybe_large |= len + 19 > MAX_EVENT_BYTES;
    }
    let mut keys: BTreeMap<(&str, String), u64> = BTreeMap::new();
    let mut next = model.sequences.clone();
    let mut out = Vec::new();
    for ev in batch {
        let (name, channel) = canonical(&ev.type_name).unwrap();
        let dup = ev.idempotency_key.as_ref().and_then(|k| {
            let key = (channel, k.clone());
            model.keys.get(&key).or_else(|| keys.get(&key)).copied()
        });
        if dup.is_none() {
            let seq = next.entry(channel).or_default();
            *seq += 1;
            if let Some(k) = &ev.idempotency_key {
                keys.insert((channel, k.clone()), *seq);
            }
        }
        out.push((name, channel, dup));
    }
    Expected::Accepted {
        plan: out,
        near_limit: maybe_large,
    }
}

/// Everything queued for a connection right now, without waiting.
fn drain_now(conn: &ConnRef) -> Vec<String> {
    conn.outbox
        .next_batch()
        .now_or_never()
        .map(|b| b.frames.iter().map(|f| f.text().to_string()).collect())
        .unwrap_or_default()
}

fn positions(router: &Router) -> BTreeMap<String, (String, u64)> {
    router.positions()
}

/// Publishes one batch and checks the outcome against the model; true when
/// accepted.
fn check_publish(
    router: &Router,
    conn: &ConnRef,
    model: &mut PublishModel,
    batch: Vec<Incoming>,
) -> Result<bool, TestCaseError> {
    let expected = expected_publish(model, &batch);
    let before = positions(router);
    let got = router.publish(batch.clone(), &Origin::Http).wait();
    let after = positions(router);
    let frames = drain_now(conn);
    match (&got, &expected) {
        (Ok(stamps), Expected::Accepted { plan, .. }) => {
            prop_assert_eq!(stamps.len(), batch.len());
            let mut fresh = Vec::new();
            for ((stamp, (name, channel, dup)), ev) in stamps.iter().zip(plan).zip(&batch) {
                prop_assert_eq!(&*stamp.channel, *channel);
                match dup {
                    Some(seq) => prop_assert_eq!(stamp.sequence, *seq, "a duplicate key"),
                    None => {
                        let seq = model.sequences.entry(channel).or_default();
                        *seq += 1;
                        prop_assert_eq!(stamp.sequence, *seq, "sequences have no gap");
                        if let Some(k) = &ev.idempotency_key {
                            model.keys.insert((channel, k.clone()), *seq);
                        }
                        fresh.push((name, channel, stamp.sequence, ev));
                    }
                }
            }
            for (ch, (epoch, seq)) in &after {
                prop_assert_eq!(&before[ch].0, epoch, "epoch kept");
                prop_assert_eq!(*seq, model.sequences.get(ch.as_str()).copied().unwrap_or(0));
            }
            prop_assert_eq!(
                frames.len(),
                fresh.len(),
                "one envelope per new event: {:?}",
                frames
            );
            for (text, (name, channel, seq, ev)) in frames.iter().zip(&fresh) {
                let env: Value = serde_json::from_str(text).map_err(|e| {
                    TestCaseError::fail(format!("envelope is not JSON: {e}: {text}"))
                })?;
                prop_assert_eq!(&env["type"], &json!(name));
                prop_assert_eq!(&env["channel"], &json!(channel));
                prop_assert_eq!(&env["sequence"], &json!(seq));
                let payload = format!("\"payload\":{},", ev.payload);
                prop_assert!(text.contains(&payload), "payload kept as sent: {}", text);
                prop_assert_eq!(
                    env.get("correlation_id").and_then(Value::as_str),
                    ev.correlation_id.as_deref()
                );
                let ts = env["timestamp"].as_str().unwrap_or_default();
                prop_assert!(ts.len() == 24 && ts.ends_with('Z'), "timestamp {}", ts);
                prop_assert!(text.len() <= MAX_EVENT_BYTES);
            }
            return Ok(true);
        }
        (Err(PublishError::Forbidden { .. }), Expected::Forbidden)
        | (Err(PublishError::UnknownType { .. }), Expected::UnknownType)
        | (Err(PublishError::TooLarge { .. }), Expected::TooLarge)
        | (
            Err(PublishError::TooLarge { .. }),
            Expected::Accepted {
                near_limit: true, ..
            },
        ) => {}
        (Err(PublishError::Invalid { fields }), Expected::Invalid(want)) => {
            let mut got: Vec<(usize, String, &str)> = fields
                .iter()
                .map(|f| (f.index, f.field.clone(), f.problem))
                .collect();
            got.sort();
            prop_assert_eq!(&got, want, "every bad field, and only those");
        }
        _ => prop_assert!(
            false,
            "publish gave {:?}, the contract says {:?}",
            got,
            expected
        ),
    }
    prop_assert_eq!(&before, &after, "a refused batch stamps nothing");
    prop_assert!(
        frames.is_empty(),
        "a refused batch delivers nothing: {:?}",
        frames
    );
    Ok(false)
}

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => arb_json(),
        1 => Just(json!("low")),
        1 => Just(json!("high")),
        1 => Just(json!("HIGH")),
        1 => Just(json!(2)),
        1 => Just(json!(2.0)),
        1 => Just(json!(2.5)),
        1 => Just(json!(4)),
        1 => Just(json!({})),
        1 => Just(json!([1, "a", null])),
        1 => Just(Value::Null),
        1 => Just(json!("x".repeat(MAX_EVENT_BYTES))),
        1 => Just(json!("\u{0}".repeat(700))),
    ]
}

fn payload() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        6 => prop::sample::select(vec![
            "id", "severity", "count", "ratio", "flag", "meta", "tags", "value", "level",
        ])
        .prop_map(str::to_owned),
        1 => nasty_string(),
    ];
    prop_oneof![
        6 => prop::collection::btree_map(key, field_value(), 0..8)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        1 => arb_json(),
    ]
}

fn incoming() -> impl Strategy<Value = Incoming> {
    let type_name = prop_oneof![
        6 => prop::sample::select(vec!["alert.created", "alert_created", "metric.sample"])
            .prop_map(str::to_owned),
        1 => prop::sample::select(vec![
            "alert.createdd", "connection.established", "connection.x", "connection", "Alert.created", "",
        ])
        .prop_map(str::to_owned),
        1 => nasty_string(),
    ];
    let key = prop::option::of(prop_oneof![
        Just("k1".to_owned()),
        Just("k2".to_owned()),
        Just("k".repeat(129)),
        "\\PC{0,8}",
    ]);
    (type_name, payload(), prop::option::of("\\PC{0,20}"), key).prop_map(
        |(type_name, payload, correlation_id, idempotency_key)| Incoming {
            type_name,
            payload,
            correlation_id,
            idempotency_key,
        },
    )
}

fn listener(router: &Router) -> ConnRef {
    let conn = router
        .connect(ConnectRequest {
            endpoint: "/ws/all".into(),
            user: None,
            ip: "127.0.0.1".parse().unwrap(),
            expires_at: None,
            channel_claim: None,
            events: None,
            since: None,
            elsewhere: 0,
        })
        .unwrap();
    drain_now(&conn);
    conn
}

proptest! {
    #![proptest_config(config(256, "tests/corpus/publish/regressions"))]

    /// Random batches against typed schemas: the contract's verdict, all or
    /// nothing, and valid envelopes carrying the payload as sent.
    #[test]
    fn publish_batches(batches in prop::collection::vec(prop::collection::vec(incoming(), 1..4), 1..5)) {
        let router = publish_router();
        let conn = listener(&router);
        let mut model = PublishModel::default();
        for batch in batches {
            check_publish(&router, &conn, &mut model, batch)?;
        }
    }
}

/// Reads a `POST /api/events` body as the HTTP layer does.
fn read_body(bytes: &[u8]) -> Option<Vec<Incoming>> {
    json_depth::check_depth(bytes, MAX_DEPTH).ok()?;
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, v)| Incoming::from_json(v, i).ok())
        .collect()
}

#[test]
fn publish_seeds() {
    replay("publish", |_, bytes| {
        let router = publish_router();
        let conn = listener(&router);
        match read_body(bytes) {
            Some(batch) if !batch.is_empty() => {
                check_publish(&router, &conn, &mut PublishModel::default(), batch)
            }
            _ => Ok(false),
        }
    });
}

// ---------------------------------------------------------------------------
// (d) Configuration files.

static SHIPPED: LazyLock<String> = LazyLock::new(|| {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml")).unwrap()
});

static SCRATCH: LazyLock<tempfile::TempDir> = LazyLock::new(|| tempfile::tempdir().unwrap());
static NEXT_FILE: AtomicUsize = AtomicUsize::new(0);

/// Loads `bytes` as a config file; true when it loads. Checks that a
/// refusal lists problems a user can act on.
fn check_config(bytes: &[u8], env: Vec<(String, String)>) -> Result<bool, TestCaseError> {
    let n = NEXT_FILE.fetch_add(1, Ordering::Relaxed);
    let path = SCRATCH.path().join(format!("config-{n}.toml"));
    std::fs::write(&path, bytes).unwrap();
    let outcome = config::load_with_env(&path, env);
    std::fs::remove_file(&path).ok();
    // A loaded file is then checked as a whole, as a reload does (with no
    // plugin loaded: their types are not known here).
    let outcome = outcome.and_then(|loaded| {
        Registry::build(&loaded.config, &[])
            .map(|_| ())
            .map_err(ConfigError::Invalid)
    });
    match outcome {
        Ok(()) => Ok(true),
        Err(ConfigError::Invalid(problems)) => {
            prop_assert!(!problems.is_empty(), "Invalid with no problem");
            for p in &problems {
                prop_assert!(
                    !p.problem.trim().is_empty(),
                    "a problem without text: {:?}",
                    p
                );
                prop_assert!(
                    p.key.is_some() || (p.line.is_some() && p.column.is_some()),
                    "a problem with neither key nor line/column: {:?}",
                    p
                );
                prop_assert!(!p.to_string().is_empty());
            }
            Ok(false)
        }
        Err(e @ ConfigError::Read { .. }) => {
            // Only a file that is not UTF-8 cannot be read.
            prop_assert!(std::str::from_utf8(bytes).is_err(), "read error: {}", e);
            Ok(false)
        }
        Err(e @ ConfigError::Empty { .. }) => {
            // Only a file of white space is empty.
            prop_assert!(
                std::str::from_utf8(bytes).is_ok_and(|t| t.trim().is_empty()),
                "empty: {}",
                e
            );
            Ok(false)
        }
    }
}

/// One edit of a config file, by line.
#[derive(Clone, Debug)]
enum ConfigEdit {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    /// Replaces the value of a `key = value` line.
    ChangeValue(Index, &'static str),
    InsertLine(Index, String),
    Text(Edit),
}

const VALUES: &[&str] = &[
    "\"\"",
    "\"text\"",
    "\"ÄLERT.*\"",
    "0",
    "-1",
    "42",
    "99999999999999999999",
    "3.5",
    "nan",
    "-inf",
    "true",
    "[]",
    "[1, \"a\"]",
    "[\"alerts\", \"alerts\"]",
    "{}",
    "{ x = 1 }",
    "1979-05-27T07:32:00Z",
    "'''multi\nline'''",
    "\"drop_newest\"",
    "\"/ws/events\"",
];

fn garbage_line() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "[server]",
            "[[channels]]",
            "[[endpoints]]",
            "[[event_types]]",
            "[event_types.payload]",
            "[[plugins]]",
            "[plugins.config]",
            "[[routes]]",
            "[auth.jwt]",
            "name = \"alerts\"",
            "name = \"connection\"",
            "name = \"connection.established\"",
            "channel = \"nowhere\"",
            "channels = [\"nowhere\"]",
            "path = \"ws/no-slash\"",
            "x = { type = \"strin\", required = true }",
            "events = [\"*.created\"]",
            "sink = \"nobody\"",
            "library = \"\"",
            "unknown_key = 1",
            "= 1",
            "[",
            "[[]]",
            "a.b.c = 1",
            "\u{feff}",
            "\"quoted\" = 1",
            "server.send_queue = 0",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,30}",
        any::<String>(),
    ]
}

fn config_edit() -> impl Strategy<Value = ConfigEdit> {
    prop_oneof![
        3 => any::<Index>().prop_map(ConfigEdit::DeleteLine),
        2 => any::<Index>().prop_map(ConfigEdit::DuplicateLine),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| ConfigEdit::SwapLines(a, b)),
        4 => (any::<Index>(), prop::sample::select(VALUES)).prop_map(|(i, v)| ConfigEdit::ChangeValue(i, v)),
        3 => (any::<Index>(), garbage_line()).prop_map(|(i, s)| ConfigEdit::InsertLine(i, s)),
        1 => edit().prop_map(ConfigEdit::Text),
    ]
}

fn apply_config_edit(text: &str, e: &ConfigEdit) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let n = lines.len();
    match e {
        ConfigEdit::DeleteLine(i) => {
            lines.remove(i.index(n));
        }
        ConfigEdit::DuplicateLine(i) => {
            let i = i.index(n);
            lines.insert(i, lines[i].clone());
        }
        ConfigEdit::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
        ConfigEdit::ChangeValue(i, value) => {
            // The nearest `key = value` line at or after the index.
            let start = i.index(n);
            if let Some(line) = (0..n)
                .map(|k| (start + k) % n)
                .find(|&k| lines[k].contains(" = ") && !lines[k].trim_start().starts_with('#'))
            {
                let key = lines[line].split(" = ").next().unwrap().to_owned();
                lines[line] = format!("{key} = {value}");
            }
        }
        ConfigEdit::InsertLine(i, s) => lines.insert(i.index(n + 1), s.clone()),
        ConfigEdit::Text(edit) => {
            let mut text = text.to_owned();
            apply_edit(&mut text, edit);
            return text;
        }
    }
    lines.join("\n")
}

/// A small TOML-ish file built from the config's own vocabulary.
fn toml_ish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "path",
        "channels",
        "channel",
        "history",
        "history_ttl_s",
        "slow_consumer",
        "require_auth",
        "description",
        "library",
        "enabled",
        "sink",
        "events",
        "aliases",
        "send_queue",
        "max_patterns",
        "mode",
        "listen",
        "plugin_dir",
        "type",
        "required",
        "enum",
    ]);
    let line = prop_oneof![
        2 => (key, prop::sample::select(VALUES)).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => garbage_line(),
    ];
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(config(128, "tests/corpus/config/regressions"))]

    /// The shipped config with lines deleted, duplicated, swapped, retyped,
    /// or garbage inserted: it loads, or every problem is reported usably.
    #[test]
    fn config_mutated(edits in prop::collection::vec(config_edit(), 1..4)) {
        let mut text = SHIPPED.clone();
        for e in &edits {
            text = apply_config_edit(&text, e);
        }
        check_config(text.as_bytes(), Vec::new())?;
    }

}

proptest! {
    #![proptest_config(config(256, "tests/corpus/config/regressions"))]

    #[test]
    fn config_toml_ish(text in toml_ish()) {
        check_config(text.as_bytes(), Vec::new())?;
    }

}

proptest! {
    #![proptest_config(config(64, "tests/corpus/config/regressions"))]

    /// Environment overrides with values of the wrong type.
    #[test]
    fn config_env_overrides(
        key in prop::sample::select(vec![
            "SWITCHYARD__SERVER__SEND_QUEUE", "SWITCHYARD__SERVER__LISTEN",
            "SWITCHYARD__AUTH__MODE", "SWITCHYARD__LOG__LEVEL", "switchyard__server__max_patterns",
            "SWITCHYARD__NOPE", "SWITCHYARD__SERVER__CLIENT_RATE_LIMIT__BURST", "SWITCHYARD__",
        ]),
        value in prop_oneof![prop::sample::select(VALUES).prop_map(str::to_owned), "\\PC{0,12}"],
    ) {
        check_config(SHIPPED.as_bytes(), vec![(key.to_owned(), value)])?;
    }
}

#[test]
fn config_shipped_loads() {
    assert!(check_config(SHIPPED.as_bytes(), Vec::new()).unwrap());
}

#[test]
fn config_seeds() {
    replay("config", |_, bytes| check_config(bytes, Vec::new()));
}
