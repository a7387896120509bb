//! `[server]`: the listener, TLS, limits and rate limits.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use ipnet::IpNet;
use serde_json::Value;

use crate::config::model::*;
use crate::config::read::{Reader, Tab};

/// serde_json refuses nesting deeper than this whatever the router allows,
/// so a larger `max_json_depth` would fail with a different error.
const SERDE_JSON_MAX_DEPTH: u64 = 127;

pub(super) fn server(
    r: &mut Reader<'_>,
    top: &mut Tab<'_>,
    folder: &Path,
    warnings: &mut Vec<String>,
) -> ServerConfig {
    let mut t = r.table(top, "server");
    let listen = r.parsed(
        &mut t,
        "listen",
        SocketAddr::from(([127, 0, 0, 1], 8080)),
        "an IP address and port such as 127.0.0.1:8080 or [::]:8080 (not a host name)",
    );
    let tls = tls(r, &mut t, folder);
    let trusted_proxies = r
        .strings(&mut t, "trusted_proxies")
        .into_iter()
        .filter_map(|(key, text)| {
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            if net.is_err() {
                r.problem(
                    &key,
                    Some(&Value::from(text)),
                    "must be a CIDR such as 10.0.0.0/8 or an IP address",
                );
            }
            net.ok()
        })
        .collect();
    let max_message_bytes = r.size(&mut t, "max_message_bytes", 65_536, 1);
    let max_publish_bytes = r.size(&mut t, "max_publish_bytes", 1_048_576, 1);
    let max_event_bytes = r.size(&mut t, "max_event_bytes", 65_536, 1);
    let max_json_depth = r.uint(&mut t, "max_json_depth", 32, 1, SERDE_JSON_MAX_DEPTH);
    let send_queue = r.size(&mut t, "send_queue", 1024, 1);
    let send_queue_bytes = r.size(&mut t, "send_queue_bytes", 8_388_608, 1);
    let socket_send_buffer = r.size(&mut t, "socket_send_buffer", 65_536, 0);
    let max_patterns = r.size(&mut t, "max_patterns", 128, 1);
    let max_pattern_bytes = r.size(&mut t, "max_pattern_bytes", 128, 1);
    let heartbeat_interval_s = r.uint(&mut t, "heartbeat_interval_s", 30, 1, u64::MAX);
    let handshake_timeout_s = r.uint(&mut t, "handshake_timeout_s", 10, 1, u64::MAX);
    let max_header_bytes = r.size(&mut t, "max_header_bytes", 32_768, 1024);
    let max_pending_handshakes = r.size(&mut t, "max_pending_handshakes", 1024, 1);
    let max_connections = r.size(&mut t, "max_connections", 100_000, 1);
    let shutdown_timeout_s = r.uint(&mut t, "shutdown_timeout_s", 10, 0, u64::MAX);
    let mut c = r.table(&mut t, "client_rate_limit");
    let client_rate_limit = ClientRateLimit {
        messages_per_s: r.rate(&mut c, "messages_per_s", 50.0),
        burst: burst(r, &mut c, 100),
    };
    r.finish(c);
    let mut p = r.table(&mut t, "publish_rate_limit");
    let publish_rate_limit = PublishRateLimit {
        requests_per_s: r.rate(&mut p, "requests_per_s", 1000.0),
        burst: burst(r, &mut p, 2000),
    };
    r.finish(p);
    let idempotency_window_s = r.uint(&mut t, "idempotency_window_s", 300, 0, u64::MAX);
    let publish_wait_ms = r.uint(&mut t, "publish_wait_ms", 50, 0, 10_000);
    r.finish(t);
    if send_queue_bytes < max_event_bytes {
        warnings.push(format!(
            "server.send_queue_bytes ({send_queue_bytes}) is below server.max_event_bytes \
             ({max_event_bytes}): an event larger than the queue can never be delivered"
        ));
    }
    ServerConfig {
        listen,
        tls,
        trusted_proxies,
        max_message_bytes,
        max_publish_bytes,
        max_event_bytes,
        max_json_depth: usize::try_from(max_json_depth).unwrap_or(32),
        send_queue,
        send_queue_bytes,
        socket_send_buffer,
        max_patterns,
        max_pattern_bytes,
        heartbeat_interval_s,
        handshake_timeout_s,
        max_header_bytes,
        max_pending_handshakes,
        max_connections,
        shutdown_timeout_s,
        client_rate_limit,
        publish_rate_limit,
        idempotency_window_s,
        publish_wait_ms,
    }
}

/// A token bucket's burst: at least 1, or nothing would ever pass.
fn burst(r: &mut Reader<'_>, t: &mut Tab<'_>, default: u32) -> u32 {
    let n = r.uint(t, "burst", u64::from(default), 1, u64::from(u32::MAX));
    u32::try_from(n).unwrap_or(default)
}

pub(super) fn tls(r: &mut Reader<'_>, server: &mut Tab<'_>, folder: &Path) -> Option<TlsConfig> {
    let mut t = r.table(server, "tls");
    let cert = r.optional(&mut t, "cert_file", "");
    let key = r.optional(&mut t, "key_file", "");
    let (cert_key, key_key) = (t.key("cert_file"), t.key("key_file"));
    r.finish(t);
    match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert_file: folder.join(cert),
            key_file: folder.join(key),
        }),
        (Some(_), None) => {
            let text = format!("is required when {cert_key} is set");
            r.problem(&key_key, None, text);
            None
        }
        (None, Some(_)) => {
            let text = format!("is required when {key_key} is set");
            r.problem(&cert_key, None, text);
            None
        }
    }
}
