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
use crate::mesh::{PeerHealth, RelayInfo, SyncMetrics, SyncStatus, SyncType};
use crate::metrics::Metrics;
use crate::process::{self, CpuSampler};
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
    started_at: Instant,
    /// Makes message ids unique across restarts of the same relay id.
    boot_nonce: u32,
    next_message_seq: AtomicU64,
    next_client_id: AtomicU64,
    ws_connections: AtomicUsize,
    draining: AtomicBool,
    shutdown: watch::Sender<bool>,
    cpu: CpuSampler,
}

impl Node {
    pub fn new(config: Config, clock: SharedClock, rng: SeededRng, logs: LogRing) -> Arc<Node> {
        let started_at = clock.now();
        // Mixing the wall clock in keeps ids unique when a simulated relay restarts with
        // the same seed.
        let boot_nonce = (rng.next_u64() ^ clock.unix_time().as_millis() as u64) as u32;
        let (shutdown, _) = watch::channel(false);
        Arc::new(Node {
            config: Arc::new(config),
            clock,
            rng,
            hub: Hub::new(),
            metrics: Metrics::new(),
            logs,
            started_at,
            boot_nonce,
            next_message_seq: AtomicU64::new(1),
            next_client_id: AtomicU64::new(1),
            ws_connections: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            shutdown,
            cpu: CpuSampler::default(),
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

    pub fn ws_connections(&self) -> usize {
        self.ws_connections.load(Ordering::Acquire)
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

    pub fn health_status(&self) -> HealthStatus {
        if self.is_draining() {
            HealthStatus::Unhealthy
        } else {
            HealthStatus::Healthy
        }
    }

    /// CPU use of the process in percent of one core, averaged over a recent window.
    pub fn cpu_percent(&self) -> f64 {
        self.cpu.percent(self.clock.now())
    }

    /// Samples the process figures and refreshes their gauges.
    pub fn health_report(&self) -> HealthReport {
        let memory = process::resident_memory_bytes();
        let cpu = self.cpu.percent(self.clock.now());
        self.metrics.resident_memory.set(memory as f64);
        self.metrics.uptime.set(self.uptime_secs() as f64);
        HealthReport {
            status: self.health_status().as_str(),
            uptime: self.uptime_secs(),
            memory_usage: process::format_megabytes(memory),
            cpu_usage: process::format_percent(cpu),
            connections: self.ws_connections(),
        }
    }

    pub fn health_frame(&self) -> Bytes {
        protocol::encode_health(&self.health_report(), self.unix_secs())
    }

    /// Stamps a notification published by a local client and delivers it.
    pub fn publish_local(&self, notification_type: String, data: &RawValue) -> Arc<Notification> {
        let notification = Arc::new(Notification {
            message_id: self.next_message_id(),
            relay_id: self.config.relay_id.clone(),
            notification_type,
            data: data.to_owned(),
            timestamp: self.unix_secs(),
        });
        self.metrics.notifications_published.increment(1);
        self.deliver_local(&notification);
        notification
    }

    /// Hands a notification to every subscribed local client.
    pub fn deliver_local(&self, notification: &Notification) -> Delivery {
        let frame = notification.encode();
        let delivery = self.hub.publish(&notification.notification_type, &frame);
        self.count_delivery(delivery, "notification", frame.len());
        delivery
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

/// What the HTTP API reads from the mesh. Until peers are linked, the relay knows only
/// itself; the mesh fills these in.
impl Node {
    /// Every known relay, this one first.
    pub fn relays(&self) -> Vec<RelayInfo> {
        vec![RelayInfo {
            relay_id: self.config.relay_id.clone(),
            address: self.config.advertised_addr().to_string(),
            version: protocol::VERSION.to_string(),
            uptime: self.uptime_secs(),
            health: PeerHealth::Healthy,
            last_seen: self.unix_secs(),
            is_self: true,
            connected: true,
        }]
    }

    pub fn sync_status(&self) -> SyncStatus {
        SyncStatus {
            status: "idle",
            last_sync: None,
            next_sync: self.unix_secs() + self.config.sync.interval,
            sync_types: SyncType::ALL.to_vec(),
            errors: Vec::new(),
            peers: Vec::new(),
        }
    }

    pub fn sync_metrics(&self) -> SyncMetrics {
        let sum = |name| self.metrics.sum(name) as u64;
        SyncMetrics {
            known_relays: self.relays().len() as u64,
            mesh_connections: 0,
            sync_requests: sum(crate::metrics::names::SYNC_REQUESTS_TOTAL),
            sync_responses: sum(crate::metrics::names::SYNC_RESPONSES_TOTAL),
            cache_hits: sum(crate::metrics::names::DEDUP_HITS_TOTAL),
            cache_misses: sum(crate::metrics::names::DEDUP_MISSES_TOTAL),
            avg_latency: 0.0,
            error_count: sum(crate::metrics::names::SYNC_ERRORS_TOTAL),
        }
    }

    /// Sends the named sync types to every live peer now; returns how many peers.
    pub fn force_sync(&self, types: &[SyncType]) -> usize {
        tracing::info!(?types, "sync forced");
        0
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
