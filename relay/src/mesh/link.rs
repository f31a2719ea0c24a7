//! One live link to a peer relay, whichever side dialed: register it, read and handle
//! the peer's messages, ping it, and cut it off when it goes silent.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use super::state::{LinkRefused, Pending};
use super::sync;
use super::view::SyncType;
use super::wire::{self, PeerMessage};
use crate::hub::{ClientControl, CloseReason, Outbound};
use crate::node::Node;
use crate::ws::codec::{FrameReader, Incoming, ReadError};

/// A handshaken link, ready to serve.
pub struct LinkParts {
    pub peer_id: String,
    pub address: String,
    /// The relay id of the side that dialed.
    pub dialer: String,
    pub inbound: bool,
    pub tx: mpsc::Sender<Outbound>,
    pub control: Arc<ClientControl>,
}

/// Serves a link accepted on the WebSocket port after a `relay` handshake.
pub async fn serve_inbound<R: AsyncRead + Unpin>(
    node: &Arc<Node>,
    reader: &mut FrameReader<R>,
    parts: LinkParts,
) {
    serve(node, reader, parts).await;
}

/// Registers the link, then handles the peer's frames until the link closes.
pub(super) async fn serve<R: AsyncRead + Unpin>(
    node: &Arc<Node>,
    reader: &mut FrameReader<R>,
    parts: LinkParts,
) {
    let LinkParts {
        peer_id,
        address,
        dialer,
        inbound,
        tx,
        control,
    } = parts;
    let registered = node.mesh.register_link(
        node.relay_id(),
        &peer_id,
        (tx.clone(), control.clone(), dialer, inbound),
        node.config.mesh.peers_max,
    );
    let link_id = match registered {
        Ok(id) => id,
        Err(refused) => {
            let reason = match refused {
                LinkRefused::Duplicate => "duplicate link",
                LinkRefused::Full => "peers_max reached",
            };
            tracing::debug!(peer = %peer_id, reason, "peer link refused");
            control.close(CloseReason { code: 1000, reason });
            return;
        }
    };
    tracing::info!(peer = %peer_id, %address, inbound, "peer link up");
    node.mesh.heard(
        &peer_id,
        Some(&address),
        node.clock.unix_time().as_millis() as u64,
    );
    sync::send_all_types_to(node, &peer_id, &tx);
    read_loop(node, reader, &peer_id, &tx, &control).await;
    node.mesh.unregister_link(&peer_id, link_id);
    tracing::info!(peer = %peer_id, reason = ?control.close_reason().map(|r| r.reason), "peer link down");
}

async fn read_loop<R: AsyncRead + Unpin>(
    node: &Arc<Node>,
    reader: &mut FrameReader<R>,
    peer_id: &str,
    tx: &mpsc::Sender<Outbound>,
    control: &Arc<ClientControl>,
) {
    let limits = &node.config.limits;
    let idle_ms = limits.connection_timeout().as_millis() as u64;
    let mut ticker = tokio::time::interval(limits.heartbeat_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard_ms = node.now_ms();
    loop {
        let frame = tokio::select! {
            biased;
            () = control.closed() => return,
            _ = ticker.tick() => {
                if node.now_ms().saturating_sub(last_heard_ms) > idle_ms {
                    control.close(CloseReason::IDLE_TIMEOUT);
                    return;
                }
                offer(tx, control, Outbound::Ping);
                continue;
            }
            frame = reader.next() => frame,
        };
        last_heard_ms = node.now_ms();
        node.mesh
            .heard(peer_id, None, node.clock.unix_time().as_millis() as u64);
        if let Some(reason) = on_frame(node, peer_id, tx, control, frame) {
            control.close(reason);
            return;
        }
    }
}

fn on_frame(
    node: &Arc<Node>,
    peer_id: &str,
    tx: &mpsc::Sender<Outbound>,
    control: &Arc<ClientControl>,
    frame: Result<Incoming, ReadError>,
) -> Option<CloseReason> {
    if let Some(reason) = crate::ws::ending(&frame) {
        return Some(reason);
    }
    match frame {
        Ok(Incoming::Text(text)) => {
            on_text(node, peer_id, tx, control, &text);
            None
        }
        Ok(Incoming::Ping(payload)) => {
            offer(tx, control, Outbound::Pong(payload));
            None
        }
        _ => None,
    }
}

fn on_text(
    node: &Arc<Node>,
    peer_id: &str,
    tx: &mpsc::Sender<Outbound>,
    control: &Arc<ClientControl>,
    text: &Bytes,
) {
    let message = match wire::parse(text) {
        Ok(message) => message,
        Err(error) => {
            // A peer speaking nonsense is counted, never trusted, never fatal to others.
            node.metrics.sync_errors.get("other").increment(1);
            node.mesh
                .record_error(node.unix_secs(), peer_id, None, error.to_string());
            return;
        }
    };
    match message {
        PeerMessage::Sync {
            sync_type,
            relay_id: _,
            message_id,
            payload,
        } => {
            node.metrics
                .sync_received
                .get(sync_type.as_str())
                .increment(1);
            sync::observe(node, peer_id, tx, control, &payload);
            let answer = sync::payload_for(node, sync_type);
            let frame = wire::encode_sync_response(
                sync_type,
                node.relay_id(),
                &message_id,
                &answer,
                node.unix_secs(),
            );
            offer(tx, control, Outbound::Text(frame));
        }
        PeerMessage::SyncResponse {
            sync_type,
            relay_id: _,
            request_id,
            payload,
        } => {
            on_sync_response(node, peer_id, sync_type, &request_id);
            sync::observe(node, peer_id, tx, control, &payload);
        }
        PeerMessage::Notification(notification) => {
            node.route(Arc::new(notification), Some(peer_id));
        }
        PeerMessage::Fetch(ids) => {
            let ids = &ids[..ids.len().min(super::dedup::FETCH_IDS_MAX)];
            for frame in node.mesh.logged(ids) {
                if !offer(tx, control, Outbound::Text(frame)) {
                    break;
                }
            }
        }
    }
}

fn on_sync_response(node: &Node, peer_id: &str, sync_type: SyncType, request_id: &str) {
    let now_ms = node.now_ms();
    match node
        .mesh
        .complete_pending(request_id, now_ms, node.unix_secs())
    {
        Some((Pending { sync_type, .. }, rtt_ms)) => {
            node.metrics
                .sync_responses
                .get(sync_type.as_str())
                .increment(1);
            node.metrics
                .sync_rtt(sync_type)
                .record(rtt_ms as f64 / 1000.0);
        }
        None => {
            tracing::debug!(peer = %peer_id, sync_type = sync_type.as_str(), "late or unknown sync response");
        }
    }
}

/// Queues a frame for a peer without waiting; a peer whose queue is full is cut off
/// (anti-entropy catches it up after it reconnects). Returns false when not queued.
pub(super) fn offer(
    tx: &mpsc::Sender<Outbound>,
    control: &ClientControl,
    message: Outbound,
) -> bool {
    match tx.try_send(message) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            control.close(CloseReason::SLOW_CONSUMER);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
