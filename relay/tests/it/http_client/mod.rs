//! A deliberately small HTTP/1.1 client over a raw `TcpStream`, so tests see exactly the
//! bytes the relay sends (status line, headers, body) and can misbehave on purpose
//! (lie about lengths, stall, hold connections open).

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::WAIT;

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the error shape `{"error":{"code","message"}}` and returns the message.
    pub fn error_message(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{body}");
        body["error"]["message"]
            .as_str()
            .expect("message is a string")
            .to_string()
    }
}

/// `GET path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    send(addr, "GET", path, &[], b"").await
}

/// One request on a fresh connection with `Connection: close`; the reply read to EOF.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    let declares_length = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !declares_length && (!body.is_empty() || method == "POST") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    read_reply(&mut stream).await
}

/// Reads one whole reply, until the relay closes the connection.
pub async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("reply in time")
        .expect("read reply");
    parse(&raw)
}

/// Parses a reply with a `Content-Length` body (what the relay sends).
pub fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A keep-alive connection that sends requests one after the other.
pub struct Conn {
    pub stream: TcpStream,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.expect("connect"),
        }
    }

    /// `GET path`, keeping the connection open; reads exactly one reply.
    pub async fn get(&mut self, path: &str) -> Reply {
        let head = format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n");
        self.stream.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("reply in time")
                .expect("read");
            assert!(n > 0, "connection closed before a whole reply");
            raw.extend_from_slice(&buf[..n]);
            if let Some(reply) = complete(&raw) {
                return reply;
            }
        }
    }
}

fn complete(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let reply = parse(raw);
    let length: usize = reply.header("content-length")?.parse().ok()?;
    (raw.len() >= split + 4 + length).then_some(reply)
}
