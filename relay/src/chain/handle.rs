//! The relay's side of the watcher: register and unregister wallets, read the status.
//!
//! Shared state is small and held under std mutexes that are never held across an await,
//! so the WebSocket and HTTP tasks can call in without going through a queue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::Notify;

use super::keys::{ScanSecret, WatchedKey, parse_spend_key};
use crate::config::{Config, Network};
use crate::protocol::chain::WalletId;
use crate::protocol::watch::WatchRequest;

/// What `/health` shows about the chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainStatus {
    /// False when `[bitcoin_core]` or `[blindbit]` is not configured.
    pub enabled: bool,
    /// Highest block of the best chain scanned for every caught-up key.
    pub scanned_height: Option<u32>,
    pub core_tip: Option<u32>,
    pub blindbit_height: Option<u32>,
    /// Blocks between Core's tip and `scanned_height`.
    pub lag: Option<u32>,
    /// Which source is unreachable or behind, and why; `None` when healthy.
    pub degraded: Option<String>,
    pub wallets: usize,
}

/// One registered wallet: its keys and the next block to scan for it.
#[derive(Debug, Clone)]
pub(crate) struct WalletEntry {
    pub key: WatchedKey,
    /// `None` until the watcher sets it to the current tip (no birth height given).
    pub next_height: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub network: Network,
    pub wallets_max: usize,
    pub wallets: Mutex<Wallets>,
    pub status: Mutex<ChainStatus>,
    /// Wakes the watcher early so a new wallet's rescan starts at once.
    pub wake: Notify,
}

#[derive(Debug, Default)]
pub(crate) struct Wallets {
    pub entries: BTreeMap<WalletId, WalletEntry>,
    next_id: u64,
}

/// Cloneable handle to a watcher: wallets in, status out.
#[derive(Debug, Clone)]
pub struct WatchHandle {
    pub(crate) shared: Arc<Shared>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Holders only replace plain values; a panic elsewhere cannot leave them torn.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl WatchHandle {
    /// A handle for this configuration; the watcher is enabled when both
    /// `[bitcoin_core]` and `[blindbit]` are configured.
    pub fn from_config(config: &Config) -> WatchHandle {
        let enabled = config.bitcoin_core.is_some() && config.blindbit.is_some();
        WatchHandle::new(config.network, config.watcher.wallets_max, enabled)
    }

    pub fn new(network: Network, wallets_max: usize, enabled: bool) -> WatchHandle {
        let status = ChainStatus {
            enabled,
            ..ChainStatus::default()
        };
        WatchHandle {
            shared: Arc::new(Shared {
                network,
                wallets_max,
                wallets: Mutex::new(Wallets::default()),
                status: Mutex::new(status),
                wake: Notify::new(),
            }),
        }
    }

    /// Starts watching a wallet's keys, rescanning from its birth height (or from the tip
    /// when none is given). Returns its id and base silent-payment address.
    ///
    /// # Errors
    /// A reason fit for the client (never quoting the secret): watcher disabled, too many
    /// wallets, malformed keys or labels.
    pub fn register(&self, request: WatchRequest) -> Result<(WalletId, String), String> {
        if !self.status().enabled {
            return Err("chain watcher disabled: no bitcoin_core/blindbit configured".into());
        }
        let refused = |e: super::keys::KeyError| format!("watch: {e}");
        let scan = ScanSecret::from_hex(&request.scan_secret_key).map_err(refused)?;
        let spend = parse_spend_key(&request.spend_public_key).map_err(refused)?;
        let key =
            WatchedKey::new(scan, spend, &request.labels, self.shared.network).map_err(refused)?;
        let address = key.address().to_string();
        let id = {
            let mut wallets = lock(&self.shared.wallets);
            if wallets.entries.len() >= self.shared.wallets_max {
                return Err(format!(
                    "too many watched wallets (max {})",
                    self.shared.wallets_max
                ));
            }
            wallets.next_id += 1;
            let id = WalletId(wallets.next_id);
            let entry = WalletEntry {
                key,
                next_height: request.birth_height,
            };
            wallets.entries.insert(id, entry);
            lock(&self.shared.status).wallets = wallets.entries.len();
            id
        };
        self.shared.wake.notify_one();
        Ok((id, address))
    }

    /// Stops watching a wallet (no-op when unknown).
    pub fn unregister(&self, id: WalletId) {
        let mut wallets = lock(&self.shared.wallets);
        wallets.entries.remove(&id);
        lock(&self.shared.status).wallets = wallets.entries.len();
    }

    pub fn status(&self) -> ChainStatus {
        lock(&self.shared.status).clone()
    }

    pub(crate) fn update_status(&self, update: impl FnOnce(&mut ChainStatus)) {
        update(&mut lock(&self.shared.status));
    }

    /// A copy of the registered wallets, to scan without holding the lock.
    pub(crate) fn wallets(&self) -> Vec<(WalletId, WalletEntry)> {
        lock(&self.shared.wallets)
            .entries
            .iter()
            .map(|(id, e)| (*id, e.clone()))
            .collect()
    }

    /// Moves a wallet's cursor (if it is still registered).
    pub(crate) fn set_wallet_next(&self, id: WalletId, next: u32) {
        if let Some(entry) = lock(&self.shared.wallets).entries.get_mut(&id) {
            entry.next_height = Some(next);
        }
    }

    /// After a reorg to `fork`: no wallet may be ahead of the new chain.
    pub(crate) fn rewind_wallets(&self, next: u32) {
        for entry in lock(&self.shared.wallets).entries.values_mut() {
            if entry.next_height.is_some_and(|h| h > next) {
                entry.next_height = Some(next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(birth: Option<u32>) -> WatchRequest {
        let spend = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        WatchRequest::from_json(&format!(
            r#"{{"type":"watch","scan_secret_key":"{}","spend_public_key":"{spend}","labels":[1]}}"#,
            "01".repeat(32)
        ))
        .map(|mut r| {
            r.birth_height = birth;
            r
        })
        .unwrap()
    }

    // Proves registration is bounded, gives tsp addresses on signet, and refuses when disabled.
    #[test]
    fn registration_is_bounded() {
        let handle = WatchHandle::new(Network::Signet, 2, true);
        let (a, address) = handle.register(request(Some(1))).unwrap();
        assert!(address.starts_with("tsp1"));
        let (b, _) = handle.register(request(None)).unwrap();
        assert_ne!(a, b);
        assert!(
            handle
                .register(request(None))
                .unwrap_err()
                .contains("too many")
        );
        assert_eq!(handle.status().wallets, 2);
        handle.unregister(a);
        assert_eq!(handle.status().wallets, 1);
        handle.register(request(None)).unwrap();
        let mut config = Config {
            blindbit: Some(crate::config::BlindbitConfig {
                url: "http://127.0.0.1:8000".into(),
            }),
            ..Config::default()
        };
        assert!(!WatchHandle::from_config(&config).status().enabled);
        config.bitcoin_core = Some(crate::config::BitcoinCoreConfig {
            url: "http://127.0.0.1:8332".into(),
            wallet: None,
            rpc_user: None,
            rpc_password: None,
            cookie_file: None,
        });
        assert!(WatchHandle::from_config(&config).status().enabled);
        let off = WatchHandle::new(Network::Signet, 2, false);
        assert!(
            off.register(request(None))
                .unwrap_err()
                .contains("disabled")
        );
        let mut bad = request(None);
        bad.scan_secret_key = "zz".into();
        assert!(!handle.register(bad).unwrap_err().contains("zz"));
    }
}
