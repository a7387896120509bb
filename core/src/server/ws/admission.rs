//! Who a new WebSocket client is: its address, its token (from `?token=`,
//! `Authorization` or `Sec-WebSocket-Protocol: bearer, …`), and whether it
//! may connect. A refusal here is answered after the handshake with close
//! 1008 and a reason, so that browsers can see why.

use std::collections::BTreeMap;

use hyper::body::Incoming;

use crate::app::App;
use crate::auth::client_addr;
use crate::auth::jwt::{self, ChannelsClaim};
use crate::client_message;
use crate::config::{AuthMode, EndpointConfig};
use crate::protocol::Position;
use crate::router::{ConnectRequest, Snapshot};
use crate::server::Peer;

/// The outcome of admission, carried into the connection task.
#[derive(Debug)]
pub struct Admission {
    /// The connection to open, or the reason the socket is closed (1008)
    /// right after the handshake.
    pub verdict: Result<ConnectRequest, String>,
    /// The token came in the subprotocol header: answer with `bearer`.
    pub bearer_subprotocol: bool,
}

/// What the client asked for in the query string.
struct Query {
    events: Option<Vec<String>>,
    since: Option<BTreeMap<String, Position>>,
    token: Option<String>,
}

fn parse_query(query: Option<&str>) -> Result<Query, String> {
    let mut out = Query {
        events: None,
        since: None,
        token: None,
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "events" => {
                out.events = Some(
                    value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "since" => out.since = Some(client_message::parse_since_param(&value)?),
            "token" => out.token = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok(out)
}

fn header<'a>(req: &'a http::Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Decides who the client is; `Err` is a malformed query string (HTTP 400).
pub fn admit(
    app: &App,
    snap: &Snapshot,
    endpoint: &EndpointConfig,
    peer: Peer,
    req: &http::Request<Incoming>,
) -> Result<Admission, String> {
    let query = parse_query(req.uri().query())?;
    let client = client_addr(
        peer.0.ip(),
        req.headers(),
        &snap.config.server.trusted_proxies,
    );
    let mut request = ConnectRequest {
        endpoint: endpoint.path.clone(),
        user: None,
        ip: client.ip,
        expires_at: None,
        channel_claim: None,
        events: query.events,
        since: query.since,
        elsewhere: 0,
    };
    let found = jwt::token_from(
        query.token.as_deref(),
        header(req, "authorization"),
        header(req, "sec-websocket-protocol"),
    );
    let mode = snap.config.auth.mode;
    let bearer_subprotocol = mode != AuthMode::None && found.as_ref().is_some_and(|(_, sub)| *sub);
    let refuse = |reason: String| Admission {
        verdict: Err(reason),
        bearer_subprotocol,
    };
    match (mode, found) {
        (AuthMode::None, _) => {}
        (_, Some((token, _))) => match app.verifier.load().verify(&token) {
            Ok(claims) => {
                request.user = Some(claims.sub);
                request.expires_at = Some(claims.exp);
                request.channel_claim = match claims.channels {
                    ChannelsClaim::All => None,
                    ChannelsClaim::Only(names) => Some(names),
                };
            }
            Err(e) => return Ok(refuse(format!("invalid token: {e}"))),
        },
        (AuthMode::Required, None) => {
            return Ok(refuse("authentication required: send a token".into()));
        }
        (AuthMode::Optional, None) if endpoint.require_auth => {
            return Ok(refuse(
                "this endpoint requires authentication: send a token".into(),
            ));
        }
        (AuthMode::Optional, None) => {}
    }
    Ok(Admission {
        verdict: Ok(request),
        bearer_subprotocol,
    })
}
