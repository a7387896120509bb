//! The grammar of event type names, aliases, channel names and subscription
//! patterns, plus the "did you mean" helper used in error messages.
//!
//! Everything here is pure string inspection so the config loader, the
//! registry, the HTTP API and the WebSocket handler all agree on one grammar.

use std::borrow::Cow;
use std::fmt;

/// The longest event type name, alias or channel name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Whether `s` is one segment of a type name: `[a-z][a-z0-9_]*`.
fn is_segment(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

/// Whether `s` is a canonical event type name: `{domain}.{action}`, exactly
/// two segments of `[a-z0-9_]` each starting with a letter, at most
/// [`MAX_NAME_BYTES`] bytes (e.g. `alert.created`).
pub fn is_type_name(s: &str) -> bool {
    if s.len() > MAX_NAME_BYTES {
        return false;
    }
    match s.split_once('.') {
        Some((domain, action)) => is_segment(domain) && is_segment(action),
        None => false,
    }
}

/// Whether `s` has the alias character set: non-empty `[a-z0-9_.]`, at most
/// [`MAX_NAME_BYTES`] bytes.
fn has_alias_form(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_BYTES
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.'))
}

/// Whether `s` is a legacy alias: a non-empty `[a-z0-9_.]` string of at most
/// [`MAX_NAME_BYTES`] bytes that is *not* in the type-name form (e.g.
/// `job_progress`, `a.b.c`).
///
/// Excluding the type-name form keeps aliases and canonical names in
/// disjoint spaces, so resolving a name never has to pick between the two.
pub fn is_alias(s: &str) -> bool {
    has_alias_form(s) && !is_type_name(s)
}

/// Whether `s` is a channel name: `[a-z][a-z0-9_-]*`, at most
/// [`MAX_NAME_BYTES`] bytes (e.g. `alerts`, `worker-health`).
///
/// The hyphen is allowed because channels are operator-facing labels (often
/// mirroring hostnames or team names), while the dot is not, so a channel
/// can never be mistaken for an event type name.
pub fn is_channel_name(s: &str) -> bool {
    if s.len() > MAX_NAME_BYTES {
        return false;
    }
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// The domain of a type name: the text before the first `.` (the whole
/// string when there is no `.`).
pub fn domain_of(type_name: &str) -> &str {
    match type_name.split_once('.') {
        Some((domain, _)) => domain,
        None => type_name,
    }
}

/// A subscription pattern: which event types a subscriber wants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// `*`: every event type.
    All,
    /// `domain.*`: every type whose domain is the held segment.
    Domain(String),
    /// An exact type name or alias, held as written (aliases are resolved by
    /// the registry, not here).
    Exact(String),
}

/// Why a pattern was refused. The messages are meant to be shown to the
/// person who wrote the pattern.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern was the empty string.
    #[error("a pattern may not be empty; use `*` to match every event type")]
    Empty,
    /// The pattern is longer than the caller's limit.
    #[error("a pattern may be at most {max} bytes long; this one is {len}")]
    TooLong {
        /// The pattern's length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// The pattern is not `*`, `domain.*`, a type name or an alias.
    #[error("`{pattern}` is not a valid pattern: {why}")]
    Malformed {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it and how to fix it.
        why: String,
    },
}

const WILDCARD_RULE: &str =
    "a wildcard may only stand alone (`*`) or as the whole second segment (`alert.*`)";

impl Pattern {
    /// Parses a pattern as written by a subscriber or in config, refusing
    /// anything longer than `max_bytes` bytes.
    pub fn parse(text: &str, max_bytes: usize) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        // Checked first so an oversized input is refused before any scan.
        if text.len() > max_bytes {
            return Err(PatternError::TooLong {
                len: text.len(),
                max: max_bytes,
            });
        }
        let malformed = |why: String| PatternError::Malformed {
            pattern: text.to_owned(),
            why,
        };
        if text == "*" {
            return Ok(Pattern::All);
        }
        if text.contains('*') {
            let Some(domain) = text.strip_suffix(".*") else {
                return Err(malformed(WILDCARD_RULE.to_owned()));
            };
            if domain.contains('*') || domain.contains('.') {
                return Err(malformed(WILDCARD_RULE.to_owned()));
            }
            if !is_segment(domain) {
                return Err(malformed(format!(
                    "the domain `{domain}` must start with a lower-case letter and \
                     contain only `a`-`z`, `0`-`9` and `_`"
                )));
            }
            return Ok(Pattern::Domain(domain.to_owned()));
        }
        if is_type_name(text) || is_alias(text) {
            return Ok(Pattern::Exact(text.to_owned()));
        }
        Err(malformed(explain_bad_name(text)))
    }

    /// Whether an event of canonical type `type_name` is selected by this
    /// pattern.
    pub fn matches(&self, type_name: &str) -> bool {
        match self {
            Pattern::All => true,
            Pattern::Domain(domain) => domain_of(type_name) == domain,
            Pattern::Exact(name) => type_name == name,
        }
    }

    /// The pattern in its written form: `*`, `alert.*` or `alert.created`.
    pub fn as_str(&self) -> Cow<'_, str> {
        match self {
            Pattern::All => Cow::Borrowed("*"),
            Pattern::Domain(domain) => Cow::Owned(format!("{domain}.*")),
            Pattern::Exact(name) => Cow::Borrowed(name),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// Explains why a wildcard-free `text` is neither a type name nor an alias,
/// naming the first thing the writer would have to change.
fn explain_bad_name(text: &str) -> String {
    if text.len() > MAX_NAME_BYTES {
        return format!(
            "names and aliases are at most {MAX_NAME_BYTES} bytes; this one is {}",
            text.len()
        );
    }
    let lower = text.to_ascii_lowercase();
    if lower != text && (is_type_name(&lower) || is_alias(&lower)) {
        return format!("names are lower case; write `{lower}`");
    }
    match lower
        .chars()
        .find(|&c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '.'))
    {
        Some(c) => format!(
            "`{}` is not allowed; names use only `a`-`z`, `0`-`9`, `_` and `.`",
            c.escape_debug()
        ),
        // Every character is legal and the length fits, so it is an alias;
        // unreachable in practice but kept total rather than panicking.
        None => {
            "expected `*`, `domain.*`, a type name such as `alert.created`, or an alias".to_owned()
        }
    }
}

/// The candidate closest to `input` by edit distance, when it is close enough
/// to be a plausible typo; `None` otherwise.
///
/// Distance is Damerau-Levenshtein over characters (a swapped pair such as
/// `alret` counts as one edit). A candidate is close enough when its
/// distance is at most `max(1, chars(input) / 3)`: one slip is always
/// forgiven, longer inputs tolerate proportionally more, and an unrelated
/// word is never suggested. On a tie the earliest candidate wins, so the
/// suggestion is deterministic for a given candidate order. An exact match
/// (distance 0) is returned like any other.
pub fn did_you_mean<'a, I: IntoIterator<Item = &'a str>>(
    input: &str,
    candidates: I,
) -> Option<&'a str> {
    let limit = (input.chars().count() / 3).max(1);
    let letters = Letters::of(input);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        // A cheap lower bound first: the edit distance is never below the
        // letter-count difference, and most candidates are far off. Exact
        // distances are costly (a client may send 128 unregistered
        // patterns a message), so only plausible candidates get one.
        let bound = best.map_or(limit, |(d, _)| d.saturating_sub(1));
        if letters.distance_bound(&Letters::of(candidate)) > bound {
            continue;
        }
        let distance = strsim::damerau_levenshtein(input, candidate);
        if distance > limit {
            continue;
        }
        // Strictly less, so the first of equally close candidates is kept.
        if best.is_none_or(|(best_distance, _)| distance < best_distance) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// How many times each character occurs in a name, for a lower bound of the
/// edit distance between two names (names are ASCII in practice; any other
/// character counts in one shared bucket, which keeps the bound sound).
struct Letters([u16; 128]);

impl Letters {
    fn of(text: &str) -> Letters {
        let mut counts = [0u16; 128];
        for c in text.chars() {
            let i = usize::try_from(u32::from(c)).map_or(127, |i| i.min(127));
            counts[i] = counts[i].saturating_add(1);
        }
        Letters(counts)
    }

    /// A lower bound of the Damerau-Levenshtein distance: an insertion,
    /// deletion or substitution changes the surplus of each side by at most
    /// one, and a transposition changes neither.
    fn distance_bound(&self, other: &Letters) -> usize {
        let (mut more, mut fewer) = (0usize, 0usize);
        for (a, b) in self.0.iter().zip(&other.0) {
            more += usize::from(a.saturating_sub(*b));
            fewer += usize::from(b.saturating_sub(*a));
        }
        more.max(fewer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 256;

    #[test]
    fn the_letter_bound_never_exceeds_the_edit_distance() {
        let words = [
            "alert.created",
            "alret.created",
            "alert.*",
            "cam.status",
            "camera.status_changed",
            "",
            "x",
            "nothing12.p12",
            "détection.new",
        ];
        for a in words {
            for b in words {
                let bound = Letters::of(a).distance_bound(&Letters::of(b));
                assert!(bound <= strsim::damerau_levenshtein(a, b), "{a} {b}");
            }
        }
    }

    #[test]
    fn type_names_follow_the_two_segment_form() {
        for good in [
            "alert.created",
            "worker.health_check_failed",
            "scene_change.detected",
            "a.b",
            "a1.b2_",
        ] {
            assert!(is_type_name(good), "{good}");
        }
        for bad in [
            "",
            "alert",
            "alert.",
            ".created",
            "a.b.c",
            "Alert.created",
            "1alert.created",
            "alert._created",
            "alert.1created",
            "alert-x.created",
            "alert..created",
            "_a.b",
        ] {
            assert!(!is_type_name(bad), "{bad}");
        }
    }

    #[test]
    fn type_names_are_limited_to_64_bytes() {
        let at_limit = format!("a.{}", "b".repeat(MAX_NAME_BYTES - 2));
        assert_eq!(at_limit.len(), MAX_NAME_BYTES);
        assert!(is_type_name(&at_limit));
        let over = format!("a.{}", "b".repeat(MAX_NAME_BYTES - 1));
        assert!(!is_type_name(&over));
    }

    #[test]
    fn aliases_exclude_the_type_name_form() {
        for good in ["job_progress", "a.b.c", "1abc", "alert_created", "x"] {
            assert!(is_alias(good), "{good}");
        }
        for bad in [
            "",
            "alert.created",
            "Job_progress",
            "job-progress",
            "job progress",
            "job*",
        ] {
            assert!(!is_alias(bad), "{bad}");
        }
        assert!(is_alias(&"a".repeat(MAX_NAME_BYTES)));
        assert!(!is_alias(&"a".repeat(MAX_NAME_BYTES + 1)));
    }

    #[test]
    fn channel_names_allow_hyphens_but_not_dots() {
        for good in ["alerts", "worker-health", "a", "team_1-ops"] {
            assert!(is_channel_name(good), "{good}");
        }
        for bad in ["", "-alerts", "1alerts", "_x", "Alerts", "a.b", "a b"] {
            assert!(!is_channel_name(bad), "{bad}");
        }
        assert!(is_channel_name(&"a".repeat(MAX_NAME_BYTES)));
        assert!(!is_channel_name(&"a".repeat(MAX_NAME_BYTES + 1)));
    }

    #[test]
    fn domain_is_the_text_before_the_first_dot() {
        assert_eq!(domain_of("alert.created"), "alert");
        assert_eq!(domain_of("a.b.c"), "a");
        assert_eq!(domain_of("job_progress"), "job_progress");
        assert_eq!(domain_of(""), "");
    }

    #[test]
    fn valid_patterns_parse() {
        assert_eq!(Pattern::parse("*", MAX), Ok(Pattern::All));
        assert_eq!(
            Pattern::parse("alert.*", MAX),
            Ok(Pattern::Domain("alert".into()))
        );
        assert_eq!(
            Pattern::parse("alert.created", MAX),
            Ok(Pattern::Exact("alert.created".into()))
        );
        assert_eq!(
            Pattern::parse("job_progress", MAX),
            Ok(Pattern::Exact("job_progress".into()))
        );
        assert_eq!(
            Pattern::parse("a.b.c", MAX),
            Ok(Pattern::Exact("a.b.c".into()))
        );
    }

    #[test]
    fn misplaced_wildcards_are_refused_with_the_rule() {
        for bad in [
            "*.created",
            "alert*",
            "a.b.*",
            "**",
            "*.*",
            "alert.cre*",
            "al*.x",
        ] {
            let err = Pattern::parse(bad, MAX).unwrap_err();
            let PatternError::Malformed { pattern, why } = &err else {
                panic!("{bad}: {err:?}");
            };
            assert_eq!(pattern, bad);
            assert_eq!(why, WILDCARD_RULE, "{bad}");
        }
        assert_eq!(
            Pattern::parse("*.created", MAX).unwrap_err().to_string(),
            "`*.created` is not a valid pattern: a wildcard may only stand alone (`*`) \
             or as the whole second segment (`alert.*`)"
        );
    }

    #[test]
    fn domain_wildcards_need_a_valid_domain() {
        for bad in [".*", "1alert.*", "_a.*", "al-ert.*"] {
            let err = Pattern::parse(bad, MAX).unwrap_err();
            assert!(err.to_string().contains("the domain"), "{bad}: {err}");
        }
        let err = Pattern::parse("Alert.*", MAX).unwrap_err();
        assert!(err.to_string().contains("`Alert`"), "{err}");
    }

    #[test]
    fn empty_and_oversized_patterns_are_refused() {
        assert_eq!(Pattern::parse("", MAX), Err(PatternError::Empty));
        assert_eq!(
            Pattern::parse("alert.created", 5),
            Err(PatternError::TooLong { len: 13, max: 5 })
        );
        assert_eq!(
            Pattern::parse("alert.*", 7),
            Ok(Pattern::Domain("alert".into()))
        );
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        let err = Pattern::parse(&long, MAX).unwrap_err();
        assert!(err.to_string().contains("at most 64 bytes"), "{err}");
    }

    #[test]
    fn bad_characters_are_named_in_the_message() {
        let err = Pattern::parse("Alert.Created", MAX).unwrap_err();
        assert!(err.to_string().contains("write `alert.created`"), "{err}");
        let err = Pattern::parse("alert-created", MAX).unwrap_err();
        assert!(err.to_string().contains("`-` is not allowed"), "{err}");
        let err = Pattern::parse("alert created", MAX).unwrap_err();
        assert!(err.to_string().contains("` ` is not allowed"), "{err}");
        let err = Pattern::parse("ÄLERT", MAX).unwrap_err();
        assert!(err.to_string().contains("`Ä` is not allowed"), "{err}");
    }

    #[test]
    fn patterns_match_by_kind() {
        let all = Pattern::parse("*", MAX).unwrap();
        let domain = Pattern::parse("alert.*", MAX).unwrap();
        let exact = Pattern::parse("alert.created", MAX).unwrap();
        assert!(all.matches("worker.started"));
        assert!(domain.matches("alert.created"));
        assert!(domain.matches("alert.closed"));
        assert!(!domain.matches("alerts.created"));
        assert!(!domain.matches("worker.alert"));
        assert!(exact.matches("alert.created"));
        assert!(!exact.matches("alert.closed"));
    }

    #[test]
    fn patterns_render_as_written() {
        for text in ["*", "alert.*", "alert.created", "job_progress"] {
            let pattern = Pattern::parse(text, MAX).unwrap();
            assert_eq!(pattern.as_str(), text);
            assert_eq!(pattern.to_string(), text);
        }
    }

    #[test]
    fn did_you_mean_finds_typos() {
        let types = ["alert.closed", "alert.created", "worker.started"];
        assert_eq!(did_you_mean("alret.created", types), Some("alert.created"));
        assert_eq!(
            did_you_mean("alret.*", ["*", "worker.*", "alert.*"]),
            Some("alert.*")
        );
        assert_eq!(
            did_you_mean("/ws/event", ["/health", "/ws/events", "/api/events"]),
            Some("/ws/events")
        );
        assert_eq!(did_you_mean("alert.created", types), Some("alert.created"));
    }

    #[test]
    fn did_you_mean_stays_quiet_for_unrelated_words() {
        let types = ["alert.created", "worker.started"];
        assert_eq!(did_you_mean("banana", types), None);
        assert_eq!(did_you_mean("", types), None);
        assert_eq!(did_you_mean("alert.created", std::iter::empty()), None);
    }

    #[test]
    fn did_you_mean_threshold_scales_with_length() {
        // 3 chars: one edit allowed, not two.
        assert_eq!(did_you_mean("abc", ["abd"]), Some("abd"));
        assert_eq!(did_you_mean("abc", ["axy"]), None);
        // 12 chars: up to four edits.
        assert_eq!(
            did_you_mean("abcdefghijkl", ["abcdefghwxyz"]),
            Some("abcdefghwxyz")
        );
        assert_eq!(did_you_mean("abcdefghijkl", ["abcdefgvwxyz"]), None);
    }

    #[test]
    fn did_you_mean_prefers_the_closest_then_the_first() {
        assert_eq!(
            did_you_mean("alert.creatd", ["alert.creat", "alert.created"]),
            Some("alert.creat")
        );
        assert_eq!(did_you_mean("abcd", ["abcx", "abcy"]), Some("abcx"));
        assert_eq!(did_you_mean("abcd", ["abxy", "abcy"]), Some("abcy"));
    }
}
