//! API keys: `secret` or `name:secret` entries, comma-separated, from an
//! environment variable or a file that is re-read on every reload. Secrets
//! are compared in constant time and never logged; the key's name is.

use std::path::Path;

use subtle::ConstantTimeEq;

use crate::config::AuthConfig;
use crate::files::{self, FileError};

/// One key.
#[derive(Clone)]
pub struct Key {
    /// Its name, for logs (`key-N` when the entry has none).
    pub name: String,
    secret: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The keys in force.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    /// Keys for `POST /api/events`.
    pub publish: Vec<Key>,
    /// Keys for the admin routes (also accepted on publish routes).
    pub admin: Vec<Key>,
}

/// The outcome of checking a request's `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// A valid key; its name.
    Valid(String),
    /// No key was sent.
    Missing,
    /// A key was sent and matches none.
    Wrong,
}

/// Why keys could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read API keys from {path}: {source}")]
pub struct KeyFileError {
    /// The key naming the file: `auth.api_keys_file` or `auth.admin_keys_file`.
    pub key: &'static str,
    /// The file.
    pub path: String,
    /// Why it could not be read.
    pub source: FileError,
}

/// The entries of `text`; an unnamed one is `<unnamed>-N` (`key-N` for
/// publish keys, `admin-key-N` for admin keys, so that the first of each
/// list are two names: a key's name is its publish rate-limit bucket).
fn parse(text: &str, unnamed: &str) -> Vec<Key> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('#'))
        .enumerate()
        .map(|(i, entry)| match entry.split_once(':') {
            Some((name, secret)) => Key {
                name: name.trim().to_owned(),
                secret: secret.trim().to_owned(),
            },
            None => Key {
                name: format!("{unnamed}-{}", i + 1),
                secret: entry.to_owned(),
            },
        })
        .collect()
}

fn read(
    env_var: Option<&str>,
    file: Option<&Path>,
    key: &'static str,
    unnamed: &str,
) -> Result<Vec<Key>, KeyFileError> {
    if let Some(path) = file {
        let text =
            files::read_text(path, files::MAX_KEY_FILE_BYTES).map_err(|source| KeyFileError {
                key,
                path: path.display().to_string(),
                source,
            })?;
        return Ok(parse(&text, unnamed));
    }
    Ok(env_var
        .and_then(|var| std::env::var(var).ok())
        .map(|v| parse(&v, unnamed))
        .unwrap_or_default())
}

impl ApiKeys {
    /// Reads the keys `[auth]` points at (a file wins over its variable).
    pub fn load(auth: &AuthConfig) -> Result<ApiKeys, KeyFileError> {
        let publish = read(
            auth.api_keys_env.as_deref(),
            auth.api_keys_file.as_deref(),
            "auth.api_keys_file",
            "key",
        )?;
        let admin_set = auth.admin_keys_env.is_some() || auth.admin_keys_file.is_some();
        let admin = if admin_set {
            read(
                auth.admin_keys_env.as_deref(),
                auth.admin_keys_file.as_deref(),
                "auth.admin_keys_file",
                "admin-key",
            )?
        } else {
            publish.clone()
        };
        Ok(ApiKeys { publish, admin })
    }

    /// Checks a bearer token against admin keys (and publish keys if `publish`).
    pub fn check(&self, authorization: Option<&str>, publish: bool) -> KeyCheck {
        let Some(token) = authorization.and_then(super::jwt::bearer_token) else {
            return KeyCheck::Missing;
        };
        let candidates = self
            .admin
            .iter()
            .chain(publish.then_some(&self.publish).into_iter().flatten());
        let mut found = None;
        for key in candidates {
            if bool::from(key.secret.as_bytes().ct_eq(token.as_bytes())) && found.is_none() {
                found = Some(key.name.clone());
            }
        }
        found.map_or(KeyCheck::Wrong, KeyCheck::Valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_with_and_without_names() {
        let keys = parse(" ci:s3cret , plain ,\n\nops:other", "key");
        let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["ci", "key-2", "ops"]);
        assert_eq!(keys[1].secret, "plain");
    }

    #[test]
    fn checks_bearer_keys() {
        let keys = ApiKeys {
            publish: parse("pub:p1", "key"),
            admin: parse("adm:a1", "admin-key"),
        };
        assert_eq!(
            keys.check(Some("Bearer p1"), true),
            KeyCheck::Valid("pub".into())
        );
        assert_eq!(
            keys.check(Some("Bearer a1"), true),
            KeyCheck::Valid("adm".into())
        );
        assert_eq!(keys.check(Some("Bearer p1"), false), KeyCheck::Wrong);
        assert_eq!(keys.check(Some("Bearer nope"), true), KeyCheck::Wrong);
        assert_eq!(keys.check(None, true), KeyCheck::Missing);
        assert_eq!(keys.check(Some("Basic p1"), true), KeyCheck::Missing);
        // The scheme is case-insensitive (RFC 9110 §11.1), as for client tokens.
        for header in ["bearer p1", "BEARER p1", "Bearer\tp1", " Bearer  p1 "] {
            assert_eq!(
                keys.check(Some(header), true),
                KeyCheck::Valid("pub".into()),
                "{header:?}"
            );
        }
        assert_eq!(keys.check(Some("Bearer "), true), KeyCheck::Missing);
        assert_eq!(keys.check(Some("Bearerp1"), true), KeyCheck::Missing);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let keys = ApiKeys {
            publish: parse("pub:topsecret", "key"),
            admin: Vec::new(),
        };
        assert!(!format!("{keys:?}").contains("topsecret"));
    }
}
