//! The mesh: links to peer relays, membership, sync, and notification flooding.
//!
//! A relay dials the relays it knows (configured peers, then those learned from gossip)
//! over the WebSocket port, keeps one live link per pair, and on every link exchanges
//! `StateSync` (membership and a summary of its notification log), `HealthSync` and
//! `MetricsSync`, each answered so round trips are measured. Notifications flood: a relay
//! that sees a message id for the first time delivers it locally and forwards it to its
//! other peers. Anti-entropy repairs what a partition or a restart made a relay miss: a
//! relay that finds ids in a peer's log summary that it never saw fetches them.

pub mod dedup;
mod link;
mod persist;
pub mod report;
mod state;
mod supervisor;
mod sync;
mod view;
pub mod wire;

pub use link::{LinkParts, serve_inbound};
pub use state::Mesh;
pub use supervisor::PEER_ENVELOPE_SLACK_BYTES;
pub use supervisor::run;
pub use view::{
    PeerHealth, PeerSyncDetail, RelayInfo, SyncErrorRecord, SyncMetrics, SyncStatus, SyncType,
};

/// Frames queued for one peer before it is cut off as too slow (anti-entropy catches it
/// up after it reconnects).
pub const PEER_QUEUE_MAX: usize = 8192;
/// Other relays remembered; the least recently seen is forgotten first.
pub const KNOWN_RELAYS_MAX: usize = 1024;
/// Sync errors kept for `/sync/status`.
pub const SYNC_ERRORS_MAX: usize = 50;
/// Sync requests awaiting an answer.
pub const PENDING_SYNCS_MAX: usize = 4096;

/// Queues a notification frame for a peer; false (and the link cut) when its queue is full.
pub fn forward(
    tx: &tokio::sync::mpsc::Sender<crate::hub::Outbound>,
    control: &crate::hub::ClientControl,
    frame: bytes::Bytes,
) -> bool {
    link::offer(tx, control, crate::hub::Outbound::Text(frame))
}
