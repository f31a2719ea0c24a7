//! The mesh as operators see it: `/relays`, `/sync/status`, and `sync_metrics`.

use super::Mesh;
use super::state::health_from_age;
use super::views::{PeerSyncDetail, RelayInfo, SyncMetrics, SyncStatus};
use crate::metrics::names;
use crate::protocol::VERSION;
use crate::protocol::peer::{PeerHealth, SyncType};

/// Errors listed in `/sync/status`, newest last.
const STATUS_ERRORS_SHOWN: usize = 20;

impl Mesh {
    /// Every known relay, this one first.
    pub fn relays(&self) -> Vec<RelayInfo> {
        let now_ms = self.unix_ms();
        let interval_ms = self.parts.config.sync_interval().as_millis() as u64;
        let mut relays = vec![RelayInfo {
            relay_id: self.relay_id().to_string(),
            address: self.parts.config.advertised_addr().to_string(),
            version: VERSION.to_string(),
            uptime: self.parts.lifecycle.uptime_secs(),
            health: PeerHealth::Healthy,
            last_seen: now_ms / 1000,
            is_self: true,
            connected: true,
            public_key: Some(self.parts.origin.identity().public().to_hex()),
        }];
        let state = self.state.lock();
        relays.extend(state.members.iter().map(|(id, m)| RelayInfo {
            relay_id: id.clone(),
            address: m.address.clone(),
            version: m.version.clone(),
            uptime: m.uptime,
            health: health_from_age(now_ms.saturating_sub(m.last_seen_ms), interval_ms),
            last_seen: m.last_seen_ms / 1000,
            is_self: false,
            connected: state.links.contains_key(id),
            public_key: self.trust.key_of(id).map(|k| k.to_hex()),
        }));
        relays
    }

    pub fn sync_status(&self) -> SyncStatus {
        let now_ms = self.unix_ms();
        let interval_ms = self.parts.config.sync_interval().as_millis() as u64;
        let state = self.state.lock();
        let status = if !state.links.is_empty() {
            "syncing"
        } else if state.members.is_empty() && self.parts.config.mesh.peers.is_empty() {
            "idle"
        } else {
            "disconnected"
        };
        let peers = state
            .members
            .iter()
            .map(|(id, m)| {
                let stats = state.peer_stats.get(id).cloned().unwrap_or_default();
                PeerSyncDetail {
                    relay_id: id.clone(),
                    address: m.address.clone(),
                    connected: state.links.contains_key(id),
                    health: health_from_age(now_ms.saturating_sub(m.last_seen_ms), interval_ms),
                    last_sync: stats.last_sync.unwrap_or(0),
                    sync_requests: stats.requests,
                    sync_responses: stats.responses,
                    avg_latency_ms: if stats.responses > 0 {
                        stats.rtt_total_ms / stats.responses as f64
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        let skip = state.errors.len().saturating_sub(STATUS_ERRORS_SHOWN);
        SyncStatus {
            status,
            last_sync: state.last_sync.unwrap_or(0),
            next_sync: state.next_sync.max(self.unix_secs()),
            sync_types: SyncType::ALL.to_vec(),
            errors: state.errors.iter().skip(skip).cloned().collect(),
            peers,
        }
    }

    pub fn sync_metrics(&self) -> SyncMetrics {
        // Render the registry once, and before taking the mesh lock.
        let exposition = self.parts.metrics.exposition();
        let sum = |name| exposition.sum(name) as u64;
        let state = self.state.lock();
        SyncMetrics {
            known_relays: state.members.len() as u64 + 1,
            mesh_connections: state.links.len() as u64,
            sync_requests: sum(names::SYNC_REQUESTS_TOTAL),
            sync_responses: sum(names::SYNC_RESPONSES_TOTAL),
            cache_hits: sum(names::DEDUP_HITS_TOTAL),
            cache_misses: sum(names::DEDUP_MISSES_TOTAL),
            avg_latency: if state.rtt_count > 0 {
                state.rtt_total_ms / state.rtt_count as f64
            } else {
                0.0
            },
            error_count: sum(names::SYNC_ERRORS_TOTAL),
        }
    }
}
