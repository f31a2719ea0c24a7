//! Draining a relay (lame duck or shutdown, NATS's model): stop accepting, tell the
//! peers it is leaving, point every wallet at the other relays, close the wallets over a
//! window so they do not all move at once, then close the peer links. Peer links never
//! hold the drain: with no wallet connected it ends at once.

use std::sync::Arc;
use std::time::Duration;

use crate::conn::CloseReason;
use crate::lifecycle::Stop;
use crate::node::Node;
use crate::protocol::{self, OutboundKind};

/// How often the drain closes the next wallets that are due and checks who is left.
const DRAIN_TICK: Duration = Duration::from_millis(25);
/// The part of the window over which closes are spread (in fifths); the rest leaves the
/// last wallets time for their close handshake.
const SPREAD_FIFTHS: u32 = 4;
/// At most this long for the peer links' writers to put `leaving` and the close frame on
/// the wire before the process ends.
const LINK_CLOSE_WAIT: Duration = Duration::from_secs(1);

pub(super) async fn drain(node: &Arc<Node>, stop: Stop) {
    let limits = &node.config.limits;
    let window = Duration::from_secs(match stop {
        Stop::Shutdown => limits.shutdown_drain_secs,
        Stop::LameDuck => limits.lame_duck_secs,
    });
    let kind = match stop {
        Stop::Shutdown => 0,
        Stop::LameDuck => 1,
    };
    node.metrics.drains[kind].increment(1);
    node.lifecycle.begin_shutdown();
    let peers = node.mesh.announce_leaving(stop.as_str());
    let relays = match &node.nats {
        Some(nats) => nats.reconnect_urls(),
        None => node.mesh.reconnect_urls(),
    };
    let wallets = node.client_connections();
    tracing::info!(
        kind = stop.as_str(),
        wallets,
        peers,
        window_secs = window.as_secs(),
        relays = ?relays,
        "draining: no new connections, peers told, wallets sent reconnect"
    );
    send_reconnect(node, &relays, stop).await;
    close_wallets_over(node, window).await;
    node.mesh.close_links();
    wait_for_links(node).await;
    // After the window: what arrived while draining is not delivered again after restart.
    node.mesh.save_seen();
}

/// Sends every wallet the relays it may move to, with a fresh resume token for wallets
/// that handshook with capability `resume` (`null` for the others).
async fn send_reconnect(node: &Node, relays: &[String], stop: Stop) {
    let now = node.unix_secs();
    let frame = |token: Option<&str>| protocol::encode_reconnect(relays, stop.as_str(), token, now);
    let (delivery, bytes) = match &node.nats {
        Some(nats) => nats.send_with_tokens(frame).await,
        None => node.mesh.send_with_tokens(frame),
    };
    let per_frame = bytes / delivery.delivered.max(1);
    node.metrics
        .count_delivery(delivery, OutboundKind::Reconnect, per_frame);
}

/// How many of `total` wallets are due to be closed `elapsed` into a spread of `spread`:
/// evenly, rounded up, all of them once the spread is over.
fn due(total: usize, elapsed: Duration, spread: Duration) -> usize {
    if elapsed >= spread {
        return total;
    }
    let share = total as u128 * elapsed.as_millis() / spread.as_millis().max(1);
    (share as usize + 1).min(total)
}

/// Closes wallets with 1001, evenly over the first four fifths of `window`, and waits
/// until none is left or the window is over.
async fn close_wallets_over(node: &Node, window: Duration) {
    let clock = node.lifecycle.clock().clone();
    let start = clock.now();
    let spread = window * SPREAD_FIFTHS / 5;
    let total = node.hub.len();
    let mut asked = 0;
    while node.client_connections() > 0 {
        let elapsed = clock.now().duration_since(start);
        if elapsed >= window {
            tracing::warn!(
                wallets = node.client_connections(),
                "drain time over; dropping remaining connections"
            );
            return;
        }
        let due = due(total, elapsed, spread);
        if due > asked {
            asked += node.hub.close_some(due - asked, CloseReason::SHUTDOWN);
        }
        if elapsed >= spread {
            // Wallets that finished their handshake after the drain began.
            node.hub.close_all(CloseReason::SHUTDOWN);
        }
        clock.sleep(DRAIN_TICK).await;
    }
}

/// Gives the peer links' writers a moment (at most `LINK_CLOSE_WAIT`) to send what is
/// queued and the close frame.
async fn wait_for_links(node: &Node) {
    let clock = node.lifecycle.clock().clone();
    let start = clock.now();
    while node.mesh.live_links() > 0 && clock.now().duration_since(start) < LINK_CLOSE_WAIT {
        clock.sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_evenly_and_all_are_due_at_the_end() {
        let spread = Duration::from_secs(4);
        assert_eq!(due(0, Duration::ZERO, spread), 0);
        assert_eq!(due(8, Duration::ZERO, spread), 1);
        assert_eq!(due(8, Duration::from_secs(1), spread), 3);
        assert_eq!(due(8, Duration::from_secs(2), spread), 5);
        assert_eq!(due(8, Duration::from_millis(3999), spread), 8);
        assert_eq!(due(8, spread, spread), 8);
        assert_eq!(due(3, Duration::ZERO, Duration::ZERO), 3);
    }
}
