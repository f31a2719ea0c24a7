//! The relay's side of the watcher: register and unregister wallets, read the status.
//!
//! Shared state is small and held under std mutexes that are never held across an await,
//! so the WebSocket and HTTP tasks can call in without going through a queue. With
//! `[watcher] persist_wallets`, registrations and their scan cursors are saved
//! (`registry`) by the watcher's loop after a change, at most once per
//! [`WALLETS_SAVE_INTERVAL`]: wallets cannot make the relay rewrite the file at their
//! message rate, and a crash loses at most the changes since the last save (a wallet
//! registered just before it registers again when it comes back).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::keys::{ScanSecret, WatchedKey, parse_spend_key};
use super::registry::{self, WalletRecord, WalletsFile};
use super::store::StoreError;
use crate::config::{Config, Network};
use crate::protocol::chain::WalletId;
use crate::protocol::watch::WatchRequest;

/// Least time between two saves of the registrations.
pub const WALLETS_SAVE_INTERVAL: Duration = Duration::from_secs(1);

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
    /// Registered wallets, away ones included.
    pub wallets: usize,
}

/// One registered wallet: its keys and the next block to scan for it.
#[derive(Debug, Clone)]
pub(crate) struct WalletEntry {
    pub key: WatchedKey,
    pub labels: Vec<u32>,
    /// `None` until the watcher sets it to the current tip (no birth height given).
    pub next_height: Option<u32>,
    /// Unix seconds since its last connection closed; `None` while one is open.
    pub away_since: Option<u64>,
}

impl WalletEntry {
    fn is(&self, scan: &ScanSecret, spend: &silentpayments::secp256k1::PublicKey) -> bool {
        self.key.scan() == scan && self.key.spend_key() == spend
    }

    fn record(&self, id: WalletId) -> WalletRecord {
        WalletRecord {
            id: id.0,
            scan_secret_key: self.key.scan().to_hex(),
            spend_public_key: hex::encode(self.key.spend_key().serialize()),
            labels: self.labels.clone(),
            next_height: self.next_height,
            away_since: self.away_since,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub network: Network,
    pub wallets_max: usize,
    pub wallets: Mutex<Wallets>,
    pub status: Mutex<ChainStatus>,
    /// Wakes the watcher early so a new wallet's rescan starts at once.
    pub wake: Notify,
    /// Where registrations are saved; `None` when they are not (`persist_wallets = false`).
    store: Option<PathBuf>,
    /// When the registrations were last saved; held while saving, so saves never
    /// overlap and the file never goes back to an older snapshot.
    last_save: Mutex<Option<Instant>>,
    /// Something to save changed since the last save.
    dirty: AtomicBool,
}

#[derive(Debug, Default)]
pub(crate) struct Wallets {
    pub entries: BTreeMap<WalletId, WalletEntry>,
    next_id: u64,
}

/// A wallet registered by [`WatchHandle::register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub id: WalletId,
    /// Its base silent-payment address.
    pub address: String,
    /// The same keys were registered already (by an earlier connection, or before a
    /// restart): same id, its cursor kept.
    pub returning: bool,
    /// An away wallet forgotten to make room (the relay was full).
    pub evicted: Option<WalletId>,
    /// Its private topic (`WatchedKey::topic`).
    pub topic: String,
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
    /// `[bitcoin_core]` and `[blindbit]` are configured. With `persist_wallets`, the
    /// registrations saved in `data_dir` are loaded (an unreadable file is set aside
    /// with a warning, never overwritten).
    pub fn from_config(config: &Config) -> WatchHandle {
        let enabled = config.bitcoin_core.is_some() && config.blindbit.is_some();
        let store = (enabled && config.watcher.persist_wallets).then(|| config.data_dir.clone());
        let handle = WatchHandle::build(config.network, config.watcher.wallets_max, enabled, store);
        handle.load_saved();
        handle
    }

    /// A handle that keeps registrations in memory only.
    pub fn new(network: Network, wallets_max: usize, enabled: bool) -> WatchHandle {
        WatchHandle::build(network, wallets_max, enabled, None)
    }

    fn build(
        network: Network,
        wallets_max: usize,
        enabled: bool,
        store: Option<PathBuf>,
    ) -> WatchHandle {
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
                store,
                last_save: Mutex::new(None),
                dirty: AtomicBool::new(false),
            }),
        }
    }

    /// Whether registrations outlive their connection (and the relay).
    pub fn persists(&self) -> bool {
        self.shared.store.is_some()
    }

    fn load_saved(&self) {
        let Some(dir) = &self.shared.store else {
            return;
        };
        let file = match registry::load(dir, self.shared.wallets_max) {
            Ok(file) => file,
            Err(error) => {
                let aside = dir.join(format!("{}.unreadable", registry::WALLETS_FILE));
                let _ = std::fs::rename(dir.join(registry::WALLETS_FILE), &aside);
                tracing::warn!(%error, aside = %aside.display(), "saved wallet registrations set aside; wallets must register again");
                None
            }
        };
        let Some(file) = file else { return };
        let mut wallets = lock(&self.shared.wallets);
        wallets.next_id = file.next_id;
        for record in file.wallets {
            match self.entry_from(&record) {
                Ok(entry) => {
                    wallets.next_id = wallets.next_id.max(record.id);
                    wallets.entries.insert(WalletId(record.id), entry);
                }
                Err(error) => tracing::warn!(id = record.id, %error, "saved wallet skipped"),
            }
        }
        lock(&self.shared.status).wallets = wallets.entries.len();
        tracing::info!(
            wallets = wallets.entries.len(),
            "saved wallet registrations loaded"
        );
    }

    fn entry_from(&self, record: &WalletRecord) -> Result<WalletEntry, super::keys::KeyError> {
        let key = WatchedKey::new(
            ScanSecret::from_hex(&record.scan_secret_key)?,
            parse_spend_key(&record.spend_public_key)?,
            &record.labels,
            self.shared.network,
        )?;
        Ok(WalletEntry {
            key,
            labels: record.labels.clone(),
            next_height: record.next_height,
            away_since: record.away_since,
        })
    }

    /// Starts watching a wallet's keys, rescanning from its birth height (or from the tip
    /// when none is given). Keys already registered (same scan and spend key) are the
    /// same wallet: it keeps its id and cursor, and takes the new labels. When the relay
    /// is full, the wallet away the longest makes room.
    ///
    /// # Errors
    /// A reason fit for the client (never quoting the secret): watcher disabled, too many
    /// wallets, malformed keys or labels.
    pub fn register(&self, request: WatchRequest) -> Result<Registration, String> {
        if !self.status().enabled {
            return Err(
                "watch: chain watcher disabled: no bitcoin_core/blindbit configured".into(),
            );
        }
        let refused = |e: super::keys::KeyError| format!("watch: {e}");
        let scan = ScanSecret::from_hex(&request.scan_secret_key).map_err(refused)?;
        let spend = parse_spend_key(&request.spend_public_key).map_err(refused)?;
        let key = WatchedKey::new(scan.clone(), spend, &request.labels, self.shared.network)
            .map_err(refused)?;
        let address = key.address().to_string();
        let topic = key.topic();
        let entry = WalletEntry {
            key,
            labels: request.labels,
            next_height: request.birth_height,
            away_since: None,
        };
        let registration = {
            let mut wallets = lock(&self.shared.wallets);
            let registration = self.insert(&mut wallets, entry, &scan, &spend, address, topic)?;
            lock(&self.shared.status).wallets = wallets.entries.len();
            registration
        };
        self.changed();
        Ok(registration)
    }

    fn insert(
        &self,
        wallets: &mut Wallets,
        entry: WalletEntry,
        scan: &ScanSecret,
        spend: &silentpayments::secp256k1::PublicKey,
        address: String,
        topic: String,
    ) -> Result<Registration, String> {
        if let Some((id, known)) = wallets.entries.iter_mut().find(|(_, e)| e.is(scan, spend)) {
            known.key = entry.key;
            known.labels = entry.labels;
            known.away_since = None;
            return Ok(Registration {
                id: *id,
                address,
                returning: true,
                evicted: None,
                topic,
            });
        }
        let mut evicted = None;
        if wallets.entries.len() >= self.shared.wallets_max {
            let away_longest = wallets
                .entries
                .iter()
                .filter_map(|(id, e)| e.away_since.map(|since| (since, *id)))
                .min();
            let Some((_, id)) = away_longest else {
                return Err(format!(
                    "watch: too many watched wallets (max {})",
                    self.shared.wallets_max
                ));
            };
            wallets.entries.remove(&id);
            tracing::info!(wallet = %id, "forgot the wallet away the longest to make room");
            evicted = Some(id);
        }
        wallets.next_id += 1;
        let id = WalletId(wallets.next_id);
        wallets.entries.insert(id, entry);
        Ok(Registration {
            id,
            address,
            returning: false,
            evicted,
            topic,
        })
    }

    /// Stops watching a wallet (no-op when unknown).
    pub fn unregister(&self, id: WalletId) {
        {
            let mut wallets = lock(&self.shared.wallets);
            if wallets.entries.remove(&id).is_none() {
                return;
            }
            lock(&self.shared.status).wallets = wallets.entries.len();
        }
        self.changed();
    }

    /// Whether the wallet is registered (connected or away).
    pub fn is_registered(&self, id: WalletId) -> bool {
        lock(&self.shared.wallets).entries.contains_key(&id)
    }

    /// A registered wallet's private topic.
    pub fn topic_of(&self, id: WalletId) -> Option<String> {
        lock(&self.shared.wallets)
            .entries
            .get(&id)
            .map(|entry| entry.key.topic())
    }

    /// Records that the wallet's last connection closed at `unix_secs`: it stays
    /// registered and scanned, and is the first to go when the relay is full.
    pub fn set_away(&self, id: WalletId, unix_secs: u64) {
        if let Some(entry) = lock(&self.shared.wallets).entries.get_mut(&id) {
            entry.away_since = Some(unix_secs);
        }
        self.changed();
    }

    /// Forgets every wallet away since before `unix_secs`; returns them.
    pub fn expire_away(&self, unix_secs: u64) -> Vec<WalletId> {
        let expired: Vec<WalletId> = {
            let mut wallets = lock(&self.shared.wallets);
            let expired: Vec<WalletId> = wallets
                .entries
                .iter()
                .filter(|(_, e)| e.away_since.is_some_and(|since| since < unix_secs))
                .map(|(id, _)| *id)
                .collect();
            for id in &expired {
                wallets.entries.remove(id);
            }
            lock(&self.shared.status).wallets = wallets.entries.len();
            expired
        };
        if !expired.is_empty() {
            tracing::info!(wallets = expired.len(), "forgot wallets away too long");
            self.changed();
        }
        expired
    }

    /// Marks the registrations to be saved and wakes the watcher (which saves them, and
    /// starts a new wallet's rescan at once).
    fn changed(&self) {
        self.shared.dirty.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
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
            self.shared.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// After a reorg to `fork`: no wallet may be ahead of the new chain.
    pub(crate) fn rewind_wallets(&self, next: u32) {
        for entry in lock(&self.shared.wallets).entries.values_mut() {
            if entry.next_height.is_some_and(|h| h > next) {
                entry.next_height = Some(next);
                self.shared.dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Saves the registrations if anything changed since the last save, unless that was
    /// less than [`WALLETS_SAVE_INTERVAL`] before `now` (then a later call saves them);
    /// `now` = `None` saves regardless (shutdown).
    ///
    /// # Errors
    /// The file cannot be written (it is tried again at the next call).
    pub(crate) fn save_changed(&self, now: Option<Instant>) -> Result<(), StoreError> {
        let Some(dir) = &self.shared.store else {
            return Ok(());
        };
        let mut last_save = lock(&self.shared.last_save);
        let too_soon = |at: Instant| {
            now.is_some_and(|now| now.saturating_duration_since(at) < WALLETS_SAVE_INTERVAL)
        };
        if last_save.is_some_and(too_soon) || !self.shared.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let file = {
            let wallets = lock(&self.shared.wallets);
            WalletsFile {
                version: 0,
                next_id: wallets.next_id,
                wallets: wallets
                    .entries
                    .iter()
                    .map(|(id, e)| e.record(*id))
                    .collect(),
            }
        };
        if now.is_some() {
            *last_save = now;
        }
        registry::save(dir, &file).inspect_err(|_| {
            self.shared.dirty.store(true, Ordering::Relaxed);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scan: u8, birth: Option<u32>) -> WatchRequest {
        let spend = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
        WatchRequest::from_json(&format!(
            r#"{{"type":"watch","scan_secret_key":"{}","spend_public_key":"{spend}","labels":[1]}}"#,
            format!("{scan:02x}").repeat(32)
        ))
        .map(|mut r| {
            r.birth_height = birth;
            r
        })
        .unwrap()
    }

    // Proves registration is bounded, the same keys are the same wallet, the wallet away
    // the longest makes room, addresses are tsp on signet, and a disabled watcher refuses.
    #[test]
    fn registration_is_bounded() {
        let handle = WatchHandle::new(Network::Signet, 2, true);
        let a = handle.register(request(1, Some(1))).unwrap();
        assert!(a.address.starts_with("tsp1"));
        let b = handle.register(request(2, None)).unwrap();
        assert_ne!(a.id, b.id);
        let again = handle.register(request(1, None)).unwrap();
        assert_eq!((again.id, again.returning), (a.id, true));
        let full = handle.register(request(3, None)).unwrap_err();
        assert_eq!(full, "watch: too many watched wallets (max 2)");
        handle.set_away(b.id, 200);
        handle.set_away(a.id, 100);
        let c = handle.register(request(3, None)).unwrap();
        assert_eq!(c.evicted, Some(a.id), "away the longest");
        assert_eq!(
            handle.expire_away(200),
            vec![],
            "away since 200, not before"
        );
        assert_eq!(handle.expire_away(201), vec![b.id]);
        let b = handle.register(request(2, None)).unwrap();
        assert!(!handle.is_registered(a.id) && handle.is_registered(b.id));
        assert_eq!(handle.status().wallets, 2);
        handle.unregister(c.id);
        assert_eq!(handle.status().wallets, 1);
        let off = WatchHandle::new(Network::Signet, 2, false);
        assert!(
            off.register(request(1, None))
                .unwrap_err()
                .contains("disabled")
        );
        let mut bad = request(1, None);
        bad.scan_secret_key = "zz".into();
        assert!(!handle.register(bad).unwrap_err().contains("zz"));
    }

    fn config(dir: &std::path::Path, persist: bool) -> Config {
        let mut config = Config {
            data_dir: dir.to_path_buf(),
            blindbit: Some(crate::config::BlindbitConfig {
                url: "http://127.0.0.1:8000".into(),
                ca_file: None,
            }),
            ..Config::default()
        };
        config.watcher.persist_wallets = persist;
        assert!(!WatchHandle::from_config(&config).status().enabled);
        config.bitcoin_core = Some(crate::config::BitcoinCoreConfig {
            url: "http://127.0.0.1:8332".into(),
            wallet: None,
            rpc_user: None,
            rpc_password: None,
            cookie_file: None,
            ca_file: None,
        });
        config
    }

    // Proves registrations and cursors survive a restart with the same ids (never reused),
    // an unreadable file is set aside rather than overwritten, and nothing is saved with
    // persist_wallets = false.
    #[test]
    fn registrations_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("sdk_relay_handle_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = WatchHandle::from_config(&config(&dir, true));
        assert!(first.status().enabled && first.persists());
        let a = first.register(request(1, Some(10))).unwrap();
        let b = first.register(request(2, None)).unwrap();
        first.set_wallet_next(a.id, 42);
        let start = crate::rt::Clock::now(&crate::rt::TokioClock);
        first.save_changed(Some(start)).unwrap();
        first.unregister(b.id);
        first.set_away(a.id, 7);
        let unsaved = WatchHandle::from_config(&config(&dir, true));
        assert_eq!(
            unsaved.status().wallets,
            2,
            "not saved again within the interval"
        );
        first
            .save_changed(Some(start + WALLETS_SAVE_INTERVAL))
            .unwrap();
        let second = WatchHandle::from_config(&config(&dir, true));
        let wallets = second.wallets();
        assert_eq!(wallets.len(), 1);
        let (id, entry) = &wallets[0];
        assert_eq!(
            (*id, entry.next_height, entry.away_since),
            (a.id, Some(42), Some(7))
        );
        assert_eq!(entry.labels, vec![1]);
        let c = second.register(request(3, None)).unwrap();
        assert!(c.id > b.id, "ids are never reused: {c:?}");
        let back = second.register(request(1, Some(10))).unwrap();
        assert_eq!((back.id, back.returning), (a.id, true));
        assert_eq!(second.wallets()[0].1.next_height, Some(42), "cursor kept");

        std::fs::write(dir.join(registry::WALLETS_FILE), "{").unwrap();
        let third = WatchHandle::from_config(&config(&dir, true));
        assert_eq!(third.status().wallets, 0);
        let aside = dir.join(format!("{}.unreadable", registry::WALLETS_FILE));
        assert_eq!(std::fs::read_to_string(aside).unwrap(), "{");

        let off_dir = dir.join("off");
        let off = WatchHandle::from_config(&config(&off_dir, false));
        assert!(!off.persists());
        off.register(request(1, None)).unwrap();
        assert!(!off_dir.join(registry::WALLETS_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
