//! Tiny purpose-built servers that get one limit wrong on purpose, for the negative
//! controls of `loadtest limits`: an HTTP server whose every answer comes from a
//! policy, and a WebSocket server that speaks just enough of the relay's protocol
//! (upgrade, handshake, `notification_ack`) with a configurable connection cap, refusal
//! and message-size behaviour. Each runs on a thread of its own for the life of the
//! test process, on loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read.
const HEAD_BYTES_MAX: usize = 16 * 1024;

/// Binds a loopback listener on a thread of its own and serves every connection with
/// `serve`. Returns the address.
fn start<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send(listener.local_addr().expect("local addr"))
                .expect("test waits");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream));
            }
        });
    });
    rx.recv().expect("fake server started")
}

/// One request as the HTTP fake saw it.
pub struct Request {
    pub method: String,
    pub content_length: usize,
}

/// The HTTP fake's answer: a status and extra headers, no body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// Reads up to the end of a request (or response) head; `None` at end of stream.
async fn read_head<R: AsyncRead + Unpin>(io: &mut R, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            buf.drain(..end + 4);
            return Some(head);
        }
        if buf.len() > HEAD_BYTES_MAX {
            return None;
        }
        let mut chunk = [0u8; 4096];
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// An HTTP/1.1 server (keep-alive) answering every request with `policy`; the answer
/// goes out before the body is read, as a server refusing a body would, then the body
/// is read and dropped.
pub fn http<P>(policy: P) -> SocketAddr
where
    P: Fn(&Request) -> Reply + Send + Sync + 'static,
{
    let policy = Arc::new(policy);
    start(move |mut stream| {
        let policy = policy.clone();
        async move {
            let mut buf = Vec::new();
            while let Some(head) = read_head(&mut stream, &mut buf).await {
                let request = Request {
                    method: head.split(' ').next().unwrap_or_default().to_string(),
                    content_length: header(&head, "content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                };
                let reply = policy(&request);
                let mut response =
                    format!("HTTP/1.1 {} Fake\r\nContent-Length: 0\r\n", reply.status);
                for (name, value) in &reply.headers {
                    response.push_str(&format!("{name}: {value}\r\n"));
                }
                response.push_str("\r\n");
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
                let mut left = request.content_length;
                let buffered = left.min(buf.len());
                buf.drain(..buffered);
                left -= buffered;
                let mut chunk = vec![0u8; 64 * 1024];
                while left > 0 {
                    match stream.read(&mut chunk[..left.min(64 * 1024)]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left -= n,
                    }
                }
            }
        }
    })
}

/// How the WebSocket fake behaves.
#[derive(Clone, Copy)]
pub struct WsFake {
    /// Connections held at once; `None`: no cap at all.
    pub cap: Option<usize>,
    /// Status of the refusal over the cap.
    pub refusal_status: u16,
    /// `Retry-After` of the refusal, if any.
    pub refusal_retry_after: Option<&'static str>,
    /// Largest text message acknowledged; a larger one is answered with a close.
    pub message_bytes_max: usize,
    /// Close code sent for a message over `message_bytes_max`.
    pub oversize_close_code: u16,
}

impl WsFake {
    /// Behaves as the relay should with these limits.
    pub fn correct(cap: usize, message_bytes_max: usize) -> WsFake {
        WsFake {
            cap: Some(cap),
            refusal_status: 503,
            refusal_retry_after: Some("5"),
            message_bytes_max,
            oversize_close_code: 1009,
        }
    }
}

/// Gives back a connection slot when the connection ends.
struct Held(Arc<Mutex<usize>>);

impl Drop for Held {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
    }
}

/// A WebSocket server speaking just enough of the relay's protocol: the upgrade, a
/// `handshake_response` to the first text message, a `notification_ack` to every later
/// one up to `message_bytes_max`, and a close with `oversize_close_code` past it.
pub fn ws(fake: WsFake) -> SocketAddr {
    let live = Arc::new(Mutex::new(0usize));
    start(move |mut stream| {
        let live = live.clone();
        async move {
            let mut buf = Vec::new();
            if read_head(&mut stream, &mut buf).await.is_none() {
                return;
            }
            let held = {
                let mut count = live.lock().unwrap_or_else(|p| p.into_inner());
                if fake.cap.is_some_and(|cap| *count >= cap) {
                    None
                } else {
                    *count += 1;
                    Some(Held(Arc::clone(&live)))
                }
            };
            let Some(_held) = held else {
                let retry_after = fake
                    .refusal_retry_after
                    .map(|v| format!("Retry-After: {v}\r\n"))
                    .unwrap_or_default();
                let refusal = format!(
                    "HTTP/1.1 {} Fake\r\nContent-Length: 0\r\nConnection: close\r\n{retry_after}\r\n",
                    fake.refusal_status
                );
                let _ = stream.write_all(refusal.as_bytes()).await;
                return;
            };
            // The accept key of the client's fixed Sec-WebSocket-Key (RFC 6455's sample).
            let accept = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
            if stream.write_all(accept.as_bytes()).await.is_err() {
                return;
            }
            let mut handshaken = false;
            while let Some((opcode, len)) = read_frame(&mut stream, &mut buf).await {
                match opcode {
                    0x8 => return,
                    0x1 if !handshaken => {
                        handshaken = true;
                        let response = br#"{"type":"handshake_response","status":"accepted"}"#;
                        if stream.write_all(&text_frame(response)).await.is_err() {
                            return;
                        }
                    }
                    0x1 if len > fake.message_bytes_max => {
                        let close = [&[0x88, 2][..], &fake.oversize_close_code.to_be_bytes()];
                        let _ = stream.write_all(&close.concat()).await;
                        return;
                    }
                    0x1 => {
                        let ack = br#"{"type":"notification_ack","message_id":"fake-1"}"#;
                        if stream.write_all(&text_frame(ack)).await.is_err() {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        }
    })
}

/// Reads one whole client frame (payload dropped); returns its opcode and length, or
/// `None` at end of stream.
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u8, usize)> {
    async fn need(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Option<()> {
        while buf.len() < n {
            let mut chunk = [0u8; 64 * 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => buf.extend_from_slice(&chunk[..read]),
            }
        }
        Some(())
    }
    need(stream, buf, 2).await?;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => {
            need(stream, buf, 4).await?;
            (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            need(stream, buf, 10).await?;
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            (usize::try_from(len).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    if masked {
        at += 4;
    }
    need(stream, buf, at + len).await?;
    buf.drain(..at + len);
    Some((opcode, len))
}

/// One unmasked server text frame.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    [&[0x81, payload.len() as u8][..], payload].concat()
}
