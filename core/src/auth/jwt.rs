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

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{AuthConfig, AuthMode, JwtAlgorithm, KeySource};
use crate::files::{self, FileError};

/// Longest token accepted, in bytes; longer ones are malformed.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Longest `kid` echoed back in an error message, in characters.
const MAX_KID_IN_MESSAGE: usize = 40;

/// The latest `exp` accepted: 9999-12-31T23:59:59Z. Later instants have
/// no RFC 3339 form, which `expires_at` is sent in (docs/protocol.md).
const MAX_EXP: i64 = 253_402_300_799;

/// What replaces a token in redacted text.
const REDACTED: &str = "REDACTED";

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

/// Why a token was refused. The message is short (under 120 bytes), names
/// no secret and never contains the token, so it can be sent as a WebSocket
/// close reason or an `invalid_token` error message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header and payload.
    #[error("malformed token")]
    Malformed,
    /// `exp` (plus leeway) has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is still in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The signature does not match the key.
    #[error("invalid token signature")]
    BadSignature,
    /// The token's `kid` names no configured key (the `kid`, shortened to
    /// printable ASCII).
    #[error("unknown key id \"{0}\"")]
    UnknownKid(String),
    /// The token has no `kid` and there is no top-level key to use.
    #[error("token has no key id (kid)")]
    MissingKid,
    /// The header's `alg` is not the algorithm configured for the key.
    #[error("token algorithm not allowed")]
    WrongAlgorithm,
    /// A required claim is absent.
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an unusable value.
    #[error("invalid {0} claim")]
    InvalidClaim(&'static str),
    /// `iss` is not `auth.jwt.issuer`.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// `aud` does not contain `auth.jwt.audience`.
    #[error("wrong token audience")]
    WrongAudience,
    /// The header has `crit`: it names extensions that must be understood,
    /// and this server understands none (RFC 7515 §4.1.11).
    #[error("token header has critical extensions (crit) this server does not support")]
    UnsupportedCritical,
}

/// Why the JWT keys could not be loaded. Names the variable, file or `kid`;
/// never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// The environment variable holding a secret is not set.
    #[error("{key}: environment variable {var} is not set")]
    MissingVariable {
        /// Which key: `auth.jwt` or `auth.jwt.keys[kid="…"]`.
        key: String,
        /// The variable.
        var: String,
    },
    /// The environment variable holding a secret is not valid UTF-8.
    #[error("{key}: environment variable {var} is not valid UTF-8")]
    NotUnicode {
        /// Which key: `auth.jwt` or `auth.jwt.keys[kid="…"]`.
        key: String,
        /// The variable.
        var: String,
    },
    /// A secret or key file could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    ReadFile {
        /// Which key: `auth.jwt` or `auth.jwt.keys[kid="…"]`.
        key: String,
        /// The file.
        path: String,
        /// Why it could not be read.
        source: FileError,
    },
    /// A secret is empty once trimmed.
    #[error("{key}: the secret in {from} is empty")]
    EmptySecret {
        /// Which key: `auth.jwt` or `auth.jwt.keys[kid="…"]`.
        key: String,
        /// `variable NAME` or `file PATH`.
        from: String,
    },
    /// A public key file is not a PEM public key for the algorithm.
    #[error("{key}: {path} is not a PEM {algorithm} public key: {reason}")]
    BadPublicKey {
        /// Which key: `auth.jwt` or `auth.jwt.keys[kid="…"]`.
        key: String,
        /// The file.
        path: String,
        /// `RS256` or `ES256`.
        algorithm: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The key source does not suit the algorithm (a secret for RS256/ES256,
    /// a public key for HS256).
    #[error("{key}: {algorithm} cannot use {what}")]
    SourceMismatch {
        /// Which key: `auth.jwt` or `auth.jwt.keys[kid="…"]`.
        key: String,
        /// The key's algorithm.
        algorithm: &'static str,
        /// `a secret` or `a public key`.
        what: &'static str,
    },
    /// Auth is on and no key is configured at all.
    #[error(
        "auth.jwt: no key configured: set secret_env or secret_file (HS256), \
         public_key_file (RS256/ES256), or list keys"
    )]
    NoKey,
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

impl Verifier {
    /// Reads the keys `[auth.jwt]` names: `secret_env` / `secret_file` /
    /// `public_key_file` for the top-level key and every `keys` entry. A file
    /// wins over its variable; secrets are trimmed of white space. A missing
    /// variable, an unreadable file or an unusable key is an error naming it.
    ///
    /// With `keys` listed the top-level key is optional: an unset top-level
    /// variable (such as the default `SWITCHYARD_JWT_SECRET`) then just means
    /// there is none, and tokens must carry a `kid`. With `auth.mode = "none"`
    /// nothing is read and the verifier refuses every token (it is never
    /// used).
    pub fn load(auth: &AuthConfig) -> Result<Verifier, JwtConfigError> {
        if auth.mode == AuthMode::None {
            return Ok(Verifier::default());
        }
        let jwt = &auth.jwt;
        let listed = !jwt.keys.is_empty();
        let label = "auth.jwt";
        let default = match jwt.algorithm {
            JwtAlgorithm::Hs256 => {
                if let Some(path) = &jwt.secret_file {
                    Some(secret_key(&secret_from_file(label, path)?))
                } else if let Some(var) = &jwt.secret_env {
                    match secret_from_env(label, var) {
                        Ok(secret) => Some(secret_key(&secret)),
                        Err(
                            JwtConfigError::MissingVariable { .. }
                            | JwtConfigError::EmptySecret { .. },
                        ) if listed => None,
                        Err(e) => return Err(e),
                    }
                } else {
                    None
                }
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => match &jwt.public_key_file {
                Some(path) => Some(public_key(label, path, jwt.algorithm)?),
                None => None,
            },
        };
        if default.is_none() && !listed {
            return Err(JwtConfigError::NoKey);
        }
        let mut by_kid = HashMap::with_capacity(jwt.keys.len());
        for entry in &jwt.keys {
            let label = format!("auth.jwt.keys[kid={}]", Value::from(entry.kid.as_str()));
            let key = match (&entry.source, entry.algorithm) {
                (KeySource::SecretEnv(var), JwtAlgorithm::Hs256) => {
                    secret_key(&secret_from_env(&label, var)?)
                }
                (KeySource::SecretFile(path), JwtAlgorithm::Hs256) => {
                    secret_key(&secret_from_file(&label, path)?)
                }
                (
                    KeySource::PublicKeyFile(path),
                    alg @ (JwtAlgorithm::Rs256 | JwtAlgorithm::Es256),
                ) => public_key(&label, path, alg)?,
                (KeySource::PublicKeyFile(_), alg) => {
                    return Err(JwtConfigError::SourceMismatch {
                        key: label,
                        algorithm: alg_name(alg),
                        what: "a public key",
                    })
                }
                (KeySource::SecretEnv(_) | KeySource::SecretFile(_), alg) => {
                    return Err(JwtConfigError::SourceMismatch {
                        key: label,
                        algorithm: alg_name(alg),
                        what: "a secret",
                    })
                }
            };
            by_kid.insert(entry.kid.clone(), key);
        }
        Ok(Verifier {
            default,
            by_kid,
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
            leeway_s: i64::try_from(jwt.leeway_s).unwrap_or(i64::MAX),
        })
    }

    /// Verifies a token now: its key (by `kid`), algorithm, signature, and
    /// claims (`exp`, `nbf`, `iss`, `aud`, `sub`, `channels`).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.verify_at(token, now)
    }

    /// [`Verifier::verify`] at a given time (Unix seconds).
    fn verify_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header = parse_header(header)?;
        if header.crit.is_some() {
            return Err(TokenError::UnsupportedCritical);
        }
        let key = match &header.kid {
            Some(kid) if !self.by_kid.is_empty() => self
                .by_kid
                .get(kid)
                .ok_or_else(|| TokenError::UnknownKid(shorten(kid)))?,
            Some(kid) => self
                .default
                .as_ref()
                .ok_or_else(|| TokenError::UnknownKid(shorten(kid)))?,
            None => self.default.as_ref().ok_or(TokenError::MissingKid)?,
        };
        if header.alg != alg_name(key.algorithm) {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = Validation::new(jwt_algorithm(key.algorithm));
        // The claims are checked below, with our own rules and messages.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let payload = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::Crypto(_)
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat => TokenError::BadSignature,
                ErrorKind::InvalidAlgorithm
                | ErrorKind::MissingAlgorithm
                | ErrorKind::InvalidAlgorithmName => TokenError::WrongAlgorithm,
                _ => TokenError::Malformed,
            })?
            .claims;
        self.check_claims(&payload, now)
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: i64) -> Result<Claims, TokenError> {
        let exp = match claims.get("exp") {
            None | Some(Value::Null) => return Err(TokenError::MissingClaim("exp")),
            Some(v) => numeric_date(v)
                .filter(|exp| *exp <= MAX_EXP)
                .ok_or(TokenError::InvalidClaim("exp"))?,
        };
        if now >= exp.saturating_add(self.leeway_s) {
            return Err(TokenError::Expired);
        }
        match claims.get("nbf") {
            None | Some(Value::Null) => {}
            Some(v) => {
                let nbf = numeric_date(v).ok_or(TokenError::InvalidClaim("nbf"))?;
                if nbf > now.saturating_add(self.leeway_s) {
                    return Err(TokenError::NotYetValid);
                }
            }
        }
        if let Some(want) = &self.issuer {
            match claims.get("iss") {
                None | Some(Value::Null) => return Err(TokenError::MissingClaim("iss")),
                Some(Value::String(iss)) if iss == want => {}
                Some(_) => return Err(TokenError::WrongIssuer),
            }
        }
        if let Some(want) = &self.audience {
            match claims.get("aud") {
                None | Some(Value::Null) => return Err(TokenError::MissingClaim("aud")),
                Some(Value::String(aud)) if aud == want => {}
                Some(Value::Array(auds)) if auds.iter().any(|a| a.as_str() == Some(want)) => {}
                Some(_) => return Err(TokenError::WrongAudience),
            }
        }
        let sub = match claims.get("sub") {
            None | Some(Value::Null) => return Err(TokenError::MissingClaim("sub")),
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            Some(_) => return Err(TokenError::InvalidClaim("sub")),
        };
        let channels = match claims.get("channels") {
            None => ChannelsClaim::All,
            Some(Value::String(s)) if s == "*" => ChannelsClaim::All,
            Some(Value::Array(items)) => {
                let names = items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or(TokenError::InvalidClaim("channels"))?;
                if names.iter().any(|n| n == "*") {
                    ChannelsClaim::All
                } else {
                    ChannelsClaim::Only(names)
                }
            }
            Some(_) => return Err(TokenError::InvalidClaim("channels")),
        };
        Ok(Claims { sub, exp, channels })
    }
}

/// A JWT NumericDate (seconds, possibly fractional) as whole Unix seconds.
fn numeric_date(v: &Value) -> Option<i64> {
    if let Some(i) = v.as_i64() {
        return Some(i);
    }
    // Fractional or beyond i64: round down, saturating.
    v.as_f64()
        .filter(|f| f.is_finite())
        .map(|f| f.floor() as i64)
}

/// The header fields we read.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Any value at all refuses the token: no extension is understood.
    #[serde(default)]
    crit: Option<Value>,
}

/// Decodes the header part ourselves, so that an `alg` unknown to
/// `jsonwebtoken` (such as `none`) is a wrong algorithm, not a parse error.
fn parse_header(part: &str) -> Result<RawHeader, TokenError> {
    let bytes = base64url_decode(part).ok_or(TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

/// Unpadded base64url, as JWTs use.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A `kid` fit for an error message: printable ASCII, at most
/// [`MAX_KID_IN_MESSAGE`] characters.
fn shorten(kid: &str) -> String {
    let mut out: String = kid
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .filter(|c| *c != '"' && *c != '\\')
        .take(MAX_KID_IN_MESSAGE)
        .collect();
    if kid.chars().count() > MAX_KID_IN_MESSAGE {
        out.push_str("...");
    }
    out
}

/// The name a JWT header uses for the algorithm.
fn alg_name(alg: JwtAlgorithm) -> &'static str {
    match alg {
        JwtAlgorithm::Hs256 => "HS256",
        JwtAlgorithm::Rs256 => "RS256",
        JwtAlgorithm::Es256 => "ES256",
    }
}

fn jwt_algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Es256 => Algorithm::ES256,
    }
}

fn secret_key(secret: &str) -> Key {
    Key {
        algorithm: JwtAlgorithm::Hs256,
        decoding: DecodingKey::from_secret(secret.as_bytes()),
    }
}

fn secret_from_env(label: &str, var: &str) -> Result<String, JwtConfigError> {
    let value = match std::env::var(var) {
        Ok(v) => v,
        Err(std::env::VarError::NotPresent) => {
            return Err(JwtConfigError::MissingVariable {
                key: label.to_owned(),
                var: var.to_owned(),
            })
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(JwtConfigError::NotUnicode {
                key: label.to_owned(),
                var: var.to_owned(),
            })
        }
    };
    let secret = value.trim();
    if secret.is_empty() {
        return Err(JwtConfigError::EmptySecret {
            key: label.to_owned(),
            from: format!("variable {var}"),
        });
    }
    Ok(secret.to_owned())
}

fn read_file(label: &str, path: &Path) -> Result<String, JwtConfigError> {
    files::read_text(path, files::MAX_KEY_FILE_BYTES).map_err(|source| JwtConfigError::ReadFile {
        key: label.to_owned(),
        path: path.display().to_string(),
        source,
    })
}

fn secret_from_file(label: &str, path: &Path) -> Result<String, JwtConfigError> {
    let text = read_file(label, path)?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(JwtConfigError::EmptySecret {
            key: label.to_owned(),
            from: format!("file {}", path.display()),
        });
    }
    Ok(secret.to_owned())
}

fn public_key(label: &str, path: &Path, algorithm: JwtAlgorithm) -> Result<Key, JwtConfigError> {
    let text = read_file(label, path)?;
    let bad = |reason: String| JwtConfigError::BadPublicKey {
        key: label.to_owned(),
        path: path.display().to_string(),
        algorithm: alg_name(algorithm),
        reason,
    };
    if text.contains("PRIVATE KEY") {
        return Err(bad("it holds a private key; give the public key".to_owned()));
    }
    let pem = text.trim().as_bytes();
    let decoding = match algorithm {
        JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
        JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(pem),
        JwtAlgorithm::Hs256 => {
            return Err(JwtConfigError::SourceMismatch {
                key: label.to_owned(),
                algorithm: alg_name(algorithm),
                what: "a public key",
            })
        }
    }
    .map_err(|e| bad(e.to_string()))?;
    Ok(Key {
        algorithm,
        decoding,
    })
}

/// Reads a token from the three sources, in this order: the `?token=` query
/// value, `Authorization: Bearer …`, `Sec-WebSocket-Protocol: bearer, <token>`.
/// Returns the token and whether it came from the subprotocol (then the
/// server must answer with subprotocol `bearer`). Empty values count as
/// absent; an `Authorization` header with another scheme is ignored.
pub fn token_from(
    query_token: Option<&str>,
    authorization: Option<&str>,
    subprotocol: Option<&str>,
) -> Option<(String, bool)> {
    if let Some(token) = query_token.map(str::trim).filter(|t| !t.is_empty()) {
        return Some((token.to_owned(), false));
    }
    if let Some(token) = authorization.and_then(bearer_token) {
        return Some((token.to_owned(), false));
    }
    let mut entries = subprotocol?.split(',').map(str::trim);
    entries.find(|e| e.eq_ignore_ascii_case("bearer"))?;
    entries
        .next()
        .filter(|t| !t.is_empty())
        .map(|t| (t.to_owned(), true))
}

/// The credentials of an `Authorization: Bearer …` header value.
fn bearer_token(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(|c: char| c.is_ascii_whitespace())?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Redacts tokens in text meant for logs: `token=abc.def.ghi` becomes
/// `token=REDACTED` (any `…token=` query parameter), and so do the token
/// after `Bearer ` / `bearer, ` (an `Authorization` or
/// `Sec-WebSocket-Protocol` value) and a JSON `"token":"…"` value. Every
/// occurrence is redacted; matching ignores ASCII case.
pub fn redact(text: &str) -> String {
    // ASCII lowercasing keeps byte offsets, so indexes found in `lower`
    // are valid in `text`; every match boundary is an ASCII byte.
    let lower = text.to_ascii_lowercase();
    let lower = lower.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < lower.len() {
        if let Some((start, end)) = secret_at(lower, i) {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = end;
            i = end;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// The span of a secret whose marker starts at `i`, if one does.
fn secret_at(lower: &[u8], i: usize) -> Option<(usize, usize)> {
    let rest = &lower[i..];
    let span = |start: usize, stop: fn(u8) -> bool| {
        let len = lower[start..].iter().take_while(|b| !stop(**b)).count();
        (len > 0).then_some((start, start + len))
    };
    if rest.starts_with(b"token=") {
        return span(i + 6, |b| {
            b.is_ascii_whitespace() || b"&#\"'<>;,)]}".contains(&b)
        });
    }
    if rest.starts_with(b"\"token\"") {
        let mut j = i + 7;
        while lower.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        if lower.get(j) != Some(&b':') {
            return None;
        }
        j += 1;
        while lower.get(j).is_some_and(u8::is_ascii_whitespace) {
            j += 1;
        }
        if lower.get(j) != Some(&b'"') {
            return None;
        }
        return span(j + 1, |b| b == b'"' || b == b'\\');
    }
    if rest.starts_with(b"bearer") {
        let mut j = i + 6;
        let sep = lower[j..]
            .iter()
            .take_while(|b| **b == b',' || **b == b' ' || **b == b'\t')
            .count();
        if sep == 0 {
            return None;
        }
        j += sep;
        return span(j, |b| {
            !(b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::config::{JwtConfig, JwtKeyConfig, OnUserLimit};

    const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQDIVKo99CjFiJ1b
VGBv86mgy5PiFR3eRgvuxCwcYX7cE7X/AYTla7GNTzfPcgL+GQ5bqn4o5dt1HsGG
UdSWavFK1Ejyk4MpHgTOaqMOjUX/76y/TdL8w1RDhn7803jNh1Aq91iL5DPzMooJ
FJOGo2G37DC8lYMFLPQ7OxHP8Ov9br8HbRLzrY4bynfGR0se7b0RylF+e2ar4qk6
xmzeVxrXjIlj4ME3kGxVXnPKNPwfqWdKyTEq5dXdL8JMeoVQouxWwHKI7rsQUbdv
0u7AhHWfemw3csU2GGWBUk9otkf1yIyxFqZOmfH+dyVw/rpqXnTEDztdFJf1/CLY
pvEnjVrvAgMBAAECggEAVfhDcL/haVfl04ZDtnd2IZuLtJeEUFl2EHqeRXWvh8lr
rmob+op7UR2gYUVXtGzTRRJG/s0Zn0raGQbv+LcfIpI0Velo/ZG01VJc9Ec7NYjI
9PX0Z+V5OVs0DtK/wk/h3vZzyODfTGwxYZEzeDGQI2pYRe3Rorx2eR6x169XztNf
ErEfxj2A7M86YXMKuwfh+YsADvNKUOk/J/Ko6fkEC6Yun4+DJHYebV+TdMk2al9s
5n0u8VIaT0ibbHE2N0g+nLiPmIMgXm7PLjq7u45B8UGC1+ItsstjEdzSc5jWlM8A
ebKudwFxaeb2hl+ka5ordU8HBLF9WTXFD3b2QhXSSQKBgQD6E3I5p/JaLln5lrTy
so4uDLTqcOHqzceW1XNUONXrBQEaWxd/Lq00+rwJtqFCMQyogHNX8e/NeaXredqY
40oOlRqmTp5N0hqcvAijvgJOcSvMVHgF2twkVKK8XjnU9HxzkEq/x/Qn0HNyLKR1
6RMVX3DDo1ZK2B1UVf8li8yjBwKBgQDNE4uPDtobxX8sXzpXh9fej8yzbVgnU87g
DHpXq5Jvh01ihVi0gtbD4sUIQ3VniC9CYmKm0pO4pf7mAncxiFFfEwajwzGcl9TG
V0+OitSSExm79+yCt2/rw72qo76wsfSgT3MHI1rnujzgpyl55JLEQbrOEsTnlj07
e2MSAFMG2QKBgQC1DFUbJtsPrRUY3KIeP2UuM6bbQGRfESIZsmkvpYJCBzp4MVC+
lDVz8L8oLR9sg4RNjclz90WMtjCIXY0EOTGJgytrEeoMHzuDE6MRoOOclNSHtvO6
EWxlpRy4UWN/KI3dQK7NT98U4BZkp6tdbiORyqoiCWPVBceeIjB5p0+9CwKBgQCw
TbtPM7+C3Jlmdj/b/GczaYDcSIbe2IgjydZsBI6R30pCBs2p8kncgdpOLmCCr2uh
sJ+LN8HTnrGy4C/En6MFD4BHzYmbTFSaZ3l33Ba/tjgLhysHfdh0YgVu6/MGSRc7
stH7MwP18ABiSpO3vTAIFVIZ070ANANUXdFgKnM2kQKBgQCR1lV8k22dq8fg/oCN
XDtixbLgmwpX/mGQkI9gLDWUaoX4b5vgQluJT79ICiuCIxfImFtewIZdtptELdro
I8wnTQrO9XE+I57WFCuP7ck68gtLIc+U/EbEYiRBoIS36ZkEEhfuP3JSReLwEDEh
N+lZOmRLjJPsNZ3YBd7AsrneRQ==
-----END PRIVATE KEY-----
";

    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyFSqPfQoxYidW1Rgb/Op
oMuT4hUd3kYL7sQsHGF+3BO1/wGE5WuxjU83z3IC/hkOW6p+KOXbdR7BhlHUlmrx
StRI8pODKR4EzmqjDo1F/++sv03S/MNUQ4Z+/NN4zYdQKvdYi+Qz8zKKCRSThqNh
t+wwvJWDBSz0OzsRz/Dr/W6/B20S862OG8p3xkdLHu29EcpRfntmq+KpOsZs3lca
14yJY+DBN5BsVV5zyjT8H6lnSskxKuXV3S/CTHqFUKLsVsByiO67EFG3b9LuwIR1
n3psN3LFNhhlgVJPaLZH9ciMsRamTpnx/nclcP66al50xA87XRSX9fwi2KbxJ41a
7wIDAQAB
-----END PUBLIC KEY-----
";

    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgB5saIQ1E9RfKNi9c
QhUl6nyew4IexNCopzsKVhUf1j2hRANCAARlhMkFt106XFK9r2taR5M5qV+h2pWW
m89q9ygP9tzPi9/kCfWt0K9ksplIl+obXxKCX+Zpp5zB5ORL+StF/gAf
-----END PRIVATE KEY-----
";

    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZYTJBbddOlxSva9rWkeTOalfodqV
lpvPavcoD/bcz4vf5An1rdCvZLKZSJfqG18Sgl/maaecweTkS/krRf4AHw==
-----END PUBLIC KEY-----
";

    const SECRET: &str = "test-secret-0123456789";

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn jwt_config(algorithm: JwtAlgorithm) -> JwtConfig {
        JwtConfig {
            algorithm,
            secret_env: None,
            secret_file: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway_s: 5,
            keys: Vec::new(),
        }
    }

    fn auth(jwt: JwtConfig) -> AuthConfig {
        AuthConfig {
            mode: AuthMode::Required,
            max_connections_per_user: 5,
            on_user_limit: OnUserLimit::Refuse,
            max_anonymous_per_ip: 100,
            allowed_origins: Vec::new(),
            api_keys_env: None,
            api_keys_file: None,
            admin_keys_env: None,
            admin_keys_file: None,
            jwt,
        }
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// An HS256 verifier reading [`SECRET`] from a file.
    fn hs256(dir: &tempfile::TempDir, tweak: impl FnOnce(&mut JwtConfig)) -> Verifier {
        let mut jwt = jwt_config(JwtAlgorithm::Hs256);
        jwt.secret_file = Some(write(dir, "secret", SECRET));
        tweak(&mut jwt);
        Verifier::load(&auth(jwt)).unwrap()
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn hs(claims: &Value) -> String {
        sign(
            Algorithm::HS256,
            None,
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
    }

    fn valid_claims() -> Value {
        json!({ "sub": "alice", "exp": now() + 600 })
    }

    #[test]
    fn valid_hs256() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs256(&dir, |_| {});
        let exp = now() + 600;
        let claims = v
            .verify(&hs(&json!({ "sub": "alice", "exp": exp })))
            .unwrap();
        assert_eq!(
            claims,
            Claims {
                sub: "alice".into(),
                exp,
                channels: ChannelsClaim::All
            }
        );
    }

    #[test]
    fn valid_rs256_and_es256() {
        let dir = tempfile::tempdir().unwrap();
        let mut jwt = jwt_config(JwtAlgorithm::Rs256);
        jwt.public_key_file = Some(write(&dir, "rsa.pub.pem", RSA_PUBLIC));
        let rs = Verifier::load(&auth(jwt)).unwrap();
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let token = sign(Algorithm::RS256, None, &valid_claims(), &key);
        assert_eq!(rs.verify(&token).unwrap().sub, "alice");

        let mut jwt = jwt_config(JwtAlgorithm::Es256);
        jwt.public_key_file = Some(write(&dir, "ec.pub.pem", EC_PUBLIC));
        let es = Verifier::load(&auth(jwt)).unwrap();
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let token = sign(Algorithm::ES256, None, &valid_claims(), &key);
        assert_eq!(es.verify(&token).unwrap().sub, "alice");
        // An ES256 token is refused by the RS256 verifier.
        assert_eq!(rs.verify(&token), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn expiry_and_leeway() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs256(&dir, |_| {});
        let t = now();
        let expired = hs(&json!({ "sub": "a", "exp": t - 60 }));
        assert_eq!(v.verify(&expired), Err(TokenError::Expired));
        // Within the 5 s leeway.
        let recent = hs(&json!({ "sub": "a", "exp": t - 2 }));
        assert_eq!(v.verify_at(&recent, t).unwrap().exp, t - 2);
        assert_eq!(v.verify_at(&recent, t + 3), Err(TokenError::Expired));
        let zero = hs256(&dir, |j| j.leeway_s = 0);
        assert_eq!(zero.verify_at(&recent, t), Err(TokenError::Expired));
        // A huge leeway does not overflow.
        let huge = hs256(&dir, |j| j.leeway_s = u64::MAX);
        assert!(huge.verify_at(&expired, t).is_ok());
        // nbf, with leeway.
        let later = hs(&json!({ "sub": "a", "exp": t + 600, "nbf": t + 60 }));
        assert_eq!(v.verify_at(&later, t), Err(TokenError::NotYetValid));
        let soon = hs(&json!({ "sub": "a", "exp": t + 600, "nbf": t + 3 }));
        assert!(v.verify_at(&soon, t).is_ok());
        // Fractional NumericDate.
        let frac = hs(&json!({ "sub": "a", "exp": (t + 600) as f64 + 0.5 }));
        assert_eq!(v.verify_at(&frac, t).unwrap().exp, t + 600);
    }

    /// Unpadded base64url, to build headers `jsonwebtoken` cannot write.
    fn b64url(bytes: &[u8]) -> String {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    /// An HS256 token with this exact header, signed with [`SECRET`].
    fn hs_with_header(header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let signature =
            jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).unwrap();
        format!("{signed}.{signature}")
    }

    #[test]
    fn a_crit_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs256(&dir, |_| {});
        let plain = hs_with_header(&json!({"alg": "HS256", "typ": "JWT"}), &valid_claims());
        assert_eq!(
            v.verify(&plain).unwrap().sub,
            "alice",
            "the helper signs valid tokens"
        );
        for crit in [
            json!(["exp"]),
            json!(["x-unknown"]),
            json!([]),
            json!("b64"),
        ] {
            let header = json!({"alg": "HS256", "typ": "JWT", "crit": crit, "x-unknown": true});
            let token = hs_with_header(&header, &valid_claims());
            assert_eq!(
                v.verify(&token),
                Err(TokenError::UnsupportedCritical),
                "crit {crit}"
            );
        }
    }

    #[test]
    fn an_exp_past_year_9999_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs256(&dir, |_| {});
        let last = hs(&json!({ "sub": "a", "exp": MAX_EXP }));
        assert_eq!(v.verify(&last).unwrap().exp, MAX_EXP);
        for exp in [
            json!(MAX_EXP + 1),
            json!(i64::MAX),
            json!(1e300),
            json!(u64::MAX),
        ] {
            let token = hs(&json!({ "sub": "a", "exp": exp }));
            assert_eq!(
                v.verify(&token),
                Err(TokenError::InvalidClaim("exp")),
                "exp {exp}"
            );
        }
    }

    #[test]
    fn required_claims() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs256(&dir, |_| {});
        let no_exp = hs(&json!({ "sub": "a" }));
        assert_eq!(v.verify(&no_exp), Err(TokenError::MissingClaim("exp")));
        let null_exp = hs(&json!({ "sub": "a", "exp": null }));
        assert_eq!(v.verify(&null_exp), Err(TokenError::MissingClaim("exp")));
        let text_exp = hs(&json!({ "sub": "a", "exp": "soon" }));
        assert_eq!(v.verify(&text_exp), Err(TokenError::InvalidClaim("exp")));
        let no_sub = hs(&json!({ "exp": now() + 60 }));
        assert_eq!(v.verify(&no_sub), Err(TokenError::MissingClaim("sub")));
        let num_sub = hs(&json!({ "sub": 7, "exp": now() + 60 }));
        assert_eq!(v.verify(&num_sub), Err(TokenError::InvalidClaim("sub")));
        let empty_sub = hs(&json!({ "sub": "", "exp": now() + 60 }));
        assert_eq!(v.verify(&empty_sub), Err(TokenError::InvalidClaim("sub")));
    }

    #[test]
    fn issuer_and_audience() {
        let dir = tempfile::tempdir().unwrap();
        let exp = now() + 600;
        let token = |extra: Value| {
            let mut claims = json!({ "sub": "a", "exp": exp });
            claims
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            hs(&claims)
        };
        // Not configured: not checked, whatever the token says.
        let open = hs256(&dir, |_| {});
        assert!(open
            .verify(&token(json!({ "iss": "x", "aud": "y" })))
            .is_ok());

        let v = hs256(&dir, |j| {
            j.issuer = Some("https://idp".into());
            j.audience = Some("switchyard".into());
        });
        let good = json!({ "iss": "https://idp", "aud": "switchyard" });
        assert!(v.verify(&token(good)).is_ok());
        let list = json!({ "iss": "https://idp", "aud": ["other", "switchyard"] });
        assert!(v.verify(&token(list)).is_ok());
        let bad_iss = json!({ "iss": "https://evil", "aud": "switchyard" });
        assert_eq!(v.verify(&token(bad_iss)), Err(TokenError::WrongIssuer));
        let bad_aud = json!({ "iss": "https://idp", "aud": ["other"] });
        assert_eq!(v.verify(&token(bad_aud)), Err(TokenError::WrongAudience));
        let no_iss = json!({ "aud": "switchyard" });
        assert_eq!(
            v.verify(&token(no_iss)),
            Err(TokenError::MissingClaim("iss"))
        );
        let no_aud = json!({ "iss": "https://idp" });
        assert_eq!(
            v.verify(&token(no_aud)),
            Err(TokenError::MissingClaim("aud"))
        );
    }

    #[test]
    fn bad_signatures_and_malformed_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs256(&dir, |_| {});
        let other = sign(
            Algorithm::HS256,
            None,
            &valid_claims(),
            &EncodingKey::from_secret(b"another-secret"),
        );
        assert_eq!(v.verify(&other), Err(TokenError::BadSignature));

        // A payload swapped under a valid signature.
        let good = hs(&valid_claims());
        let forged = hs(&json!({ "sub": "mallory", "exp": now() + 600 }));
        let g: Vec<&str> = good.split('.').collect();
        let f: Vec<&str> = forged.split('.').collect();
        let swapped = format!("{}.{}.{}", g[0], f[1], g[2]);
        assert_eq!(v.verify(&swapped), Err(TokenError::BadSignature));

        // RS256: tampered payload.
        let mut jwt = jwt_config(JwtAlgorithm::Rs256);
        jwt.public_key_file = Some(write(&dir, "rsa.pub.pem", RSA_PUBLIC));
        let rs = Verifier::load(&auth(jwt)).unwrap();
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let token = sign(Algorithm::RS256, None, &valid_claims(), &key);
        let t: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", t[0], f[1], t[2]);
        assert_eq!(rs.verify(&tampered), Err(TokenError::BadSignature));

        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.e30.sig",
            "e30.e30.sig",
            &format!("{}.{}.{}", g[0], g[1], "x".repeat(MAX_TOKEN_BYTES)),
            // Signed, but the payload is not a JSON object.
            &hs(&json!(["sub", "exp"])),
        ] {
            assert_eq!(v.verify(bad), Err(TokenError::Malformed), "{bad:.40}");
        }
        // The signature is checked before the payload is read.
        let garbled = format!("{}.%%%.{}", g[0], g[2]);
        assert_eq!(v.verify(&garbled), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs256(&dir, |_| {});
        let payload = hs(&valid_claims()).split('.').nth(1).unwrap().to_owned();
        // {"alg":"none","typ":"JWT"} and {"alg":"none"}, empty signature.
        for header in ["eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "eyJhbGciOiJub25lIn0"] {
            let token = format!("{header}.{payload}.");
            assert_eq!(v.verify(&token), Err(TokenError::WrongAlgorithm));
        }
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused_by_rs256() {
        let dir = tempfile::tempdir().unwrap();
        let mut jwt = jwt_config(JwtAlgorithm::Rs256);
        jwt.public_key_file = Some(write(&dir, "rsa.pub.pem", RSA_PUBLIC));
        let rs = Verifier::load(&auth(jwt)).unwrap();
        let confused = sign(
            Algorithm::HS256,
            None,
            &valid_claims(),
            &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        );
        assert_eq!(rs.verify(&confused), Err(TokenError::WrongAlgorithm));
        let trimmed = sign(
            Algorithm::HS256,
            None,
            &valid_claims(),
            &EncodingKey::from_secret(RSA_PUBLIC.trim().as_bytes()),
        );
        assert_eq!(rs.verify(&trimmed), Err(TokenError::WrongAlgorithm));
    }

    #[test]
    fn kid_selects_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let var = "SWITCHYARD_JWT_TEST_KID_SELECT_A";
        std::env::set_var(var, "secret-a");
        let mut jwt = jwt_config(JwtAlgorithm::Hs256);
        // The default variable is unset: with keys listed, no top-level key.
        jwt.secret_env = Some("SWITCHYARD_JWT_TEST_KID_SELECT_UNSET".into());
        jwt.keys = vec![
            JwtKeyConfig {
                kid: "a".into(),
                algorithm: JwtAlgorithm::Hs256,
                source: KeySource::SecretEnv(var.into()),
            },
            JwtKeyConfig {
                kid: "b".into(),
                algorithm: JwtAlgorithm::Rs256,
                source: KeySource::PublicKeyFile(write(&dir, "b.pem", RSA_PUBLIC)),
            },
        ];
        let v = Verifier::load(&auth(jwt.clone())).unwrap();
        let a = EncodingKey::from_secret(b"secret-a");
        let b = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let claims = valid_claims();
        assert!(v
            .verify(&sign(Algorithm::HS256, Some("a"), &claims, &a))
            .is_ok());
        assert!(v
            .verify(&sign(Algorithm::RS256, Some("b"), &claims, &b))
            .is_ok());
        // kid "a" with another key's signature.
        let wrong = EncodingKey::from_secret(b"secret-b");
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, Some("a"), &claims, &wrong)),
            Err(TokenError::BadSignature)
        );
        // kid "b" is RS256: an HS256 token naming it is refused.
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, Some("b"), &claims, &a)),
            Err(TokenError::WrongAlgorithm)
        );
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, Some("c"), &claims, &a)),
            Err(TokenError::UnknownKid("c".into()))
        );
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, None, &claims, &a)),
            Err(TokenError::MissingKid)
        );

        // With a top-level key too, it verifies tokens without kid only.
        jwt.secret_file = Some(write(&dir, "secret", SECRET));
        let v = Verifier::load(&auth(jwt)).unwrap();
        assert!(v.verify(&hs(&claims)).is_ok());
        let s = EncodingKey::from_secret(SECRET.as_bytes());
        assert_eq!(
            v.verify(&sign(Algorithm::HS256, Some("zz"), &claims, &s)),
            Err(TokenError::UnknownKid("zz".into()))
        );

        // Without listed keys, a kid is ignored and the top-level key used.
        let single = hs256(&dir, |_| {});
        assert!(single
            .verify(&sign(Algorithm::HS256, Some("any"), &claims, &s))
            .is_ok());
    }

    #[test]
    fn channels_claim_forms() {
        let dir = tempfile::tempdir().unwrap();
        let v = hs256(&dir, |_| {});
        let exp = now() + 600;
        let channels = |c: Value| {
            v.verify(&hs(&json!({ "sub": "a", "exp": exp, "channels": c })))
                .map(|claims| claims.channels)
        };
        let absent = v.verify(&hs(&json!({ "sub": "a", "exp": exp }))).unwrap();
        assert_eq!(absent.channels, ChannelsClaim::All);
        assert_eq!(channels(json!("*")), Ok(ChannelsClaim::All));
        assert_eq!(channels(json!(["alerts", "*"])), Ok(ChannelsClaim::All));
        let only = channels(json!(["alerts", "jobs"])).unwrap();
        assert_eq!(
            only,
            ChannelsClaim::Only(vec!["alerts".into(), "jobs".into()])
        );
        assert!(only.allows("alerts") && only.allows("jobs"));
        assert!(!only.allows("cameras"));
        assert!(ChannelsClaim::All.allows("cameras"));
        let none = channels(json!([])).unwrap();
        assert!(!none.allows("alerts"));
        for bad in [json!("alerts"), json!([1]), json!(null), json!({})] {
            assert_eq!(channels(bad), Err(TokenError::InvalidClaim("channels")));
        }
    }

    #[test]
    fn secret_file_wins_over_variable_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let var = "SWITCHYARD_JWT_TEST_FILE_WINS";
        std::env::set_var(var, "from-variable");
        let mut jwt = jwt_config(JwtAlgorithm::Hs256);
        jwt.secret_env = Some(var.into());
        jwt.secret_file = Some(write(&dir, "secret", &format!("\n  {SECRET} \r\n")));
        let v = Verifier::load(&auth(jwt)).unwrap();
        assert!(v.verify(&hs(&valid_claims())).is_ok());
        let from_var = sign(
            Algorithm::HS256,
            None,
            &valid_claims(),
            &EncodingKey::from_secret(b"from-variable"),
        );
        assert_eq!(v.verify(&from_var), Err(TokenError::BadSignature));
    }

    #[test]
    fn secret_variable_is_trimmed() {
        let var = "SWITCHYARD_JWT_TEST_TRIMMED_VAR";
        std::env::set_var(var, format!("  {SECRET}\n"));
        let mut jwt = jwt_config(JwtAlgorithm::Hs256);
        jwt.secret_env = Some(var.into());
        let v = Verifier::load(&auth(jwt)).unwrap();
        assert!(v.verify(&hs(&valid_claims())).is_ok());
    }

    #[test]
    fn load_errors_name_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let var = "SWITCHYARD_JWT_TEST_NEVER_SET";
        let mut jwt = jwt_config(JwtAlgorithm::Hs256);
        jwt.secret_env = Some(var.into());
        let e = Verifier::load(&auth(jwt.clone())).unwrap_err();
        assert!(matches!(e, JwtConfigError::MissingVariable { .. }));
        assert!(e.to_string().contains(var), "{e}");

        // mode = none reads nothing.
        let mut off = auth(jwt.clone());
        off.mode = AuthMode::None;
        let v = Verifier::load(&off).unwrap();
        assert_eq!(v.verify(&hs(&valid_claims())), Err(TokenError::MissingKid));

        let missing = dir.path().join("nope.secret");
        jwt.secret_file = Some(missing.clone());
        let e = Verifier::load(&auth(jwt.clone())).unwrap_err();
        assert!(e.to_string().contains("nope.secret"), "{e}");

        jwt.secret_file = Some(write(&dir, "blank", " \n"));
        let e = Verifier::load(&auth(jwt.clone())).unwrap_err();
        assert!(matches!(e, JwtConfigError::EmptySecret { .. }), "{e}");

        jwt.secret_file = None;
        jwt.secret_env = None;
        let e = Verifier::load(&auth(jwt.clone())).unwrap_err();
        assert!(matches!(e, JwtConfigError::NoKey));

        jwt.keys = vec![JwtKeyConfig {
            kid: "k1".into(),
            algorithm: JwtAlgorithm::Es256,
            source: KeySource::PublicKeyFile(dir.path().join("k1.pem")),
        }];
        let e = Verifier::load(&auth(jwt.clone())).unwrap_err();
        assert!(e.to_string().contains("k1") && e.to_string().contains("k1.pem"));

        // A private key, or the wrong kind of key, is refused at load.
        jwt.keys[0].source = KeySource::PublicKeyFile(write(&dir, "k1.pem", EC_PRIVATE));
        let e = Verifier::load(&auth(jwt.clone())).unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        assert!(!e.to_string().contains("MIGHAgEA"), "{e}");
        jwt.keys[0].source = KeySource::PublicKeyFile(write(&dir, "k1.pem", RSA_PUBLIC));
        let e = Verifier::load(&auth(jwt.clone())).unwrap_err();
        assert!(matches!(e, JwtConfigError::BadPublicKey { .. }), "{e}");
        jwt.keys[0].source = KeySource::PublicKeyFile(write(&dir, "k1.pem", "garbage"));
        assert!(Verifier::load(&auth(jwt.clone())).is_err());

        jwt.keys[0].source = KeySource::SecretEnv(var.into());
        let e = Verifier::load(&auth(jwt)).unwrap_err();
        assert!(matches!(e, JwtConfigError::SourceMismatch { .. }), "{e}");
    }

    #[test]
    fn messages_are_short_and_safe() {
        let long_kid = "k".repeat(500);
        let errors = [
            TokenError::Malformed,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::BadSignature,
            TokenError::UnknownKid(shorten(&long_kid)),
            TokenError::MissingKid,
            TokenError::WrongAlgorithm,
            TokenError::MissingClaim("channels"),
            TokenError::InvalidClaim("channels"),
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
        ];
        for e in errors {
            assert!(e.to_string().len() <= 120, "{e}");
        }
        assert_eq!(shorten("a\"b\\c\nd"), "abc?d");

        let dir = tempfile::tempdir().unwrap();
        let v = hs256(&dir, |_| {});
        assert!(!format!("{v:?}").contains(SECRET));
        let token = hs(&json!({ "sub": "a", "exp": now() - 600 }));
        let e = v.verify(&token).unwrap_err();
        assert!(!e.to_string().contains(&token));
    }

    #[test]
    fn redacts_tokens() {
        assert_eq!(redact("token=abc.def.ghi"), "token=REDACTED");
        assert_eq!(
            redact("GET /ws/events?events=alert.*&token=abc.def.ghi&x=1 HTTP/1.1"),
            "GET /ws/events?events=alert.*&token=REDACTED&x=1 HTTP/1.1"
        );
        assert_eq!(
            redact("a?token=one b?TOKEN=two#frag access_token=three"),
            "a?token=REDACTED b?TOKEN=REDACTED#frag access_token=REDACTED"
        );
        assert_eq!(
            redact("Sec-WebSocket-Protocol: bearer, eyJ.eyJ.sig_-x"),
            "Sec-WebSocket-Protocol: bearer, REDACTED"
        );
        assert_eq!(
            redact("authorization: Bearer eyJ.eyJ.sig"),
            "authorization: Bearer REDACTED"
        );
        assert_eq!(
            redact(r#"{"action":"refresh","token": "eyJ.eyJ.sig"}"#),
            r#"{"action":"refresh","token": "REDACTED"}"#
        );
        // Nothing to redact; empty values and non-ASCII text are kept.
        for text in [
            "token=",
            "bearer",
            "plain text, ünïcode",
            "subprotocol bearer,",
        ] {
            assert_eq!(redact(text), text);
        }
        assert_eq!(redact("é token=ü.x é"), "é token=REDACTED é");
        let once = redact("token=a bearer, b");
        assert_eq!(redact(&once), once);
    }

    #[test]
    fn token_sources_in_order() {
        let sub = Some("bearer, from-sub");
        assert_eq!(
            token_from(Some("from-query"), Some("Bearer from-auth"), sub),
            Some(("from-query".into(), false))
        );
        assert_eq!(
            token_from(None, Some("Bearer from-auth"), sub),
            Some(("from-auth".into(), false))
        );
        assert_eq!(
            token_from(Some(""), Some("bearer   from-auth "), sub),
            Some(("from-auth".into(), false))
        );
        assert_eq!(
            token_from(None, Some("Basic dXNlcjpwdw=="), sub),
            Some(("from-sub".into(), true))
        );
        assert_eq!(
            token_from(None, None, Some("chat, Bearer,from-sub")),
            Some(("from-sub".into(), true))
        );
        assert_eq!(token_from(None, None, Some("bearer")), None);
        assert_eq!(token_from(None, None, Some("chat")), None);
        assert_eq!(token_from(None, Some("Bearer "), None), None);
        assert_eq!(token_from(None, None, None), None);
    }
}
