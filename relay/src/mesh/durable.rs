//! The notification log kept across restarts: its changes are committed to the relay's
//! `LogStore` in groups (every `GROUP_COMMIT_INTERVAL`, one transaction for all that
//! arrived meanwhile), and at start the log is restored from it, so a restarted relay
//! still serves resumes and anti-entropy from before its restart. A crash loses at most
//! the last interval's changes (anti-entropy fetches them again from peers that have them).

use std::sync::Arc;
use std::time::Duration;

use super::Mesh;

/// How often the log's changes are committed (one synced transaction each time).
pub const GROUP_COMMIT_INTERVAL: Duration = Duration::from_millis(50);

impl Mesh {
    /// Loads the stored log: entries within retention are logged again (with their
    /// arrival time) and remembered as seen; what the bounds drop is deleted from the store.
    pub(super) fn restore_log(&self) {
        let Some(store) = &self.parts.log_store else {
            return;
        };
        let stored = match store.load() {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot read the stored notification log; starting empty");
                return;
            }
        };
        let now = self.unix_secs();
        let retention = self.parts.config.limits.notification_log_retention_secs;
        let _route = self.route_guard();
        let mut state = self.state.lock();
        let mut restored = 0usize;
        let mut expired = Vec::new();
        for entry in stored {
            state.next_order = state.next_order.max(entry.order + 1);
            if now.saturating_sub(entry.arrived) > retention {
                expired.push(entry.notification.message_id.clone());
                continue;
            }
            state.restore_seen(std::slice::from_ref(&entry.notification.message_id));
            state.log.push(entry.arrived, entry.notification);
            restored += 1;
        }
        state.log.expire(now);
        state.note_log_changes(None);
        if let Some(batch) = state.unsynced.as_mut() {
            batch.deletes.extend(expired);
        }
        drop(state);
        if restored > 0 {
            tracing::info!(restored, "restored the notification log from disk");
        }
    }

    /// Commits the log's changes since the last commit (one transaction).
    pub fn flush_log(&self) {
        let Some(store) = &self.parts.log_store else {
            return;
        };
        let batch = {
            let mut state = self.state.lock();
            match state.unsynced.as_mut() {
                Some(batch) if !batch.is_empty() => std::mem::take(batch),
                _ => return,
            }
        };
        if let Err(error) = store.commit(&batch) {
            tracing::warn!(%error, puts = batch.puts.len(), "cannot commit the notification log");
        }
    }
}

/// Commits the log's changes every `GROUP_COMMIT_INTERVAL` for the life of the relay.
pub(super) async fn committer(mesh: Arc<Mesh>) {
    if mesh.parts.log_store.is_none() {
        return;
    }
    loop {
        mesh.clock().sleep(GROUP_COMMIT_INTERVAL).await;
        mesh.flush_log();
    }
}
