//! Client authentication (JWT), per-user / per-IP / global connection
//! limits, `Origin` on upgrades, keep-alive, client and publish rate limits,
//! operator disconnects and graceful shutdown, against a real router over
//! loopback (docs/protocol.md, "Authentication", "Close codes" and
//! "Keep-alive"; docs/configuration.md, "`[auth]`"; docs/operations.md,
//! "Graceful shutdown").

use crate::support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use support::{alert, assert_error, config, job, start, Client, Router, BASE, WAIT};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response as WsResponse;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(400);

const AUTH_NONE: &str = "mode = \"none\"\n";

// ------------------------------------------------------------------ configs

/// An `[auth]` body in `mode` with an HS256 secret read from `var`.
fn jwt_auth(mode: &str, var: &str, auth_extra: &str, jwt_extra: &str) -> String {
    format!("mode = \"{mode}\"\n{auth_extra}\n[auth.jwt]\nsecret_env = \"{var}\"\n{jwt_extra}\n")
}

/// Sets the JWT secret variable (unique per test) and returns the secret.
fn secret(var: &str) -> String {
    let value = format!("secret-for-{var}");
    std::env::set_var(var, &value);
    value
}

/// Starts a router in `mode` with a fresh secret in `var`.
async fn start_jwt(
    mode: &str,
    var: &str,
    server: &str,
    auth_extra: &str,
    jwt_extra: &str,
) -> (Router, String) {
    let key = secret(var);
    let router = start(&config(server, &jwt_auth(mode, var, auth_extra, jwt_extra))).await;
    (router, key)
}

// ------------------------------------------------------------------- tokens

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn hs256_kid(secret: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Unpadded base64url.
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

/// An HS256 token with this exact header (`jsonwebtoken` cannot write `crit`).
fn hs256_with_header(secret: &str, header: &Value, claims: &Value) -> String {
    let signed = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let key = EncodingKey::from_secret(secret.as_bytes());
    let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{signed}.{signature}")
}

/// `sub` with `exp` `exp_in` seconds from now.
/// How long the short-lived tokens of the expiry tests live: long enough
/// that a slow connect on a loaded machine still finds them valid.
const TOKEN_LIFE_S: i64 = 5;

fn claims(sub: &str, exp_in: i64) -> Value {
    json!({"sub": sub, "exp": now() + exp_in})
}

/// Asserts `value` is an RFC 3339 time equal to the Unix second `exp`.
fn assert_time(value: &Value, exp: i64) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {value}"));
    let parsed = chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text} is not RFC 3339: {e}"));
    assert_eq!(parsed.timestamp(), exp, "{text}");
}

// ------------------------------------------------------------------ clients

async fn connect_with(
    router: &Router,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> (Client, WsResponse) {
    router
        .try_ws(path_and_query, headers)
        .await
        .unwrap_or_else(|e| panic!("upgrade on {path_and_query} failed: {e}"))
}

/// Reads `connection.established` (the first message); returns its payload.
async fn established(client: &mut Client) -> Value {
    client.established().await["payload"].clone()
}

/// Connects with `?token=` and returns the client and its established payload.
async fn connect_token(router: &Router, token: &str) -> (Client, Value) {
    let mut client = router.ws(&format!("/ws/events?token={token}")).await;
    let hello = established(&mut client).await;
    (client, hello)
}

async fn connect_anonymous(router: &Router) -> (Client, Value) {
    let mut client = router.ws("/ws/events").await;
    let hello = established(&mut client).await;
    (client, hello)
}

/// Asserts the socket (upgraded) is closed with 1008 and `reason` before any
/// text message.
async fn assert_refused(client: &mut Client, what: &str, reason: &str) {
    loop {
        let msg = tokio::time::timeout(WAIT, client.socket.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: timed out waiting for close 1008"));
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => {
                let got = (u16::from(frame.code), frame.reason.as_str());
                assert_eq!(got, (1008, reason), "{what}: close code and reason");
                return;
            }
            Some(Ok(Message::Text(t))) => panic!("{what}: expected close 1008, got {t}"),
            Some(Ok(Message::Close(None))) | None => {
                panic!("{what}: closed without a close frame (expected 1008 + reason)")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("{what}: error instead of close 1008: {e}"),
        }
    }
}

/// Upgrades with `?token=` (or none) and expects accept-then-close 1008 with
/// `reason`.
async fn assert_token_refused(router: &Router, path_and_query: &str, what: &str, reason: &str) {
    let (mut client, response) = connect_with(router, path_and_query, &[]).await;
    assert_eq!(
        response.status(),
        101,
        "{what}: the upgrade itself succeeds"
    );
    assert_refused(&mut client, what, reason).await
}

/// The ping round trip: the connection is open and working.
async fn assert_alive(c: &mut Client) {
    let pong = c.request(json!({"action": "ping"})).await;
    assert_eq!(pong["type"], "pong", "{pong}");
}

/// The sorted keys of an object.
fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("expected an object, got {v}"))
        .keys()
        .cloned()
        .collect()
}

/// A raw HTTP POST with headers; (status, Retry-After, body).
async fn post_raw(
    router: &Router,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, Value) {
    let mut req = reqwest::Client::new().post(router.url(path)).json(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let response = req.send().await.unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

/// An HTTP refusal of an upgrade: (status, Retry-After, JSON body).
fn http_refusal(result: Result<(Client, WsResponse), WsError>) -> (u16, Option<String>, Value) {
    match result {
        Ok((_, response)) => panic!("expected an HTTP refusal, got {}", response.status()),
        Err(WsError::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (response.status().as_u16(), retry, body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

fn assert_retry_after(retry: &Option<String>) {
    let secs: u64 = retry
        .as_deref()
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!(secs >= 1, "Retry-After {secs}");
}

// ------------------------------------------------------- mode = "required"

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_no_token_is_accepted_then_closed_1008() {
    let (router, _) = start_jwt("required", "SY_TEST_JWT_REQ_NONE", "", "", "").await;
    assert_token_refused(
        &router,
        "/ws/events",
        "no token",
        "authentication required: send a token",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_token_from_query_header_and_subprotocol() {
    let (router, key) = start_jwt("required", "SY_TEST_JWT_REQ_SOURCES", "", "", "").await;
    let exp = now() + 600;
    let token = hs256(&key, &json!({"sub": "alice", "exp": exp}));

    // ?token=
    let (mut c, hello) = connect_token(&router, &token).await;
    assert_eq!(hello["user"], "alice", "{hello}");
    assert_time(&hello["expires_at"], exp);
    assert_eq!(keys(&hello["channels"]), ["alerts", "jobs"], "{hello}");
    assert_alive(&mut c).await;

    // Authorization: Bearer
    let bearer = format!("Bearer {token}");
    let (mut c, _) = connect_with(&router, "/ws/events", &[("authorization", &bearer)]).await;
    let hello = established(&mut c).await;
    assert_eq!(hello["user"], "alice", "{hello}");
    assert_time(&hello["expires_at"], exp);

    // Sec-WebSocket-Protocol: bearer, <token>
    let protocols = format!("bearer, {token}");
    let (mut c, response) = connect_with(
        &router,
        "/ws/events",
        &[("sec-websocket-protocol", &protocols)],
    )
    .await;
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("bearer"),
        "the server answers with subprotocol bearer"
    );
    let hello = established(&mut c).await;
    assert_eq!(hello["user"], "alice", "{hello}");
    assert_time(&hello["expires_at"], exp);
    assert_alive(&mut c).await;
}

/// A client that offers the `bearer` subprotocol gets it answered whatever
/// the mode and wherever its token was read from: a browser (and the
/// TypeScript client, which offers it whenever it has a token) fails a
/// connection whose offered subprotocol is not answered. In mode `none`, or
/// with a `?token=` beside it, it was not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offered_bearer_subprotocol_is_always_answered() {
    let router = start(BASE).await;
    for path in ["/ws/events", "/ws/events?token=from-the-query"] {
        let (mut c, response) = connect_with(
            &router,
            path,
            &[("sec-websocket-protocol", "bearer, any-token")],
        )
        .await;
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some("bearer"),
            "mode none, {path}"
        );
        established(&mut c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_refuses_invalid_tokens_with_1008() {
    let (router, key) = start_jwt("required", "SY_TEST_JWT_REQ_INVALID", "", "", "").await;
    let expired = hs256(&key, &claims("alice", -600));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={expired}"),
        "expired",
        "invalid token: token expired",
    )
    .await;

    let bad_sig = hs256("not-the-secret", &claims("alice", 600));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={bad_sig}"),
        "bad signature",
        "invalid token: invalid token signature",
    )
    .await;

    // {"alg":"none","typ":"JWT"}, a valid payload, an empty signature.
    let good = hs256(&key, &claims("alice", 600));
    let payload = good.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    assert_token_refused(
        &router,
        &format!("/ws/events?token={none}"),
        "alg none",
        "invalid token: token algorithm not allowed",
    )
    .await;

    let no_exp = hs256(&key, &json!({"sub": "alice"}));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={no_exp}"),
        "no exp",
        "invalid token: token has no exp claim",
    )
    .await;

    assert_token_refused(
        &router,
        "/ws/events?token=garbage",
        "garbage",
        "invalid token: malformed token",
    )
    .await;

    // An invalid token in the Authorization header is refused the same way.
    let (mut c, _) = connect_with(
        &router,
        "/ws/events",
        &[("authorization", &format!("Bearer {bad_sig}"))],
    )
    .await;
    assert_refused(
        &mut c,
        "bad signature in Authorization",
        "invalid token: invalid token signature",
    )
    .await;

    // The router still serves valid tokens.
    let (mut c, _) = connect_token(&router, &good).await;
    assert_alive(&mut c).await;
}

/// A token whose header has `crit` (extensions the router does not know),
/// or whose `exp` is past year 9999, is refused like any invalid token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crit_header_and_exp_past_year_9999_close_1008() {
    let (router, key) = start_jwt("optional", "SY_TEST_JWT_CRIT_EXP", "", "", "").await;
    let plain = json!({"alg": "HS256", "typ": "JWT"});
    let good = hs256_with_header(&key, &plain, &claims("alice", 600));
    let (mut c, _) = connect_token(&router, &good).await;
    assert_alive(&mut c).await;

    let crit = json!({"alg": "HS256", "typ": "JWT", "crit": ["x-must-know"], "x-must-know": 1});
    let token = hs256_with_header(&key, &crit, &claims("alice", 600));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={token}"),
        "crit",
        "invalid token: token header has critical extensions (crit) this server does not support",
    )
    .await;

    for exp in [json!(253_402_300_800_i64), json!(1e300)] {
        let far = hs256(&key, &json!({"sub": "alice", "exp": exp}));
        assert_token_refused(
            &router,
            &format!("/ws/events?token={far}"),
            "far exp",
            "invalid token: invalid exp claim",
        )
        .await;
    }
    let last = hs256(&key, &json!({"sub": "alice", "exp": 253_402_300_799_i64}));
    let (mut c, established) = connect_token(&router, &last).await;
    assert_time(&established["expires_at"], 253_402_300_799);
    assert_alive(&mut c).await;
}

// ------------------------------------------------ mode = "optional" / "none"

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_mode_anonymous_works_and_invalid_token_is_never_downgraded() {
    let (router, key) = start_jwt("optional", "SY_TEST_JWT_OPTIONAL", "", "", "").await;
    let (mut anon, hello) = connect_anonymous(&router).await;
    assert_eq!(hello["user"], Value::Null, "{hello}");
    assert_eq!(hello["expires_at"], Value::Null, "{hello}");
    assert_alive(&mut anon).await;

    let bad_sig = hs256("not-the-secret", &claims("alice", 600));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={bad_sig}"),
        "bad signature",
        "invalid token: invalid token signature",
    )
    .await;
    let expired = hs256(&key, &claims("alice", -600));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={expired}"),
        "expired",
        "invalid token: token expired",
    )
    .await;

    let exp = now() + 600;
    let good = hs256(&key, &json!({"sub": "alice", "exp": exp}));
    let (_c, hello) = connect_token(&router, &good).await;
    assert_eq!(hello["user"], "alice");
    assert_time(&hello["expires_at"], exp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_mode_ignores_tokens() {
    let router = start(&config("", AUTH_NONE)).await;
    let (mut c, hello) = connect_token(&router, "garbage.token.here").await;
    assert_eq!(hello["user"], Value::Null, "{hello}");
    assert_eq!(hello["expires_at"], Value::Null, "{hello}");
    assert_alive(&mut c).await;

    let (mut c, _) = connect_with(
        &router,
        "/ws/events",
        &[("authorization", "Bearer not-a-jwt")],
    )
    .await;
    let hello = established(&mut c).await;
    assert_eq!(hello["user"], Value::Null, "{hello}");
}

// ------------------------------------------------------------ iss/aud/kid

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_are_checked_when_configured() {
    let (router, key) = start_jwt(
        "required",
        "SY_TEST_JWT_ISS_AUD",
        "",
        "",
        "issuer = \"https://idp.example\"\naudience = \"switchyard\"",
    )
    .await;
    let exp = now() + 600;
    let right = hs256(
        &key,
        &json!({"sub": "alice", "exp": exp, "iss": "https://idp.example", "aud": "switchyard"}),
    );
    let (mut c, hello) = connect_token(&router, &right).await;
    assert_eq!(hello["user"], "alice");
    assert_alive(&mut c).await;

    let wrong_iss = hs256(
        &key,
        &json!({"sub": "alice", "exp": exp, "iss": "https://evil.example", "aud": "switchyard"}),
    );
    assert_token_refused(
        &router,
        &format!("/ws/events?token={wrong_iss}"),
        "wrong iss",
        "invalid token: wrong token issuer",
    )
    .await;
    let wrong_aud = hs256(
        &key,
        &json!({"sub": "alice", "exp": exp, "iss": "https://idp.example", "aud": "other"}),
    );
    assert_token_refused(
        &router,
        &format!("/ws/events?token={wrong_aud}"),
        "wrong aud",
        "invalid token: wrong token audience",
    )
    .await;
    let neither = hs256(&key, &json!({"sub": "alice", "exp": exp}));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={neither}"),
        "no iss/aud",
        "invalid token: token has no iss claim",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kid_selects_one_of_several_keys() {
    let a = secret("SY_TEST_JWT_KID_A");
    let b = secret("SY_TEST_JWT_KID_B");
    std::env::remove_var("SY_TEST_JWT_KID_UNSET");
    let auth = jwt_auth(
        "required",
        "SY_TEST_JWT_KID_UNSET",
        "",
        "keys = [\n  { kid = \"a\", secret_env = \"SY_TEST_JWT_KID_A\" },\n  \
         { kid = \"b\", secret_env = \"SY_TEST_JWT_KID_B\" },\n]",
    );
    let router = start(&config("", &auth)).await;

    let (mut c, hello) = connect_token(&router, &hs256_kid(&a, "a", &claims("alice", 600))).await;
    assert_eq!(hello["user"], "alice");
    assert_alive(&mut c).await;
    let (mut c, hello) = connect_token(&router, &hs256_kid(&b, "b", &claims("bob", 600))).await;
    assert_eq!(hello["user"], "bob");
    assert_alive(&mut c).await;

    let crossed = hs256_kid(&b, "a", &claims("alice", 600));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={crossed}"),
        "kid a, key b",
        "invalid token: invalid token signature",
    )
    .await;
    let unknown = hs256_kid(&a, "c", &claims("alice", 600));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={unknown}"),
        "unknown kid",
        "invalid token: unknown key id \"c\"",
    )
    .await;
    let no_kid = hs256(&a, &claims("alice", 600));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={no_kid}"),
        "no kid",
        "invalid token: token has no key id (kid)",
    )
    .await;
}

/// Out of the box (`optional`, no secret set) the router serves anonymous
/// clients, and a token it cannot verify is refused saying why: the router
/// has no key, not that the token lacks one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_without_a_key_refuses_tokens_saying_it_has_none() {
    let var = "SY_TEST_JWT_NO_KEY";
    std::env::remove_var(var);
    let router = start(&config("", &jwt_auth("optional", var, "", ""))).await;
    let (mut anon, hello) = connect_anonymous(&router).await;
    assert_eq!(hello["user"], Value::Null, "{hello}");
    assert_alive(&mut anon).await;
    let token = hs256("some-other-secret", &claims("alice", 600));
    assert_token_refused(
        &router,
        &format!("/ws/events?token={token}"),
        "a token, no key",
        "invalid token: this router has no key to verify tokens",
    )
    .await;
}

// -------------------------------------------------------- channels claim

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_claim_limits_established_delivery_and_recovery() {
    let (router, key) = start_jwt("required", "SY_TEST_JWT_CHANNELS", "", "", "").await;
    let all = hs256(&key, &claims("root", 600));
    let (_full, full_hello) = connect_token(&router, &all).await;
    let jobs_epoch = full_hello["channels"]["jobs"]["epoch"]
        .as_str()
        .expect("jobs epoch")
        .to_owned();
    assert_eq!(keys(&full_hello["channels"]), ["alerts", "jobs"]);

    let limited = hs256(
        &key,
        &json!({"sub": "alice", "exp": now() + 600, "channels": ["alerts"]}),
    );
    // Receive-all (never subscribed).
    let (mut quiet, hello) = connect_token(&router, &limited).await;
    assert_eq!(keys(&hello["channels"]), ["alerts"], "{hello}");
    // Subscribed to everything.
    let (mut c, hello) = connect_token(&router, &limited).await;
    assert_eq!(keys(&hello["channels"]), ["alerts"], "{hello}");
    let sub = c
        .request(json!({"action": "subscribe", "events": ["*"]}))
        .await;
    assert_eq!(sub["type"], "subscribed", "{sub}");

    router.publish_ok(&job("j1")).await;
    router.publish_ok(&alert("a1")).await;
    for client in [&mut c, &mut quiet] {
        let ev = client.recv().await;
        assert_eq!(ev["type"], "alert.created", "a job event leaked: {ev}");
        assert_eq!(ev["channel"], "alerts", "{ev}");
        client.expect_silence(QUIET).await;
    }

    // Recovery of jobs: unknown_channel, nothing replayed.
    let reply = c
        .request(json!({"action": "subscribe", "events": ["*"],
               "since": {"jobs": {"epoch": jobs_epoch, "sequence": 0}}}))
        .await;
    assert_eq!(reply["type"], "subscribed", "nothing replayed: {reply}");
    assert_eq!(
        reply["recovery"]["jobs"],
        json!({"recovered": false, "reason": "unknown_channel"}),
        "{reply}"
    );

    // The same at connect time, in the URL.
    let mut c = router
        .ws(&format!(
            "/ws/events?token={limited}&events=*&since=jobs:{jobs_epoch}:0"
        ))
        .await;
    let hello = established(&mut c).await;
    assert_eq!(keys(&hello["channels"]), ["alerts"], "{hello}");
    let reply = c.recv().await;
    assert_eq!(reply["type"], "subscribed", "nothing replayed: {reply}");
    assert_eq!(
        reply["recovery"]["jobs"],
        json!({"recovered": false, "reason": "unknown_channel"}),
        "{reply}"
    );
}

// ---------------------------------------------------------- require_auth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_channel_is_withheld_from_anonymous_connections() {
    let var = "SY_TEST_JWT_REQAUTH_CHANNEL";
    let key = secret(var);
    let cfg = config("", &jwt_auth("optional", var, "", "")).replacen(
        "name = \"jobs\"\n",
        "name = \"jobs\"\nrequire_auth = true\n",
        1,
    );
    assert!(cfg.contains("require_auth = true"));
    let router = start(&cfg).await;

    let (mut anon, hello) = connect_anonymous(&router).await;
    assert_eq!(keys(&hello["channels"]), ["alerts"], "{hello}");
    let (mut authed, hello) = connect_token(&router, &hs256(&key, &claims("alice", 600))).await;
    assert_eq!(keys(&hello["channels"]), ["alerts", "jobs"], "{hello}");

    let sub = anon
        .request(json!({"action": "subscribe", "events": ["*"]}))
        .await;
    assert_eq!(sub["type"], "subscribed", "{sub}");

    router.publish_ok(&job("j1")).await;
    router.publish_ok(&alert("a1")).await;
    let ev = authed.recv().await;
    assert_eq!(ev["type"], "job.progress", "{ev}");
    let ev = authed.recv().await;
    assert_eq!(ev["type"], "alert.created", "{ev}");
    let ev = anon.recv().await;
    assert_eq!(
        ev["type"], "alert.created",
        "a require_auth event leaked: {ev}"
    );
    anon.expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_endpoint_refuses_anonymous_with_1008() {
    let var = "SY_TEST_JWT_REQAUTH_ENDPOINT";
    let key = secret(var);
    let cfg = config("", &jwt_auth("optional", var, "", "")).replacen(
        "channels = [\"alerts\", \"jobs\"]\n",
        "channels = [\"alerts\", \"jobs\"]\nrequire_auth = true\n",
        1,
    );
    assert!(cfg.contains("require_auth = true"));
    let router = start(&cfg).await;
    assert_token_refused(
        &router,
        "/ws/events",
        "anonymous on a require_auth endpoint",
        "this endpoint requires authentication: send a token",
    )
    .await;
    let (mut c, hello) = connect_token(&router, &hs256(&key, &claims("alice", 600))).await;
    assert_eq!(hello["user"], "alice");
    assert_alive(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_making_endpoint_require_auth_closes_anonymous_with_1008() {
    let var = "SY_TEST_JWT_REQAUTH_RELOAD";
    let key = secret(var);
    let cfg = config("", &jwt_auth("optional", var, "", ""));
    let router = start(&cfg).await;
    let (mut anon, _) = connect_anonymous(&router).await;
    let (mut authed, _) = connect_token(&router, &hs256(&key, &claims("alice", 600))).await;

    router.write_config(&cfg.replacen(
        "channels = [\"alerts\", \"jobs\"]\n",
        "channels = [\"alerts\", \"jobs\"]\nrequire_auth = true\n",
        1,
    ));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");

    let (code, reason) = anon.close_frame().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "access withdrawn by a configuration reload"),
        "anonymous connection after reload"
    );
    assert_alive(&mut authed).await;
    router.publish_ok(&alert("a1")).await;
    assert_eq!(authed.recv().await["type"], "alert.created");
    // New anonymous connections are refused too.
    assert_token_refused(
        &router,
        "/ws/events",
        "anonymous after reload",
        "this endpoint requires authentication: send a token",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_to_required_mode_closes_anonymous_with_1008() {
    let var = "SY_TEST_JWT_MODE_RELOAD";
    let key = secret(var);
    let cfg = config("", &jwt_auth("optional", var, "", ""));
    let router = start(&cfg).await;
    let (mut anon, _) = connect_anonymous(&router).await;
    let (mut authed, _) = connect_token(&router, &hs256(&key, &claims("alice", 600))).await;
    router.write_config(&cfg.replacen("mode = \"optional\"", "mode = \"required\"", 1));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    let (code, reason) = anon.close_frame().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "access withdrawn by a configuration reload"),
        "anonymous connection after the switch to required"
    );
    assert_alive(&mut authed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_making_channels_require_auth_withholds_then_closes_anonymous() {
    let var = "SY_TEST_JWT_REQAUTH_CH_RELOAD";
    let key = secret(var);
    let cfg = config("", &jwt_auth("optional", var, "", ""));
    let router = start(&cfg).await;
    let (mut anon, _) = connect_anonymous(&router).await;
    let (mut authed, _) = connect_token(&router, &hs256(&key, &claims("alice", 600))).await;

    // jobs becomes require_auth: the anonymous connection stays, without jobs.
    let jobs_protected = cfg.replacen(
        "name = \"jobs\"\n",
        "name = \"jobs\"\nrequire_auth = true\n",
        1,
    );
    router.write_config(&jobs_protected);
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    router.publish_ok(&job("j1")).await;
    router.publish_ok(&alert("a1")).await;
    assert_eq!(authed.recv().await["type"], "job.progress");
    assert_eq!(authed.recv().await["type"], "alert.created");
    let ev = anon.recv().await;
    assert_eq!(
        ev["type"], "alert.created",
        "a withdrawn channel leaked: {ev}"
    );
    anon.expect_silence(QUIET).await;

    // Every channel of the endpoint require_auth: closed with 1008
    // (docs/protocol.md, "Close codes").
    router.write_config(&jobs_protected.replacen(
        "name = \"alerts\"\n",
        "name = \"alerts\"\nrequire_auth = true\n",
        1,
    ));
    let (status, body) = router.reload().await;
    assert_eq!(status, 200, "{body}");
    let (code, reason) = anon.close_frame().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "access withdrawn by a configuration reload"),
        "anonymous connection with no channel left"
    );
    assert_alive(&mut authed).await;
}

// --------------------------------------------------------- token expiry

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_closes_4001() {
    let (router, key) = start_jwt("required", "SY_TEST_JWT_EXPIRY", "", "", "leeway_s = 0").await;
    // A few seconds of validity, so a slow connect still sees it valid; the
    // close is waited for (close_frame's generous bound), not timed.
    let exp = now() + TOKEN_LIFE_S;
    let (mut c, hello) =
        connect_token(&router, &hs256(&key, &json!({"sub": "alice", "exp": exp}))).await;
    assert_time(&hello["expires_at"], exp);
    let (code, reason) = c.close_frame().await;
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
    assert!(now() >= exp, "closed before the token's exp ({exp})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_with_a_later_token_moves_the_expiry() {
    let (router, key) = start_jwt("required", "SY_TEST_JWT_REFRESH", "", "", "leeway_s = 0").await;
    let old_exp = now() + TOKEN_LIFE_S;
    let alice = hs256(&key, &json!({"sub": "alice", "exp": old_exp}));
    let (mut c, _) = connect_token(&router, &alice).await;
    let later = now() + 600;
    let token = hs256(&key, &json!({"sub": "alice", "exp": later}));
    let reply = c
        .request(json!({"action": "refresh", "token": token}))
        .await;
    assert_eq!(reply["type"], "refreshed", "{reply}");
    assert_eq!(reply["action"], "refreshed", "{reply}");
    assert_time(&reply["expires_at"], later);
    // No close at the old time: quiet until a second past it.
    let until_past_old = (old_exp + 1 - now()).max(0) as u64;
    c.expect_silence(Duration::from_secs(until_past_old)).await;
    assert_alive(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_with_another_users_token_is_invalid_and_changes_nothing() {
    let (router, key) = start_jwt(
        "optional",
        "SY_TEST_JWT_REFRESH_OTHER",
        "",
        "",
        "leeway_s = 0",
    )
    .await;
    let (mut c, _) = connect_token(&router, &hs256(&key, &claims("alice", TOKEN_LIFE_S))).await;
    let bob = hs256(&key, &claims("bob", 600));
    let reply = c
        .request(json!({"action": "refresh", "token": bob, "id": 7}))
        .await;
    assert_error(&reply, "invalid_token");
    assert_eq!(reply["id"], 7, "{reply}");
    let bad = hs256("not-the-secret", &claims("alice", 600));
    let reply = c.request(json!({"action": "refresh", "token": bad})).await;
    assert_error(&reply, "invalid_token");
    // Unchanged: still expires at the old time.
    let (code, reason) = c.close_frame().await;
    assert_eq!(
        (code, reason.as_str()),
        (4001, "token expired"),
        "the connection keeps its old expiry"
    );

    // An anonymous connection cannot refresh.
    let (mut anon, _) = connect_anonymous(&router).await;
    let alice = hs256(&key, &claims("alice", 600));
    let reply = anon
        .request(json!({"action": "refresh", "token": alice}))
        .await;
    assert_error(&reply, "invalid_token");
    assert_alive(&mut anon).await;
}

// ------------------------------------------------------ connection limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_refuse_closes_the_new_connection_1008() {
    let (router, key) = start_jwt(
        "required",
        "SY_TEST_JWT_USER_REFUSE",
        "",
        "max_connections_per_user = 2\non_user_limit = \"refuse\"",
        "",
    )
    .await;
    let token = hs256(&key, &claims("alice", 600));
    let (mut c1, _) = connect_token(&router, &token).await;
    let (mut c2, _) = connect_token(&router, &token).await;
    assert_token_refused(
        &router,
        &format!("/ws/events?token={token}"),
        "third of alice",
        "too many connections for this user",
    )
    .await;
    assert_alive(&mut c1).await;
    assert_alive(&mut c2).await;
    // Another user is not affected.
    let (mut bob, _) = connect_token(&router, &hs256(&key, &claims("bob", 600))).await;
    assert_alive(&mut bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_evict_oldest_replaces_the_oldest() {
    let (router, key) = start_jwt(
        "required",
        "SY_TEST_JWT_USER_EVICT",
        "",
        "max_connections_per_user = 2\non_user_limit = \"evict_oldest\"",
        "",
    )
    .await;
    let token = hs256(&key, &claims("alice", 600));
    let (mut c1, _) = connect_token(&router, &token).await;
    let (mut c2, _) = connect_token(&router, &token).await;
    let (mut c3, hello) = connect_token(&router, &token).await;
    assert_eq!(hello["user"], "alice");
    let (code, reason) = c1.close_frame().await;
    assert_eq!((code, reason.as_str()), (1008, "replaced"));
    assert_alive(&mut c2).await;
    assert_alive(&mut c3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_per_ip_limit_closes_the_extra_connection_1008() {
    let (router, key) = start_jwt(
        "optional",
        "SY_TEST_JWT_ANON_IP",
        "",
        "max_anonymous_per_ip = 2",
        "",
    )
    .await;
    let (mut a1, _) = connect_anonymous(&router).await;
    let (mut a2, _) = connect_anonymous(&router).await;
    assert_token_refused(
        &router,
        "/ws/events",
        "third anonymous",
        "too many anonymous connections from this address",
    )
    .await;
    assert_alive(&mut a1).await;
    assert_alive(&mut a2).await;
    // An authenticated connection from the same address is not counted.
    let (mut c, _) = connect_token(&router, &hs256(&key, &claims("alice", 600))).await;
    assert_alive(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_upgrade_with_503() {
    let router = start(&config("max_connections = 2", AUTH_NONE)).await;
    let (mut c1, _) = connect_anonymous(&router).await;
    let (mut c2, _) = connect_anonymous(&router).await;
    let (status, retry, body) = http_refusal(router.try_ws("/ws/events", &[]).await);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    assert_retry_after(&retry);
    assert_alive(&mut c1).await;
    assert_alive(&mut c2).await;
}

/// Upgrades that race each other are counted too: the check before the
/// upgrade also counts connections upgraded but not yet in the router, so
/// a burst of clients cannot all pass it before the first of them enters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_for_upgrades_that_race() {
    let router = start(&config("max_connections = 3", AUTH_NONE)).await;
    let attempts = (0..60).map(|_| {
        let url = format!("ws://{}/ws/events", router.addr);
        tokio::spawn(async move { tokio_tungstenite::connect_async(url).await.ok() })
    });
    let mut open = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        if let Some((socket, _)) = attempt.await.unwrap() {
            open.push(socket);
        }
    }
    let upgraded = open.len();
    tokio::time::sleep(QUIET).await;
    let held = router.app.router.connection_count();
    assert!(
        upgraded <= 3 && held <= 3,
        "max_connections = 3, yet {upgraded} upgrades were answered 101 and the router holds {held}"
    );
}

/// Sends a plain `GET /health` on a fresh TCP connection; returns what came
/// back before the server closed or `wait` passed.
async fn raw_health(router: &Router, wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(router.addr).await.unwrap();
    let request = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    // The write may fail on a connection the server has already closed.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_handshakes_closes_extra_connections_without_a_response() {
    let router = start(&config("max_pending_handshakes = 2", AUTH_NONE)).await;
    // Two connections that never send a request hold both places.
    let idle: Vec<tokio::net::TcpStream> = vec![
        tokio::net::TcpStream::connect(router.addr).await.unwrap(),
        tokio::net::TcpStream::connect(router.addr).await.unwrap(),
    ];
    // Accepting is asynchronous: wait until the server holds both, which
    // shows as a third connection being closed without a response.
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = raw_health(&router, WAIT).await;
        if answer.is_empty() {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            Instant::now() < deadline,
            "a third connection kept being served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // They leave: new connections are served again.
    drop(idle);
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = raw_health(&router, WAIT).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(answer.is_empty(), "{answer}");
        assert!(
            Instant::now() < deadline,
            "no connection served after the idle ones left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    router.shutdown().await;
}

// ------------------------------------------------------------------ Origin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origin_is_refused_before_the_upgrade() {
    let router = start(&config("", AUTH_NONE)).await;
    let (status, _, body) = http_refusal(
        router
            .try_ws("/ws/events", &[("origin", "http://evil.example")])
            .await,
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden_origin", "{body}");

    let same = format!("http://{}", router.addr);
    let (mut c, response) = connect_with(&router, "/ws/events", &[("origin", &same)]).await;
    assert_eq!(response.status(), 101);
    established(&mut c).await;
    assert_alive(&mut c).await;
}

// --------------------------------------------------------------- keep-alive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sends_ping_frames_every_heartbeat_interval() {
    let router = start(&config("heartbeat_interval_s = 1", AUTH_NONE)).await;
    let (mut c, hello) = connect_anonymous(&router).await;
    assert_eq!(hello["heartbeat_interval_s"], 1, "{hello}");
    // Waits for two pings (a loaded machine may be late, so no count in a
    // fixed window); nothing else may arrive meanwhile.
    for ping in 1..=2 {
        let msg = tokio::time::timeout(WAIT, c.socket.next())
            .await
            .unwrap_or_else(|_| panic!("ping {ping} did not come within {WAIT:?}"));
        match msg {
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected only pings, got {other:?}"),
        }
    }
    assert_alive(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_4000() {
    let router = start(&config("heartbeat_interval_s = 1", AUTH_NONE)).await;
    let (mut c, _) = connect_anonymous(&router).await;
    // Neither read (so no pong is sent) nor write: two intervals, plus the
    // router's clock's lateness (whole seconds, docs/protocol.md "Keep-alive")
    // for the first Ping and for the close.
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let mut frames = Vec::new();
    loop {
        let msg = tokio::time::timeout(WAIT, c.socket.next())
            .await
            .expect("timed out waiting for close 4000");
        match msg {
            Some(Ok(Message::Ping(_))) => frames.push("ping"),
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(
                    (u16::from(frame.code), frame.reason.as_str()),
                    (4000, "heartbeat timeout"),
                    "after {frames:?}"
                );
                break;
            }
            other => panic!("expected pings then close 4000, got {other:?} after {frames:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_sending_is_not_closed() {
    let router = start(&config("heartbeat_interval_s = 1", AUTH_NONE)).await;
    let (mut c, _) = connect_anonymous(&router).await;
    // Send without reading: no pong replies, only messages count as alive.
    for _ in 0..7 {
        c.send(&json!({"action": "ping"})).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut pongs = 0;
    while pongs < 7 {
        let msg = tokio::time::timeout(WAIT, c.socket.next())
            .await
            .expect("timed out waiting for pongs");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "pong", "{v}");
                pongs += 1;
            }
            Some(Ok(Message::Ping(_))) => {}
            other => panic!("expected pongs, got {other:?} after {pongs} pongs"),
        }
    }
    assert_alive(&mut c).await;
}

// ------------------------------------------------------ client rate limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rate_limit_refuses_then_closes_1008() {
    let router = start(&config(
        "client_rate_limit = { messages_per_s = 1, burst = 2 }",
        AUTH_NONE,
    ))
    .await;
    let (mut c, _) = connect_anonymous(&router).await;
    for i in 0..5 {
        c.send(&json!({"action": "ping", "id": i})).await;
    }
    let mut replies = Vec::new();
    for i in 0..5 {
        let reply = c.recv().await;
        // Refused or not, each reply echoes its message's id
        // (docs/protocol.md, errors).
        assert_eq!(reply["id"], i, "{reply}");
        replies.push(reply);
    }
    let pongs = replies.iter().filter(|r| r["type"] == "pong").count();
    let limited: Vec<&Value> = replies.iter().filter(|r| r["type"] == "error").collect();
    assert_eq!(pongs, 2, "{replies:?}");
    assert_eq!(limited.len(), 3, "{replies:?}");
    for r in &limited {
        assert_error(r, "rate_limited");
    }

    // Keep going: more than 10 refusals within a minute close with 1008.
    let mut refusals = limited.len();
    for sent in 0..40 {
        c.send(&json!({"action": "ping"})).await;
        let msg = tokio::time::timeout(WAIT, c.socket.next())
            .await
            .expect("timed out waiting for a reply");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    assert_error(&v, "rate_limited");
                    refusals += 1;
                } else {
                    assert_eq!(v["type"], "pong", "{v}");
                }
            }
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(
                    (u16::from(frame.code), frame.reason.as_str()),
                    (1008, "rate limit exceeded")
                );
                assert_eq!(refusals, 10, "close after the 11th refusal");
                return;
            }
            other => panic!("after {sent} more messages: {other:?}"),
        }
    }
    panic!("not closed after {refusals} rate_limited errors");
}

/// A `rate_limited` error echoes the refused message's `id` (as every
/// error does), and has none when the message had none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_errors_echo_the_message_id() {
    let router = start(&config(
        "client_rate_limit = { messages_per_s = 0.01, burst = 1 }",
        AUTH_NONE,
    ))
    .await;
    let (mut c, _) = connect_anonymous(&router).await;
    let pong = c.request(json!({"action": "ping", "id": "first"})).await;
    assert_eq!(
        (&pong["type"], &pong["id"]),
        (&json!("pong"), &json!("first"))
    );
    for id in [json!(7), json!("seven")] {
        let refused = c.request(json!({"action": "ping", "id": id})).await;
        assert_error(&refused, "rate_limited");
        assert_eq!(refused["id"], id, "{refused}");
    }
    let refused = c.request(json!({"action": "ping"})).await;
    assert_error(&refused, "rate_limited");
    assert!(refused.get("id").is_none(), "{refused}");
}

// ----------------------------------------------------- publish rate limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rate_limit_per_ip_without_auth() {
    let router = start(&config(
        "publish_rate_limit = { requests_per_s = 1, burst = 2 }",
        AUTH_NONE,
    ))
    .await;
    for i in 0..2 {
        let (status, _, body) =
            post_raw(&router, "/api/events", &alert(&format!("a{i}")), &[]).await;
        assert_eq!(status, 202, "request {i}: {body}");
    }
    let (status, retry, body) = post_raw(&router, "/api/events", &alert("a3"), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_retry_after(&retry);
}

/// A router in mode `optional` (its JWT secret in `jwt_var`) with `keys`
/// (`[auth]` lines) whose publishers each get a burst of two requests.
async fn with_a_publish_burst_of_two(jwt_var: &str, keys: &str) -> Router {
    start_jwt(
        "optional",
        jwt_var,
        "publish_rate_limit = { requests_per_s = 1, burst = 2 }",
        keys,
        "",
    )
    .await
    .0
}

/// Publishes twice with `headers`, each accepted: a burst of two spent.
async fn spend_a_burst_of_two(router: &Router, headers: &[(&str, &str)]) {
    for i in 0..2 {
        let (status, _, body) = post_raw(router, "/api/events", &alert("x"), headers).await;
        assert_eq!(status, 202, "request {i}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rate_limit_is_per_key() {
    std::env::set_var("SY_TEST_KEYS_RATE", "one:secret-one,two:secret-two");
    let router = with_a_publish_burst_of_two(
        "SY_TEST_JWT_PUBLISH_RATE",
        "api_keys_env = \"SY_TEST_KEYS_RATE\"",
    )
    .await;
    let one = [("authorization", "Bearer secret-one")];
    let two = [("authorization", "Bearer secret-two")];
    spend_a_burst_of_two(&router, &one).await;
    let (status, retry, body) = post_raw(&router, "/api/events", &alert("x"), &one).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_retry_after(&retry);
    let (status, _, body) = post_raw(&router, "/api/events", &alert("x"), &two).await;
    assert_eq!(status, 202, "another key still gets through: {body}");
}

/// Unnamed keys are numbered in each list: the first publish key and the
/// first admin key, two different secrets, were both `key-1`, and so
/// shared one publish bucket (and one name in the logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_publish_and_admin_keys_do_not_share_a_rate_limit() {
    std::env::set_var("SY_TEST_KEYS_UNNAMED", "publish-secret");
    std::env::set_var("SY_TEST_ADMIN_UNNAMED", "admin-secret");
    let router = with_a_publish_burst_of_two(
        "SY_TEST_JWT_UNNAMED_RATE",
        "api_keys_env = \"SY_TEST_KEYS_UNNAMED\"\nadmin_keys_env = \"SY_TEST_ADMIN_UNNAMED\"",
    )
    .await;
    let publisher = [("authorization", "Bearer publish-secret")];
    let operator = [("authorization", "Bearer admin-secret")];
    spend_a_burst_of_two(&router, &publisher).await;
    let (status, _, body) = post_raw(&router, "/api/events", &alert("x"), &operator).await;
    assert_eq!(status, 202, "the admin key has a bucket of its own: {body}");
}

// ------------------------------------------------------ operator disconnect

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_disconnect_by_connection_id() {
    let router = start(&config("", AUTH_NONE)).await;
    let (mut a, hello) = connect_anonymous(&router).await;
    let (mut b, _) = connect_anonymous(&router).await;
    let id = hello["connection_id"].as_str().expect("connection_id");
    let (status, body) = router
        .post("/api/admin/disconnect", &json!({"connection_id": id}))
        .await;
    assert_eq!(
        (status, body.clone()),
        (200, json!({"closed": 1})),
        "{body}"
    );
    let (code, reason) = a.close_frame().await;
    assert_eq!((code, reason.as_str()), (1008, "disconnected by operator"));
    assert_alive(&mut b).await;

    let (status, body) = router
        .post(
            "/api/admin/disconnect",
            &json!({"connection_id": "no-such-id"}),
        )
        .await;
    assert_eq!(
        (status, body.clone()),
        (200, json!({"closed": 0})),
        "{body}"
    );
    assert_alive(&mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_disconnect_by_user() {
    std::env::set_var("SY_TEST_KEYS_DISCONNECT", "ops:ops-secret");
    let (router, key) = start_jwt(
        "optional",
        "SY_TEST_JWT_DISCONNECT",
        "",
        "api_keys_env = \"SY_TEST_KEYS_DISCONNECT\"",
        "",
    )
    .await;
    let alice = hs256(&key, &claims("alice", 600));
    let (mut a1, _) = connect_token(&router, &alice).await;
    let (mut a2, _) = connect_token(&router, &alice).await;
    let (mut bob, _) = connect_token(&router, &hs256(&key, &claims("bob", 600))).await;
    let (mut anon, _) = connect_anonymous(&router).await;
    let admin = [("authorization", "Bearer ops-secret")];
    let (status, _, body) = post_raw(
        &router,
        "/api/admin/disconnect",
        &json!({"user": "alice"}),
        &admin,
    )
    .await;
    assert_eq!(
        (status, body.clone()),
        (200, json!({"closed": 2})),
        "{body}"
    );
    for c in [&mut a1, &mut a2] {
        let (code, reason) = c.close_frame().await;
        assert_eq!((code, reason.as_str()), (1008, "disconnected by operator"));
    }
    assert_alive(&mut bob).await;
    assert_alive(&mut anon).await;

    let (status, _, body) = post_raw(
        &router,
        "/api/admin/disconnect",
        &json!({"user": "nobody"}),
        &admin,
    )
    .await;
    assert_eq!(
        (status, body.clone()),
        (200, json!({"closed": 0})),
        "{body}"
    );
}

// -------------------------------------------------------- graceful shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_every_queued_event_then_closes_1012() {
    let router = start(&config("", AUTH_NONE)).await;
    let (mut c, _) = connect_anonymous(&router).await;
    let sub = c
        .request(json!({"action": "subscribe", "events": ["alert.*"]}))
        .await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    for batch in 0..4 {
        let events: Vec<Value> = (0..50).map(|i| alert(&format!("{batch}-{i}"))).collect();
        router.publish_ok(&Value::Array(events)).await;
    }
    let shutdown = tokio::spawn(router.shutdown());
    let reader = tokio::spawn(async move {
        let mut sequences = Vec::new();
        loop {
            let msg = tokio::time::timeout(WAIT, c.socket.next())
                .await
                .expect("timed out reading during shutdown");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!(v["type"], "alert.created", "{v}");
                    sequences.push(v["sequence"].as_u64().expect("sequence"));
                }
                Some(Ok(Message::Close(frame))) => {
                    let frame = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return (sequences, frame);
                }
                Some(Ok(_)) => {}
                other => panic!("after {} events: {other:?}", sequences.len()),
            }
        }
    });
    let (sequences, close) = reader.await.unwrap();
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown finished")
        .unwrap();
    assert_eq!(sequences, (1..=200).collect::<Vec<u64>>());
    assert_eq!(
        close,
        Some((1012, "service restart".to_owned())),
        "close after the flushed events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_shutdown_health_is_503_and_new_requests_get_shutting_down() {
    // A client that never reads, with far more queued than the socket
    // buffers hold, keeps the flush (and so the shutdown window) open for
    // shutdown_timeout_s.
    let router = start(&config(
        "shutdown_timeout_s = 5\nmax_event_bytes = 1048576\nmax_publish_bytes = 8388608",
        AUTH_NONE,
    ))
    .await;
    let mut stuck = router.stalled("/ws/events").await;
    let big = "x".repeat(900_000);
    for _ in 0..6 {
        let events: Vec<Value> = (0..4)
            .map(|_| json!({"type": "alert.created", "payload": {"id": big, "severity": "low"}}))
            .collect();
        router.publish_ok(&Value::Array(events)).await;
    }

    let addr = router.addr;
    let url = |path: &str| format!("http://{addr}{path}");
    let started = Instant::now();
    let shutdown = tokio::spawn(router.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let response = reqwest::get(url("/health")).await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "shutting_down", "{body}");

    let response = reqwest::get(url("/health/live")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let response = reqwest::Client::new()
        .post(url("/api/events"))
        .json(&alert("late"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");

    let request = format!("ws://{addr}/ws/events")
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            let body: Value = response
                .body()
                .as_deref()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            assert_eq!(body["error"]["code"], "shutting_down", "{body}");
        }
        Err(e) => panic!("expected 503 shutting_down for an upgrade, got {e}"),
        Ok((_, response)) => panic!("upgrade during shutdown got {}", response.status()),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the window was observed within shutdown_timeout_s"
    );

    // The flush is bounded by shutdown_timeout_s (the margin is for a loaded
    // machine).
    tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown finished within shutdown_timeout_s (+ margin)")
        .unwrap();
    let _ = stuck.socket.close(None).await;
}
