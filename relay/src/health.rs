//! How the relay is doing, as `/health`, `health` messages, HealthSync and the sampled
//! metrics report it: its status, uptime, resident memory, CPU use and wallets connected.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::chain::WatchHandle;
use crate::conn::Slots;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::process::{self, ProcessFigures, ProcessSampler};
use crate::protocol::{self, HealthReport};
use crate::routing::BackboneLink;

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

pub struct Health {
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    chain: WatchHandle,
    /// The WebSocket port's connection slots; peer links are not counted as clients.
    ws_slots: Arc<Slots>,
    /// Whether the backbone reaches the other relays (always up in mesh mode).
    backbone: Arc<BackboneLink>,
    process: ProcessSampler,
    /// Configured peers (addresses) the mesh reports unreachable.
    unreachable_peers: Mutex<Vec<String>>,
}

impl Health {
    pub fn new(
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        chain: WatchHandle,
        ws_slots: Arc<Slots>,
        backbone: Arc<BackboneLink>,
    ) -> Health {
        Health {
            lifecycle,
            metrics,
            chain,
            ws_slots,
            backbone,
            process: ProcessSampler::default(),
            unreachable_peers: Mutex::new(Vec::new()),
        }
    }

    /// Unhealthy while draining; degraded while a configured chain source is unreachable
    /// or behind, a configured peer is unreachable, or the NATS backbone is down; healthy
    /// otherwise.
    pub fn status(&self) -> HealthStatus {
        if self.lifecycle.is_draining() {
            HealthStatus::Unhealthy
        } else if self.chain.status().degraded.is_some()
            || !self.unreachable_peers().is_empty()
            || !self.backbone.is_up()
        {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    /// Configured peers (addresses) the mesh last reported unreachable.
    pub fn unreachable_peers(&self) -> Vec<String> {
        self.unreachable_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the mesh reports each tick: the configured peers unreachable now.
    pub fn set_unreachable_peers(&self, addresses: Vec<String>) {
        *self
            .unreachable_peers
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = addresses;
    }

    /// The chain watcher's heights and degraded source, if any.
    pub fn chain_status(&self) -> crate::chain::ChainStatus {
        self.chain.status()
    }

    /// Open WebSocket connections of clients (wallets), without peer links.
    pub fn client_connections(&self) -> usize {
        self.ws_slots.counted()
    }

    /// False while the NATS backbone reaches no server (never in mesh mode).
    pub fn backbone_up(&self) -> bool {
        self.backbone.is_up()
    }

    /// Resident memory and CPU use of the process (re-read at most once a second).
    pub fn process_figures(&self) -> ProcessFigures {
        let figures = self.process.sample(self.lifecycle.clock().now());
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
        m.uptime.set(self.lifecycle.uptime_secs() as f64);
        let chain = self.chain.status();
        if let Some(height) = chain.scanned_height {
            m.chain_scanned_height.set(f64::from(height));
        }
        if let Some(tip) = chain.core_tip {
            m.chain_tip_height.set(f64::from(tip));
        }
    }

    /// What `health` messages and HealthSync report.
    pub fn report(&self) -> HealthReport {
        let ProcessFigures {
            resident_bytes: memory,
            cpu_percent: cpu,
        } = self.process_figures();
        let uptime = self.lifecycle.uptime_secs();
        self.metrics.uptime.set(uptime as f64);
        HealthReport {
            status: self.status().as_str(),
            uptime,
            memory_usage: process::format_megabytes(memory),
            cpu_usage: process::format_percent(cpu),
            connections: self.client_connections(),
        }
    }

    /// A `health` message for clients.
    pub fn frame(&self) -> Bytes {
        protocol::encode_health(&self.report(), self.lifecycle.unix_secs())
    }
}
