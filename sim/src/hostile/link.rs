//! One link of the hostile host to a relay: dialed like a relay dials, the WebSocket
//! upgrade, then raw frames through the relay's own codec. A reader task hands incoming
//! frames over a bounded channel (what does not fit is dropped: the hostile host need
//! not read everything), so the attack loop can write and read without cancelling a
//! half-read frame.

use bytes::Bytes;
use sdk_relay::conn::codec::{FrameKind, FrameReader, FrameWriter, Incoming, Role};
use serde_json::Value;
use tokio::io::WriteHalf;
use tokio::sync::mpsc;

use crate::client::CONNECT_TIMEOUT;

/// The largest message the hostile host reads from a relay (a fetch answer is at most
/// 4 MiB of notifications in several frames; sync responses are far smaller).
const READ_BYTES_MAX: usize = 2 << 20;
/// Frames read but not yet handled; beyond it the reader drops them.
const INCOMING_MAX: usize = 256;

type Io = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

pub struct PeerLink {
    writer: FrameWriter<WriteHalf<Io>>,
    pub incoming: mpsc::Receiver<Incoming>,
    reader: tokio::task::JoinHandle<()>,
}

impl PeerLink {
    /// Connects to `addr`, upgrades, sends `handshake` and waits for the relay's answer
    /// (`handshake_response`); the link and the answer.
    pub async fn dial(
        addr: &str,
        handshake: &Value,
        mask_seed: u32,
    ) -> Result<(PeerLink, Value), String> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::open(addr, handshake, mask_seed))
            .await
            .map_err(|_| "connect timed out".to_string())?
    }

    async fn open(
        addr: &str,
        handshake: &Value,
        mask_seed: u32,
    ) -> Result<(PeerLink, Value), String> {
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
        let (read_half, write_half) = tokio::io::split(ws.into_inner());
        let mut reader = FrameReader::new(read_half, Role::Client, READ_BYTES_MAX);
        let mut link_writer = FrameWriter::new(write_half, Role::Client, mask_seed);
        let text = handshake.to_string();
        link_writer
            .push(FrameKind::Text, text.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        link_writer
            .flush()
            .await
            .map_err(|e| format!("send: {e}"))?;
        let response = match reader.next().await {
            Ok(Incoming::Text(text)) => {
                serde_json::from_slice(&text).map_err(|e| format!("handshake answer: {e}"))?
            }
            other => return Err(format!("no handshake answer: {other:?}")),
        };
        let (tx, incoming) = mpsc::channel(INCOMING_MAX);
        let reader = tokio::task::spawn_local(async move {
            while let Ok(frame) = reader.next().await {
                let last = matches!(frame, Incoming::Close(_));
                if matches!(
                    tx.try_send(frame),
                    Err(mpsc::error::TrySendError::Closed(_))
                ) || last
                {
                    return;
                }
            }
        });
        Ok((
            PeerLink {
                writer: link_writer,
                incoming,
                reader,
            },
            response,
        ))
    }

    /// Sends text frames, then flushes.
    pub async fn send(&mut self, frames: &[Bytes]) -> Result<(), String> {
        for frame in frames {
            self.writer
                .push(FrameKind::Text, frame)
                .await
                .map_err(|e| format!("send: {e}"))?;
            if self.writer.batch_full() {
                self.writer
                    .flush()
                    .await
                    .map_err(|e| format!("send: {e}"))?;
            }
        }
        self.writer.flush().await.map_err(|e| format!("send: {e}"))
    }

    pub async fn pong(&mut self, payload: &[u8]) {
        if self.writer.push(FrameKind::Pong, payload).await.is_ok() {
            let _ = self.writer.flush().await;
        }
    }

    /// Closes the link (best effort).
    pub async fn close(mut self) {
        let payload = sdk_relay::conn::codec::close_payload(1000, "done");
        if self.writer.push(FrameKind::Close, &payload).await.is_ok() {
            let _ = self.writer.flush().await;
        }
        self.writer.shutdown().await;
        self.reader.abort();
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
