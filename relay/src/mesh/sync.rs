//! Building, sending and absorbing sync payloads.

use super::Mesh;
use super::state::{Pending, health_from_age};
use crate::conn::{Outbound, Outlet};
use crate::protocol::VERSION;
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::peer::{
    self, EncodedPayload, GossipRelay, PeerHealth, PeerPayload, StatePayload, StreamSummary,
    SyncPayload, SyncType,
};

/// What this relay says about itself in a sync of `sync_type`.
pub(super) fn payload_for(mesh: &Mesh, sync_type: SyncType) -> SyncPayload {
    match sync_type {
        SyncType::StateSync => {
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
                records: Some(mesh.records_to_gossip(gossip_bytes_max(limit) / 2)),
                log: Some(log),
                ..SyncPayload::default()
            }
        }
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
    let mut total = 2usize;
    let keep = relays
        .iter()
        .enumerate()
        .take_while(|(i, r)| {
            total += encoded_len(r) + 1;
            *i == 0 || total <= bytes_max
        })
        .count();
    relays.truncate(keep);
    relays
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
        member.report = Some(super::reports::parse(metrics, mesh.unix_ms()));
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

/// The encoded payloads of recent answers, one per sync type, with when each was built.
#[derive(Default)]
pub(super) struct RecentPayloads(std::sync::Mutex<Vec<(SyncType, Instant, EncodedPayload)>>);

impl RecentPayloads {
    fn fresh(
        &self,
        sync_type: SyncType,
        now: Instant,
        reuse_for: Duration,
    ) -> Option<EncodedPayload> {
        let recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent
            .iter()
            .find(|(t, built, _)| {
                *t == sync_type && now.saturating_duration_since(*built) < reuse_for
            })
            .map(|(_, _, payload)| payload.clone())
    }

    fn keep(&self, sync_type: SyncType, now: Instant, payload: &EncodedPayload) {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|(t, _, _)| *t != sync_type);
        recent.push((sync_type, now, payload.clone()));
    }
}

/// A payload built and encoded now, kept for the answers that follow.
fn fresh_payload(mesh: &Mesh, sync_type: SyncType) -> EncodedPayload {
    let payload = peer::encode_payload(&payload_for(mesh, sync_type));
    mesh.recent_payloads
        .keep(sync_type, mesh.clock().now(), &payload);
    payload
}

/// The payload to answer a peer's sync request with: the one built within the last
/// tenth of an interval, else a new one.
pub(super) fn answer_payload(mesh: &Mesh, sync_type: SyncType) -> EncodedPayload {
    let reuse_for = mesh.parts.config.sync_interval() / ANSWER_REUSE_DIVISOR;
    mesh.recent_payloads
        .fresh(sync_type, mesh.clock().now(), reuse_for)
        .unwrap_or_else(|| fresh_payload(mesh, sync_type))
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

    /// Peers' requests answered within a tenth of the sync interval share one encoded
    /// payload; a later one, or a sync this relay starts, is built anew.
    #[tokio::test(start_paused = true)]
    async fn answers_within_a_moment_share_one_payload() {
        let mesh = crate::mesh::testing::mesh("sync-test", None);
        let reuse_for = mesh.parts.config.sync_interval() / ANSWER_REUSE_DIVISOR;
        let first = answer_payload(&mesh, SyncType::StateSync);
        tokio::time::advance(reuse_for - Duration::from_millis(1)).await;
        let soon = answer_payload(&mesh, SyncType::StateSync);
        assert!(
            Arc::ptr_eq(&first, &soon),
            "reused within a tenth of an interval"
        );
        let health = answer_payload(&mesh, SyncType::HealthSync);
        assert!(!Arc::ptr_eq(&first, &health), "one payload per sync type");

        tokio::time::advance(Duration::from_millis(1)).await;
        let later = answer_payload(&mesh, SyncType::StateSync);
        assert!(!Arc::ptr_eq(&first, &later), "built anew after it");

        let started = fresh_payload(&mesh, SyncType::StateSync);
        assert!(
            !Arc::ptr_eq(&later, &started),
            "a sync this relay starts is fresh"
        );
        let answer = answer_payload(&mesh, SyncType::StateSync);
        assert!(Arc::ptr_eq(&started, &answer), "and answers reuse it");
        let wire: serde_json::Value = serde_json::from_str(answer.get()).unwrap();
        assert!(wire["records"][0]["signature"].is_string(), "{wire}");
    }
}
