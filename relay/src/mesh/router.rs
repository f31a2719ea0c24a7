//! Routing: every notification, whether a wallet of this relay published it or a peer
//! forwarded it, passes here once. Seen for the first time, it is logged (for
//! anti-entropy), delivered to this relay's subscribers and forwarded to every peer but
//! the one it came from; seen before, it is dropped.

use std::sync::Arc;

use super::Mesh;
use crate::conn::{Offered, Outbound};
use crate::hub::TokenContext;
use crate::protocol::{Notification, OutboundKind};
use crate::routing::{Accepted, Backbone};

use super::trust::Unverified;

impl Mesh {
    /// Routes one notification; returns whether it was new.
    pub(super) fn route(&self, notification: Arc<Notification>, from_peer: Option<&str>) -> bool {
        let _route = self.route_guard();
        let routed = self.state.admit(&notification, from_peer, self.unix_secs());
        if !routed.fresh {
            self.parts.metrics.dedup_hits.increment(1);
            return false;
        }
        self.parts.metrics.dedup_misses.increment(1);
        if routed.repaired {
            self.parts.metrics.anti_entropy_repairs.increment(1);
        }
        let frame = notification.encode();
        // Peers first: the relays a hop away each deliver to their own wallets, so their
        // link writers are woken (and run) before this relay's many wallet writers rather
        // than after them.
        for (peer, outlet) in routed.targets {
            if outlet.offer(Outbound::Text(frame.clone())) == Offered::Queued {
                self.parts.metrics.notifications_forwarded.increment(1);
            } else {
                tracing::debug!(%peer, "peer queue full: link cut, anti-entropy will catch it up");
            }
        }
        // Resumable wallets get a token naming everything routed so far, this included.
        let position = self
            .parts
            .hub
            .has_resumable()
            .then(|| self.state.position());
        let tokens = position.as_ref().map(|position| TokenContext {
            issuer: &self.issuer,
            position,
            now_unix: self.unix_secs(),
        });
        let delivery = self
            .parts
            .hub
            .publish_notification(&notification, &frame, tokens.as_ref());
        self.counts
            .count_routed(routed.repaired, delivery.slow_disconnects);
        self.parts
            .metrics
            .count_delivery(delivery, OutboundKind::Notification, frame.len());
        true
    }
}

impl Mesh {
    /// Counts a peer's notification dropped unverified, and says so in the log.
    pub(super) fn count_unverified(
        &self,
        peer: &str,
        notification: &Notification,
        why: Unverified,
    ) {
        self.parts
            .metrics
            .mesh_signatures_failed
            .get(why.as_str())
            .increment(1);
        let id: String = notification.message_id.chars().take(64).collect();
        tracing::info!(%peer, message_id = %id, reason = why.as_str(), "peer notification dropped unverified");
    }
}

impl Backbone for Mesh {
    fn publish(&self, notification: Arc<Notification>) -> Accepted {
        self.route(notification, None);
        Accepted::Routed
    }

    fn resume(&self, client: u64, token: &str) -> Result<(), crate::resume::TokenError> {
        self.serve_resume(client, token)
    }

    fn with_token(
        &self,
        client: u64,
        withheld: &[String],
        send: &mut dyn FnMut(Option<&str>),
    ) -> bool {
        Mesh::with_token(self, client, withheld, send);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Wake, Waker};

    use crate::conn::{Outlet, queue};
    use crate::protocol::Notification;

    /// A waker that notes, in a shared list, whose frame woke it.
    struct Noting {
        name: &'static str,
        order: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Wake for Noting {
        fn wake(self: Arc<Self>) {
            self.order.lock().unwrap().push(self.name);
        }
    }

    /// Parks `rx` as its connection's writer would, with a waker that notes `name`.
    fn park(rx: &mut queue::Receiver, name: &'static str, order: &Arc<Mutex<Vec<&'static str>>>) {
        let waker = Waker::from(Arc::new(Noting {
            name,
            order: order.clone(),
        }));
        let recv = std::pin::pin!(rx.recv());
        assert!(recv.poll(&mut Context::from_waker(&waker)).is_pending());
    }

    /// A new notification reaches the peer links before this relay's wallets: the relays
    /// a hop away start their own deliveries without waiting behind this relay's.
    #[test]
    fn peers_are_handed_a_notification_before_the_wallets() {
        let mesh = super::super::testing::mesh("relay-a", None);
        let bound = queue::Bound {
            frames: 8,
            bytes: usize::MAX,
        };
        let order = Arc::new(Mutex::new(Vec::new()));
        let (link, mut link_rx) = Outlet::new(bound);
        mesh.state
            .register_link("relay-a", "relay-b", (link, "relay-a".into()), 8)
            .expect("the first link to relay-b");
        park(&mut link_rx, "peer", &order);
        let mut wallets = Vec::new();
        for id in 1..=3 {
            let (outlet, mut rx) = Outlet::new(bound);
            mesh.parts.hub.join(id, outlet, true, false);
            park(&mut rx, "wallet", &order);
            wallets.push(rx);
        }
        let notification = Notification::for_test("relay-a", "relay-a-0000000a-1", "t", "");
        assert!(mesh.route(Arc::new(notification), None));
        assert_eq!(
            *order.lock().unwrap(),
            ["peer", "wallet", "wallet", "wallet"]
        );
    }
}
