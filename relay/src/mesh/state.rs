//! The mesh's shared state: members, links, the dedup cache and notification log, and
//! pending sync requests. Guarded by one mutex that is never held across an await.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::dedup::{
    DEDUP_IDS_MAX, DedupCache, LOG_BYTES_MAX, LOG_ENTRIES_MAX, LOG_RETENTION_SECS, NotificationLog,
};
use super::floors::Floors;
use super::seen::SeenIndex;
use super::views::SyncErrorRecord;
use super::{KNOWN_RELAYS_MAX, PENDING_SYNCS_MAX, SYNC_ERRORS_MAX};
use crate::conn::{CloseReason, Outlet};
use crate::protocol::Notification;
use crate::protocol::peer::{PeerHealth, StreamSummary, SyncType};
use crate::protocol::signed::SignedRecord;

/// Another relay, as this one knows it.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub address: String,
    pub version: String,
    pub uptime: u64,
    /// Unix milliseconds when it was last heard from, here or (via gossip) by a peer.
    pub last_seen_ms: u64,
    /// Heard from directly, over a link: it completed a handshake with this relay. Its
    /// address is dialed before those only gossip named.
    pub proven: bool,
    /// It said it was leaving (`leaving`) and has not linked again since: shown as
    /// `left`, and its silence, lost link or failed dials count as no error.
    pub left: bool,
    /// What it said about itself in its last MetricsSync.
    pub report: Option<super::reports::PeerReport>,
    /// Its latest membership record, verified (re-gossiped as signed).
    pub record: Option<SignedRecord>,
}

/// A live link to a peer.
pub(super) struct Link {
    pub link_id: u64,
    pub outlet: Outlet,
    /// The relay id of the side that dialed; decides which of two links survives.
    pub dialer: String,
}

#[derive(Debug, Default, Clone)]
pub(super) struct DialState {
    /// The relay found at this address by the last successful handshake.
    pub relay_id: Option<String>,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    pub in_flight: bool,
}

#[derive(Debug, Default, Clone)]
pub(super) struct PeerStats {
    pub last_sync: Option<u64>,
    pub requests: u64,
    pub responses: u64,
    pub rtt_total_ms: f64,
}

pub(super) struct Pending {
    pub peer: String,
    pub sync_type: SyncType,
    pub sent_ms: u64,
}

pub(super) struct State {
    pub members: BTreeMap<String, Member>,
    pub links: BTreeMap<String, Link>,
    pub dials: BTreeMap<String, DialState>,
    /// Addresses that turned out to be this relay.
    pub self_addresses: BTreeSet<String>,
    pub dedup: DedupCache,
    /// The ids `dedup` holds, as seq ranges per stream (kept in step by `remember`).
    pub seen: SeenIndex,
    /// Per stream, the highest seq `dedup` evicted: older ids are refused from peers.
    pub floors: Floors,
    pub log: NotificationLog,
    /// The log's changes not yet committed to its durable store (`None`: no store).
    pub unsynced: Option<crate::logstore::Batch>,
    /// Arrival order of the next logged notification (restored from the store).
    pub next_order: u64,
    /// Ids requested by anti-entropy and when (monotonic ms): not asked again from
    /// another peer while the first request may still be answered; counted as repairs
    /// when they arrive.
    pub repairs_requested: HashMap<String, u64>,
    pub pending: BTreeMap<String, Pending>,
    pub errors: VecDeque<SyncErrorRecord>,
    pub peer_stats: BTreeMap<String, PeerStats>,
    pub last_sync: Option<u64>,
    pub next_sync: u64,
    pub rtt_total_ms: f64,
    pub rtt_count: u64,
}

/// What a notification arriving from a peer is to this relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// Admitted before (or below its stream's floor): a repeat.
    Seen,
    /// Not seen, and asked for by this relay's own fetch (anti-entropy's answer).
    Requested,
    /// Not seen, not asked for: forwarded by the peer.
    Unsolicited,
}

/// The mesh state of one relay.
pub struct Shared {
    state: Mutex<State>,
    next_link_id: AtomicU64,
    /// Wakes the supervisor: a relay was learned, a link dropped, a sync was forced.
    pub(super) wake: Notify,
    /// Sync types asked for by `/sync/force`, sent by the supervisor.
    pub(super) forced: Mutex<BTreeSet<SyncType>>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared::new(LOG_BYTES_MAX, LOG_RETENTION_SECS)
    }
}

impl Shared {
    /// Empty state whose notification log holds at most `log_bytes_max` bytes, none
    /// older than `retention_secs`.
    pub fn new(log_bytes_max: usize, retention_secs: u64) -> Self {
        Shared {
            state: Mutex::new(State {
                members: BTreeMap::new(),
                links: BTreeMap::new(),
                dials: BTreeMap::new(),
                self_addresses: BTreeSet::new(),
                dedup: DedupCache::new(DEDUP_IDS_MAX),
                seen: SeenIndex::default(),
                floors: Floors::default(),
                log: NotificationLog::new(LOG_ENTRIES_MAX, retention_secs, log_bytes_max),
                unsynced: None,
                next_order: 1,
                repairs_requested: HashMap::new(),
                pending: BTreeMap::new(),
                errors: VecDeque::new(),
                peer_stats: BTreeMap::new(),
                last_sync: None,
                next_sync: 0,
                rtt_total_ms: 0.0,
                rtt_count: 0,
            }),
            next_link_id: AtomicU64::new(1),
            wake: Notify::new(),
            forced: Mutex::new(BTreeSet::new()),
        }
    }
}

/// Why a new link was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefused {
    /// A link to that peer already exists and wins the tie-break.
    Duplicate,
    /// `peers_max` links are live.
    Full,
}

/// What happened to a notification offered to the mesh.
pub(crate) struct Routed {
    pub fresh: bool,
    pub repaired: bool,
    pub targets: Vec<(String, Outlet)>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a notification; on first sight, returns the links to forward it to
    /// (every live link but the one it came from). This relay's own (`from` is `None`)
    /// are always fresh: the ids peers have fed the seen cache never suppress them.
    pub(crate) fn admit(
        &self,
        notification: &Arc<Notification>,
        from: Option<&str>,
        now_unix: u64,
    ) -> Routed {
        let mut state = self.lock();
        // From a peer, an id below its stream's floor was seen and forgotten: a replay.
        let forgotten = from.is_some() && state.floors.is_below(&notification.message_id);
        if (forgotten || !state.remember(&notification.message_id)) && from.is_some() {
            return Routed {
                fresh: false,
                repaired: false,
                targets: Vec::new(),
            };
        }
        let repaired = state
            .repairs_requested
            .remove(&notification.message_id)
            .is_some();
        state.log.push(now_unix, notification.clone());
        state.note_log_changes(Some((now_unix, notification)));
        let targets = state
            .links
            .iter()
            .filter(|(peer, _)| Some(peer.as_str()) != from)
            .map(|(peer, link)| (peer.clone(), link.outlet.clone()))
            .collect();
        Routed {
            fresh: true,
            repaired,
            targets,
        }
    }

    /// What a peer's notification `id` is here: admitted (and so verified) before, in the
    /// dedup cache or below its stream's floor (only admitted ids ever enter either); asked
    /// for by this relay's fetch; or neither.
    pub(super) fn arrival(&self, id: &str) -> Arrival {
        // The longest id any of these tables can hold: a stream name and a decimal seq.
        // A longer one (a peer's frame may carry a megabyte) is none of them, and is not
        // hashed under the lock every link and route shares.
        const TABLED_ID_BYTES_MAX: usize = super::seen::STREAM_NAME_BYTES_MAX + 1 + 20;
        if id.len() > TABLED_ID_BYTES_MAX {
            return Arrival::Unsolicited;
        }
        let state = self.lock();
        if state.dedup.contains(id) || state.floors.is_below(id) {
            Arrival::Seen
        } else if state.repairs_requested.contains_key(id) {
            Arrival::Requested
        } else {
            Arrival::Unsolicited
        }
    }

    /// Every notification this relay has routed, as a resume position: the seen index's
    /// ranges, and each stream up to its floor (seen once, forgotten since).
    pub(crate) fn position(&self) -> crate::resume::Position {
        let state = self.lock();
        position_of(&state)
    }

    /// The log (oldest first) and the position, taken together.
    pub(crate) fn resume_view(&self) -> (Vec<Arc<Notification>>, crate::resume::Position) {
        let state = self.lock();
        (state.log.entries().cloned().collect(), position_of(&state))
    }

    /// Keeps a new link unless a link to that peer wins the tie-break: the link dialed by
    /// the relay with the smaller id survives, so both ends agree without talking.
    pub(super) fn register_link(
        &self,
        self_id: &str,
        peer: &str,
        link: (Outlet, String),
        peers_max: usize,
    ) -> Result<u64, LinkRefused> {
        let (outlet, dialer) = link;
        let preferred_dialer = self_id.min(peer);
        let mut state = self.lock();
        if let Some(existing) = state.links.get(peer) {
            let existing_preferred = existing.dialer == preferred_dialer;
            if existing_preferred && dialer != preferred_dialer {
                return Err(LinkRefused::Duplicate);
            }
            existing.outlet.close(CloseReason {
                code: 1000,
                reason: "replaced by another link",
            });
        } else if state.links.len() >= peers_max {
            return Err(LinkRefused::Full);
        }
        let link_id = self.next_link_id.fetch_add(1, Ordering::Relaxed);
        if let Some(member) = state.members.get_mut(peer) {
            member.left = false;
        }
        state.links.insert(
            peer.to_string(),
            Link {
                link_id,
                outlet,
                dialer,
            },
        );
        drop(state);
        self.wake.notify_one();
        Ok(link_id)
    }

    pub(super) fn unregister_link(&self, peer: &str, link_id: u64) {
        let mut state = self.lock();
        if state.links.get(peer).is_some_and(|l| l.link_id == link_id) {
            state.links.remove(peer);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Notes that `peer` was heard from now, at `address` if it said so.
    pub(super) fn heard(&self, peer: &str, address: Option<&str>, now_ms_unix: u64) {
        let mut state = self.lock();
        let address = address.filter(|a| !a.is_empty());
        // One look-up: a peer is heard from at every frame and is almost always known, so
        // its id is copied only the first time.
        if let Some(member) = state.members.get_mut(peer) {
            member.proven = true;
            member.last_seen_ms = member.last_seen_ms.max(now_ms_unix);
            if let Some(address) = address
                && member.address != address
            {
                address.clone_into(&mut member.address);
            }
            return;
        }
        let first = Member {
            address: address.unwrap_or_default().to_string(),
            version: String::new(),
            uptime: 0,
            last_seen_ms: now_ms_unix,
            proven: true,
            left: false,
            report: None,
            record: None,
        };
        state.members.insert(peer.to_string(), first);
        evict_members(&mut state);
    }

    /// Marks `peer` as gone on purpose (it sent `leaving`): its requests still pending
    /// are dropped unanswered, not counted as errors.
    pub(super) fn mark_left(&self, peer: &str) {
        if let Some(member) = self.lock().members.get_mut(peer) {
            if member.left {
                return; // said twice: nothing more to do (a peer cannot make this costly)
            }
            member.left = true;
        }
        self.forget_pending(peer);
    }

    /// Drops the requests still pending to `peer`: its link closed, so no answer can
    /// come over it (a replaced link's requests included); they are not errors.
    pub(super) fn forget_pending(&self, peer: &str) {
        self.lock().pending.retain(|_, p| p.peer != peer);
    }

    /// Whether `peer` said it was leaving and has not linked again since.
    pub(super) fn has_left(&self, peer: &str) -> bool {
        self.lock().members.get(peer).is_some_and(|m| m.left)
    }

    /// Whether the relay last found at `address` (by `relay_id` when known, else by a
    /// member's address) said it was leaving.
    pub(super) fn left_at(&self, address: &str, relay_id: Option<&str>) -> bool {
        let state = self.lock();
        match relay_id.and_then(|id| state.members.get(id)) {
            Some(member) => member.left,
            None => state
                .members
                .values()
                .any(|m| m.left && m.address == address),
        }
    }

    pub(super) fn record_error(
        &self,
        timestamp: u64,
        peer: &str,
        sync_type: Option<SyncType>,
        message: String,
    ) {
        let mut state = self.lock();
        if state.errors.len() == SYNC_ERRORS_MAX {
            state.errors.pop_front();
        }
        state.errors.push_back(SyncErrorRecord {
            timestamp,
            peer: peer.to_string(),
            sync_type,
            message,
        });
    }

    /// Remembers a sent request; the oldest pending one is dropped (as an error) when full.
    pub(super) fn add_pending(&self, id: String, pending: Pending) -> Option<Pending> {
        let mut state = self.lock();
        let evicted = if state.pending.len() >= PENDING_SYNCS_MAX {
            let oldest = state.pending.keys().next().cloned();
            oldest.and_then(|k| state.pending.remove(&k))
        } else {
            None
        };
        state
            .peer_stats
            .entry(pending.peer.clone())
            .or_default()
            .requests += 1;
        state.pending.insert(id, pending);
        evicted
    }

    /// Matches a response to its request; returns the request and the round trip.
    pub(super) fn complete_pending(
        &self,
        id: &str,
        now_ms: u64,
        now_unix: u64,
    ) -> Option<(Pending, u64)> {
        let mut state = self.lock();
        let pending = state.pending.remove(id)?;
        let rtt_ms = now_ms.saturating_sub(pending.sent_ms);
        state.rtt_total_ms += rtt_ms as f64;
        state.rtt_count += 1;
        state.last_sync = Some(now_unix);
        let stats = state.peer_stats.entry(pending.peer.clone()).or_default();
        stats.responses += 1;
        stats.rtt_total_ms += rtt_ms as f64;
        stats.last_sync = Some(now_unix);
        Some((pending, rtt_ms))
    }

    /// Removes requests older than `deadline_ms`; returns them.
    pub(super) fn expire_pending(&self, deadline_ms: u64) -> Vec<Pending> {
        let mut state = self.lock();
        let expired: Vec<String> = state
            .pending
            .iter()
            .filter(|(_, p)| p.sent_ms < deadline_ms)
            .map(|(k, _)| k.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|k| state.pending.remove(&k))
            .collect()
    }

    /// Every id this relay remembers seeing, as ranges (what `persist` stores).
    pub(super) fn seen_summary(&self) -> Vec<StreamSummary> {
        let state = self.lock();
        super::dedup::summarize(state.dedup.ids(), super::persist::SEEN_RANGES_MAX)
    }

    /// Marks ids seen before a restart, so they are neither delivered nor fetched again.
    pub(super) fn restore_seen(&self, ids: &[String]) {
        self.lock().restore_seen(ids);
    }

    /// The log summary this relay gossips.
    pub(super) fn log_summary(&self, now_unix: u64) -> Vec<StreamSummary> {
        let mut state = self.lock();
        state.log.expire(now_unix);
        state.note_log_changes(None);
        state.log.summary()
    }

    /// Ids in a peer's (validated) summary this relay never saw and has not asked for
    /// within `retry_ms`; they are remembered as requested. At most `FETCH_IDS_MAX` ids
    /// are considered per call, and finding them walks the summary's ranges and this
    /// relay's seen ranges, never the ids a range spans, so the mutex is held for
    /// O((ranges + FETCH_IDS_MAX) · log n) whatever the summary says.
    pub(super) fn missing_from(
        &self,
        summary: &[StreamSummary],
        now_ms: u64,
        retry_ms: u64,
    ) -> Vec<String> {
        let mut state = self.lock();
        let State {
            dedup,
            seen,
            floors,
            repairs_requested,
            ..
        } = &mut *state;
        repairs_requested.retain(|_, at| now_ms.saturating_sub(*at) < retry_ms);
        let mut missing = seen.unseen(summary, super::dedup::FETCH_IDS_MAX);
        missing.retain(|id| {
            !dedup.contains(id) && !repairs_requested.contains_key(id) && !floors.is_below(id)
        });
        if repairs_requested.len() + missing.len() > super::dedup::FETCH_IDS_MAX * 8 {
            repairs_requested.clear();
        }
        repairs_requested.extend(missing.iter().map(|id| (id.clone(), now_ms)));
        missing
    }

    /// The logged notifications among `ids`, in their order (encoding them is left to
    /// the caller, outside the mutex).
    pub(super) fn logged(&self, ids: &[&str]) -> Vec<Arc<Notification>> {
        let state = self.lock();
        ids.iter().filter_map(|id| state.log.get(id)).collect()
    }

    /// The live links, for sending.
    pub(super) fn link_senders(&self) -> Vec<(String, Outlet)> {
        self.lock()
            .links
            .iter()
            .map(|(p, l)| (p.clone(), l.outlet.clone()))
            .collect()
    }

    pub(super) fn link_sender(&self, peer: &str) -> Option<Outlet> {
        self.lock().links.get(peer).map(|l| l.outlet.clone())
    }

    /// The ids of the peers linked now, at most `max`.
    pub(super) fn linked_peers(&self, max: usize) -> Vec<String> {
        self.lock().links.keys().take(max).cloned().collect()
    }

    pub fn link_count(&self) -> usize {
        self.lock().links.len()
    }

    /// Asks the supervisor to send these sync types to every live peer now.
    pub fn force(&self, types: &[SyncType]) -> usize {
        self.forced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(types.iter().copied());
        self.wake.notify_one();
        self.link_count()
    }
}

impl State {
    /// Records `id` in the dedup cache and the seen index; true when it was new. The
    /// cache forgets its oldest ids when over its count or byte bound; the index forgets
    /// each of them too.
    fn remember(&mut self, id: &str) -> bool {
        let State {
            dedup,
            seen,
            floors,
            ..
        } = self;
        let evicted = |oldest: &str| {
            seen.remove(oldest);
            floors.evicted(oldest);
        };
        if !dedup.insert_evicting(id, evicted) {
            return false;
        }
        seen.insert(id);
        true
    }
}

impl State {
    /// Forgets dial entries (and self addresses) for addresses no longer known: neither
    /// configured nor a member's address. A dial in flight is kept until it ends. The
    /// table is so bounded by `KNOWN_RELAYS_MAX` plus the configured peers.
    pub(super) fn prune_dials(&mut self, configured: &[String]) {
        let State {
            members,
            dials,
            self_addresses,
            ..
        } = self;
        let known: BTreeSet<&str> = configured
            .iter()
            .map(String::as_str)
            .chain(members.values().map(|m| m.address.as_str()))
            .collect();
        dials.retain(|address, d| d.in_flight || known.contains(address.as_str()));
        self_addresses.retain(|address| known.contains(address.as_str()));
    }
}

/// Forgets the least recently seen unlinked members beyond the bound.
pub(super) fn evict_members(state: &mut State) {
    while state.members.len() > KNOWN_RELAYS_MAX {
        let oldest = state
            .members
            .iter()
            .filter(|(id, _)| !state.links.contains_key(*id))
            .min_by_key(|(_, m)| m.last_seen_ms)
            .map(|(id, _)| id.clone());
        match oldest {
            Some(id) => state.members.remove(&id),
            None => break,
        };
    }
}

impl Member {
    /// `left` after a planned departure, else by how long ago it was last heard from.
    pub fn health(&self, now_ms_unix: u64, interval_ms: u64) -> PeerHealth {
        if self.left {
            PeerHealth::Left
        } else {
            health_from_age(now_ms_unix.saturating_sub(self.last_seen_ms), interval_ms)
        }
    }
}

/// Health from how long ago a relay was last heard from, in sync intervals.
pub fn health_from_age(age_ms: u64, interval_ms: u64) -> PeerHealth {
    if age_ms <= 2 * interval_ms {
        PeerHealth::Healthy
    } else if age_ms <= 3 * interval_ms {
        PeerHealth::Degraded
    } else {
        PeerHealth::Unreachable
    }
}

/// Bytes of log changes waiting for their commit at most: past it (a store that keeps
/// failing) they are dropped, with a warning; the log in memory is unaffected.
pub const UNSYNCED_BYTES_MAX: usize = 64 << 20;

impl State {
    pub(super) fn restore_seen(&mut self, ids: &[String]) {
        for id in ids {
            self.remember(id);
        }
    }

    /// Queues the log's changes for the durable store: `pushed` (just logged) and the
    /// ids the log dropped since.
    pub(super) fn note_log_changes(&mut self, pushed: Option<(u64, &Arc<Notification>)>) {
        let Some(batch) = self.unsynced.as_mut() else {
            return;
        };
        batch.deletes.extend(self.log.take_evicted());
        if let Some((arrived, notification)) = pushed {
            batch.bytes += crate::mesh::dedup::log_entry_cost(notification);
            batch.puts.push(crate::logstore::Stored {
                order: self.next_order,
                arrived,
                notification: notification.clone(),
            });
            self.next_order += 1;
        }
        if batch.bytes > UNSYNCED_BYTES_MAX {
            tracing::warn!(
                dropped = batch.puts.len(),
                "the notification log's store is not keeping up: changes dropped"
            );
            *batch = crate::logstore::Batch::default();
        }
    }
}

fn position_of(state: &State) -> crate::resume::Position {
    use crate::resume::stream_key;
    let mut position = crate::resume::Position::default();
    for (stream, ranges) in state.seen.streams() {
        let key = stream_key(stream);
        for (lo, hi) in ranges {
            position.insert_range(key, lo, hi);
        }
    }
    for (stream, floor) in state.floors.iter() {
        position.insert_range(stream_key(stream), 1, floor);
    }
    position
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's id longer than any table holds is answered without the shared lock: the
    /// witness is an answer while the test holds that lock.
    #[test]
    fn an_overlong_id_is_answered_without_the_lock() {
        let shared = Shared::default();
        let held = shared.lock();
        let id = format!("evil-00000001-{}", "9".repeat(1 << 20));
        let answer = std::thread::scope(|scope| {
            let asking = scope.spawn(|| shared.arrival(&id));
            // Up to 5 s, for a loaded machine; an answer waiting on the lock never comes.
            for _ in 0..500 {
                if asking.is_finished() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let answered = asking.is_finished();
            drop(held);
            (answered, asking.join().unwrap())
        });
        assert_eq!(answer, (true, Arrival::Unsolicited));
    }

    fn link(dialer: &str) -> (Outlet, String) {
        let (outlet, _rx) = Outlet::new(crate::conn::queue::Bound {
            frames: 1,
            bytes: usize::MAX,
        });
        (outlet, dialer.to_string())
    }

    #[test]
    fn the_link_dialed_by_the_smaller_id_wins_on_both_sides() {
        // On relay "a": a link a dialed, then one b dialed.
        let mesh = Shared::default();
        assert!(mesh.register_link("a", "b", link("a"), 8).is_ok());
        assert_eq!(
            mesh.register_link("a", "b", link("b"), 8),
            Err(LinkRefused::Duplicate)
        );
        // On relay "b": the link b dialed came first, then a's replaces it.
        let mesh = Shared::default();
        let (outlet, dialer) = link("b");
        let control = outlet.control().clone();
        assert!(mesh.register_link("b", "a", (outlet, dialer), 8).is_ok());
        assert!(mesh.register_link("b", "a", link("a"), 8).is_ok());
        assert!(
            control.close_reason().is_some(),
            "the losing link is closed"
        );
    }

    #[test]
    fn the_seen_index_forgets_what_the_dedup_cache_forgets() {
        let mesh = Shared::default();
        let summary = [StreamSummary {
            stream: "a-1".into(),
            ranges: vec![(1, DEDUP_IDS_MAX as u64 + 2)],
        }];
        {
            let mut state = mesh.lock();
            for seq in 1..=DEDUP_IDS_MAX as u64 + 1 {
                assert!(state.remember(&format!("a-1-{seq}")));
            }
            assert!(!state.remember("a-1-5"));
        }
        // a-1-1 was forgotten as the oldest: below its stream's floor, it is old news,
        // not missing (fetching it would deliver it twice); the one never seen is.
        assert!(mesh.lock().floors.is_below("a-1-1"));
        assert_eq!(
            mesh.missing_from(&summary, 0, 1000),
            [format!("a-1-{}", DEDUP_IDS_MAX + 2)]
        );
        assert!(
            mesh.missing_from(&summary, 1, 1000).is_empty(),
            "not asked again while the request may be answered"
        );
    }

    // Proves the seen index also forgets the ids the cache drops for its byte budget
    // (several at once when a long id arrives), and their stream's floor rises past
    // them, so anti-entropy does not ask for them again.
    #[test]
    fn the_seen_index_follows_evictions_by_bytes() {
        let mesh = Shared::default();
        let long = |seq: u64| format!("{}-1-{seq}", "s".repeat(240));
        let per_id = long(100_000).len() + super::super::dedup::DEDUP_ID_OVERHEAD_BYTES;
        let fit = (super::super::dedup::DEDUP_BYTES_MAX / per_id) as u64;
        {
            let mut state = mesh.lock();
            for seq in 100_000..100_000 + fit + 2 {
                assert!(state.remember(&long(seq)));
            }
            assert!(state.dedup.len() < DEDUP_IDS_MAX, "bytes, not count, bound");
            assert!(state.dedup.bytes() <= super::super::dedup::DEDUP_BYTES_MAX);
        }
        let stream = format!("{}-1", "s".repeat(240));
        let summary = [StreamSummary {
            stream: stream.clone(),
            ranges: vec![(100_000, 100_003)],
        }];
        {
            let state = mesh.lock();
            assert!(!state.dedup.contains(&format!("{stream}-100001")));
            assert!(state.floors.is_below(&format!("{stream}-100001")));
            assert!(!state.floors.is_below(&format!("{stream}-100002")));
        }
        assert!(mesh.missing_from(&summary, 0, 1000).is_empty());
    }

    #[test]
    fn a_peer_that_left_is_left_until_it_links_again_and_its_requests_are_dropped() {
        let mesh = Shared::default();
        mesh.heard("b", Some("h:2"), 1_000);
        let pending = |peer: &str| Pending {
            peer: peer.into(),
            sync_type: SyncType::StateSync,
            sent_ms: 0,
        };
        mesh.add_pending("b-1".into(), pending("b"));
        mesh.add_pending("c-1".into(), pending("c"));
        mesh.mark_left("b");
        let member = mesh.lock().members["b"].clone();
        // However recently heard, it shows `left`.
        assert_eq!(member.health(1_000, 1_000), PeerHealth::Left);
        assert!(mesh.left_at("h:2", None) && mesh.left_at("elsewhere", Some("b")));
        assert!(mesh.expire_pending(u64::MAX).iter().all(|p| p.peer == "c"));
        mesh.register_link("a", "b", link("b"), 8).unwrap();
        assert!(!mesh.has_left("b"));
        assert_eq!(
            mesh.lock().members["b"].health(1_000, 1_000),
            PeerHealth::Healthy
        );
    }

    #[test]
    fn peers_max_bounds_links() {
        let mesh = Shared::default();
        assert!(mesh.register_link("a", "b", link("a"), 1).is_ok());
        assert_eq!(
            mesh.register_link("a", "c", link("a"), 1),
            Err(LinkRefused::Full)
        );
    }

    #[test]
    fn health_follows_the_documented_thresholds() {
        assert_eq!(health_from_age(2000, 1000), PeerHealth::Healthy);
        assert_eq!(health_from_age(2500, 1000), PeerHealth::Degraded);
        assert_eq!(health_from_age(3001, 1000), PeerHealth::Unreachable);
    }

    #[test]
    fn the_dial_table_keeps_only_known_addresses() {
        let mesh = Shared::default();
        mesh.heard("c", Some("h:3"), 5000);
        let mut state = mesh.lock();
        for address in ["h:3", "seed:1", "gone:1", "busy:1"] {
            state.dials.insert(address.into(), DialState::default());
        }
        state.dials.get_mut("busy:1").unwrap().in_flight = true;
        state.self_addresses.insert("gone:2".into());
        state.prune_dials(&["seed:1".to_string()]);
        assert_eq!(
            state.dials.keys().collect::<Vec<_>>(),
            ["busy:1", "h:3", "seed:1"]
        );
        assert!(state.self_addresses.is_empty());
    }

    /// A replay of a genuine notification after the dedup cache forgot its id is
    /// refused from a peer (its stream's floor), and never fetched again; this relay's
    /// own publications are always admitted.
    #[test]
    fn an_id_the_cache_forgot_is_refused_from_peers() {
        let mesh = Shared::default();
        mesh.lock().dedup = DedupCache::new(2);
        let note = |id: &str| Arc::new(Notification::for_test("a", id, "t", ""));
        for seq in 1..=3 {
            let id = format!("a-00000001-{seq}");
            assert!(mesh.admit(&note(&id), Some("p"), 0).fresh, "{id}");
        }
        assert!(!mesh.admit(&note("a-00000001-1"), Some("p"), 0).fresh);
        assert!(mesh.admit(&note("a-00000001-4"), Some("p"), 0).fresh);
        let summary = [StreamSummary {
            stream: "a-00000001".into(),
            ranges: vec![(1, 4)],
        }];
        assert!(mesh.missing_from(&summary, 0, 1000).is_empty());
        assert!(mesh.admit(&note("a-00000001-1"), None, 0).fresh, "own");
    }
}
