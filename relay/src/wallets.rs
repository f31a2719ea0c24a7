//! Wallets registered over WebSocket with the chain watcher: which connection each one's
//! payments go to, and the delivery of what the watcher sees.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::chain::{ChainEvent, Target, WalletId, WatchHandle, WatchRequest};
use crate::conn::Outbound;
use crate::hub::{ClientId, Hub};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::protocol::OutboundKind;
use crate::routing::Publisher;

pub struct Wallets {
    chain: WatchHandle,
    /// Which connection each registered wallet's payments go to.
    bound: Mutex<BTreeMap<WalletId, ClientId>>,
    publisher: Arc<Publisher>,
    hub: Arc<Hub>,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
}

impl Wallets {
    pub fn new(
        chain: WatchHandle,
        publisher: Arc<Publisher>,
        hub: Arc<Hub>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
    ) -> Wallets {
        Wallets {
            chain,
            bound: Mutex::new(BTreeMap::new()),
            publisher,
            hub,
            lifecycle,
            metrics,
        }
    }

    /// Registers a wallet's keys with the watcher; its payments go to `client`. Returns
    /// the wallet and its silent-payment address.
    ///
    /// # Errors
    /// Why the request was refused, for the wallet to read.
    pub fn register(
        &self,
        request: WatchRequest,
        client: ClientId,
    ) -> Result<(WalletId, String), String> {
        let (wallet, address) = self.chain.register(request)?;
        self.lock().insert(wallet, client);
        Ok((wallet, address))
    }

    /// Forgets a wallet whose connection closed, and stops watching it.
    pub fn release(&self, wallet: WalletId) {
        self.lock().remove(&wallet);
        self.chain.unregister(wallet);
    }

    /// Publishes what the chain watcher saw: a wallet's payments to that wallet's
    /// connection only; the relay's own payments and new blocks to every subscriber of
    /// the mesh.
    pub fn deliver(&self, event: &ChainEvent) {
        if matches!(event, ChainEvent::PaymentDetected { .. }) {
            self.metrics.chain_payments_detected.increment(1);
        }
        let data = serde_json::value::to_raw_value(&event.data()).expect("event data serializes");
        let notification_type = event.notification_type().to_string();
        let Some(Target::Wallet(wallet)) = event.target() else {
            self.publisher.publish(notification_type, &data);
            return;
        };
        let client = self.lock().get(&wallet).copied();
        let notification =
            self.publisher
                .origin()
                .stamp(notification_type, data, self.lifecycle.unix_secs());
        let frame = notification.encode();
        if let Some(client) = client {
            let delivery = self.hub.send_to(client, Outbound::Text(frame.clone()));
            self.metrics
                .count_delivery(delivery, OutboundKind::Notification, frame.len());
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<WalletId, ClientId>> {
        // Every statement leaves the map consistent, so a poisoned lock is still usable.
        self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }
}
