//! The mesh: links to peer relays, membership, sync, notification routing and
//! anti-entropy.
//!
//! A relay dials the relays it knows (configured peers, then those learned from gossip)
//! over the WebSocket port, keeps one live link per pair, and on every link exchanges
//! `StateSync` (membership and a summary of its notification log), `HealthSync` and
//! `MetricsSync`, each answered so round trips are measured. Notifications flood: a relay
//! that sees a message id for the first time delivers it locally and forwards it to its
//! other peers (`router`). Anti-entropy repairs what a partition or a restart made a
//! relay miss: a relay that finds ids in a peer's log summary that it never saw fetches
//! them.
//!
//! The rest of the relay reaches the mesh through three doors: it is the
//! [`Backbone`](crate::routing::Backbone) publications enter, the
//! [`PeerHandoff`](crate::conn::PeerHandoff) that takes relays dialing the WebSocket
//! port, and the read-only views the HTTP API shows (`views`).

pub mod dedup;
mod discovery;
mod durable;
mod floors;
mod handshake;
mod inbound;
mod leave;
mod link;
mod persist;
mod records;
mod report;
mod reports;
mod resume;
mod router;
mod seen;
mod state;
mod supervisor;
mod sync;
#[cfg(test)]
mod testing;
mod trust;
mod views;

use std::sync::Arc;

pub use discovery::DISCOVERED_ADDRESSES_MAX;
pub use durable::GROUP_COMMIT_INTERVAL;
pub use floors::FLOOR_STREAMS_MAX;
pub use handshake::{HANDSHAKE_BYTES_MAX, HANDSHAKE_STEP_TIMEOUT_MAX};
pub use leave::{RECONNECT_RELAYS_MAX, public_ws_url};
pub use persist::{load_bindings, save_bindings};
pub use records::{MEMBERSHIP_TTL_INTERVALS, RECORD_CLOCK_SKEW_MS};
pub use reports::{ChainFigures, PeerReport, RoutingTotals};
pub use seen::{STREAM_NAME_BYTES_MAX, SUMMARY_STREAMS_MAX};
pub use state::health_from_age;
pub use supervisor::{CONFIGURED_PEER_FAILED_DIALS, PEER_ENVELOPE_SLACK_BYTES, run};
pub use trust::{BINDINGS_MAX, Refusal, Trust, Unverified};
pub use views::{PeerSyncDetail, RelayInfo, SyncErrorRecord, SyncMetrics, SyncStatus};

use crate::config::Config;
use crate::hub::Hub;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::protocol::HealthReport;
use crate::protocol::peer::{SyncPayload, SyncType};
use crate::routing::Origin;
use crate::rt::{SeededRng, SharedClock};

/// Frames queued for one peer before it is cut off as too slow (anti-entropy catches it
/// up after it reconnects).
pub const PEER_QUEUE_MAX: usize = 8192;
/// Bytes queued for one peer link before it is cut as a slow consumer (anti-entropy then
/// repairs what it missed): 64 frames of the largest default message.
pub const PEER_QUEUE_BYTES_MAX: usize = 64 << 20;
/// Other relays remembered; the least recently seen is forgotten first.
pub const KNOWN_RELAYS_MAX: usize = 1024;
/// Relays gossiped in one StateSync (this one included): the most recently seen first.
/// Membership still converges beyond it (every relay gossips itself), more slowly.
pub const GOSSIP_RELAYS_MAX: usize = 256;
/// Bytes of gossip records in one StateSync (also at most a quarter of the peer message
/// limit), so a relay's own StateSync, and its answer to a 100-byte request, always fit
/// what its peers accept.
pub const GOSSIP_BYTES_MAX: usize = 256 * 1024;
/// Dials in flight to addresses that never completed a handshake here, as a fraction of
/// `mesh.peers_max` (at least one): addresses that do not answer cannot hold every slot.
pub const UNPROVEN_DIALS_DIVISOR: usize = 2;
/// Sync errors kept for `/sync/status`.
pub const SYNC_ERRORS_MAX: usize = 50;
/// Sync requests awaiting an answer.
pub const PENDING_SYNCS_MAX: usize = 4096;
/// Bytes of notifications answered to one `fetch`: the ids are answered in order until
/// the next would pass this (the first is always answered). Four notifications of the
/// largest size a wallet may publish (1 MiB by default); an honest peer asks again for
/// the rest after two sync intervals.
pub const FETCH_ANSWER_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Sync requests answered per peer per sync interval. An honest relay sends about three
/// (StateSync, MetricsSync, a HealthSync every `sync.health_interval`) plus those
/// `/sync/force` asks for; the excess is left unanswered and counted as a sync error, and
/// a peer sending more than twice this in one interval is cut (1008).
pub const SYNC_REQUESTS_PER_INTERVAL_MAX: usize = 10;

/// What a relay answers to a peer's `handshake`: a challenge, or a `handshake_response`
/// (a refusal, or the final acceptance).
enum Reply {
    Challenge(crate::protocol::signed::Challenge),
    Response(crate::protocol::peer::PeerHandshakeResponse),
    Bad(String),
}

fn handshake_reply(text: &[u8]) -> Reply {
    if let Ok(challenge) = crate::protocol::signed::parse_challenge(text) {
        return Reply::Challenge(challenge);
    }
    match serde_json::from_slice::<crate::protocol::peer::PeerHandshakeResponse>(text) {
        Ok(response) => Reply::Response(response),
        Err(e) => Reply::Bad(e.to_string()),
    }
}

/// What the mesh reports about this relay to its peers (HealthSync, MetricsSync).
pub trait LocalStatus: Send + Sync + 'static {
    fn health_report(&self) -> HealthReport;
    /// Wallets connected to this relay.
    fn client_connections(&self) -> usize;
    /// The configured peers (addresses) currently unreachable: the relay reports itself
    /// degraded while there are any.
    fn set_unreachable_peers(&self, addresses: Vec<String>);
    /// The chain watcher's heights and whether a source is degraded (MetricsSync).
    fn chain_figures(&self) -> ChainFigures;
}

/// What the mesh needs from the rest of the relay.
pub struct MeshParts {
    pub config: Arc<Config>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    pub rng: SeededRng,
    /// This relay's subscribers, to which notifications are delivered.
    pub hub: Arc<Hub>,
    /// Ids of what this relay originates.
    pub origin: Arc<Origin>,
    pub status: Arc<dyn LocalStatus>,
    /// Where the notification log is kept across restarts (`None`: memory only).
    pub log_store: Option<Arc<dyn crate::logstore::LogStore>>,
}

/// The mesh of one relay.
pub struct Mesh {
    parts: MeshParts,
    state: state::Shared,
    /// Peers found by `[mesh] peers_dns`.
    discovered: discovery::Discovered,
    counts: reports::Counts,
    /// Who may join, and the key each relay id is bound to.
    trust: trust::Trust,
    /// Held while a notification is admitted and delivered, and while a resume replays:
    /// a resume token never names a notification its holder was not yet offered, and a
    /// replay never races a live delivery.
    route_lock: std::sync::Mutex<()>,
    /// Held by a commit of the notification log to its store: one at a time, in order.
    log_commit: std::sync::Mutex<()>,
    /// Signs the resume tokens this relay issues.
    issuer: crate::resume::Issuer,
    /// This relay's membership record as last signed (`records::own_record`).
    own_record: std::sync::Mutex<Option<crate::protocol::signed::SignedRecord>>,
    /// The payloads of the last sync answers, reused for a moment (`sync::answer`).
    recent_payloads: sync::RecentPayloads,
    /// `trust.bindings_made()` when the bindings were last saved (`u64::MAX`: never);
    /// held for a whole save (`supervisor::save_seen`), so saves go one at a time.
    bindings_saved: std::sync::Mutex<u64>,
}

impl Mesh {
    pub fn new(parts: MeshParts) -> Arc<Mesh> {
        let limits = &parts.config.limits;
        let state = state::Shared::new(
            limits.notification_log_bytes_max,
            limits.notification_log_retention_secs,
        );
        if parts.log_store.is_some() {
            let mut locked = state.lock();
            locked.unsynced = Some(crate::logstore::Batch::default());
            locked.log.track_evictions();
        }
        let trust = trust::Trust::new(
            parts.config.trusted_keys(),
            &parts.config.relay_id,
            *parts.origin.identity().public(),
        );
        let issuer =
            crate::resume::Issuer::new(&parts.config.relay_id, parts.origin.identity().clone());
        Arc::new(Mesh {
            parts,
            state,
            discovered: discovery::Discovered::default(),
            counts: reports::Counts::default(),
            trust,
            route_lock: std::sync::Mutex::new(()),
            log_commit: std::sync::Mutex::new(()),
            issuer,
            own_record: std::sync::Mutex::new(None),
            recent_payloads: sync::RecentPayloads::default(),
            bindings_saved: std::sync::Mutex::new(u64::MAX),
        })
    }

    /// See `Trust::share_verified` (the simulator's relays share one memo).
    pub fn share_verified(&self, memo: Arc<crate::identity::VerifiedMemo>) {
        self.trust.share_verified(memo);
    }

    /// Whether this relay takes what peers send without checking signatures: the
    /// `skip-verification` mutation, the byzantine simulation's negative control (never
    /// in a production build).
    fn skips_verification(&self) -> bool {
        #[cfg(feature = "mutations")]
        return self.parts.config.mutation == Some(crate::mutation::Mutation::SkipVerification);
        #[cfg(not(feature = "mutations"))]
        false
    }

    /// Whether a peer link's new notifications are held to their rate (always, but under
    /// the `unbounded-notifications` mutation).
    fn bounds_notifications(&self) -> bool {
        #[cfg(feature = "mutations")]
        return self.parts.config.mutation
            != Some(crate::mutation::Mutation::UnboundedNotifications);
        #[cfg(not(feature = "mutations"))]
        true
    }

    fn route_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // Guards no data: a poisoned lock is as good as a clean one.
        self.route_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn relay_id(&self) -> &str {
        &self.parts.config.relay_id
    }

    fn clock(&self) -> &SharedClock {
        self.parts.lifecycle.clock()
    }

    fn now_ms(&self) -> u64 {
        self.parts.lifecycle.now_ms()
    }

    fn unix_secs(&self) -> u64 {
        self.parts.lifecycle.unix_secs()
    }

    fn unix_ms(&self) -> u64 {
        self.parts.lifecycle.unix_ms()
    }

    /// What this relay says about itself in a sync of `sync_type`, as its peers receive
    /// it (a `StateSync` carries gossip and the log summary too).
    pub fn sync_payload(&self, sync_type: SyncType) -> SyncPayload {
        sync::payload_for(self, sync_type)
    }

    /// Sends the named sync types to every live peer now; returns how many peers.
    pub fn force_sync(&self, types: &[SyncType]) -> usize {
        tracing::info!(?types, "sync forced");
        self.state.force(types)
    }
}
