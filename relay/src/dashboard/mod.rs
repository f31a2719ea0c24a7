//! The operators' live dashboard: one HTML page shipped in the binary (`GET /dashboard`)
//! and the JSON it polls (`GET /dashboard/data`).
//!
//! The data is built from what the relay already holds: `/relays` and `/sync/status`
//! (the mesh's members, links and round trips), each peer's last MetricsSync (wallets,
//! notifications, repairs, cuts, chain heights, its own links) and this relay's routing
//! totals. Its cost does not grow with the number of tabs: a snapshot is built at most
//! once per `SNAPSHOT_TTL` and the same bytes are answered to every poll in between.
//! The notification-rate chart comes from a ring of samples per relay kept here
//! (`history`), bounded in relays and in samples.

mod history;
mod snapshot;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::node::Node;

pub use history::{RELAYS_CHARTED_MAX, SAMPLE_EVERY, SAMPLES_MAX};

/// The page, as served: HTML, CSS and JavaScript in one file, no external resource.
pub const PAGE: &str = include_str!("page.html");

/// How long one snapshot answers every poll.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

/// The dashboard of one relay: the sample history and the last snapshot.
pub struct Dashboard {
    node: Arc<Node>,
    history: Mutex<history::History>,
    cached: Mutex<Option<(Instant, Bytes)>>,
}

impl Dashboard {
    pub fn new(node: Arc<Node>) -> Dashboard {
        Dashboard {
            node,
            history: Mutex::new(history::History::default()),
            cached: Mutex::new(None),
        }
    }

    /// The JSON of `GET /dashboard/data`: the cached snapshot while it is fresh, else a
    /// new one (built under the cache lock, so concurrent polls wait for one build
    /// rather than each building their own).
    pub fn data(&self) -> Bytes {
        let now = self.node.lifecycle.clock().now();
        let mut cached = lock(&self.cached);
        if let Some((built, bytes)) = cached.as_ref()
            && now.duration_since(*built) < SNAPSHOT_TTL
        {
            return bytes.clone();
        }
        self.sample();
        let snapshot = snapshot::build(&self.node, &lock(&self.history));
        let bytes = Bytes::from(serde_json::to_vec(&snapshot).unwrap_or_default());
        *cached = Some((now, bytes.clone()));
        bytes
    }

    /// Records this relay's routing total and each peer's last reported one (called
    /// every `SAMPLE_EVERY` by `run`, and before a snapshot is built).
    pub fn sample(&self) {
        let node = &self.node;
        let now_ms = node.lifecycle.unix_ms();
        let own = node.mesh.routing_totals().notifications_routed;
        let reports = node.mesh.peer_routed_totals();
        let mut history = lock(&self.history);
        history.record(node.relay_id(), now_ms, own);
        for (id, received_ms, routed) in &reports {
            if let Some(routed) = routed {
                history.record(id, *received_ms, *routed);
            }
        }
        let known: Vec<&str> = std::iter::once(node.relay_id())
            .chain(reports.iter().map(|(id, _, _)| id.as_str()))
            .collect();
        history.retain(known);
    }
}

/// Samples every `SAMPLE_EVERY` until the task is aborted, so the chart has the last
/// minutes even before a tab opens.
pub async fn run(dashboard: Arc<Dashboard>) {
    loop {
        dashboard.sample();
        dashboard
            .node
            .lifecycle
            .clock()
            .sleep(history::SAMPLE_EVERY)
            .await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::logs::LogRing;
    use crate::rt::{ManualClock, SeededRng};

    fn generated_at(bytes: &Bytes) -> u64 {
        let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        value["generated_at_ms"].as_u64().unwrap()
    }

    #[test]
    fn polls_within_a_second_share_one_snapshot() {
        let clock = ManualClock::new(1_800_000_000_000);
        // Its own data directory: the node creates its key there.
        let dir = std::env::temp_dir().join(format!("sdk_relay-dashboard-{}", std::process::id()));
        let config = Config {
            data_dir: dir.clone(),
            ..Config::default()
        };
        let node = Node::new(config, clock.clone(), SeededRng::new(1), LogRing::new(10));
        let dashboard = Dashboard::new(node);
        let first = dashboard.data();
        clock.advance_ms(999);
        let second = dashboard.data();
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "the same bytes, not rebuilt"
        );
        clock.advance_ms(1);
        let third = dashboard.data();
        assert_eq!(generated_at(&third), generated_at(&first) + 1000);
        let _ = std::fs::remove_dir_all(dir);
    }
}
