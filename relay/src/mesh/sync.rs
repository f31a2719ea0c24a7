//! Building, sending and absorbing sync payloads.

use std::sync::Arc;
use std::time::Duration;

use super::Mesh;
use super::state::{Pending, health_from_age};
use crate::conn::{Outbound, Outlet};
use crate::protocol::VERSION;
use crate::protocol::signed::{RecordView, SignedRecord};
use crate::protocol::split::{self, EncodedRecord, PayloadHead};

use tokio::time::Instant;

use crate::protocol::peer::{
    self, EncodedPayload, GossipRelay, PeerHealth, PeerPayload, StatePayload, StreamSummary,
    SyncPayload, SyncType,
};

/// What this relay says about itself in a sync of `sync_type`.
pub(super) fn payload_for(mesh: &Mesh, sync_type: SyncType) -> SyncPayload {
    match sync_type {
        SyncType::StateSync => SyncPayload {
            records: Some(mesh.records_to_gossip(records_bytes_max(mesh))),
            ..state_head(mesh)
        },
        SyncType::HealthSync => SyncPayload {
            health: serde_json::to_value(mesh.parts.status.health_report()).ok(),
            ..SyncPayload::default()
        },
        SyncType::MetricsSync => SyncPayload {
            metrics: Some(super::reports::metrics_payload(mesh)),
            ..SyncPayload::default()
        },
    }
}

/// A StateSync's fields but its records: state, address, the relays it knows, and its
/// log summary.
fn state_head(mesh: &Mesh) -> SyncPayload {
    let limit = peer_message_bytes_max(mesh);
    let mut log = mesh.state.log_summary(mesh.unix_secs());
    trim_summary(&mut log, limit / 2);
    SyncPayload {
        state: Some(StatePayload {
            uptime: mesh.parts.lifecycle.uptime_secs().to_string(),
            version: VERSION.to_string(),
            network: mesh.parts.config.network.as_str().to_string(),
        }),
        address: Some(mesh.parts.config.advertised_addr().to_string()),
        relays: Some(gossip(mesh, gossip_bytes_max(limit) / 2)),
        log: Some(log),
        ..SyncPayload::default()
    }
}

/// Bytes of membership records in one StateSync (request or answer).
fn records_bytes_max(mesh: &Mesh) -> usize {
    gossip_bytes_max(peer_message_bytes_max(mesh)) / 2
}

/// The largest message a peer accepts (with the same limits as this relay).
pub(super) fn peer_message_bytes_max(mesh: &Mesh) -> usize {
    mesh.parts.config.limits.ws_message_bytes_max + super::PEER_ENVELOPE_SLACK_BYTES
}

/// Bytes of gossip records in one StateSync: `GOSSIP_BYTES_MAX`, and at most a quarter
/// of the peer message limit (the log summary takes at most half, the rest of the
/// message is a few hundred bytes of bounded fields).
pub(super) fn gossip_bytes_max(message_bytes_max: usize) -> usize {
    super::GOSSIP_BYTES_MAX.min(message_bytes_max / 4)
}

/// Drops the summary's last streams until its encoding fits `bytes_max` (at the default
/// limits it always fits: `SUMMARY_RANGES_MAX` ranges of bounded streams).
fn trim_summary(log: &mut Vec<StreamSummary>, bytes_max: usize) {
    let mut total = 2usize;
    let keep = log
        .iter()
        .take_while(|s| {
            total += encoded_len(s) + 1;
            total <= bytes_max
        })
        .count();
    log.truncate(keep);
}

fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX / 4, |v| v.len())
}

/// This relay and the relays it knows, as StateSync gossips them: the most recently
/// seen first, at most `GOSSIP_RELAYS_MAX` records within `bytes_max` encoded bytes.
fn gossip(mesh: &Mesh, bytes_max: usize) -> Vec<GossipRelay> {
    let now_ms = mesh.unix_ms();
    let interval_ms = mesh.parts.config.sync_interval().as_millis() as u64;
    let mut relays = vec![GossipRelay {
        relay_id: mesh.relay_id().to_string(),
        address: mesh.parts.config.advertised_addr().to_string(),
        last_seen: now_ms / 1000,
        health: PeerHealth::Healthy,
    }];
    {
        let state = mesh.state.lock();
        let mut members: Vec<_> = state
            .members
            .iter()
            .filter(|(id, m)| {
                !m.address.is_empty() && peer::relay_id_fits(id) && peer::address_fits(&m.address)
            })
            .collect();
        members.sort_by_key(|(_, m)| std::cmp::Reverse(m.last_seen_ms));
        relays.extend(
            members
                .into_iter()
                .take(super::GOSSIP_RELAYS_MAX - 1)
                .map(|(id, m)| GossipRelay {
                    relay_id: id.clone(),
                    address: m.address.clone(),
                    last_seen: m.last_seen_ms / 1000,
                    health: health_from_age(now_ms.saturating_sub(m.last_seen_ms), interval_ms),
                }),
        );
    }
    leading_within_budget(relays, encoded_len, bytes_max)
}

/// The leading `items` whose encodings, as elements of a JSON list (`[`, `]` and a
/// separator each), fit `bytes_max`; the first is always kept (a StateSync names at
/// least its sender). `len` is an item's encoded length. (`persist::within_budget` is
/// another rule: ranges of every stream taken round by round.)
pub(super) fn leading_within_budget<T>(
    items: impl IntoIterator<Item = T>,
    len: impl Fn(&T) -> usize,
    bytes_max: usize,
) -> Vec<T> {
    let mut total = 2usize;
    let mut kept = Vec::new();
    for item in items {
        total += len(&item) + 1;
        if !kept.is_empty() && total > bytes_max {
            break;
        }
        kept.push(item);
    }
    kept
}

/// Takes in what a peer said: its address and state, the relays it knows, and its log
/// summary (fetching what this relay missed).
pub(super) fn observe(mesh: &Mesh, peer_id: &str, outlet: &Outlet, payload: &PeerPayload<'_>) {
    let mut dropped = 0usize;
    let address = payload.address.as_deref().filter(|a| peer::address_fits(a));
    if payload.address.is_some() && address.is_none() {
        dropped += 1;
    }
    mesh.state.heard(peer_id, address, mesh.unix_ms());
    if let Some(state) = &payload.state {
        if !state.fits() {
            dropped += 1;
        } else if let Some(member) = mesh.state.lock().members.get_mut(peer_id) {
            member.version.clone_from(&state.version);
            member.uptime = state.uptime.parse().unwrap_or(member.uptime);
        }
    }
    if let Some(metrics) = &payload.metrics
        && let Some(member) = mesh.state.lock().members.get_mut(peer_id)
    {
        let report = member.report.get_or_insert_default();
        super::reports::update(report, metrics, mesh.unix_ms());
    }
    // Membership is learned from signed records only; `relays` is the specification's
    // informational list, unsigned, and never believed.
    if let Some(records) = &payload.records {
        dropped += mesh.take_records(peer_id, records);
        dropped += records.len().saturating_sub(super::KNOWN_RELAYS_MAX);
    }
    if dropped > 0 {
        mesh.parts.metrics.mesh_rejected.increment(dropped as u64);
        mesh.parts
            .metrics
            .sync_errors
            .get(SyncType::StateSync)
            .increment(1);
        let message = format!(
            "{dropped} membership records or state fields refused (bounds, signature, key)"
        );
        tracing::info!(peer = %peer_id, %message, "peer breached the protocol's bounds");
        mesh.state.record_error(
            mesh.unix_secs(),
            peer_id,
            Some(SyncType::StateSync),
            message,
        );
    }
    if let Some(log) = &payload.log {
        let retry_ms = 2 * mesh.parts.config.sync_interval().as_millis() as u64;
        let missing = mesh.state.missing_from(log, mesh.now_ms(), retry_ms);
        if !missing.is_empty() {
            tracing::debug!(peer = %peer_id, count = missing.len(), "anti-entropy: fetching missed notifications");
            outlet.offer(Outbound::Text(peer::encode_fetch(&missing)));
        }
    }
}

/// How long an encoded payload answers peers' sync requests: a tenth of the sync
/// interval. Peers ask at their own times; with N peers a relay would otherwise build and
/// encode N answers per interval (gossip, records, log summary), each the same but for
/// what changed in between, which the next interval carries anyway.
const ANSWER_REUSE_DIVISOR: u32 = 10;

/// A StateSync in parts, encoded once and reused for a moment: every field but the
/// records, and each record this relay may gossip. A request carries all the records (as
/// many as fit the byte budget); an answer only those its request did not show
/// ([`StateParts::answer`]).
pub(super) struct StateParts {
    head: PayloadHead,
    /// `Mesh::records_to_offer`: the own record first, then the held ones, most recent
    /// first, at most `GOSSIP_RELAYS_MAX` (the byte budget is applied per message: what
    /// fits depends on what an answer leaves out).
    records: Vec<EncodedRecord>,
    records_bytes_max: usize,
}

impl StateParts {
    fn build(mesh: &Mesh) -> StateParts {
        StateParts {
            head: PayloadHead::encode(&state_head(mesh)),
            records: mesh
                .records_to_offer()
                .into_iter()
                .map(EncodedRecord::new)
                .collect(),
            records_bytes_max: records_bytes_max(mesh),
        }
    }

    /// The records not `covered`, in order, while they fit the byte budget (the first
    /// always does).
    fn select(&self, covered: impl Fn(&SignedRecord) -> bool) -> Vec<&EncodedRecord> {
        leading_within_budget(
            self.records.iter().filter(|r| !covered(&r.record)),
            |r| r.wire_len(),
            self.records_bytes_max,
        )
    }

    /// A request's payload: every record that fits.
    fn request(&self) -> EncodedPayload {
        split::payload(&self.head, &self.select(|_| false))
    }

    /// The answer to a StateSync request that carried `shown`, once this relay took them
    /// in (`observe`): its records but those the request demonstrably holds
    /// (`ShownCopy::covers`): the very version this answer would carry, or the one this
    /// relay holds now if at least as new (the parts may be a moment older than what the
    /// request just brought). Peers send their whole gossip in their own requests each
    /// interval, so a record both sides hold would cross the link four times an interval;
    /// each now crosses once each way, and a newer one, or one the peer lacks, still goes
    /// back at once. Only a genuine copy suppresses a record: an older or forged one
    /// leaves the record in the answer. What else an answer carries (state, address,
    /// relays, log) is unchanged.
    fn answer(&self, mesh: &Mesh, request_id: &str, shown: &[RecordView<'_>]) -> bytes::Bytes {
        let copies = mesh.shown_copies(shown);
        let records = self.select(|record| {
            copies
                .get(record.relay_id.as_str())
                .is_some_and(|shown| shown.covers(record))
        });
        split::encode_sync_response(
            SyncType::StateSync,
            mesh.relay_id(),
            request_id,
            &self.head,
            &records,
            mesh.unix_secs(),
        )
    }
}

/// One value built at a time, with when: reused while fresh.
struct Recent<T>(std::sync::Mutex<Option<(Instant, T)>>);

impl<T: Clone> Recent<T> {
    fn fresh(&self, now: Instant, reuse_for: Duration) -> Option<T> {
        let recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .as_ref()
            .filter(|(built, _)| now.saturating_duration_since(*built) < reuse_for)
            .map(|(_, value)| value.clone())
    }

    fn keep(&self, now: Instant, value: &T) {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *recent = Some((now, value.clone()));
    }
}

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Recent(std::sync::Mutex::new(None))
    }
}

/// The encoded payloads of recent syncs, one per sync type (a StateSync in parts), with
/// when each was built: at most one of each is kept.
#[derive(Default)]
pub(super) struct RecentPayloads {
    state: Recent<Arc<StateParts>>,
    health: Recent<EncodedPayload>,
    metrics: Recent<EncodedPayload>,
}

impl RecentPayloads {
    /// The payload kept whole for `sync_type`: none for a StateSync, kept in parts.
    fn whole(&self, sync_type: SyncType) -> Option<&Recent<EncodedPayload>> {
        match sync_type {
            SyncType::HealthSync => Some(&self.health),
            SyncType::MetricsSync => Some(&self.metrics),
            SyncType::StateSync => None,
        }
    }
}

fn reuse_for(mesh: &Mesh) -> Duration {
    mesh.parts.config.sync_interval() / ANSWER_REUSE_DIVISOR
}

/// A StateSync's parts built now, kept for the answers that follow.
fn fresh_state_parts(mesh: &Mesh) -> Arc<StateParts> {
    let parts = Arc::new(StateParts::build(mesh));
    mesh.recent_payloads.state.keep(mesh.clock().now(), &parts);
    parts
}

/// A payload built and encoded now (a sync this relay starts), kept for the answers that
/// follow.
fn fresh_payload(mesh: &Mesh, sync_type: SyncType) -> EncodedPayload {
    let Some(recent) = mesh.recent_payloads.whole(sync_type) else {
        return fresh_state_parts(mesh).request();
    };
    let payload = peer::encode_payload(&payload_for(mesh, sync_type));
    recent.keep(mesh.clock().now(), &payload);
    payload
}

/// The payload to answer a peer's HealthSync or MetricsSync with: the one built within
/// the last tenth of an interval, else a new one. (A StateSync answer is spliced from
/// its parts, `StateParts::answer`; asked here, it is the whole payload of those parts.)
fn answer_payload(mesh: &Mesh, sync_type: SyncType) -> EncodedPayload {
    let Some(recent) = mesh.recent_payloads.whole(sync_type) else {
        return answer_parts(mesh).request();
    };
    recent
        .fresh(mesh.clock().now(), reuse_for(mesh))
        .unwrap_or_else(|| fresh_payload(mesh, sync_type))
}

/// The StateSync parts built within the last tenth of an interval, else new ones.
fn answer_parts(mesh: &Mesh) -> Arc<StateParts> {
    mesh.recent_payloads
        .state
        .fresh(mesh.clock().now(), reuse_for(mesh))
        .unwrap_or_else(|| fresh_state_parts(mesh))
}

/// The frame answering a peer's sync request `request_id` (after `observe` took in what
/// it carried).
pub(super) fn answer(
    mesh: &Mesh,
    sync_type: SyncType,
    request_id: &str,
    request: &PeerPayload<'_>,
) -> bytes::Bytes {
    if sync_type == SyncType::StateSync {
        let shown = request.records.as_deref().unwrap_or_default();
        return answer_parts(mesh).answer(mesh, request_id, shown);
    }
    peer::encode_sync_response(
        sync_type,
        mesh.relay_id(),
        request_id,
        &answer_payload(mesh, sync_type),
        mesh.unix_secs(),
    )
}

/// Sends one sync request to a peer and remembers it for the round trip.
pub(super) fn send(
    mesh: &Mesh,
    peer_id: &str,
    outlet: &Outlet,
    sync_type: SyncType,
    payload: &EncodedPayload,
) {
    let id = mesh.parts.origin.next_sync_id();
    let frame = peer::encode_sync(sync_type, mesh.relay_id(), &id, payload, mesh.unix_secs());
    let pending = Pending {
        peer: peer_id.to_string(),
        sync_type,
        sent_ms: mesh.now_ms(),
    };
    if let Some(evicted) = mesh.state.add_pending(id, pending) {
        mesh.parts
            .metrics
            .sync_errors
            .get(evicted.sync_type)
            .increment(1);
    }
    mesh.parts.metrics.sync_requests.get(sync_type).increment(1);
    outlet.offer(Outbound::Text(frame));
}

/// Every sync type to one peer (when its link comes up).
pub(super) fn send_all_types_to(mesh: &Mesh, peer_id: &str) {
    if let Some(outlet) = mesh.state.link_sender(peer_id) {
        for sync_type in SyncType::ALL {
            send(
                mesh,
                peer_id,
                &outlet,
                sync_type,
                &fresh_payload(mesh, sync_type),
            );
        }
    }
}

/// The given sync types to every live peer, each payload built once for all of them;
/// returns how many peers.
pub(super) fn send_to_all(mesh: &Mesh, types: &[SyncType]) -> usize {
    let links = mesh.state.link_senders();
    if links.is_empty() {
        return 0;
    }
    for sync_type in types {
        let payload = fresh_payload(mesh, *sync_type);
        for (peer, outlet) in &links {
            send(mesh, peer, outlet, *sync_type, &payload);
        }
    }
    links.len()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::Identity;
    use crate::protocol::peer::{PeerHealth, PeerMessage};

    /// Peers' HealthSync and MetricsSync requests answered within a tenth of the sync
    /// interval share one encoded payload, and StateSync answers one set of encoded
    /// parts; a later one, or a sync this relay starts, is built anew.
    #[tokio::test(start_paused = true)]
    async fn answers_within_a_moment_share_one_payload() {
        let mesh = crate::mesh::testing::mesh("sync-test", None);
        let reuse_for = reuse_for(&mesh);
        let first = answer_payload(&mesh, SyncType::HealthSync);
        let parts = answer_parts(&mesh);
        tokio::time::advance(reuse_for - Duration::from_millis(1)).await;
        let soon = answer_payload(&mesh, SyncType::HealthSync);
        assert!(
            Arc::ptr_eq(&first, &soon),
            "reused within a tenth of an interval"
        );
        assert!(Arc::ptr_eq(&parts, &answer_parts(&mesh)), "parts too");
        let metrics = answer_payload(&mesh, SyncType::MetricsSync);
        assert!(!Arc::ptr_eq(&first, &metrics), "one payload per sync type");

        tokio::time::advance(Duration::from_millis(1)).await;
        let later = answer_payload(&mesh, SyncType::HealthSync);
        assert!(!Arc::ptr_eq(&first, &later), "built anew after it");
        assert!(!Arc::ptr_eq(&parts, &answer_parts(&mesh)), "parts too");

        let started = fresh_payload(&mesh, SyncType::HealthSync);
        assert!(
            !Arc::ptr_eq(&later, &started),
            "a sync this relay starts is fresh"
        );
        let answer = answer_payload(&mesh, SyncType::HealthSync);
        assert!(Arc::ptr_eq(&started, &answer), "and answers reuse it");

        let parts = answer_parts(&mesh);
        let request = fresh_payload(&mesh, SyncType::StateSync);
        assert!(
            !Arc::ptr_eq(&parts, &answer_parts(&mesh)),
            "a StateSync too"
        );
        let wire: serde_json::Value = serde_json::from_str(request.get()).unwrap();
        assert!(wire["records"][0]["signature"].is_string(), "{wire}");
        assert!(
            wire["log"].is_array() && wire["relays"].is_array(),
            "{wire}"
        );
    }

    /// Lists within the budget (the gossip, the records of a request, of an answer): the
    /// first item always, then items while `[`, `]`, their lengths and separators fit.
    #[test]
    fn within_budget_keeps_the_first_then_what_fits() {
        let lens = |items: &[usize], max| leading_within_budget(items.iter().copied(), |n| *n, max);
        assert_eq!(lens(&[50, 1], 10), [50], "the first, even oversized");
        // 2 + (3 + 1) + (3 + 1) = 10: fits exactly; one more byte does not.
        assert_eq!(lens(&[3, 3, 1], 10), [3, 3]);
        assert_eq!(lens(&[3, 4, 1], 10), [3], "stops at the first item over");
        assert_eq!(lens(&[], 10), Vec::<usize>::new());
    }

    fn signed(seed: u8, id: &str, timestamp_ms: u64) -> SignedRecord {
        let identity = Identity::from_seed(&[seed; 32]);
        SignedRecord::sign(&identity, id, "h:1", PeerHealth::Healthy, timestamp_ms)
    }

    /// `record` with a signature of zeros: every other field genuine.
    fn forged(record: &SignedRecord) -> SignedRecord {
        SignedRecord {
            signature: "00".repeat(64),
            ..record.clone()
        }
    }

    /// A mesh `relay-a` holding the genuine records of `relay-b`, `-c` and `-d`, signed
    /// 10 ms ago (seeds 2, 3, 4), and those records.
    fn holding_three() -> (Arc<Mesh>, Vec<SignedRecord>) {
        let mesh = crate::mesh::testing::mesh("relay-a", None);
        let now = mesh.unix_ms();
        let held: Vec<SignedRecord> = [(2, "relay-b"), (3, "relay-c"), (4, "relay-d")]
            .into_iter()
            .map(|(seed, id)| signed(seed, id, now - 10))
            .collect();
        let views: Vec<RecordView<'_>> = held.iter().map(SignedRecord::view).collect();
        assert_eq!(mesh.take_records("peer", &views), 0);
        (mesh, held)
    }

    /// What `mesh` answers a StateSync request carrying `shown` (taken in first, as a
    /// link does): the answer's records.
    fn answered(mesh: &Mesh, shown: &[SignedRecord]) -> Vec<SignedRecord> {
        let views: Vec<RecordView<'_>> = shown.iter().map(SignedRecord::view).collect();
        mesh.take_records("peer", &views);
        let request = PeerPayload {
            records: Some(views),
            ..PeerPayload::default()
        };
        let frame = answer(mesh, SyncType::StateSync, "peer-1-s1", &request);
        let Ok(PeerMessage::SyncResponse {
            request_id,
            payload,
            ..
        }) = peer::parse(&frame)
        else {
            panic!("{}", String::from_utf8_lossy(&frame))
        };
        assert_eq!(request_id, "peer-1-s1");
        assert!(payload.state.is_some() && payload.log.is_some() && payload.relays.is_some());
        let records = payload.records.expect("an answer carries its records");
        records.iter().map(RecordView::to_record).collect()
    }

    /// An answer leaves out exactly the records its request carried in the version this
    /// relay holds, and carries the rest (its own record first).
    #[tokio::test(start_paused = true)]
    async fn an_answer_leaves_out_exactly_the_records_its_request_showed() {
        let (mesh, held) = holding_three();
        let own = mesh.own_record();
        assert_eq!(
            answered(&mesh, &[]),
            [
                own.clone(),
                held[0].clone(),
                held[1].clone(),
                held[2].clone()
            ],
            "nothing shown: everything"
        );
        let answer = answered(&mesh, &[held[2].clone(), held[0].clone()]);
        assert_eq!(answer, [own, held[1].clone()]);
    }

    /// The parts an answer is spliced from may be a moment older than what this relay
    /// holds: a record the request carried exactly as the parts have it is left out (the
    /// peer holds it), and so is one whose held version the request carried, newer than
    /// the parts'; a forged newer copy leaves the record in.
    #[tokio::test(start_paused = true)]
    async fn a_record_shown_as_the_parts_have_it_or_as_held_since_is_left_out() {
        let (mesh, held) = holding_three();
        let own = mesh.own_record();
        assert_eq!(answered(&mesh, &[]).len(), 4, "the parts are built");
        let newer = signed(2, "relay-b", held[0].timestamp_ms + 5);
        let newer_view = [newer.view()];
        assert_eq!(mesh.take_records("peer", &newer_view), 0);
        let rest = [own.clone(), held[1].clone(), held[2].clone()];

        assert_eq!(answered(&mesh, std::slice::from_ref(&held[0])), rest);
        assert_eq!(answered(&mesh, std::slice::from_ref(&newer)), rest);
        let answer = answered(&mesh, &[forged(&newer)]);
        assert_eq!(
            answer,
            [own, held[0].clone(), held[1].clone(), held[2].clone()]
        );
    }

    /// A copy that is not the held record suppresses nothing: an older genuine one, one
    /// with a broken signature, one signed with another key, one whose signature is the
    /// held record's but whose address differs, and a forged copy of this relay's own
    /// record. The answer carries every genuine record, as held.
    #[tokio::test(start_paused = true)]
    async fn older_or_forged_copies_suppress_nothing() {
        let (mesh, held) = holding_three();
        let own = mesh.own_record();
        let older = signed(2, "relay-b", held[0].timestamp_ms - 1);
        let broken = forged(&held[1]);
        let other_key = signed(9, "relay-d", held[2].timestamp_ms);
        let moved = SignedRecord {
            address: "evil:1".into(),
            ..held[0].clone()
        };
        let forged_own = forged(&own);
        let answer = answered(&mesh, &[older, broken, other_key, moved, forged_own]);
        assert_eq!(
            answer,
            [own, held[0].clone(), held[1].clone(), held[2].clone()]
        );
    }

    /// This relay's own record is in the answer unless the request carried that very
    /// version.
    #[tokio::test(start_paused = true)]
    async fn the_own_record_is_sent_unless_the_request_carried_it() {
        let (mesh, held) = holding_three();
        let own = mesh.own_record();
        assert_eq!(answered(&mesh, &held), std::slice::from_ref(&own));
        let mut everything = held.clone();
        everything.push(own.clone());
        assert_eq!(answered(&mesh, &everything), []);
        let reworded = SignedRecord {
            health: PeerHealth::Degraded,
            ..own.clone()
        };
        everything.pop();
        everything.push(reworded);
        assert_eq!(answered(&mesh, &everything), [own]);
    }

    /// An answer's records fit the gossip byte budget, whatever its request showed: what
    /// the request showed makes room for records further down the list, never more bytes.
    #[tokio::test(start_paused = true)]
    async fn an_answer_stays_within_the_gossip_byte_budget() {
        let mut config = crate::config::Config {
            relay_id: "relay-a".into(),
            ..Default::default()
        };
        config.limits.ws_message_bytes_max = 4096;
        let mesh = crate::mesh::testing::mesh_with(config, None);
        let budget = records_bytes_max(&mesh);
        let now = mesh.unix_ms();
        let held: Vec<SignedRecord> = (0..30u8)
            .map(|i| signed(10 + i, &format!("relay-{i:02}"), now - 100 + u64::from(i)))
            .collect();
        let views: Vec<RecordView<'_>> = held.iter().map(SignedRecord::view).collect();
        assert_eq!(mesh.take_records("peer", &views), 0);
        let bytes = |records: &[SignedRecord]| {
            2 + records
                .iter()
                .map(|r| serde_json::to_string(r).unwrap().len() + 1)
                .sum::<usize>()
        };

        let all = answered(&mesh, &[]);
        assert!(all.len() < 31, "the budget cuts the list: {}", all.len());
        assert!(bytes(&all) <= budget, "{} > {budget}", bytes(&all));

        let shown = &all[1..];
        let rest = answered(&mesh, shown);
        assert!(bytes(&rest) <= budget, "{} > {budget}", bytes(&rest));
        assert_eq!(rest[0], all[0], "the own record first");
        assert!(rest.len() > 1, "room made for records further down");
        assert!(rest[1..].iter().all(|r| !shown.contains(r)));
    }
}
