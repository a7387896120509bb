//! `[auth]` and `[auth.jwt]`: modes, limits, origins, API key and JWT key
//! sources.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::config::model::*;
use crate::config::read::{Reader, Tab};

pub(super) fn auth(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    folder: &Path,
    server: &ServerConfig,
    warnings: &mut Vec<String>,
) -> AuthConfig {
    let mut t = r.table(top, "auth");
    let mode = r.choice(
        &mut t,
        "mode",
        AuthMode::Optional,
        &[
            ("none", AuthMode::None),
            ("optional", AuthMode::Optional),
            ("required", AuthMode::Required),
        ],
    );
    let max_connections_per_user = r.size(&mut t, "max_connections_per_user", 5, 1);
    let on_user_limit = r.choice(
        &mut t,
        "on_user_limit",
        OnUserLimit::Refuse,
        &[
            ("refuse", OnUserLimit::Refuse),
            ("evict_oldest", OnUserLimit::EvictOldest),
        ],
    );
    let max_anonymous_per_ip = r.size(&mut t, "max_anonymous_per_ip", 100, 0);
    let allowed_origins = r
        .strings(&mut t, "allowed_origins")
        .into_iter()
        .filter(|(key, origin)| {
            let ok = origin == "*" || is_origin(origin);
            if !ok {
                r.problem(
                    key,
                    Some(&Value::from(origin.as_str())),
                    "must be \"*\" or an origin such as https://example.com \
                     (scheme, host and optional port; no path, no trailing /)",
                );
            }
            ok
        })
        .map(|(_, origin)| origin)
        .collect();
    let api_keys_env = env_name(r, &mut t, "api_keys_env", "SWITCHYARD_API_KEYS");
    let api_keys_file = r
        .optional(&mut t, "api_keys_file", "")
        .map(|f| folder.join(f));
    let admin_keys_env = env_name(r, &mut t, "admin_keys_env", "");
    let admin_keys_file = r
        .optional(&mut t, "admin_keys_file", "")
        .map(|f| folder.join(f));
    let jwt = jwt(r, &mut t, folder, mode);
    r.finish(t);
    if mode != AuthMode::None && server.tls.is_none() && !server.listen.ip().is_loopback() {
        warnings.push(format!(
            "server.listen = \"{}\" is not loopback and auth is on without server.tls: tokens \
             and keys cross the network in clear unless a reverse proxy terminates TLS",
            server.listen
        ));
    }
    AuthConfig {
        mode,
        max_connections_per_user,
        on_user_limit,
        max_anonymous_per_ip,
        allowed_origins,
        api_keys_env,
        api_keys_file,
        admin_keys_env,
        admin_keys_file,
        jwt,
    }
}

/// Whether `text` is `scheme://host[:port]`, the form browsers send in
/// `Origin`, so a comparison with the header can succeed.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    scheme_ok && !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '@'])
}

/// The name of an environment variable holding secrets; empty = unset.
fn env_name(
    r: &mut Reader<'_>,
    t: &mut Tab<'_>,
    key: &'static str,
    default: &str,
) -> Option<String> {
    let name = r.optional(t, key, default)?;
    if name.contains(['=', '\0']) {
        r.problem(
            &t.key(key),
            Some(&Value::from(name.as_str())),
            "must be an environment variable name (no = or NUL)",
        );
    } else if name.to_ascii_lowercase().starts_with("switchyard__") {
        // Such a variable would also be read as a configuration key.
        r.problem(
            &t.key(key),
            Some(&Value::from(name.as_str())),
            "must not start with SWITCHYARD__ (double underscore), which is read as a \
             configuration override; use a single underscore",
        );
    }
    Some(name)
}

const ALGORITHMS: [(&str, JwtAlgorithm); 3] = [
    ("HS256", JwtAlgorithm::Hs256),
    ("RS256", JwtAlgorithm::Rs256),
    ("ES256", JwtAlgorithm::Es256),
];

fn jwt(r: &mut Reader<'_>, auth: &mut Tab<'_>, folder: &Path, mode: AuthMode) -> JwtConfig {
    let mut t = r.table(auth, "jwt");
    let algorithm = r.choice(&mut t, "algorithm", JwtAlgorithm::Hs256, &ALGORITHMS);
    let secret_env = env_name(r, &mut t, "secret_env", "SWITCHYARD_JWT_SECRET");
    let secret_file = r
        .optional(&mut t, "secret_file", "")
        .map(|f| folder.join(f));
    let public_key_file = r
        .optional(&mut t, "public_key_file", "")
        .map(|f| folder.join(f));
    let issuer = r.optional(&mut t, "issuer", "");
    let audience = r.optional(&mut t, "audience", "");
    let leeway_s = r.uint(&mut t, "leeway_s", 5, 0, u64::MAX);
    let mut keys: Vec<JwtKeyConfig> = Vec::new();
    let mut kids: BTreeMap<String, String> = BTreeMap::new();
    for mut k in r.tables(&mut t, "keys") {
        let kid = r.required(&mut k, "kid");
        let key_algorithm = r.choice(&mut k, "algorithm", algorithm, &ALGORITHMS);
        let env = env_name(r, &mut k, "secret_env", "");
        let file = r.optional(&mut k, "secret_file", "");
        let public = r.optional(&mut k, "public_key_file", "");
        let source = key_source(r, &k, key_algorithm, env, file, public, folder);
        if let Some(kid) = &kid {
            if let Some(first) = kids.get(kid) {
                let text = format!("kid is used twice; {first} has it already");
                r.problem(&k.key("kid"), Some(&Value::from(kid.as_str())), text);
            } else {
                kids.insert(kid.clone(), k.path().to_owned());
            }
        }
        r.finish(k);
        if let (Some(kid), Some(source)) = (kid, source) {
            keys.push(JwtKeyConfig {
                kid,
                algorithm: key_algorithm,
                source,
            });
        }
    }
    let path = t.path().to_owned();
    r.finish(t);
    // Only the default key is checked here when no `keys` are listed: with
    // keys, the default fields are unused.
    if mode != AuthMode::None && keys.is_empty() && kids.is_empty() {
        match algorithm {
            JwtAlgorithm::Hs256 if secret_env.is_none() && secret_file.is_none() => {
                r.problem(
                    &format!("{path}.secret_env"),
                    None,
                    "HS256 needs a secret: set secret_env or secret_file (or list keys)",
                );
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 if public_key_file.is_none() => {
                r.problem(
                    &format!("{path}.public_key_file"),
                    None,
                    "RS256 and ES256 need a public key: set public_key_file (or list keys)",
                );
            }
            _ => {}
        }
    }
    JwtConfig {
        algorithm,
        secret_env,
        secret_file,
        public_key_file,
        issuer,
        audience,
        leeway_s,
        keys,
    }
}

/// The one source of a listed key, matching its algorithm.
fn key_source(
    r: &mut Reader<'_>,
    k: &Tab<'_>,
    algorithm: JwtAlgorithm,
    env: Option<String>,
    file: Option<String>,
    public: Option<String>,
    folder: &Path,
) -> Option<KeySource> {
    let given = [env.is_some(), file.is_some(), public.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        r.problem(
            k.path(),
            None,
            "needs exactly one of secret_env, secret_file or public_key_file",
        );
        return None;
    }
    let hmac = algorithm == JwtAlgorithm::Hs256;
    match (env, file, public) {
        (Some(env), _, _) if hmac => Some(KeySource::SecretEnv(env)),
        (_, Some(file), _) if hmac => Some(KeySource::SecretFile(folder.join(file))),
        (_, _, Some(public)) if !hmac => Some(KeySource::PublicKeyFile(folder.join(public))),
        _ => {
            let text = if hmac {
                "HS256 verifies with a shared secret: use secret_env or secret_file, \
                 not public_key_file"
            } else {
                "RS256 and ES256 verify with a public key: use public_key_file, \
                 not a secret"
            };
            r.problem(k.path(), None, text);
            None
        }
    }
}
