//! The mesh: links to peer relays, membership, sync, and notification flooding.
//!
//! This module's public view types are what the HTTP API reports (`/relays`,
//! `/sync/status`, the `sync_metrics` of `/metrics`).

mod view;

pub use view::{PeerHealth, PeerSyncDetail, RelayInfo, SyncErrorRecord, SyncMetrics, SyncStatus, SyncType};
