//! Client tokens: JWT verification with the keys `[auth.jwt]` names, read
//! on start and re-read on every reload.
//!
//! The algorithm always comes from the key's configuration, never from the
//! token: a token whose header `alg` is not its key's algorithm is refused
//! before any signature check (this refuses `alg: none` and the
//! HS256-with-the-public-key confusion). `exp` and `sub` are required;
//! `leeway_s` applies to `exp` and `nbf`; `iss` and `aud` are checked only
//! when `auth.jwt.issuer` / `audience` are set. With `auth.jwt.keys` listed,
//! a token's `kid` selects its key; the top-level key, when there is one,
//! verifies tokens without `kid`.
//!
//! Error messages are short and fit a WebSocket close reason: they never
//! carry the token or a secret. Secrets and keys are never logged.
//!
//! `keys.rs` reads the keys ([`Verifier::load`]), `verify.rs` checks a
//! token against them ([`Verifier::verify`]), and `token.rs` finds the
//! token in a request ([`token_from`]) and keeps tokens out of logs
//! ([`redact`]).

use std::collections::HashMap;

use jsonwebtoken::DecodingKey;

use crate::config::JwtAlgorithm;

mod keys;
mod token;
mod verify;

#[cfg(test)]
mod fixtures;

pub use keys::JwtConfigError;
pub(crate) use keys::{secret_from_env, secret_from_file};
pub(crate) use token::bearer_token;
pub use token::{offers_bearer, redact, token_from};
pub use verify::TokenError;

/// The claims a verified token carries that the router uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    /// The user (`sub`).
    pub sub: String,
    /// When the token expires (`exp`), in Unix seconds.
    pub exp: i64,
    /// Which channels the connection may receive (`channels`).
    pub channels: ChannelsClaim,
}

/// The `channels` claim: a list of channel names, `"*"` (alone or in the
/// list) meaning all; an absent claim means all.
#[derive(Clone, Debug, PartialEq)]
pub enum ChannelsClaim {
    /// Every channel the endpoint carries.
    All,
    /// Only these channels (an empty list allows none).
    Only(Vec<String>),
}

impl ChannelsClaim {
    /// Whether the claim lets the connection receive `channel`.
    pub fn allows(&self, channel: &str) -> bool {
        match self {
            ChannelsClaim::All => true,
            ChannelsClaim::Only(list) => list.iter().any(|c| c == channel),
        }
    }
}

/// One verification key with its algorithm.
#[derive(Clone)]
struct Key {
    algorithm: JwtAlgorithm,
    decoding: DecodingKey,
}

/// Keys and rules in force, built from `[auth]` on start and on every reload
/// (re-reading key files). `Default` is a verifier with no keys, which
/// refuses every token.
#[derive(Clone, Default)]
pub struct Verifier {
    /// The top-level key, for tokens without `kid`.
    default: Option<Key>,
    /// `auth.jwt.keys`, by `kid`.
    by_kid: HashMap<String, Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: i64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<(&str, &str)> = self
            .by_kid
            .iter()
            .map(|(kid, key)| (kid.as_str(), alg_name(key.algorithm)))
            .collect();
        kids.sort_unstable();
        f.debug_struct("Verifier")
            .field(
                "default",
                &self.default.as_ref().map(|k| alg_name(k.algorithm)),
            )
            .field("kids", &kids)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

/// The name a JWT header uses for the algorithm.
fn alg_name(alg: JwtAlgorithm) -> &'static str {
    match alg {
        JwtAlgorithm::Hs256 => "HS256",
        JwtAlgorithm::Rs256 => "RS256",
        JwtAlgorithm::Es256 => "ES256",
    }
}
