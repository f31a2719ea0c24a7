//! One live link to a peer relay, whichever side dialed: register it, read and handle
//! the peer's messages, ping it, and cut it off when it goes silent.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;

use super::Mesh;
use super::state::{LinkRefused, Pending};
use super::sync;
use crate::conn::codec::{FrameReader, Incoming, ReadError};
use crate::conn::{CloseReason, Outbound, Outlet};
use crate::protocol::peer::{self, PeerMessage, SyncType};

/// A handshaken link, ready to serve.
pub struct LinkParts {
    pub peer_id: String,
    pub address: String,
    /// The relay id of the side that dialed.
    pub dialer: String,
    pub inbound: bool,
    pub outlet: Outlet,
}

/// Registers the link, then handles the peer's frames until the link closes.
pub(super) async fn serve<R: AsyncRead + Unpin>(
    mesh: &Mesh,
    reader: &mut FrameReader<R>,
    parts: LinkParts,
) {
    let LinkParts {
        peer_id,
        address,
        dialer,
        inbound,
        outlet,
    } = parts;
    #[cfg(feature = "mutations")]
    if let Some(crate::mutation::Mutation::RefuseLink { peer }) = mesh.parts.config.mutation
        && peer_id == format!("relay-{peer}")
    {
        outlet.close(CloseReason {
            code: 1000,
            reason: "refused (mutation)",
        });
        return;
    }
    let registered = mesh.state.register_link(
        mesh.relay_id(),
        &peer_id,
        (outlet.clone(), dialer, inbound),
        mesh.parts.config.mesh.peers_max,
    );
    let link_id = match registered {
        Ok(id) => id,
        Err(refused) => {
            let reason = match refused {
                LinkRefused::Duplicate => "duplicate link",
                LinkRefused::Full => "peers_max reached",
            };
            tracing::debug!(peer = %peer_id, reason, "peer link refused");
            outlet.close(CloseReason { code: 1000, reason });
            return;
        }
    };
    tracing::info!(peer = %peer_id, %address, inbound, "peer link up");
    mesh.state.heard(&peer_id, Some(&address), mesh.unix_ms());
    sync::send_all_types_to(mesh, &peer_id);
    read_loop(mesh, reader, &peer_id, &outlet).await;
    mesh.state.unregister_link(&peer_id, link_id);
    tracing::info!(peer = %peer_id, reason = ?outlet.control().close_reason().map(|r| r.reason), "peer link down");
}

async fn read_loop<R: AsyncRead + Unpin>(
    mesh: &Mesh,
    reader: &mut FrameReader<R>,
    peer_id: &str,
    outlet: &Outlet,
) {
    let control = outlet.control();
    let limits = &mesh.parts.config.limits;
    let idle_ms = limits.connection_timeout().as_millis() as u64;
    let mut ticker = tokio::time::interval(limits.heartbeat_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard_ms = mesh.now_ms();
    loop {
        let frame = tokio::select! {
            biased;
            () = control.closed() => return,
            _ = ticker.tick() => {
                if mesh.now_ms().saturating_sub(last_heard_ms) > idle_ms {
                    control.close(CloseReason::IDLE_TIMEOUT);
                    return;
                }
                outlet.offer(Outbound::Ping);
                continue;
            }
            frame = reader.next() => frame,
        };
        last_heard_ms = mesh.now_ms();
        mesh.state.heard(peer_id, None, mesh.unix_ms());
        if let Some(reason) = on_frame(mesh, peer_id, outlet, frame) {
            control.close(reason);
            return;
        }
    }
}

fn on_frame(
    mesh: &Mesh,
    peer_id: &str,
    outlet: &Outlet,
    frame: Result<Incoming, ReadError>,
) -> Option<CloseReason> {
    if let Some(reason) = crate::conn::ending(&frame) {
        return Some(reason);
    }
    match frame {
        Ok(Incoming::Text(text)) => {
            on_text(mesh, peer_id, outlet, &text);
            None
        }
        Ok(Incoming::Ping(payload)) => {
            outlet.offer(Outbound::Pong(payload));
            None
        }
        _ => None,
    }
}

fn on_text(mesh: &Mesh, peer_id: &str, outlet: &Outlet, text: &Bytes) {
    let message = match peer::parse(text) {
        Ok(message) => message,
        Err(error) => {
            // A peer speaking nonsense is counted, never trusted, never fatal to others.
            mesh.parts.metrics.sync_errors_other.increment(1);
            mesh.state
                .record_error(mesh.unix_secs(), peer_id, None, error.to_string());
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
            mesh.parts.metrics.sync_received.get(sync_type).increment(1);
            sync::observe(mesh, peer_id, outlet, &payload);
            let answer = sync::payload_for(mesh, sync_type);
            let frame = peer::encode_sync_response(
                sync_type,
                mesh.relay_id(),
                &message_id,
                &answer,
                mesh.unix_secs(),
            );
            outlet.offer(Outbound::Text(frame));
        }
        PeerMessage::SyncResponse {
            sync_type,
            relay_id: _,
            request_id,
            payload,
        } => {
            on_sync_response(mesh, peer_id, sync_type, &request_id);
            sync::observe(mesh, peer_id, outlet, &payload);
        }
        PeerMessage::Notification(notification) => {
            mesh.route(Arc::new(notification), Some(peer_id));
        }
        PeerMessage::Fetch(ids) => {
            let ids = &ids[..ids.len().min(super::dedup::FETCH_IDS_MAX)];
            for frame in mesh.state.logged(ids) {
                if outlet.offer(Outbound::Text(frame)) != crate::conn::Offered::Queued {
                    break;
                }
            }
        }
    }
}

fn on_sync_response(mesh: &Mesh, peer_id: &str, sync_type: SyncType, request_id: &str) {
    let now_ms = mesh.now_ms();
    match mesh
        .state
        .complete_pending(request_id, now_ms, mesh.unix_secs())
    {
        Some((Pending { sync_type, .. }, rtt_ms)) => {
            mesh.parts
                .metrics
                .sync_responses
                .get(sync_type)
                .increment(1);
            mesh.parts
                .metrics
                .sync_rtt(sync_type)
                .record(rtt_ms as f64 / 1000.0);
        }
        None => {
            tracing::debug!(peer = %peer_id, sync_type = sync_type.as_str(), "late or unknown sync response");
        }
    }
}
