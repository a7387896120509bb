//! Key loading: the keys `[auth.jwt]` names, read from environment
//! variables and files on start and on every reload.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::{alg_name, Key, Verifier};
use crate::config::{AuthConfig, AuthMode, JwtAlgorithm, KeySource};
use crate::files::{self, FileError};

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
    /// The environment variable holding a secret is set but empty (once
    /// trimmed), as a compose file's `${VAR}` of an unset variable makes it.
    #[error("{key}: environment variable {var} is empty")]
    EmptyVariable {
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
    /// A secret file is empty once trimmed.
    #[error("{key}: the secret in file {path} is empty")]
    EmptySecret {
        /// Which key: `auth.jwt` or `auth.jwt.keys[kid="…"]`.
        key: String,
        /// The file.
        path: String,
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
                            | JwtConfigError::EmptyVariable { .. },
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
}

fn secret_key(secret: &str) -> Key {
    Key {
        algorithm: JwtAlgorithm::Hs256,
        decoding: DecodingKey::from_secret(secret.as_bytes()),
    }
}

impl JwtConfigError {
    /// `VAR is not set` or `VAR is empty` when this is the default key's
    /// (`auth.jwt.secret_env`) variable giving no secret: a compose file's
    /// `${VAR}` of an unset variable sets it empty, so the two are alike.
    pub fn unset_default_secret(&self) -> Option<String> {
        match self {
            JwtConfigError::MissingVariable { key, var } if key == "auth.jwt" => {
                Some(format!("{var} is not set"))
            }
            JwtConfigError::EmptyVariable { key, var } if key == "auth.jwt" => {
                Some(format!("{var} is empty"))
            }
            _ => None,
        }
    }
}

/// The HS256 secret in variable `var` (trimmed, not empty); `label` names
/// the key that points at it in messages.
pub(crate) fn secret_from_env(label: &str, var: &str) -> Result<String, JwtConfigError> {
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
        return Err(JwtConfigError::EmptyVariable {
            key: label.to_owned(),
            var: var.to_owned(),
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

/// The HS256 secret in the file at `path` (trimmed, not empty).
pub(crate) fn secret_from_file(label: &str, path: &Path) -> Result<String, JwtConfigError> {
    let text = read_file(label, path)?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(JwtConfigError::EmptySecret {
            key: label.to_owned(),
            path: path.display().to_string(),
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

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey};

    use super::*;
    use crate::auth::jwt::fixtures::*;
    use crate::auth::jwt::TokenError;
    use crate::config::JwtKeyConfig;

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
        assert_eq!(v.verify(&hs(&valid_claims())), Err(TokenError::NoKey));

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
}
