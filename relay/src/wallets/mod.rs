//! Wallets registered over WebSocket with the chain watcher: which connections each one's
//! payments go to, what is kept for it while it is away, and the delivery of what the
//! watcher sees.
//!
//! A wallet is its keys: registering the same scan and spend key again (after a
//! reconnection, or a relay restart) is the same wallet, and binds it to the new
//! connection. The handshake's `client_id` is not used for this: nothing proves it, and
//! whoever claimed a wallet's id would receive its payments.
//!
//! A wallet's own events (`payment_detected`, `payment_reorged`) are published on its
//! private topic (`WatchedKey::topic`): they go through the mesh, its log and resume
//! tokens like every notification, so a wallet that resumes on any relay gets those
//! found while it was away, once. Its connection is subscribed to the topic when it
//! registers its keys (the proof: it holds the scan key), or by a resume token naming it.

mod pending;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::chain::{ChainEvent, Registration, Target, WalletId, WatchHandle, WatchRequest};
use crate::hub::ClientId;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::routing::{Accepted, Publisher, Refused};

pub use pending::{Kept, PENDING_BYTES_MAX, PENDING_FILE, PENDING_WALLET_BYTES_MAX, Pending};

/// A wallet registered (or registered again) by a connection.
#[derive(Debug)]
pub struct Registered {
    pub wallet: WalletId,
    pub address: String,
    /// Its private topic, which the registering connection subscribes to.
    pub topic: String,
    /// What was kept for it while it was away, to send right after the answer.
    pub kept: Kept,
}

/// Bindings and pending notifications change together, under one lock: a payment is
/// either sent to a bound connection or kept for the wallet, never lost in between.
#[derive(Default)]
struct State {
    /// The open connections that registered each wallet.
    bound: BTreeMap<WalletId, BTreeSet<ClientId>>,
    pending: Pending,
}

pub struct Wallets {
    chain: WatchHandle,
    /// Seconds a wallet may stay away before it is forgotten.
    away_secs_max: u64,
    state: Mutex<State>,
    /// Where the pending store is saved; `None` when registrations end with their
    /// connection (`persist_wallets = false`).
    store: Option<PathBuf>,
    publisher: Arc<Publisher>,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
}

impl Wallets {
    /// `data_dir` is where the pending store lives when the watcher keeps registrations;
    /// a wallet away longer than `away_secs_max` is forgotten.
    pub fn new(
        chain: WatchHandle,
        data_dir: PathBuf,
        away_secs_max: u64,
        publisher: Arc<Publisher>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
    ) -> Wallets {
        let store = chain.persists().then_some(data_dir);
        let pending = store
            .as_deref()
            .map(|dir| load_pending(dir, &chain))
            .unwrap_or_default();
        Wallets {
            chain,
            away_secs_max,
            state: Mutex::new(State {
                bound: BTreeMap::new(),
                pending,
            }),
            store,
            publisher,
            lifecycle,
            metrics,
        }
    }

    /// Registers a wallet's keys with the watcher and binds it to `client`, then calls
    /// `answer` with the outcome (and what was kept for a returning wallet) while no
    /// payment can be delivered: whatever `answer` sends comes before any later payment.
    pub fn register<R>(
        &self,
        request: WatchRequest,
        client: ClientId,
        answer: impl FnOnce(Result<Registered, String>) -> R,
    ) -> R {
        let mut state = self.lock();
        let registration = match self.chain.register(request) {
            Ok(registration) => registration,
            Err(reason) => return answer(Err(reason)),
        };
        let Registration {
            id,
            address,
            evicted,
            topic,
            ..
        } = registration;
        if let Some(gone) = evicted {
            state.bound.remove(&gone);
            state.pending.forget(gone);
        }
        state.bound.entry(id).or_default().insert(client);
        let kept = state.pending.take(id);
        if !kept.frames.is_empty() || kept.dropped > 0 || evicted.is_some() {
            self.save_pending(&mut state);
        }
        answer(Ok(Registered {
            wallet: id,
            address,
            topic,
            kept,
        }))
    }

    /// `client`'s connection closed. A wallet left without a connection stays watched
    /// (its payments kept for it) when registrations persist, and is forgotten otherwise.
    pub fn release(&self, wallet: WalletId, client: ClientId) {
        let mut state = self.lock();
        let Some(clients) = state.bound.get_mut(&wallet) else {
            return;
        };
        clients.remove(&client);
        if !clients.is_empty() {
            return;
        }
        state.bound.remove(&wallet);
        if self.store.is_some() {
            self.chain.set_away(wallet, self.lifecycle.unix_secs());
        } else {
            self.chain.unregister(wallet);
        }
    }

    /// Stops watching a wallet for good: registration and kept payments are forgotten.
    pub fn unwatch(&self, wallet: WalletId) {
        let mut state = self.lock();
        state.bound.remove(&wallet);
        state.pending.forget(wallet);
        self.chain.unregister(wallet);
        self.save_pending(&mut state);
    }

    /// Publishes what the chain watcher saw: a wallet's payments on its private topic
    /// (and kept for it here while no connection of this relay has it registered, for a
    /// wallet that comes back without resuming); the relay's own payments and new blocks
    /// to every subscriber of the mesh.
    pub fn deliver(&self, event: &ChainEvent) {
        if matches!(event, ChainEvent::PaymentDetected { .. }) {
            self.metrics.chain_payments_detected.increment(1);
        }
        let data = serde_json::value::to_raw_value(&event.data()).expect("event data serializes");
        let notification_type = event.notification_type().to_string();
        let Some(Target::Wallet(wallet)) = event.target() else {
            if matches!(event, ChainEvent::BlockMined { .. }) {
                // A new block is a natural clock (about every ten minutes) for this.
                self.forget_long_away();
            }
            self.publisher.publish(notification_type, &data);
            return;
        };
        let Some(topic) = self.chain.topic_of(wallet) else {
            return;
        };
        // Published under the lock: a connection registering the wallet meanwhile is
        // either subscribed before (and gets it live) or finds it kept (and gets it then).
        let mut state = self.lock();
        let (notification, accepted) = self.publisher.publish_to(topic, notification_type, &data);
        if let Accepted::Refused(Refused(why)) = accepted {
            tracing::warn!(reason = why, %wallet, "a wallet's chain event was not published");
        }
        if !state.bound.contains_key(&wallet) && self.store.is_some() {
            state.pending.push(wallet, &notification.encode());
            self.save_pending(&mut state);
        }
    }

    /// Forgets the wallets away longer than `away_secs_max`, and what was kept for them.
    fn forget_long_away(&self) {
        let now = self.lifecycle.unix_secs();
        let mut state = self.lock();
        let expired = self
            .chain
            .expire_away(now.saturating_sub(self.away_secs_max));
        for wallet in &expired {
            state.pending.forget(*wallet);
        }
        if !expired.is_empty() {
            self.save_pending(&mut state);
        }
    }

    fn save_pending(&self, state: &mut State) {
        if let Some(dir) = &self.store
            && let Err(error) = state.pending.save(dir)
        {
            tracing::warn!(%error, "cannot save the payments kept for away wallets");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every statement leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn load_pending(dir: &std::path::Path, chain: &WatchHandle) -> Pending {
    match Pending::load(dir, |id| chain.is_registered(id)) {
        Ok(pending) => pending.unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%error, "payments kept for away wallets could not be read; starting empty");
            Pending::default()
        }
    }
}
