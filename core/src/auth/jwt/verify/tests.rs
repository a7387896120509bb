//! Verification: algorithms, signatures, claims, `kid` selection and the
//! refusal messages.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::*;
use crate::auth::jwt::fixtures::*;
use crate::config::{JwtKeyConfig, KeySource};

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
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
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
    let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).unwrap();
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

/// A router without any key (`optional`, no secret set) says so for every
/// token, valid-looking or not, rather than blaming the token's header.
#[test]
fn a_verifier_without_keys_names_that_for_every_token() {
    let keyless = Verifier::default();
    for token in [hs(&valid_claims()), "not.a.token".into(), String::new()] {
        assert_eq!(keyless.verify(&token), Err(TokenError::NoKey), "{token}");
    }
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
        TokenError::NoKey,
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
