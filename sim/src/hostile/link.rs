//! One link of the hostile host to a relay: dialed like a relay dials, the WebSocket
//! upgrade, the peer handshake (`handshake`), then raw frames through the relay's own
//! codec. A reader task hands incoming
//! frames over a bounded channel (what does not fit is dropped: the hostile host need
//! not read everything), so the attack loop can write and read without cancelling a
//! half-read frame.

use bytes::Bytes;
use sdk_relay::conn::codec::{FrameKind, FrameReader, FrameWriter, Incoming, Role};
use serde_json::Value;
use tokio::io::WriteHalf;
use tokio::sync::mpsc;

use sdk_relay::identity::{Identity, PublicKey};
use sdk_relay::protocol::signed::{self, NONCE_BYTES, Transcript};

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
    /// Connects to `addr` and upgrades to WebSocket.
    pub async fn open(addr: &str, mask_seed: u32) -> Result<PeerLink, String> {
        tokio::time::timeout(CONNECT_TIMEOUT, Self::upgrade(addr, mask_seed))
            .await
            .map_err(|_| "connect timed out".to_string())?
    }

    async fn upgrade(addr: &str, mask_seed: u32) -> Result<PeerLink, String> {
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
        Ok(PeerLink {
            writer: FrameWriter::new(write_half, Role::Client, mask_seed),
            incoming,
            reader,
        })
    }

    /// The next text message (answering pings meanwhile), within `CONNECT_TIMEOUT`.
    pub async fn next_text(&mut self) -> Result<Bytes, String> {
        let wait = async {
            loop {
                match self.incoming.recv().await {
                    None => return Err("closed".to_string()),
                    Some(Incoming::Text(text)) => return Ok(text),
                    Some(Incoming::Close(code)) => return Err(format!("closed with {code:?}")),
                    Some(Incoming::Ping(payload)) => self.pong(&payload).await,
                    Some(_) => {}
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, wait)
            .await
            .map_err(|_| "no answer in time".to_string())?
    }

    pub async fn send_json(&mut self, message: &Value) -> Result<(), String> {
        self.send(&[Bytes::from(message.to_string())]).await
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

/// The peer handshake on `link` as `relay_id` at `address`, naming `key` and proving it
/// with `identity` (an impostor names a key it does not hold); the acceptor's final
/// answer (`handshake_response`), whether it accepted or refused.
pub async fn handshake(
    link: &mut PeerLink,
    relay_id: &str,
    address: &str,
    key: &PublicKey,
    identity: &Identity,
    nonce: [u8; NONCE_BYTES],
) -> Result<Value, String> {
    link.send_json(&super::wire::handshake(relay_id, address, key, &nonce))
        .await?;
    let text = link.next_text().await?;
    let challenge = match signed::parse_challenge(&text) {
        Ok(challenge) => challenge,
        // Refused at once (an untrusted key, a bound id): the answer says why.
        Err(_) => return serde_json::from_slice(&text).map_err(|e| e.to_string()),
    };
    let acceptor_key =
        PublicKey::parse(&challenge.public_key).map_err(|e| format!("challenge key: {e}"))?;
    let acceptor_nonce =
        signed::parse_nonce(&challenge.nonce).ok_or("challenge nonce unreadable")?;
    let transcript = Transcript {
        dialer_id: relay_id,
        dialer_key: key,
        dialer_nonce: &nonce,
        dialer_address: address,
        acceptor_id: &challenge.relay_id,
        acceptor_key: &acceptor_key,
        acceptor_nonce: &acceptor_nonce,
        acceptor_address: &challenge.address,
    };
    let proof = transcript.prove(signed::Role::Dialer, identity, None);
    link.send(&[signed::encode_proof(&proof)]).await?;
    let text = link.next_text().await?;
    serde_json::from_slice(&text).map_err(|e| e.to_string())
}
