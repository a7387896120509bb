//! A connection's subscription set and the rules for changing it.
//!
//! The set is owned by the router's table (see [`crate::router`]), which
//! updates its routing index in the same step as the set. This module holds
//! the rules: which patterns are held, how aliases resolve, what is refused
//! and what is worth a warning.

use std::collections::HashSet;

use crate::names::{self, Pattern};
use crate::protocol::Warning;
use crate::registry::{EventType, Registry, CONTROL_CHANNEL};

/// One pattern a connection holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Held {
    /// The text as held and echoed (aliases resolved to canonical names).
    pub text: String,
    /// The parsed pattern.
    pub pattern: Pattern,
}

impl Held {
    /// Whether this pattern selects `t`.
    pub fn matches(&self, t: &EventType) -> bool {
        t.matched_by(&self.pattern)
    }
}

/// What a connection receives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionSet {
    /// `None`: never subscribed, so everything on its endpoint's channels.
    held: Option<Vec<Held>>,
}

/// The bounds on patterns, from `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct PatternLimits {
    /// `server.max_patterns`.
    pub max_patterns: usize,
    /// `server.max_pattern_bytes`.
    pub max_pattern_bytes: usize,
}

/// What one subscribe did, for the reply.
#[derive(Debug, Default)]
pub struct SubscribeOutcome {
    /// The malformed patterns, answered by one `invalid_pattern` error.
    pub invalid: Refused,
    /// Set when patterns beyond the bound were not held.
    pub too_many: Option<String>,
    /// Warnings for the `subscribed` reply.
    pub warnings: Vec<Warning>,
}

/// How many refused patterns one `invalid_pattern` error names: enough to
/// fix a typo, while a message of thousands of bad patterns still gets one
/// short reply (a reply is queued memory the client makes the router hold).
pub const MAX_REFUSED_NAMED: usize = 16;

/// The malformed patterns of one message: how many, and the first
/// [`MAX_REFUSED_NAMED`] with why each was refused.
#[derive(Debug, Default)]
pub struct Refused {
    /// Every malformed pattern, named or not.
    pub count: usize,
    /// The first ones, as written, with why.
    pub named: Vec<(String, String)>,
}

impl Refused {
    fn add(&mut self, pattern: &str, why: String) {
        self.count += 1;
        if self.named.len() < MAX_REFUSED_NAMED {
            self.named.push((pattern.to_owned(), why));
        }
    }
}

/// Where the connection came in, for warnings about other endpoints.
pub struct Scope<'a> {
    /// The registry in force.
    pub registry: &'a Registry,
    /// Channels this connection may receive.
    pub channels: &'a HashSet<&'a str>,
    /// Other endpoints and their channels, to name the one that carries a type.
    pub endpoints: &'a [(&'a str, Vec<&'a str>)],
}

impl SubscriptionSet {
    /// Whether the connection has never subscribed (receives everything).
    pub fn receives_all(&self) -> bool {
        self.held.is_none()
    }

    /// The patterns held (none when receiving everything).
    pub fn held(&self) -> &[Held] {
        self.held.as_deref().unwrap_or_default()
    }

    /// The patterns held, `None` when receiving everything.
    pub fn texts(&self) -> Option<Vec<String>> {
        self.held
            .as_ref()
            .map(|held| held.iter().map(|h| h.text.clone()).collect())
    }

    /// Whether the connection wants events of type `t`.
    pub fn wants(&self, t: &EventType) -> bool {
        match &self.held {
            None => true,
            Some(held) => held.iter().any(|h| h.matches(t)),
        }
    }

    /// Adds patterns; the first subscribe ends receive-all.
    pub fn subscribe(
        &mut self,
        texts: &[String],
        limits: PatternLimits,
        scope: &Scope<'_>,
    ) -> SubscribeOutcome {
        let mut out = SubscribeOutcome::default();
        let held = self.held.get_or_insert_with(Vec::new);
        let mut refused = 0;
        for text in texts {
            let pattern = match Pattern::parse(text, limits.max_pattern_bytes) {
                Ok(p) => p,
                Err(e) => {
                    out.invalid.add(text, e.to_string());
                    continue;
                }
            };
            if is_control(&pattern) {
                out.warnings.push(Warning {
                    pattern: text.clone(),
                    message: "control messages (connection.*) are always delivered and cannot be subscribed to".into(),
                    did_you_mean: None,
                });
                continue;
            }
            let canonical = canonical(pattern, scope.registry);
            if held.iter().any(|h| h.pattern == canonical.pattern) {
                continue;
            }
            if held.len() >= limits.max_patterns {
                refused += 1;
                continue;
            }
            out.warnings.extend(warning_for(text, &canonical, scope));
            held.push(canonical);
        }
        // Held for the connection's life: no spare capacity (BENCHMARKS.md,
        // "Idle connections").
        held.shrink_to_fit();
        if refused > 0 {
            out.too_many = Some(format!(
                "{refused} pattern(s) not held: a connection holds at most {} patterns",
                limits.max_patterns
            ));
        }
        out
    }

    /// Removes patterns by exact text (aliases resolved first); `None` removes all.
    pub fn unsubscribe(&mut self, texts: Option<&[String]>, registry: &Registry) {
        let Some(texts) = texts else {
            self.held = Some(Vec::new());
            return;
        };
        let Some(held) = self.held.as_mut() else {
            return;
        };
        let remove: Vec<String> = texts
            .iter()
            .map(|t| match registry.resolve(t) {
                Some(ty) => ty.name.to_string(),
                None => t.clone(),
            })
            .collect();
        held.retain(|h| !remove.contains(&h.text));
    }
}

fn is_control(p: &Pattern) -> bool {
    match p {
        Pattern::Domain(d) => d == CONTROL_CHANNEL,
        Pattern::Exact(n) => names::domain_of(n) == CONTROL_CHANNEL && names::is_type_name(n),
        Pattern::All => false,
    }
}

/// Resolves an exact alias to its canonical name, which is what is held.
fn canonical(pattern: Pattern, registry: &Registry) -> Held {
    if let Pattern::Exact(n) = &pattern {
        if let Some(t) = registry.resolve(n) {
            let name = t.name.to_string();
            return Held {
                text: name.clone(),
                pattern: Pattern::Exact(name),
            };
        }
    }
    Held {
        text: pattern.to_string(),
        pattern,
    }
}

/// The warning a newly held pattern deserves, if any.
fn warning_for(text: &str, held: &Held, scope: &Scope<'_>) -> Option<Warning> {
    let matched: Vec<&std::sync::Arc<EventType>> = scope
        .registry
        .routable()
        .filter(|t| held.matches(t))
        .collect();
    if matched.is_empty() {
        return Some(Warning {
            pattern: text.to_owned(),
            message: "matches no registered event type".into(),
            did_you_mean: suggestion(held, scope.registry),
        });
    }
    if let [t] = matched.as_slice() {
        if let Some(replacement) = &t.deprecated {
            return Some(Warning {
                pattern: text.to_owned(),
                message: format!("`{}` is deprecated: {replacement}", t.name),
                did_you_mean: None,
            });
        }
    }
    if matched
        .iter()
        .all(|t| !scope.channels.contains(&*t.channel))
    {
        let carriers: Vec<&str> = scope
            .endpoints
            .iter()
            .filter(|(_, chans)| matched.iter().any(|t| chans.contains(&&*t.channel)))
            .map(|(path, _)| *path)
            .collect();
        let message = if carriers.is_empty() {
            "matches only event types on channels this connection does not receive".to_owned()
        } else {
            format!(
                "matches only event types this endpoint does not carry; connect to {} for them",
                carriers.join(" or ")
            )
        };
        return Some(Warning {
            pattern: text.to_owned(),
            message,
            did_you_mean: None,
        });
    }
    None
}

fn suggestion(held: &Held, registry: &Registry) -> Option<String> {
    match &held.pattern {
        Pattern::Domain(d) => {
            let domains: HashSet<String> = registry
                .routable()
                .map(|t| format!("{}.*", names::domain_of(&t.name)))
                .collect();
            let candidates: Vec<&str> = domains.iter().map(String::as_str).collect();
            names::did_you_mean(&format!("{d}.*"), candidates).map(str::to_owned)
        }
        Pattern::Exact(n) => names::did_you_mean(n, registry.all_names()).map(str::to_owned),
        Pattern::All => None,
    }
}
