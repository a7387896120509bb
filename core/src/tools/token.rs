//! `switchyard token --sub NAME`: mints an HS256 token with the secret the
//! configuration names, read as the router reads it (`auth.jwt.secret_file`
//! or `secret_env`, else the first HS256 entry of `auth.jwt.keys`, whose
//! `kid` the token then carries). For local use: testing, the tour.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::auth::jwt::{secret_from_env, secret_from_file, JwtConfigError};
use crate::config::{AuthMode, ConfigError, JwtAlgorithm, JwtConfig, KeySource};

/// What to mint.
#[derive(Debug, Clone)]
pub struct Mint {
    /// The configuration file.
    pub config: PathBuf,
    /// The user (`sub`).
    pub sub: String,
    /// Lifetime in seconds.
    pub ttl_s: u64,
    /// The `channels` claim, when given.
    pub channels: Option<Vec<String>>,
    /// Use this `auth.jwt.keys` entry rather than the first HS256 one.
    pub kid: Option<String>,
}

/// Reads one name of `--channels`: trimmed (`alerts, jobs`), since a space
/// is not part of a channel's name, and not empty, since a token naming
/// no channel, or one called "", is not what anybody asks for.
pub fn parse_channel(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err("a channel name is empty: name each channel, separated by commas".into());
    }
    Ok(name.to_owned())
}

/// Parses a lifetime: a number with an optional unit `s`, `m`, `h` or `d`
/// (`30s`, `15m`, `1h`, `2d`; a bare number is seconds).
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let factor = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d (e.g. 1h)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a lifetime such as 30s, 15m, 1h or 2d"))?;
    if n == 0 {
        return Err(format!("{text:?}: a token must live longer than 0s"));
    }
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// The secret and the `kid` to sign with, found in `[auth.jwt]`.
struct Signing {
    secret: String,
    kid: Option<String>,
}

/// Why no token was minted; each message says what to set (never a secret).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The configuration file could not be read.
    #[error("{path} is not a valid configuration: {source}")]
    Config {
        /// The file given with `--config`.
        path: String,
        /// What is wrong with it.
        source: ConfigError,
    },
    /// `--kid` names no entry of `auth.jwt.keys`.
    #[error("auth.jwt.keys has no key with kid {0:?}")]
    UnknownKid(String),
    /// The key asked for is not an HS256 secret.
    #[error("{0} is not an HS256 secret: only HS256 tokens can be minted")]
    NotHs256(String),
    /// An HS256 entry of `auth.jwt.keys` names a public key file.
    #[error("{0} holds no secret")]
    HoldsNoSecret(String),
    /// The key's secret could not be read.
    #[error(transparent)]
    Secret(#[from] JwtConfigError),
    /// Nothing to sign with.
    #[error(
        "no HS256 secret is configured: set auth.jwt.secret_env (and that variable) \
         or auth.jwt.secret_file, or list an HS256 key in auth.jwt.keys"
    )]
    NoSecret,
    /// Signing failed.
    #[error("the token could not be signed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Mints the token; the error says what is missing (never a secret).
pub fn mint(mint: &Mint) -> Result<String, TokenError> {
    let loaded = crate::config::load(&mint.config).map_err(|source| TokenError::Config {
        path: mint.config.display().to_string(),
        source,
    })?;
    let auth = &loaded.config.auth;
    if auth.mode == AuthMode::None {
        eprintln!(
            "switchyard token: note: auth.mode is \"none\" in {}: the router ignores tokens",
            mint.config.display()
        );
    }
    let signing = signing_key(&auth.jwt, mint.kid.as_deref())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from(mint.sub.as_str()));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now.saturating_add(mint.ttl_s)));
    if let Some(channels) = &mint.channels {
        claims.insert("channels".into(), Value::from(channels.clone()));
    }
    if let Some(iss) = &auth.jwt.issuer {
        claims.insert("iss".into(), Value::from(iss.as_str()));
    }
    if let Some(aud) = &auth.jwt.audience {
        claims.insert("aud".into(), Value::from(aud.as_str()));
    }
    let mut header = Header::new(Algorithm::HS256);
    header.kid = signing.kid;
    Ok(jsonwebtoken::encode(
        &header,
        &Value::Object(claims),
        &EncodingKey::from_secret(signing.secret.as_bytes()),
    )?)
}

/// The HS256 secret to sign with: with `kid`, that `auth.jwt.keys` entry;
/// else the top-level key when it is HS256 and set; else the first HS256
/// entry of `auth.jwt.keys`.
fn signing_key(jwt: &JwtConfig, kid: Option<&str>) -> Result<Signing, TokenError> {
    if let Some(kid) = kid {
        let entry = jwt
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| TokenError::UnknownKid(kid.to_owned()))?;
        let label = format!("auth.jwt.keys[kid={kid:?}]");
        return match (&entry.source, entry.algorithm) {
            (KeySource::SecretEnv(var), JwtAlgorithm::Hs256) => Ok(Signing {
                secret: secret_from_env(&label, var)?,
                kid: Some(kid.to_owned()),
            }),
            (KeySource::SecretFile(path), JwtAlgorithm::Hs256) => Ok(Signing {
                secret: secret_from_file(&label, path)?,
                kid: Some(kid.to_owned()),
            }),
            _ => Err(TokenError::NotHs256(label)),
        };
    }
    let hs256_keys: Vec<_> = jwt
        .keys
        .iter()
        .filter(|k| k.algorithm == JwtAlgorithm::Hs256)
        .collect();
    let mut top_level_error = None;
    if jwt.algorithm == JwtAlgorithm::Hs256 {
        let top = if let Some(path) = &jwt.secret_file {
            Some(secret_from_file("auth.jwt.secret_file", path))
        } else {
            jwt.secret_env
                .as_ref()
                .map(|var| secret_from_env("auth.jwt.secret_env", var))
        };
        match top {
            Some(Ok(secret)) => return Ok(Signing { secret, kid: None }),
            Some(Err(e)) => top_level_error = Some(e),
            None => {}
        }
    }
    if let Some(entry) = hs256_keys.first() {
        let label = format!("auth.jwt.keys[kid={:?}]", entry.kid);
        let secret = match &entry.source {
            KeySource::SecretEnv(var) => secret_from_env(&label, var)?,
            KeySource::SecretFile(path) => secret_from_file(&label, path)?,
            KeySource::PublicKeyFile(_) => return Err(TokenError::HoldsNoSecret(label)),
        };
        return Ok(Signing {
            secret,
            kid: Some(entry.kid.clone()),
        });
    }
    Err(top_level_error.map_or(TokenError::NoSecret, TokenError::Secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_take_a_unit() {
        assert_eq!(parse_ttl("30s"), Ok(30));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("2d"), Ok(172_800));
        assert_eq!(parse_ttl("45"), Ok(45));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("0s").is_err());
    }
}
