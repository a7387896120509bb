//! `server.tls`: the router serves `wss://` and `https://` itself with a
//! certificate read from files, and a reload with a bad file is refused.

use crate::support;

use std::sync::Arc;

use futures_util::StreamExt;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for `localhost`, written to `dir`.
fn certificate(dir: &std::path::Path) -> CertificateDer<'static> {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), generated.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
    generated.cert.der().clone()
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the router")
}

fn config(dir: &std::path::Path) -> String {
    let tls = format!(
        "tls = {{ cert_file = {:?}, key_file = {:?} }}",
        dir.join("cert.pem").display().to_string(),
        dir.join("key.pem").display().to_string()
    );
    support::BASE.replace("[server]\n", &format!("[server]\n{tls}\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_wss_and_https_with_the_configured_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let cert = certificate(certs.path());
    let router = support::start(&config(certs.path())).await;

    let mut https = tls_connect(router.addr, &cert).await;
    https
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    https.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");

    let stream = tls_connect(router.addr, &cert).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws/events", stream)
        .await
        .unwrap();
    let hello = loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            break serde_json::from_str::<serde_json::Value>(&t).unwrap();
        }
    };
    assert_eq!(hello["type"], "connection.established");

    // An event stream, written on the TLS socket taken back from hyper.
    let mut sse = tls_connect(router.addr, &cert).await;
    sse.write_all(
        b"GET /ws/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("connection.established") {
        let mut buf = [0u8; 4096];
        let n = sse.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "the stream ended: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
    assert!(seen.contains("transfer-encoding: chunked\r\n"), "{seen}");

    // Plain HTTP on a TLS port is not served: it is told, in plain HTTP.
    let mut plain = TcpStream::connect(router.addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(!answer.contains("\"status\""), "{answer}");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap())
        .unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(body["error"]["code"], "tls_required", "{answer}");
    router.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_certificate_refuses_the_reload_and_tls_keeps_serving() {
    let certs = tempfile::tempdir().unwrap();
    let cert = certificate(certs.path());
    let router = support::start(&config(certs.path())).await;
    std::fs::write(certs.path().join("key.pem"), "not a key").unwrap();
    let (status, body) = reload_over_tls(router.addr, &cert).await;
    assert_eq!(status, 422, "{body}");
    let errors = body["error"]["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e["key"] == "server.tls"), "{body}");
    let still = tls_connect(router.addr, &cert).await;
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws/events", still)
        .await
        .unwrap();
    assert!(
        matches!(ws.next().await, Some(Ok(Message::Text(_)))),
        "the old certificate keeps serving"
    );
    router.shutdown().await;
}

/// `POST /api/admin/reload` over TLS (the harness's client speaks plain HTTP).
async fn reload_over_tls(
    addr: std::net::SocketAddr,
    cert: &CertificateDer<'static>,
) -> (u16, serde_json::Value) {
    let mut s = tls_connect(addr, cert).await;
    s.write_all(
        b"POST /api/admin/reload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = body.lines().find(|l| l.starts_with('{')).unwrap_or("null");
    (status, serde_json::from_str(json).unwrap())
}
