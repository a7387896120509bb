//! Where a subscriber's messages come from: a WebSocket, or a Server-Sent
//! Events stream on the same endpoint URL (`--transport sse`), read as raw
//! HTTP/1.0 so that the stream is the body itself.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use futures_util::StreamExt;

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
    /// WebSocket frames.
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    /// Event-stream lines.
    Sse(BufReader<TcpStream>),
}

impl Feed {
    /// Connects to `url` (`ws://host:port/path?query`) over `transport`.
    pub async fn open(url: &str, transport: Transport) -> Result<Feed, String> {
        match transport {
            Transport::Ws => {
                let config = WebSocketConfig::default()
                    .read_buffer_size(8 * 1024)
                    .write_buffer_size(0);
                tokio_tungstenite::connect_async_with_config(url, Some(config), true)
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
            Feed::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return Ok(Some(t.to_string())),
                    Some(Ok(Message::Close(_))) | None => return Ok(None),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                }
            },
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

    /// Closes the connection politely (a WebSocket close frame).
    pub async fn close(self) {
        if let Feed::Ws(mut ws) = self {
            let _ = ws.close(None).await;
        }
    }
}

async fn open_stream(url: &str) -> std::io::Result<Feed> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| std::io::Error::other("--transport sse needs an http:// --url"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(host).await?;
    stream.set_nodelay(true)?;
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
