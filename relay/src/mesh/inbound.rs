//! Relays that dial this one: the wallet server hands over a connection whose handshake
//! asked for capability `relay`; the mesh checks it, answers, and serves the link.

use std::future::Future;
use std::pin::Pin;

use super::link::{self, LinkParts};
use super::{Mesh, handshake};
use crate::conn::{CloseReason, Outbound, Outlet, PeerArrival, PeerHandoff};
use crate::protocol::{self, OutboundKind, peer};

impl PeerHandoff for Mesh {
    fn serve<'a>(
        &'a self,
        arrival: PeerArrival<'a, '_>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.serve_inbound(arrival))
    }
}

impl Mesh {
    async fn serve_inbound(&self, arrival: PeerArrival<'_, '_>) {
        let PeerArrival {
            handshake,
            reader,
            outlet,
        } = arrival;
        let peer_id = handshake.relay_id.clone().unwrap_or_default();
        let address = handshake.address.clone().unwrap_or_default();
        let refusal = if !peer::relay_id_fits(&peer_id) || !peer::address_fits(&address) {
            self.parts.metrics.mesh_rejected.increment(1);
            Some((
                "relay id or address empty or too long",
                CloseReason {
                    code: 1008,
                    reason: "relay id or address too long",
                },
            ))
        } else if peer_id == self.relay_id() {
            Some(("that is this relay", CloseReason::NORMAL))
        } else {
            None
        };
        if let Some((reason, close)) = refusal {
            self.refuse_inbound(&peer_id, reason, close, &outlet);
            return;
        }
        let claim = (
            peer_id.as_str(),
            address.as_str(),
            handshake.public_key.as_deref().unwrap_or_default(),
            handshake.nonce.as_deref().unwrap_or_default(),
        );
        let proven = match handshake::accept(self, reader, &outlet, claim).await {
            Ok(proven) => proven,
            Err(refusal) => {
                self.count_refusal(&peer_id, refusal);
                self.refuse_inbound(&peer_id, refusal.as_str(), CloseReason::AUTH, &outlet);
                return;
            }
        };
        self.parts
            .metrics
            .ws_handshakes
            .get("accepted")
            .increment(1);
        let response = peer::encode_peer_accepted(
            self.relay_id(),
            self.parts.config.advertised_addr(),
            self.unix_secs(),
        );
        self.count_sent(OutboundKind::HandshakeResponse, response.len());
        outlet.offer(Outbound::Text(response));
        reader.set_message_bytes_max(
            self.parts.config.limits.ws_message_bytes_max + super::PEER_ENVELOPE_SLACK_BYTES,
        );
        let parts = LinkParts {
            // The peer dialed this link: the tie-break between two links to the same
            // peer must know that, or both ends drop the link the other one keeps.
            dialer: proven.relay_id.clone(),
            peer_id: proven.relay_id,
            // Signed by the peer in the handshake transcript: safe to dial later.
            address: proven.address,
            inbound: true,
            outlet: outlet.clone(),
        };
        link::serve(self, reader, parts).await;
        if outlet.control().close_reason().is_none() {
            outlet.close(CloseReason::NORMAL);
        }
    }

    /// Answers `rejected` with `reason` and closes with `close`.
    fn refuse_inbound(&self, peer_id: &str, reason: &str, close: CloseReason, outlet: &Outlet) {
        self.parts
            .metrics
            .ws_handshakes
            .get("rejected")
            .increment(1);
        let peer: String = peer_id.chars().take(peer::RELAY_ID_BYTES_MAX).collect();
        tracing::info!(%peer, reason, "relay handshake refused");
        let frame = protocol::encode_handshake_rejected(
            self.relay_id(),
            reason,
            self.parts.config.limits.heartbeat_interval_secs,
            self.unix_secs(),
        );
        self.count_sent(OutboundKind::HandshakeResponse, frame.len());
        outlet.offer(Outbound::Text(frame));
        outlet.close(close);
    }

    fn count_sent(&self, kind: OutboundKind, bytes: usize) {
        self.parts.metrics.count_sent(kind, bytes);
    }
}
