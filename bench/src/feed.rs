//! Where a subscriber's messages come from: a WebSocket, or a Server-Sent
//! Events stream on the same endpoint URL (`--transport sse`), read as raw
//! HTTP/1.0 so that the stream is the body itself. Plain TCP connections
//! are read through [`Stamped`], so that each message's arrival time is
//! known as well as the time it was read.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use futures_util::StreamExt;

use crate::stamped::Stamped;

/// How subscribers connect.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket upgrade.
    Ws,
    /// `GET` with `Accept: text/event-stream`.
    Sse,
}

/// An open subscriber connection.
pub enum Feed {
    /// WebSocket frames over plain TCP.
    Ws(Box<WebSocketStream<Stamped>>),
    /// WebSocket frames over TLS (`wss://`): no arrival times.
    Wss(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    /// Event-stream lines.
    Sse(BufReader<Stamped>),
}

impl Feed {
    /// Connects to `url` (`ws://host:port/path?query`) over `transport`.
    pub async fn open(url: &str, transport: Transport) -> Result<Feed, String> {
        match transport {
            Transport::Ws => {
                let config = WebSocketConfig::default()
                    .read_buffer_size(8 * 1024)
                    .write_buffer_size(0);
                if url.starts_with("wss://") {
                    return tokio_tungstenite::connect_async_with_config(url, Some(config), true)
                        .await
                        .map(|(ws, _)| Feed::Wss(Box::new(ws)))
                        .map_err(|e| e.to_string());
                }
                let (host, _) = split_url(url).map_err(|e| e.to_string())?;
                let stream = connect(host).await.map_err(|e| e.to_string())?;
                tokio_tungstenite::client_async_with_config(url, stream, Some(config))
                    .await
                    .map(|(ws, _)| Feed::Ws(Box::new(ws)))
                    .map_err(|e| e.to_string())
            }
            Transport::Sse => open_stream(url).await.map_err(|e| e.to_string()),
        }
    }

    /// The next JSON message; `Ok(None)` when the server ended the
    /// connection.
    pub async fn next_text(&mut self) -> Result<Option<String>, String> {
        match self {
            Feed::Ws(ws) => next_frame(ws).await,
            Feed::Wss(ws) => next_frame(ws).await,
            Feed::Sse(reader) => loop {
                let mut line = String::new();
                if reader
                    .read_line(&mut line)
                    .await
                    .map_err(|e| e.to_string())?
                    == 0
                {
                    return Ok(None);
                }
                if let Some(data) = line.strip_prefix("data: ") {
                    return Ok(Some(data.trim_end().to_owned()));
                }
            },
        }
    }

    /// When the last message read arrived at this end (ns since the
    /// epoch), where the connection can tell (see [`Stamped`]).
    pub fn arrived_ns(&self) -> Option<u64> {
        match self {
            Feed::Ws(ws) => ws.get_ref().arrived_ns(),
            Feed::Wss(_) => None,
            Feed::Sse(reader) => reader.get_ref().arrived_ns(),
        }
    }

    /// Closes the connection politely (a WebSocket close frame).
    pub async fn close(self) {
        match self {
            Feed::Ws(mut ws) => {
                let _ = ws.close(None).await;
            }
            Feed::Wss(mut ws) => {
                let _ = ws.close(None).await;
            }
            Feed::Sse(_) => {}
        }
    }
}

/// The next text frame of a WebSocket; `Ok(None)` once it is closed.
async fn next_frame<S>(ws: &mut WebSocketStream<S>) -> Result<Option<String>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(Some(t.to_string())),
            Some(Ok(Message::Close(_))) | None => return Ok(None),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// The `host:port` and the path (without its leading `/`) of a
/// `ws://host:port/path?query` URL.
fn split_url(url: &str) -> std::io::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| std::io::Error::other(format!("not a ws:// (http://) URL: {url}")))?;
    Ok(rest.split_once('/').unwrap_or((rest, "")))
}

/// A stamped, Nagle-free TCP connection to `host` (`host:port`).
async fn connect(host: &str) -> std::io::Result<Stamped> {
    let stream = TcpStream::connect(host).await?;
    stream.set_nodelay(true)?;
    Stamped::new(stream)
}

async fn open_stream(url: &str) -> std::io::Result<Feed> {
    let (host, path) = split_url(url)
        .map_err(|_| std::io::Error::other("--transport sse needs an http:// --url"))?;
    let mut stream = connect(host).await?;
    let request =
        format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).await?;
    if !status.contains(" 200 ") {
        return Err(std::io::Error::other(format!(
            "stream refused: {}",
            status.trim()
        )));
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).await? == 0 || header.trim().is_empty() {
            return Ok(Feed::Sse(reader));
        }
    }
}
