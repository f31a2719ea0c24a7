//! Simulated clients of a relay: a WebSocket client (fastwebsockets, like the relay's
//! integration tests) and one-shot HTTP requests, both over turmoil sockets.

use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Bound on connecting, upgrading and the protocol handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a read from the relay gave.
pub enum Received {
    Message(Value),
    /// The relay closed the connection, with its close code if it sent one.
    Closed(Option<u16>),
}

/// A WebSocket client of one relay; answers pings automatically while reading.
pub struct WsClient {
    ws: FragmentCollector<TokioIo<Upgraded>>,
}

impl WsClient {
    /// Connects to `addr` (`host:port`) and completes the protocol handshake with
    /// `capabilities`; returns the client and the relay id that accepted it.
    pub async fn handshaken(
        addr: &str,
        client_id: &str,
        capabilities: &[&str],
    ) -> Result<(WsClient, String), String> {
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            Self::handshake(addr, client_id, capabilities),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
    }

    async fn handshake(
        addr: &str,
        client_id: &str,
        capabilities: &[&str],
    ) -> Result<(WsClient, String), String> {
        let stream = turmoil::net::TcpStream::connect(addr.to_string())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let request = sdk_relay::conn::client::upgrade_request(addr);
        let (ws, _) = fastwebsockets::handshake::client(
            &sdk_relay::conn::client::SpawnExecutor,
            request,
            stream,
        )
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
        let mut client = WsClient {
            ws: FragmentCollector::new(ws),
        };
        client
            .send(&serde_json::json!({
                "type": "handshake", "client_id": client_id, "version": "1.0.0",
                "capabilities": capabilities,
            }))
            .await?;
        loop {
            match client.recv().await {
                Received::Message(m) if m["type"] == "handshake_response" => {
                    if m["status"] != "accepted" {
                        return Err(format!("handshake refused: {m}"));
                    }
                    let relay = m["relay_id"].as_str().unwrap_or_default().to_string();
                    return Ok((client, relay));
                }
                Received::Message(_) => continue,
                Received::Closed(code) => return Err(format!("closed with {code:?}")),
            }
        }
    }

    pub async fn send(&mut self, message: &Value) -> Result<(), String> {
        let text = message.to_string();
        self.ws
            .write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// The next text message, or how the connection ended.
    pub async fn recv(&mut self) -> Received {
        loop {
            let frame = match self.ws.read_frame().await {
                Ok(frame) => frame,
                Err(_) => return Received::Closed(None),
            };
            match frame.opcode {
                OpCode::Text => {
                    return match serde_json::from_slice(&frame.payload) {
                        Ok(value) => Received::Message(value),
                        Err(_) => Received::Closed(None),
                    };
                }
                OpCode::Close => {
                    let code = (frame.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                    return Received::Closed(code);
                }
                _ => continue,
            }
        }
    }

    /// Sends a close frame (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.ws.write_frame(Frame::close(1000, b"done")),
        )
        .await;
    }
}

/// `GET path` on `addr`; the parsed JSON body.
pub async fn http_get(addr: &str, path: &str) -> Result<Value, String> {
    http("GET", addr, path).await
}

/// `POST path` (no body) on `addr`; the parsed JSON body.
pub async fn http_post(addr: &str, path: &str) -> Result<Value, String> {
    http("POST", addr, path).await
}

async fn http(method: &str, addr: &str, path: &str) -> Result<Value, String> {
    tokio::time::timeout(CONNECT_TIMEOUT, request(method, addr, path))
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn request(method: &str, addr: &str, path: &str) -> Result<Value, String> {
    let stream = turmoil::net::TcpStream::connect(addr.to_string())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("Host", addr)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("json: {e}"))
}
