//! What the relay sends every wallet on a schedule: `health` and a ping frame every
//! heartbeat (closing wallets silent past the connection timeout), and to wallets that
//! asked for `sync` its `StateSync` and `MetricsSync` every sync interval and its
//! `HealthSync` every health interval.

use std::sync::Arc;
use std::time::Duration;

use super::WsContext;
use crate::conn::Outbound;
use crate::protocol::peer::{SyncPayload, SyncType};
use crate::protocol::{self, OutboundKind};

/// What the relay reports about itself in a `HealthSync` or `MetricsSync` (the payload
/// its peers receive: `health`, or `metrics`).
pub type SyncPayloads = Arc<dyn Fn(SyncType) -> SyncPayload + Send + Sync>;

/// Every heartbeat: a `health` message and a ping frame to every client, and clients not
/// heard from within the connection timeout are closed.
pub async fn heartbeat(node: Arc<WsContext>) {
    let limits = &node.config.limits;
    let period = limits.heartbeat_interval();
    let timeout_ms = limits.connection_timeout().as_millis() as u64;
    loop {
        node.lifecycle.clock().sleep(period).await;
        let frame = node.health.frame();
        let delivery = node.hub.broadcast(Outbound::Text(frame.clone()), false);
        node.metrics
            .count_delivery(delivery, OutboundKind::Health, frame.len());
        let pings = node.hub.broadcast(Outbound::Ping, false);
        node.metrics
            .ws_slow_consumers
            .increment(pings.slow_disconnects as u64);
        let idle = node
            .hub
            .close_idle(node.lifecycle.now_ms().saturating_sub(timeout_ms));
        if idle > 0 {
            tracing::info!(
                clients = idle,
                "closed clients silent past the connection timeout"
            );
        }
    }
}

/// To clients that asked for `sync`, in the specification's `sync` message shape: every
/// sync interval the relay's own `StateSync` (state only, no mesh gossip) and
/// `MetricsSync`, every health interval its `HealthSync`; the last two carry the payloads
/// peers receive (`payloads`).
pub async fn syncs_to_clients(node: Arc<WsContext>, payloads: SyncPayloads) {
    let interval = node.config.sync_interval();
    let health_interval = node.config.health_interval();
    // Deadlines as offsets from the start, so the two cadences do not drift apart.
    let (mut elapsed, mut next_sync, mut next_health) = (Duration::ZERO, interval, health_interval);
    loop {
        let next = next_sync.min(next_health);
        node.lifecycle.clock().sleep(next - elapsed).await;
        elapsed = next;
        if next_sync == next {
            send_state_sync(&node);
            send_sync(&node, SyncType::MetricsSync, &payloads);
            next_sync += interval;
        }
        if next_health == next {
            send_sync(&node, SyncType::HealthSync, &payloads);
            next_health += health_interval;
        }
    }
}

fn send_state_sync(node: &WsContext) {
    let frame = protocol::encode_state_sync(
        &node.config.relay_id,
        node.config.network.as_str(),
        node.lifecycle.uptime_secs(),
        &node.publisher.origin().next_sync_id(),
        node.lifecycle.unix_secs(),
    );
    broadcast_sync(node, frame);
}

fn send_sync(node: &WsContext, sync_type: SyncType, payloads: &SyncPayloads) {
    let frame = protocol::peer::encode_sync(
        sync_type,
        &node.config.relay_id,
        &node.publisher.origin().next_sync_id(),
        &protocol::peer::encode_payload(&payloads(sync_type)),
        node.lifecycle.unix_secs(),
    );
    broadcast_sync(node, frame);
}

fn broadcast_sync(node: &WsContext, frame: bytes::Bytes) {
    let delivery = node.hub.broadcast(Outbound::Text(frame.clone()), true);
    node.metrics
        .count_delivery(delivery, OutboundKind::Sync, frame.len());
}
