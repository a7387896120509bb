//! Keys, configurations and signed tokens shared by the JWT tests.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::Verifier;
use crate::config::{AuthConfig, AuthMode, JwtAlgorithm, JwtConfig, OnUserLimit};

/// An RSA private key, to sign RS256 tokens.
pub(super) const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
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

/// The public half of [`RSA_PRIVATE`].
pub(super) const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAyFSqPfQoxYidW1Rgb/Op
oMuT4hUd3kYL7sQsHGF+3BO1/wGE5WuxjU83z3IC/hkOW6p+KOXbdR7BhlHUlmrx
StRI8pODKR4EzmqjDo1F/++sv03S/MNUQ4Z+/NN4zYdQKvdYi+Qz8zKKCRSThqNh
t+wwvJWDBSz0OzsRz/Dr/W6/B20S862OG8p3xkdLHu29EcpRfntmq+KpOsZs3lca
14yJY+DBN5BsVV5zyjT8H6lnSskxKuXV3S/CTHqFUKLsVsByiO67EFG3b9LuwIR1
n3psN3LFNhhlgVJPaLZH9ciMsRamTpnx/nclcP66al50xA87XRSX9fwi2KbxJ41a
7wIDAQAB
-----END PUBLIC KEY-----
";

/// A P-256 private key, to sign ES256 tokens.
pub(super) const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgB5saIQ1E9RfKNi9c
QhUl6nyew4IexNCopzsKVhUf1j2hRANCAARlhMkFt106XFK9r2taR5M5qV+h2pWW
m89q9ygP9tzPi9/kCfWt0K9ksplIl+obXxKCX+Zpp5zB5ORL+StF/gAf
-----END PRIVATE KEY-----
";

/// The public half of [`EC_PRIVATE`].
pub(super) const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZYTJBbddOlxSva9rWkeTOalfodqV
lpvPavcoD/bcz4vf5An1rdCvZLKZSJfqG18Sgl/maaecweTkS/krRf4AHw==
-----END PUBLIC KEY-----
";

/// The HS256 secret of [`hs256`] verifiers.
pub(super) const SECRET: &str = "test-secret-0123456789";

/// Now, in Unix seconds.
pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `[auth.jwt]` for `algorithm` with no key source and a 5 s leeway.
pub(super) fn jwt_config(algorithm: JwtAlgorithm) -> JwtConfig {
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

/// `[auth]` in mode `required` around `jwt`.
pub(super) fn auth(jwt: JwtConfig) -> AuthConfig {
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

/// Writes `text` to the file `name` in `dir`.
pub(super) fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// An HS256 verifier reading [`SECRET`] from a file.
pub(super) fn hs256(dir: &tempfile::TempDir, tweak: impl FnOnce(&mut JwtConfig)) -> Verifier {
    let mut jwt = jwt_config(JwtAlgorithm::Hs256);
    jwt.secret_file = Some(write(dir, "secret", SECRET));
    tweak(&mut jwt);
    Verifier::load(&auth(jwt)).unwrap()
}

/// A token for `claims` signed with `key`, naming `kid` when given.
pub(super) fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// An HS256 token for `claims` signed with [`SECRET`], without `kid`.
pub(super) fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

/// Claims every verifier accepts: `sub` alice, `exp` in ten minutes.
pub(super) fn valid_claims() -> Value {
    json!({ "sub": "alice", "exp": now() + 600 })
}
