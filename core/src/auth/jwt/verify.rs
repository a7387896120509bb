//! Verification: a token's header, key, signature and claims, checked
//! against the keys and rules of a [`Verifier`].

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{alg_name, ChannelsClaim, Claims, Verifier};
use crate::config::JwtAlgorithm;

/// Longest token accepted, in bytes; longer ones are malformed.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Longest `kid` echoed back in an error message, in characters.
const MAX_KID_IN_MESSAGE: usize = 40;

/// The latest `exp` accepted: 9999-12-31T23:59:59Z. Later instants have
/// no RFC 3339 form, which `expires_at` is sent in (docs/protocol.md,
/// "Authentication").
const MAX_EXP: i64 = 253_402_300_799;

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
    /// The router has no key at all (`optional`, no secret set): whatever
    /// the token, it cannot be verified, and that, not the token, is what
    /// the client's operator must fix.
    #[error("this router has no key to verify tokens")]
    NoKey,
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

impl Verifier {
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
        if self.default.is_none() && self.by_kid.is_empty() {
            return Err(TokenError::NoKey);
        }
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

/// The `jsonwebtoken` algorithm of a configured one.
fn jwt_algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Es256 => Algorithm::ES256,
    }
}

#[cfg(test)]
mod tests;
