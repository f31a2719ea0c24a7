//! The notification log on disk, in one redb file.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Batch, LogStore, Stored, decode, encode};

/// The file, in `data_dir`.
pub const LOG_FILE: &str = "notification-log.redb";

/// Message id → `order`, `arrived`, notification JSON.
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("notifications");

pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens (or creates) `dir/notification-log.redb`.
    ///
    /// # Errors
    /// The directory cannot be created, or the file cannot be opened (another process
    /// holds it, or it is not a redb file).
    pub fn open(dir: &Path) -> Result<RedbStore, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(LOG_FILE);
        let db = Database::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(RedbStore { db, path })
    }
}

impl LogStore for RedbStore {
    fn commit(&self, batch: &Batch) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(|e| e.to_string())?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(|e| e.to_string())?;
            for put in &batch.puts {
                table
                    .insert(put.notification.message_id.as_str(), encode(put).as_slice())
                    .map_err(|e| e.to_string())?;
            }
            for id in &batch.deletes {
                table.remove(id.as_str()).map_err(|e| e.to_string())?;
            }
        }
        txn.commit().map_err(|e| e.to_string())
    }

    fn waits_on_device(&self) -> bool {
        true
    }

    fn load(&self) -> Result<Vec<Stored>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = match txn.open_table(ENTRIES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.to_string()),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| e.to_string())? {
            let (_, value) = entry.map_err(|e| e.to_string())?;
            if let Some(stored) = decode(value.value()) {
                out.push(stored);
            }
        }
        out.sort_by_key(|s| s.order);
        Ok(out)
    }

    fn size_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redb_store_keeps_what_was_committed_across_reopening() {
        let dir = std::env::temp_dir().join(format!("sdk_relay_logstore_{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        {
            let store = RedbStore::open(&dir).unwrap();
            crate::logstore::tests::round_trip(&store);
        }
        let reopened = RedbStore::open(&dir).unwrap();
        assert_eq!(reopened.load().unwrap().len(), 3);
        std::fs::remove_dir_all(&dir).ok();
    }
}
