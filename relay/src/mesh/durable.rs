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

    /// Whether the log changed since the last commit.
    fn log_has_changes(&self) -> bool {
        self.state
            .lock()
            .unsynced
            .as_ref()
            .is_some_and(|batch| !batch.is_empty())
    }

    /// Commits the log's changes since the last commit (one transaction). One flush at
    /// a time (`log_commit`): batches reach the store in the order they were taken, so an
    /// eviction is never committed before the put it deletes.
    pub fn flush_log(&self) {
        let Some(store) = &self.parts.log_store else {
            return;
        };
        let _one_at_a_time = self
            .log_commit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
/// A store that waits on a device commits on the blocking pool: a synced transaction
/// takes milliseconds, and on a runtime worker it would stall every connection task
/// queued behind it (the tail of delivery latency).
pub(super) async fn committer(mesh: Arc<Mesh>) {
    let Some(store) = &mesh.parts.log_store else {
        return;
    };
    let off_the_workers = store.waits_on_device();
    loop {
        mesh.clock().sleep(GROUP_COMMIT_INTERVAL).await;
        // Nothing to commit (an idle relay, or traffic that logs nothing): no trip to the
        // blocking pool, whose thread waking 20 times a second would take a core from a
        // busy worker now and then (a few milliseconds for every connection queued on it).
        if !mesh.log_has_changes() {
            continue;
        }
        if off_the_workers {
            let mesh = mesh.clone();
            if let Err(error) = tokio::task::spawn_blocking(move || mesh.flush_log()).await {
                tracing::warn!(%error, "the notification log's commit did not finish");
            }
        } else {
            mesh.flush_log();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};

    use super::*;
    use crate::logstore::{Batch, LogStore, Stored};
    use crate::protocol::Notification;

    /// A disk whose commits wait until the test lets them finish.
    struct GatedDisk {
        started: Mutex<Sender<usize>>,
        release: Mutex<Receiver<()>>,
    }

    impl LogStore for GatedDisk {
        fn commit(&self, batch: &Batch) -> Result<(), String> {
            let _ = self.started.lock().unwrap().send(batch.puts.len());
            let _ = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60));
            Ok(())
        }
        fn load(&self) -> Result<Vec<Stored>, String> {
            Ok(Vec::new())
        }
        fn size_bytes(&self) -> u64 {
            0
        }
        fn waits_on_device(&self) -> bool {
            true
        }
    }

    fn mesh_on(disk: Arc<GatedDisk>) -> Arc<Mesh> {
        crate::mesh::testing::mesh("durable-test", Some(disk))
    }

    /// A synced commit takes milliseconds: while one waits on the disk, the runtime's
    /// only worker must still run other tasks (wallets' writers, peer links).
    #[test]
    fn a_commit_waiting_on_the_disk_holds_no_runtime_worker() {
        let (started_tx, started) = channel();
        let (release, release_rx) = channel();
        let disk = Arc::new(GatedDisk {
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mesh = mesh_on(disk);
        runtime.block_on(async {
            tokio::spawn(committer(mesh.clone()));
            let notification =
                Notification::for_test("durable-test", "durable-test-0000000a-1", "t", "");
            assert!(mesh.route(Arc::new(notification), None));
        });
        let puts = started
            .recv_timeout(Duration::from_secs(30))
            .expect("the committer committed the routed notification");
        assert_eq!(puts, 1);
        // The commit is now blocked on the disk. A task spawned now runs on the one worker
        // (waited for outside the runtime: a blocked worker would also stop its timers).
        let (ran_tx, ran) = channel();
        runtime.spawn(async move { ran_tx.send(7).unwrap() });
        let ran = ran.recv_timeout(Duration::from_secs(20));
        release.send(()).unwrap();
        assert_eq!(ran, Ok(7), "a task ran while the commit waited on the disk");
        runtime.shutdown_background();
    }
}
