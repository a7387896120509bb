//! Who a new client is, WebSocket or event stream: the checks before a
//! connection is opened (answered in HTTP), its address, its token (from
//! `?token=`, `Authorization` or `Sec-WebSocket-Protocol: bearer, …`),
//! whether it may connect (a refusal here is answered once the connection
//! is open — close 1008 or a last `connection.closed` — so that browsers
//! can see why), and its entry into and exit from the router, counted
//! across a cluster.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::app::{close_for_shutdown, App};
use crate::auth::client_addr;
use crate::auth::jwt::{self, ChannelsClaim};
use crate::client_message;
use crate::cluster::leases;
use crate::config::{AuthMode, EndpointConfig};
use crate::connection::ConnRef;
use crate::names;
use crate::protocol::Position;
use crate::router::{ConnectRequest, Snapshot};
use crate::server::{reply, Peer, Response};

/// A connection refused before it is opened: the metric reason (for the
/// reasons `switchyard_upgrades_refused_total` lists) and the answer.
pub struct Refusal {
    /// The metric reason, if counted.
    pub reason: Option<&'static str>,
    /// The HTTP answer.
    pub response: Response,
}

impl Refusal {
    /// The answer, counted.
    pub fn counted(self, app: &App) -> Response {
        if let Some(reason) = self.reason {
            app.router.metrics().refuse_upgrade(reason);
        }
        self.response
    }
}

/// A counted refusal: the code is the metric reason.
pub fn refusal(status: StatusCode, code: &'static str, message: &str) -> Refusal {
    Refusal {
        reason: Some(code),
        response: reply::error(status, code, message, json!({})),
    }
}

/// A WebSocket upgrade or an event stream asked of a path that is no
/// endpoint: 404 listing the endpoints (and the nearest, if one is close),
/// counted, and noted for coverage's `unknown_endpoints_requested`.
pub fn unknown_endpoint(app: &App, snap: &Snapshot, path: &str) -> Refusal {
    app.router.coverage().unknown_endpoint(path);
    let endpoints: Vec<&str> = snap
        .config
        .endpoints
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    let mut extra = json!({ "endpoints": endpoints });
    if let Some(close) = names::did_you_mean(path, endpoints.iter().copied()) {
        extra["did_you_mean"] = json!(close);
    }
    Refusal {
        reason: Some("unknown_endpoint"),
        response: reply::error(
            StatusCode::NOT_FOUND,
            "unknown_endpoint",
            &format!("no endpoint at {path}"),
            extra,
        ),
    }
}

/// A refusal the metric does not list (a malformed request).
pub fn bad_request(code: &str, message: &str) -> Refusal {
    Refusal {
        reason: None,
        response: reply::error(StatusCode::BAD_REQUEST, code, message, json!({})),
    }
}

/// A new connection on its way in: past the shutdown check, not yet in the
/// router, counted in [`App::opening`] while it lives. A shutdown that
/// begins meanwhile cannot see it to close it, so it waits for these to
/// enter ([`enter`] closes them itself) or give up.
pub struct Opening(Arc<App>);

impl Opening {
    fn new(app: &Arc<App>) -> Opening {
        app.opening.fetch_add(1, Ordering::SeqCst);
        Opening(app.clone())
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What every new connection must pass before it is opened: the router not
/// shutting down, an allowed `Origin`, room under `server.max_connections`.
/// What passes is [`Opening`] until [`enter`] takes it.
// A refusal is answered at once; boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
pub fn before_opening(
    app: &Arc<App>,
    snap: &Snapshot,
    headers: &HeaderMap,
) -> Result<Opening, Refusal> {
    // Counted before the check: a shutdown that sets its flag after the
    // check then finds this one counted, and waits for it.
    let opening = Opening::new(app);
    if app.is_shutting_down() {
        return Err(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the router is shutting down; reconnect to another node or retry shortly",
        ));
    }
    if !super::api::admit_origin(app, headers) {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            "this Origin is not in auth.allowed_origins",
        ));
    }
    // Connections past this check but not yet in the router (upgrading, or
    // waiting for their turn on a lane) count too, or a burst of upgrades
    // would all pass it before the first of them entered.
    let entering = app.opening.load(Ordering::SeqCst).saturating_sub(1);
    if app.router.connection_count() + entering >= snap.config.server.max_connections {
        let mut refused = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the router holds its maximum number of connections; retry later",
        );
        refused.response = reply::retry_after(refused.response, 5);
        return Err(refused);
    }
    Ok(opening)
}

/// Opens an admitted connection, counting the same user's (or address's)
/// connections on the other nodes of a cluster, and leasing this one
/// before the client hears `connection.established`. One that enters
/// after a shutdown began is closed with 1012 at once, as the shutdown
/// closed the others before it could see this one.
pub async fn enter(
    app: &App,
    verdict: Result<ConnectRequest, String>,
    opening: Opening,
) -> Result<ConnRef, String> {
    let mut verdict = verdict;
    if let (Ok(request), Some(cluster)) = (&mut verdict, &app.cluster) {
        request.elsewhere = leases::elsewhere(&cluster.shared, request).await;
    }
    let conn =
        verdict.and_then(|request| app.router.connect(request).map_err(|e| e.to_string()))?;
    if app.is_shutting_down() {
        close_for_shutdown(&conn);
    }
    if let Some(cluster) = &app.cluster {
        leases::change(&cluster.shared, &conn, 1).await;
    }
    drop(opening);
    Ok(conn)
}

/// Forgets a connection whose transport has ended (and its lease).
pub fn leave(app: &App, conn: &ConnRef) {
    app.router.disconnect(conn);
    if let Some(cluster) = &app.cluster {
        let (shared, conn) = (cluster.shared.clone(), conn.clone());
        tokio::spawn(async move { leases::change(&shared, &conn, -1).await });
    }
}

/// The outcome of admission, carried into the connection task.
#[derive(Debug)]
pub struct Admission {
    /// The connection to open, or the reason the socket is closed (1008)
    /// right after the handshake.
    pub verdict: Result<ConnectRequest, String>,
    /// The client offered the `bearer` subprotocol: answer with it.
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
            // An empty `since=` asks for nothing: it leaves an event
            // stream's `Last-Event-ID` to recover from.
            "since" => {
                out.since = Some(client_message::parse_since_param(&value)?)
                    .filter(|since| !since.is_empty())
            }
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
    let bearer_subprotocol = jwt::offers_bearer(header(req, "sec-websocket-protocol"));
    let refuse = |reason: String| Admission {
        verdict: Err(reason),
        bearer_subprotocol,
    };
    match (mode, found) {
        (AuthMode::None, _) => {}
        (_, Some(token)) => match app.verifier.load().verify(&token) {
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
