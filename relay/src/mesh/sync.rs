//! Building, sending and absorbing sync payloads.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::link::offer;
use super::state::{Pending, health_from_age};
use super::view::SyncType;
use super::wire::{self, GossipRelay, StatePayload, SyncPayload};
use crate::hub::{ClientControl, Outbound};
use crate::node::Node;
use crate::protocol::VERSION;

/// What this relay says about itself in a sync of `sync_type`.
pub(super) fn payload_for(node: &Node, sync_type: SyncType) -> SyncPayload {
    match sync_type {
        SyncType::StateSync => SyncPayload {
            state: Some(StatePayload {
                uptime: node.uptime_secs().to_string(),
                version: VERSION.to_string(),
                network: node.config.network.as_str().to_string(),
            }),
            address: Some(node.config.advertised_addr().to_string()),
            relays: Some(gossip(node)),
            log: Some(node.mesh.log_summary(node.unix_secs())),
            ..SyncPayload::default()
        },
        SyncType::HealthSync => SyncPayload {
            health: serde_json::to_value(node.health_report()).ok(),
            ..SyncPayload::default()
        },
        SyncType::MetricsSync => SyncPayload {
            metrics: Some(serde_json::json!({
                "active_connections": node.client_connections(),
                "mesh_connections": node.mesh.link_count(),
                // Read from the id sequence: rendering the registry here would cost every
                // sync a full exposition (the simulator measured it at 30 % of CPU).
                "notifications_originated": node.notifications_originated(),
            })),
            ..SyncPayload::default()
        },
    }
}

/// This relay and the relays it knows, as StateSync gossips them.
fn gossip(node: &Node) -> Vec<GossipRelay> {
    let now_ms = node.clock.unix_time().as_millis() as u64;
    let interval_ms = node.config.sync_interval().as_millis() as u64;
    let mut relays = vec![GossipRelay {
        relay_id: node.relay_id().to_string(),
        address: node.config.advertised_addr().to_string(),
        last_seen: now_ms / 1000,
        health: super::PeerHealth::Healthy,
    }];
    let state = node.mesh.lock();
    relays.extend(
        state
            .members
            .iter()
            .filter(|(_, m)| !m.address.is_empty())
            .map(|(id, m)| GossipRelay {
                relay_id: id.clone(),
                address: m.address.clone(),
                last_seen: m.last_seen_ms / 1000,
                health: health_from_age(now_ms.saturating_sub(m.last_seen_ms), interval_ms),
            }),
    );
    relays
}

/// Takes in what a peer said: its address and state, the relays it knows, and its log
/// summary (fetching what this relay missed).
pub(super) fn observe(
    node: &Arc<Node>,
    peer_id: &str,
    tx: &mpsc::Sender<Outbound>,
    control: &ClientControl,
    payload: &SyncPayload,
) {
    node.mesh.heard(
        peer_id,
        payload.address.as_deref(),
        node.clock.unix_time().as_millis() as u64,
    );
    if let Some(state) = &payload.state
        && let Some(member) = node.mesh.lock().members.get_mut(peer_id)
    {
        member.version.clone_from(&state.version);
        member.uptime = state.uptime.parse().unwrap_or(member.uptime);
    }
    if let Some(relays) = &payload.relays {
        node.mesh.merge_gossip(node.relay_id(), relays);
    }
    if let Some(log) = &payload.log {
        let retry_ms = 2 * node.config.sync_interval().as_millis() as u64;
        let missing = node.mesh.missing_from(log, node.now_ms(), retry_ms);
        if !missing.is_empty() {
            tracing::debug!(peer = %peer_id, count = missing.len(), "anti-entropy: fetching missed notifications");
            offer(tx, control, Outbound::Text(wire::encode_fetch(&missing)));
        }
    }
}

/// Sends one sync request to a peer and remembers it for the round trip.
pub(super) fn send(
    node: &Node,
    peer_id: &str,
    tx: &mpsc::Sender<Outbound>,
    control: &ClientControl,
    sync_type: SyncType,
) {
    let id = node.next_sync_id();
    let payload = payload_for(node, sync_type);
    let frame = wire::encode_sync(sync_type, node.relay_id(), &id, &payload, node.unix_secs());
    let pending = Pending {
        peer: peer_id.to_string(),
        sync_type,
        sent_ms: node.now_ms(),
    };
    if let Some(evicted) = node.mesh.add_pending(id, pending) {
        node.metrics
            .sync_errors
            .get(evicted.sync_type.as_str())
            .increment(1);
    }
    node.metrics
        .sync_requests
        .get(sync_type.as_str())
        .increment(1);
    offer(tx, control, Outbound::Text(frame));
}

/// Every sync type to one peer (when its link comes up).
pub(super) fn send_all_types_to(node: &Node, peer_id: &str, tx: &mpsc::Sender<Outbound>) {
    if let Some((_, control)) = node.mesh.link_sender(peer_id) {
        for sync_type in SyncType::ALL {
            send(node, peer_id, tx, &control, sync_type);
        }
    }
}

/// The given sync types to every live peer; returns how many peers.
pub(super) fn send_to_all(node: &Node, types: &[SyncType]) -> usize {
    let links = node.mesh.link_senders();
    for (peer, tx, control) in &links {
        for sync_type in types {
            send(node, peer, tx, control, *sync_type);
        }
    }
    links.len()
}
