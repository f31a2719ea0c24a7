//! What the relay sends every wallet on a schedule: `health` and a ping frame every
//! heartbeat (closing wallets silent past the connection timeout), and its `StateSync`
//! every sync interval to wallets that asked for `sync`.

use std::sync::Arc;

use super::WsContext;
use crate::conn::Outbound;
use crate::protocol::{self, OutboundKind};

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

/// Every sync interval, the relay's own `StateSync` to clients that asked for `sync`.
pub async fn state_sync_to_clients(node: Arc<WsContext>) {
    loop {
        node.lifecycle
            .clock()
            .sleep(node.config.sync_interval())
            .await;
        let frame = protocol::encode_state_sync(
            &node.config.relay_id,
            node.config.network.as_str(),
            node.lifecycle.uptime_secs(),
            &node.publisher.origin().next_sync_id(),
            node.lifecycle.unix_secs(),
        );
        let delivery = node.hub.broadcast(Outbound::Text(frame.clone()), true);
        node.metrics
            .count_delivery(delivery, OutboundKind::Sync, frame.len());
    }
}
