//! Notifications kept for wallets that are away: a registered wallet's `payment_detected`
//! and `payment_reorged` found while no connection of it is open, delivered when it
//! registers again.
//!
//! Bounded in bytes, per wallet and for the relay; past a bound the oldest notification
//! goes, and the wallet is told how many went (`pending_dropped` in its `watch_response`).
//! Saved in `data_dir/wallets-pending.json` (mode 0600: payments reveal a wallet's
//! transactions) at every change, so a restart loses none.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::chain::WalletId;
use crate::chain::store::{self, Access, StoreError};

/// File name inside the data directory.
pub const PENDING_FILE: &str = "wallets-pending.json";
const PENDING_VERSION: u32 = 1;
/// Bytes of notifications kept for one wallet (about 150 payments).
pub const PENDING_WALLET_BYTES_MAX: usize = 64 << 10;
/// Bytes of notifications kept for all away wallets together.
pub const PENDING_BYTES_MAX: usize = 4 << 20;
/// The saved file: each frame escaped as a JSON string (at most twice its size), plus the
/// JSON around frames and wallets.
const PENDING_FILE_BYTES_MAX: u64 = 2 * PENDING_BYTES_MAX as u64 + (1 << 20);

/// One away wallet's notifications, oldest first, each with its arrival number (the
/// relay-wide order that decides which is the oldest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Queue {
    frames: VecDeque<(u64, String)>,
    /// Dropped since the wallet last registered.
    dropped: u64,
    #[serde(skip)]
    bytes: usize,
}

/// Every away wallet's notifications.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    version: u32,
    next_seq: u64,
    queues: BTreeMap<u64, Queue>,
    #[serde(skip)]
    bytes: usize,
}

/// What a returning wallet is handed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub frames: Vec<Bytes>,
    pub dropped: u64,
}

impl Pending {
    /// Keeps `frame` for `wallet`, dropping the oldest past a bound.
    pub fn push(&mut self, wallet: WalletId, frame: &[u8]) {
        let Ok(text) = std::str::from_utf8(frame) else {
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let queue = self.queues.entry(wallet.0).or_default();
        queue.frames.push_back((seq, text.to_string()));
        queue.bytes += text.len();
        self.bytes += text.len();
        while queue.bytes > PENDING_WALLET_BYTES_MAX {
            let (_, old) = queue.frames.pop_front().expect("bytes > 0 means a frame");
            queue.bytes -= old.len();
            queue.dropped += 1;
            self.bytes -= old.len();
        }
        while self.bytes > PENDING_BYTES_MAX {
            self.drop_oldest();
        }
    }

    /// Drops the oldest frame of any wallet.
    fn drop_oldest(&mut self) {
        let oldest = self
            .queues
            .iter()
            .filter_map(|(id, q)| q.frames.front().map(|(seq, _)| (*seq, *id)))
            .min();
        let Some((_, id)) = oldest else {
            self.bytes = 0;
            return;
        };
        let queue = self.queues.get_mut(&id).expect("found above");
        let (_, old) = queue.frames.pop_front().expect("found above");
        queue.bytes -= old.len();
        queue.dropped += 1;
        self.bytes -= old.len();
    }

    /// Hands over (and forgets) what was kept for `wallet`.
    pub fn take(&mut self, wallet: WalletId) -> Kept {
        let Some(queue) = self.queues.remove(&wallet.0) else {
            return Kept::default();
        };
        self.bytes -= queue.bytes;
        Kept {
            frames: queue
                .frames
                .into_iter()
                .map(|(_, f)| Bytes::from(f))
                .collect(),
            dropped: queue.dropped,
        }
    }

    /// Forgets what was kept for `wallet` (it unwatched, or was forgotten).
    pub fn forget(&mut self, wallet: WalletId) {
        self.take(wallet);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reads the saved store, keeping only wallets `registered` says still are; `None`
    /// when there is none. Bounds hold again after loading, whatever the file held.
    ///
    /// # Errors
    /// The file cannot be read, is over its bound, or is not a pending store.
    pub fn load(
        dir: &Path,
        registered: impl Fn(WalletId) -> bool,
    ) -> Result<Option<Pending>, StoreError> {
        let Some(bytes) = store::read_bounded(dir, PENDING_FILE, PENDING_FILE_BYTES_MAX)? else {
            return Ok(None);
        };
        let corrupt = |message: String| StoreError::Corrupt {
            path: dir.join(PENDING_FILE),
            message,
        };
        let saved: Pending = serde_json::from_slice(&bytes).map_err(|e| {
            corrupt(format!(
                "not a pending store (line {} column {})",
                e.line(),
                e.column()
            ))
        })?;
        if saved.version != PENDING_VERSION {
            return Err(corrupt(format!("version {}", saved.version)));
        }
        let mut frames: Vec<(u64, u64, String)> = Vec::new();
        let mut pending = Pending {
            next_seq: saved.next_seq,
            ..Pending::default()
        };
        for (id, queue) in saved.queues {
            if !registered(WalletId(id)) {
                continue;
            }
            let kept = pending.queues.entry(id).or_default();
            kept.dropped = queue.dropped;
            frames.extend(queue.frames.into_iter().map(|(seq, f)| (seq, id, f)));
        }
        frames.sort();
        for (seq, id, frame) in frames {
            pending.next_seq = pending.next_seq.max(seq + 1);
            pending.push(WalletId(id), frame.as_bytes());
        }
        Ok(Some(pending))
    }

    /// Saves the store, readable by the relay's user only.
    ///
    /// # Errors
    /// The directory cannot be created or the file written.
    pub fn save(&mut self, dir: &Path) -> Result<(), StoreError> {
        self.version = PENDING_VERSION;
        let bytes = serde_json::to_vec(self).expect("pending store serializes");
        store::write_atomic(dir, PENDING_FILE, &bytes, Access::Private)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize, len: usize) -> Vec<u8> {
        let mut f = format!("{{\"n\":{n},\"pad\":\"").into_bytes();
        f.resize(len - 2, b'x');
        f.extend_from_slice(b"\"}");
        f
    }

    // Proves the per-wallet bound drops that wallet's oldest with a count, handing over
    // keeps arrival order, and the relay-wide bound drops the oldest of any wallet.
    #[test]
    fn bounded_in_bytes_oldest_first() {
        let mut pending = Pending::default();
        let (a, b) = (WalletId(1), WalletId(2));
        let size = 1000;
        let per_wallet = PENDING_WALLET_BYTES_MAX / size;
        for n in 0..per_wallet + 3 {
            pending.push(a, &frame(n, size));
        }
        let kept = pending.take(a);
        assert_eq!(kept.dropped, 3);
        assert_eq!(kept.frames.len(), per_wallet);
        assert!(
            kept.frames[0].starts_with(b"{\"n\":3,"),
            "oldest went first"
        );
        assert_eq!(pending.bytes(), 0);

        let wallets = PENDING_BYTES_MAX / PENDING_WALLET_BYTES_MAX;
        for n in 0..per_wallet {
            for w in 0..=wallets as u64 {
                pending.push(WalletId(10 + w), &frame(n, size));
            }
        }
        assert!(pending.bytes() <= PENDING_BYTES_MAX);
        let first = pending.take(WalletId(10));
        assert!(first.dropped > 0, "the relay-wide bound dropped the oldest");
        pending.push(b, &frame(0, size));
        assert_eq!(pending.take(b).frames.len(), 1);
    }

    // Proves the store survives a save and load (order and counts kept, wallets no
    // longer registered left out), with mode 0600.
    #[cfg(unix)]
    #[test]
    fn saved_and_loaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sdk_relay_pending_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut pending = Pending::default();
        pending.push(WalletId(1), b"{\"a\":1}");
        pending.push(WalletId(2), b"{\"b\":1}");
        pending.push(WalletId(1), b"{\"a\":2}");
        pending.save(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(PENDING_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut loaded = Pending::load(&dir, |id| id == WalletId(1))
            .unwrap()
            .unwrap();
        assert_eq!(loaded.take(WalletId(2)), Kept::default());
        let kept = loaded.take(WalletId(1));
        assert_eq!(
            kept.frames,
            vec![Bytes::from("{\"a\":1}"), Bytes::from("{\"a\":2}")]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
