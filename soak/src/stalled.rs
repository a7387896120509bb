//! A stalled client: upgrades by hand over a socket with a tiny receive
//! buffer, reads `connection.established` (for its id), then never reads
//! again — it only writes a Ping frame now and then, so the router's
//! heartbeat does not close it. At the end it reads what the router left,
//! looking for `connection.lagged` and a close frame.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::probe::Seen;
use crate::{Phase, Shared, StalledReport};

/// What one stalled client saw.
#[derive(Default)]
pub(crate) struct Stalled {
    connected: bool,
    pub(crate) connection_id: Option<String>,
    /// A ping could not be written: the router closed the socket.
    write_failed: bool,
    close_code: Option<u16>,
    lagged_seen: u64,
}

/// Adds one stalled client's figures to the report.
pub(crate) fn merge(report: &mut StalledReport, s: &Stalled, seen: &Seen) {
    if s.connected {
        report.connected += 1;
    }
    if s.write_failed || s.close_code.is_some() {
        report.closed += 1;
    }
    if let Some(code) = s.close_code {
        *report.close_codes.entry(code).or_default() += 1;
    }
    report.lagged_seen += s.lagged_seen;
    if let Some((dropped, depth)) = s.connection_id.as_ref().and_then(|id| seen.by_id.get(id)) {
        report.dropped += dropped;
        if *dropped > 0 {
            report.with_drops += 1;
        }
        report.max_queue_depth = report.max_queue_depth.max(*depth);
    }
}

pub(crate) async fn run(shared: Arc<Shared>, index: usize) -> Stalled {
    let mut out = Stalled::default();
    let Ok(mut stream) = connect(&shared).await else {
        shared
            .live
            .notes
            .push(format!("stalled client {index} could not connect"));
        return out;
    };
    out.connected = true;
    // The first frame is connection.established (unless a close came first).
    let mut buf = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some((op, payload, _)) = frame(&buf) {
                return Some((op, payload.to_vec()));
            }
            let mut chunk = [0u8; 512];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if let Ok(Some((1, payload))) = first {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) {
            out.connection_id = v["payload"]["connection_id"].as_str().map(str::to_owned);
        }
    }
    // Stall: write a masked, empty Ping every 5 s; never read.
    let mut seconds = 0u32;
    loop {
        if *shared.phase.borrow() == Phase::Stop {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        seconds += 1;
        if seconds % 20 == 0 && !out.write_failed {
            let ping = [0x89, 0x80, 0x12, 0x34, 0x56, 0x78];
            let wrote = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&ping)).await;
            if !matches!(wrote, Ok(Ok(()))) {
                out.write_failed = true;
            }
        }
    }
    // Read what the router left for us: lagged notices and a close frame.
    drain(&mut stream, &mut buf, &mut out).await;
    out
}

async fn connect(shared: &Shared) -> anyhow::Result<TcpStream> {
    // Spread over the nodes: stalled client i goes to a random one.
    let base = &shared.bases[shared.random_node(&mut rand::rng())];
    let host = base.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = base.port_or_known_default().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} does not resolve"))?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_recv_buffer_size(shared.options.stalled_rcvbuf)?;
    let mut stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr)).await??;
    let request = format!(
        "GET {}?events={} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: c3dpdGNoeWFyZC1zb2FrIQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        shared.options.endpoint,
        shared.patterns.join(",")
    );
    stream.write_all(request.as_bytes()).await?;
    // Read the response head byte by byte, so no frame is consumed with it.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16384 {
            anyhow::bail!("response head too long");
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await??;
        if n == 0 {
            anyhow::bail!("closed during the upgrade");
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head);
    if !status.starts_with("HTTP/1.1 101") {
        anyhow::bail!(
            "upgrade refused: {}",
            status.lines().next().unwrap_or_default()
        );
    }
    Ok(stream)
}

/// One complete frame at the start of `buf`: (opcode, payload, length).
fn frame(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let mut at: usize = 2;
    let len = match buf[1] & 0x7f {
        126 => {
            at += 2;
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize
        }
        127 => {
            at += 8;
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize
        }
        n => n as usize,
    };
    if masked {
        at += 4;
    }
    let payload = buf.get(at..at.checked_add(len)?)?;
    Some((opcode, payload, at + len))
}

async fn drain(stream: &mut TcpStream, buf: &mut Vec<u8>, out: &mut Stalled) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some((op, payload, len)) = frame(buf) {
            match op {
                8 => {
                    out.close_code = Some(match payload {
                        [a, b, ..] => u16::from_be_bytes([*a, *b]),
                        _ => 1005,
                    });
                    return;
                }
                0..=2 if payload.windows(19).any(|w| w == b"\"connection.lagged\"") => {
                    out.lagged_seen += 1;
                }
                _ => {}
            }
            buf.drain(..len);
        }
        let mut chunk = vec![0u8; 65536];
        let read = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            stream.read(&mut chunk),
        )
        .await;
        match read {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
}
