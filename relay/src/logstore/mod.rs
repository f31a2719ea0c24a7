//! Where the notification log is kept across restarts: a [`LogStore`] takes batches of
//! changes (group commit: one durable transaction for every notification routed in a
//! short interval, never one sync per notification) and gives everything back at start.
//!
//! `RedbStore` keeps it in `data_dir/notification-log.redb` (redb: copy-on-write B-trees,
//! every commit atomic and synced, so a crash leaves the last committed batch). The
//! simulator gives each relay a `MemoryStore`: a disk that survives the relay's crashes
//! and, like a real one, loses what was never committed.

mod redb_store;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use redb_store::{LOG_FILE, RedbStore};

use crate::protocol::Notification;

/// One logged notification as stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Arrival order on this relay (restored in this order).
    pub order: u64,
    /// Unix seconds it arrived (its age in the log counts from here).
    pub arrived: u64,
    pub notification: Arc<Notification>,
}

/// Changes to apply in one transaction: puts first, then deletes (an entry put and
/// deleted in the same batch ends deleted).
#[derive(Debug, Default)]
pub struct Batch {
    pub puts: Vec<Stored>,
    /// Message ids evicted from the log.
    pub deletes: Vec<String>,
    /// Bytes the puts encode to (bounds the batch waiting for its commit).
    pub bytes: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.puts.is_empty() && self.deletes.is_empty()
    }
}

/// A durable home for the notification log.
pub trait LogStore: Send + Sync + 'static {
    /// Applies `batch` atomically and durably.
    ///
    /// # Errors
    /// The storage failed; nothing of the batch is applied.
    fn commit(&self, batch: &Batch) -> Result<(), String>;

    /// Every stored entry, in arrival order (unreadable entries are skipped).
    ///
    /// # Errors
    /// The storage cannot be read.
    fn load(&self) -> Result<Vec<Stored>, String>;

    /// Bytes the store takes on its medium (for the figures).
    fn size_bytes(&self) -> u64;

    /// Whether a commit waits on a device (a synced write): the relay then commits on
    /// the blocking pool, off the tasks that deliver notifications.
    fn waits_on_device(&self) -> bool {
        false
    }
}

/// `order` and `arrived` (big-endian), then the notification as JSON (signature
/// included, `data` byte for byte).
pub fn encode(stored: &Stored) -> Vec<u8> {
    let json = serde_json::to_vec(&*stored.notification).unwrap_or_default();
    let mut value = Vec::with_capacity(16 + json.len());
    value.extend_from_slice(&stored.order.to_be_bytes());
    value.extend_from_slice(&stored.arrived.to_be_bytes());
    value.extend_from_slice(&json);
    value
}

pub fn decode(value: &[u8]) -> Option<Stored> {
    let order = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let arrived = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    let notification: Notification = serde_json::from_slice(value.get(16..)?).ok()?;
    Some(Stored {
        order,
        arrived,
        notification: Arc::new(notification),
    })
}

/// A simulated disk: survives the relay (the simulator keeps it across crashes and
/// restarts) and holds only what was committed.
#[derive(Clone, Default)]
pub struct MemoryStore {
    entries: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LogStore for MemoryStore {
    fn commit(&self, batch: &Batch) -> Result<(), String> {
        let mut entries = self.lock();
        for put in &batch.puts {
            entries.insert(put.notification.message_id.clone(), encode(put));
        }
        for id in &batch.deletes {
            entries.remove(id);
        }
        Ok(())
    }

    fn load(&self) -> Result<Vec<Stored>, String> {
        let mut out: Vec<Stored> = self.lock().values().filter_map(|v| decode(v)).collect();
        out.sort_by_key(|s| s.order);
        Ok(out)
    }

    fn size_bytes(&self) -> u64 {
        self.lock()
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn stored(id: &str, order: u64) -> Stored {
        Stored {
            order,
            arrived: 1_700_000_000 + order,
            notification: Arc::new(Notification {
                topic: String::new(),
                message_id: id.into(),
                relay_id: "r".into(),
                notification_type: "t".into(),
                data: serde_json::value::RawValue::from_string("{\"a\": [1, 2]}".into()).unwrap(),
                timestamp: 7,
                signature: "ab".repeat(64),
            }),
        }
    }

    pub(crate) fn round_trip(store: &dyn LogStore) {
        let mut batch = Batch::default();
        for i in 1..=5 {
            batch.puts.push(stored(&format!("r-0000000a-{i}"), i));
        }
        batch.deletes.push("r-0000000a-2".into());
        store.commit(&batch).unwrap();
        let mut second = Batch::default();
        second.deletes.push("r-0000000a-1".into());
        store.commit(&second).unwrap();
        let loaded = store.load().unwrap();
        let ids: Vec<&str> = loaded
            .iter()
            .map(|s| s.notification.message_id.as_str())
            .collect();
        assert_eq!(ids, ["r-0000000a-3", "r-0000000a-4", "r-0000000a-5"]);
        // `data` comes back byte for byte (the signature covers it).
        assert_eq!(loaded[0].notification.data.get(), "{\"a\": [1, 2]}");
        assert_eq!(loaded[0].arrived, 1_700_000_003);
    }

    #[test]
    fn the_memory_store_keeps_what_was_committed_in_order() {
        let store = MemoryStore::new();
        round_trip(&store);
        // A clone is the same disk (what the simulator hands a restarted relay).
        assert_eq!(store.clone().load().unwrap().len(), 3);
    }
}
