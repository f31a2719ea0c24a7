//! What the mesh reports to operators.

use serde::Serialize;

use crate::protocol::peer::{PeerHealth, SyncType};

/// One entry of `GET /relays`.
#[derive(Debug, Clone, Serialize)]
pub struct RelayInfo {
    pub relay_id: String,
    pub address: String,
    pub version: String,
    /// Seconds, as last reported by that relay.
    pub uptime: u64,
    pub health: PeerHealth,
    /// Unix seconds when this relay last heard from it (now, for itself).
    pub last_seen: u64,
    /// True for the relay answering the request.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// True while a live link to it exists.
    pub connected: bool,
    /// Its public key (hex) bound here, if any.
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncErrorRecord {
    pub timestamp: u64,
    pub peer: String,
    pub sync_type: Option<SyncType>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerSyncDetail {
    pub relay_id: String,
    pub address: String,
    pub connected: bool,
    pub health: PeerHealth,
    /// Unix seconds of the last sync exchange with this peer, 0 before the first.
    pub last_sync: u64,
    pub sync_requests: u64,
    pub sync_responses: u64,
    /// Mean measured round trip, in milliseconds.
    pub avg_latency_ms: f64,
}

/// `GET /sync/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncStatus {
    /// `syncing` while at least one peer link is live, `idle` with no peers configured
    /// or known, `disconnected` when peers are known but none is reachable.
    pub status: &'static str,
    /// Unix seconds of the last completed sync, 0 before the first.
    pub last_sync: u64,
    pub next_sync: u64,
    pub sync_types: Vec<SyncType>,
    pub errors: Vec<SyncErrorRecord>,
    pub peers: Vec<PeerSyncDetail>,
}

/// The `sync_metrics` object of `GET /metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct SyncMetrics {
    pub known_relays: u64,
    pub mesh_connections: u64,
    pub sync_requests: u64,
    pub sync_responses: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Mean sync round trip in milliseconds.
    pub avg_latency: f64,
    pub error_count: u64,
}
