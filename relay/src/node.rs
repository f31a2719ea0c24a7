//! The state one relay shares between its tasks: configuration, the seam, the hub of
//! local clients, metrics, and the figures every interface reports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Config;
use crate::hub::{Delivery, Hub};
use crate::logs::LogRing;
use crate::mesh::{Mesh, RelayInfo, SyncMetrics, SyncStatus, SyncType};
use crate::metrics::Metrics;
use crate::process::{self, ProcessFigures, ProcessSampler};
use crate::protocol::{self, HealthReport, Notification};
use crate::rt::{SeededRng, SharedClock};

/// Overall state, as `/health` and `health` messages report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

pub struct Node {
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub rng: SeededRng,
    pub hub: Hub,
    pub metrics: Metrics,
    pub logs: LogRing,
    pub mesh: Mesh,
    /// The chain watcher's registry of watched wallets and its status.
    pub chain: crate::chain::WatchHandle,
    /// Which connection each registered wallet's payments go to.
    wallet_clients:
        std::sync::Mutex<std::collections::BTreeMap<crate::chain::WalletId, crate::hub::ClientId>>,
    started_at: Instant,
    /// Makes message ids unique across restarts of the same relay id.
    boot_nonce: u32,
    next_message_seq: AtomicU64,
    next_sync_seq: AtomicU64,
    next_client_id: AtomicU64,
    ws_connections: AtomicUsize,
    draining: AtomicBool,
    shutdown: watch::Sender<bool>,
    process: ProcessSampler,
}

impl Node {
    pub fn new(config: Config, clock: SharedClock, rng: SeededRng, logs: LogRing) -> Arc<Node> {
        let started_at = clock.now();
        // Mixing the wall clock in keeps ids unique when a simulated relay restarts with
        // the same seed.
        let boot_nonce = (rng.next_u64() ^ clock.unix_time().as_millis() as u64) as u32;
        let (shutdown, _) = watch::channel(false);
        let chain = crate::chain::WatchHandle::from_config(&config);
        Arc::new(Node {
            config: Arc::new(config),
            clock,
            rng,
            hub: Hub::new(),
            metrics: Metrics::new(),
            logs,
            mesh: Mesh::default(),
            chain,
            wallet_clients: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            started_at,
            boot_nonce,
            next_message_seq: AtomicU64::new(1),
            next_sync_seq: AtomicU64::new(1),
            next_client_id: AtomicU64::new(1),
            ws_connections: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            shutdown,
            process: ProcessSampler::default(),
        })
    }

    pub fn relay_id(&self) -> &str {
        &self.config.relay_id
    }

    pub fn uptime_secs(&self) -> u64 {
        self.clock.now().duration_since(self.started_at).as_secs()
    }

    /// Milliseconds since start on the monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now().duration_since(self.started_at).as_millis() as u64
    }

    pub fn unix_secs(&self) -> u64 {
        self.clock.unix_secs()
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A message id unique in the mesh: relay id, boot nonce, sequence.
    pub fn next_message_id(&self) -> String {
        let seq = self.next_message_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:08x}-{seq}", self.config.relay_id, self.boot_nonce)
    }

    /// Notifications this relay has stamped since it started.
    pub fn notifications_originated(&self) -> u64 {
        self.next_message_seq.load(Ordering::Relaxed) - 1
    }

    /// An id for a sync message, from its own sequence so notification sequences stay
    /// contiguous (anti-entropy summarizes them as ranges).
    pub fn next_sync_id(&self) -> String {
        let seq = self.next_sync_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:08x}-s{seq}", self.config.relay_id, self.boot_nonce)
    }

    /// Takes one of the `ws_connections_max` slots, if any is free.
    pub fn try_acquire_ws_slot(self: &Arc<Self>) -> Option<WsSlot> {
        let max = self.config.limits.ws_connections_max;
        let taken = self
            .ws_connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| {
            self.metrics.ws_connections.increment(1.0);
            WsSlot { node: self.clone() }
        })
    }

    /// Open WebSocket connections, peer links accepted on the port included.
    pub fn ws_connections(&self) -> usize {
        self.ws_connections.load(Ordering::Acquire)
    }

    /// Open WebSocket connections of clients (wallets), without peer links.
    pub fn client_connections(&self) -> usize {
        self.ws_connections()
            .saturating_sub(self.mesh.inbound_links())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the shutdown: listeners stop, clients are closed with 1001.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
    }

    /// Completes once shutdown has begun.
    pub async fn shutdown_started(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|started| *started).await;
    }

    /// Unhealthy while draining; degraded while a configured chain source is unreachable
    /// or behind; healthy otherwise.
    pub fn health_status(&self) -> HealthStatus {
        if self.is_draining() {
            HealthStatus::Unhealthy
        } else if self.chain.status().degraded.is_some() {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    /// Remembers the connection a registered wallet's payments go to.
    pub fn bind_wallet(&self, wallet: crate::chain::WalletId, client: crate::hub::ClientId) {
        self.wallet_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(wallet, client);
    }

    /// Forgets a wallet whose connection closed, and stops watching it.
    pub fn release_wallet(&self, wallet: crate::chain::WalletId) {
        self.wallet_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&wallet);
        self.chain.unregister(wallet);
    }

    /// Publishes what the chain watcher saw: a wallet's payments to that wallet's
    /// connection only; the relay's own payments and new blocks to every subscriber of
    /// the mesh.
    pub fn publish_chain_event(&self, event: &crate::chain::ChainEvent) {
        if matches!(event, crate::chain::ChainEvent::PaymentDetected { .. }) {
            self.metrics.chain_payments_detected.increment(1);
        }
        let data = serde_json::value::to_raw_value(&event.data()).expect("event data serializes");
        let notification_type = event.notification_type().to_string();
        let Some(crate::chain::Target::Wallet(wallet)) = event.target() else {
            self.publish_local(notification_type, &data);
            return;
        };
        let client = self
            .wallet_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&wallet)
            .copied();
        let notification = Notification {
            message_id: self.next_message_id(),
            relay_id: self.config.relay_id.clone(),
            notification_type,
            data,
            timestamp: self.unix_secs(),
        };
        let frame = notification.encode();
        if let Some(client) = client {
            let delivery = self
                .hub
                .send_to(client, crate::hub::Outbound::Text(frame.clone()));
            self.count_delivery(delivery, "notification", frame.len());
        }
    }

    /// Resident memory and CPU use of the process (re-read at most once a second).
    pub fn process_figures(&self) -> ProcessFigures {
        let figures = self.process.sample(self.clock.now());
        self.metrics
            .resident_memory
            .set(figures.resident_bytes as f64);
        figures
    }

    /// Refreshes the figures sampled rather than counted (process, chain), so a scrape
    /// sees current values.
    pub fn refresh_sampled_metrics(&self) {
        let m = &self.metrics;
        self.process_figures();
        // The facade's counters hold integers: whole CPU seconds.
        m.cpu_seconds.absolute(process::cpu_seconds() as u64);
        m.open_fds.set(process::open_fds() as f64);
        m.uptime.set(self.uptime_secs() as f64);
        let chain = self.chain.status();
        if let Some(height) = chain.scanned_height {
            m.chain_scanned_height.set(f64::from(height));
        }
        if let Some(tip) = chain.core_tip {
            m.chain_tip_height.set(f64::from(tip));
        }
    }

    /// What `health` messages and HealthSync report.
    pub fn health_report(&self) -> HealthReport {
        let ProcessFigures {
            resident_bytes: memory,
            cpu_percent: cpu,
        } = self.process_figures();
        self.metrics.uptime.set(self.uptime_secs() as f64);
        HealthReport {
            status: self.health_status().as_str(),
            uptime: self.uptime_secs(),
            memory_usage: process::format_megabytes(memory),
            cpu_usage: process::format_percent(cpu),
            connections: self.client_connections(),
        }
    }

    pub fn health_frame(&self) -> Bytes {
        protocol::encode_health(&self.health_report(), self.unix_secs())
    }

    /// Stamps a notification published by a local client and routes it.
    pub fn publish_local(&self, notification_type: String, data: &RawValue) -> Arc<Notification> {
        let notification = Arc::new(Notification {
            message_id: self.next_message_id(),
            relay_id: self.config.relay_id.clone(),
            notification_type,
            data: data.to_owned(),
            timestamp: self.unix_secs(),
        });
        self.metrics.notifications_published.increment(1);
        self.route(notification.clone(), None);
        notification
    }

    /// Delivers a notification seen for the first time to the local subscribers and
    /// forwards it to every peer but the one it came from; drops one already seen.
    /// Returns whether it was new.
    pub fn route(&self, notification: Arc<Notification>, from_peer: Option<&str>) -> bool {
        let routed = self.mesh.admit(&notification, from_peer, self.unix_secs());
        if !routed.fresh {
            self.metrics.dedup_hits.increment(1);
            return false;
        }
        self.metrics.dedup_misses.increment(1);
        if routed.repaired {
            self.metrics.anti_entropy_repairs.increment(1);
        }
        let frame = notification.encode();
        let delivery = self.hub.publish(&notification.notification_type, &frame);
        self.count_delivery(delivery, "notification", frame.len());
        for (peer, tx, control) in routed.targets {
            if crate::mesh::forward(&tx, &control, frame.clone()) {
                self.metrics.notifications_forwarded.increment(1);
            } else {
                tracing::debug!(%peer, "peer queue full: link cut, anti-entropy will catch it up");
            }
        }
        true
    }

    pub fn count_delivery(&self, delivery: Delivery, kind: &str, frame_bytes: usize) {
        self.metrics
            .ws_sent
            .get(kind)
            .increment(delivery.delivered as u64);
        self.metrics
            .ws_sent_bytes
            .increment((delivery.delivered * frame_bytes) as u64);
        if kind == "notification" {
            self.metrics
                .notifications_delivered
                .increment(delivery.delivered as u64);
        }
        self.metrics
            .ws_slow_consumers
            .increment(delivery.slow_disconnects as u64);
    }
}

/// What the HTTP API reads from the mesh (see `mesh::report`).
impl Node {
    /// Every known relay, this one first.
    pub fn relays(&self) -> Vec<RelayInfo> {
        crate::mesh::report::relays(self)
    }

    pub fn sync_status(&self) -> SyncStatus {
        crate::mesh::report::sync_status(self)
    }

    pub fn sync_metrics(&self) -> SyncMetrics {
        crate::mesh::report::sync_metrics(self)
    }

    /// Sends the named sync types to every live peer now; returns how many peers.
    pub fn force_sync(&self, types: &[SyncType]) -> usize {
        tracing::info!(?types, "sync forced");
        self.mesh.force(types)
    }
}

/// One taken WebSocket connection slot, given back when dropped.
pub struct WsSlot {
    node: Arc<Node>,
}

impl Drop for WsSlot {
    fn drop(&mut self) {
        self.node.ws_connections.fetch_sub(1, Ordering::AcqRel);
        self.node.metrics.ws_connections.decrement(1.0);
    }
}
