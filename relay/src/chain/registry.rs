//! Wallet registrations that survive a restart (`[watcher] persist_wallets`): each
//! registered wallet's keys, labels and scan cursor, in `data_dir/watched-wallets.json`.
//!
//! The file holds scan secret keys. It is written with mode 0600 (a fresh temporary file
//! renamed over the old one, so a crash leaves the old registrations or the new, never a
//! mix), and nothing in it is ever logged: `Debug` of a record redacts the key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::store::{self, Access, StoreError};

/// File name inside the data directory.
pub const WALLETS_FILE: &str = "watched-wallets.json";
const WALLETS_VERSION: u32 = 1;

/// Bytes one saved registration may take: 64 labels of 10 digits, both keys, the id,
/// cursor and away time, with the JSON around them (a unit test checks the largest).
/// One connection registers at most `ws::WALLETS_PER_CONNECTION_MAX` of them; the relay
/// at most `[watcher] wallets_max`.
pub const WALLET_RECORD_BYTES_MAX: u64 = 1536;
/// The file's own JSON around the records.
const FILE_OVERHEAD_BYTES: u64 = 256;

/// One saved registration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletRecord {
    pub id: u64,
    pub scan_secret_key: String,
    pub spend_public_key: String,
    pub labels: Vec<u32>,
    /// Next block to scan for it; `None` until the watcher first placed it.
    pub next_height: Option<u32>,
    /// Unix seconds since its last connection closed; `None` while one is open.
    pub away_since: Option<u64>,
}

impl std::fmt::Debug for WalletRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalletRecord")
            .field("id", &self.id)
            .field("scan_secret_key", &crate::secret::REDACTED)
            .field("spend_public_key", &self.spend_public_key)
            .field("labels", &self.labels)
            .field("next_height", &self.next_height)
            .field("away_since", &self.away_since)
            .finish()
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletsFile {
    pub version: u32,
    /// Ids are never reused, so a saved payment's wallet id keeps meaning that wallet.
    pub next_id: u64,
    pub wallets: Vec<WalletRecord>,
}

/// The largest file `wallets_max` registrations make.
pub fn file_bytes_max(wallets_max: usize) -> u64 {
    (wallets_max as u64).saturating_mul(WALLET_RECORD_BYTES_MAX) + FILE_OVERHEAD_BYTES
}

/// Reads the saved registrations; `None` when there are none.
///
/// # Errors
/// The file cannot be read, is larger than `wallets_max` registrations make, or is not a
/// registrations file (the error never quotes its content).
pub fn load(dir: &Path, wallets_max: usize) -> Result<Option<WalletsFile>, StoreError> {
    let Some(bytes) = store::read_bounded(dir, WALLETS_FILE, file_bytes_max(wallets_max))? else {
        return Ok(None);
    };
    let corrupt = |message: String| StoreError::Corrupt {
        path: dir.join(WALLETS_FILE),
        message,
    };
    let file: WalletsFile = serde_json::from_slice(&bytes).map_err(|e| {
        corrupt(format!(
            "not a registrations file (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    if file.version != WALLETS_VERSION {
        return Err(corrupt(format!(
            "version {} (expected {WALLETS_VERSION})",
            file.version
        )));
    }
    if file.wallets.len() > wallets_max {
        return Err(corrupt(format!(
            "{} registrations, more than wallets_max ({wallets_max})",
            file.wallets.len()
        )));
    }
    Ok(Some(file))
}

/// Saves the registrations, readable by the relay's user only.
///
/// # Errors
/// The directory cannot be created or the file written.
pub fn save(dir: &Path, file: &WalletsFile) -> Result<(), StoreError> {
    let file = WalletsFile {
        version: WALLETS_VERSION,
        ..file.clone()
    };
    let bytes = serde_json::to_vec(&file).expect("registrations serialize");
    store::write_atomic(dir, WALLETS_FILE, &bytes, Access::Private)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::keys::LABELS_MAX;

    fn largest_record() -> WalletRecord {
        WalletRecord {
            id: u64::MAX,
            scan_secret_key: "ab".repeat(32),
            spend_public_key: "cd".repeat(33),
            labels: vec![u32::MAX; LABELS_MAX],
            next_height: Some(u32::MAX),
            away_since: Some(u64::MAX),
        }
    }

    // Proves the byte bound holds for the largest registration, files round-trip, and a
    // file over the bound for `wallets_max` is refused unread.
    #[test]
    fn bounded_round_trip() {
        let record = largest_record();
        let size = serde_json::to_vec(&record).unwrap().len() as u64;
        assert!(size <= WALLET_RECORD_BYTES_MAX, "{size} bytes");
        assert!(!format!("{record:?}").contains(&"ab".repeat(32)));
        let dir = std::env::temp_dir().join(format!("sdk_relay_registry_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir, 2).unwrap(), None);
        let file = WalletsFile {
            version: WALLETS_VERSION,
            next_id: 3,
            wallets: vec![record.clone(), record],
        };
        save(&dir, &file).unwrap();
        assert_eq!(load(&dir, 2).unwrap(), Some(file));
        assert!(load(&dir, 1).is_err(), "two registrations cannot fit one");
        std::fs::write(dir.join(WALLETS_FILE), "{").unwrap();
        let error = load(&dir, 2).unwrap_err().to_string();
        assert!(error.contains("not a registrations file"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
