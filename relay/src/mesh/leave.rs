//! Leaving the mesh on purpose (lame duck, shutdown): tell every peer first, so they
//! mark this relay `left` instead of counting an outage, and name the relays its
//! wallets may move to.

use super::Mesh;
use crate::conn::{CloseReason, Outbound};
use crate::protocol::peer::{self, PeerHealth};

/// Relays named in one `reconnect` message: enough for a wallet to find a live one, and
/// a bounded message whatever the membership.
pub const RECONNECT_RELAYS_MAX: usize = 16;

impl Mesh {
    /// Sends `leaving` on every live link; the links stay up (notifications still reach
    /// the wallets not yet moved) until `close_links`.
    pub fn announce_leaving(&self, reason: &str) -> usize {
        let frame = peer::encode_leaving(self.relay_id(), reason, self.unix_secs());
        let links = self.state.link_senders();
        for (_, outlet) in &links {
            outlet.offer(Outbound::Text(frame.clone()));
        }
        links.len()
    }

    /// Closes every peer link with 1001; nothing waits for the peers to answer.
    pub fn close_links(&self) {
        for (_, outlet) in self.state.link_senders() {
            outlet.close(CloseReason::SHUTDOWN);
        }
    }

    /// Saves the ids seen so far to `data_dir` (the supervisor saved them when the drain
    /// began, but a lame duck keeps receiving notifications for its whole window), so the
    /// restarted relay does not deliver them again.
    pub fn save_seen(&self) {
        super::supervisor::save_seen(self);
        self.flush_log();
    }

    /// Live peer links.
    pub fn live_links(&self) -> usize {
        self.state.link_count()
    }

    /// The public WebSocket URLs of the other relays a wallet may move to: healthy (not
    /// late, not leaving), with an address; linked ones first, then the most recently
    /// seen; at most `RECONNECT_RELAYS_MAX`.
    pub fn reconnect_urls(&self) -> Vec<String> {
        let now_ms = self.unix_ms();
        let interval_ms = self.parts.config.sync_interval().as_millis() as u64;
        let state = self.state.lock();
        let mut candidates: Vec<(bool, u64, &str)> = state
            .members
            .iter()
            .filter(|(_, m)| !m.address.is_empty())
            .filter(|(_, m)| m.health(now_ms, interval_ms) == PeerHealth::Healthy)
            .map(|(id, m)| {
                let unlinked = !state.links.contains_key(id);
                (unlinked, u64::MAX - m.last_seen_ms, m.address.as_str())
            })
            .collect();
        candidates.sort_unstable();
        candidates
            .into_iter()
            .take(RECONNECT_RELAYS_MAX)
            .map(|(_, _, address)| public_ws_url(address, self.mesh_serves_tls()))
            .collect()
    }

    /// Whether the other relays serve `wss://`: this one does (`[tls]`), or dials them
    /// over TLS (`[mesh] tls`). A mesh is deployed one way throughout.
    fn mesh_serves_tls(&self) -> bool {
        let config = &self.parts.config;
        config.mesh.tls || config.tls.files().is_some()
    }
}

/// The URL a wallet dials for a relay advertised at `address` (`host:port`).
pub fn public_ws_url(address: &str, tls: bool) -> String {
    let scheme = if tls { "wss" } else { "ws" };
    format!("{scheme}://{address}/")
}
