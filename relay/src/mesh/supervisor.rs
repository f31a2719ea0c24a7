//! The mesh's clockwork: dial the relays it knows (with backoff and jitter), send syncs
//! on schedule or when forced, expire unanswered requests, keep the gauges current.

use std::sync::Arc;
use std::time::Duration;

use super::link::{self, LinkParts};
use super::state::health_from_age;
use super::sync;
use super::view::{PeerHealth, SyncType};
use super::wire::{self, PeerHandshakeResponse};
use crate::hub::{ClientControl, CloseReason};
use crate::node::Node;
use crate::rt::Net;
use crate::ws::codec::{FrameKind, FrameReader, FrameWriter, Incoming, Role};

/// Dial backoff starts here and doubles per failed attempt, up to the sync interval
/// (clamped to 1-30 s), with jitter from the seeded RNG.
const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Bound on connecting and on the WebSocket + relay handshake.
const DIAL_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// Room for a forwarded notification's stamp over the client message limit.
pub const PEER_ENVELOPE_SLACK_BYTES: usize = 64 * 1024;

/// Runs the mesh until shutdown.
pub async fn run<N: Net>(node: Arc<Node>, net: N) {
    let interval = node.config.sync_interval();
    let health_interval = node.config.health_interval();
    let tick = (node.config.limits.heartbeat_interval().min(interval) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut next_state = node.clock.now();
    let mut next_health = node.clock.now();
    restore_seen(&node);
    loop {
        tokio::select! {
            biased;
            () = node.shutdown_started() => {
                save_seen(&node);
                return;
            }
            () = node.mesh.wake.notified() => {}
            () = node.clock.sleep(tick) => {}
        }
        let now = node.clock.now();
        let forced: Vec<SyncType> =
            std::mem::take(&mut *node.mesh.forced.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if !forced.is_empty() {
            sync::send_to_all(&node, &forced);
        }
        if now >= next_state {
            sync::send_to_all(&node, &[SyncType::StateSync, SyncType::MetricsSync]);
            next_state = now + interval;
            save_seen(&node);
            node.mesh.lock().next_sync = node.unix_secs() + interval.as_secs();
        }
        if now >= next_health {
            sync::send_to_all(&node, &[SyncType::HealthSync]);
            next_health = now + health_interval;
        }
        expire_pending(&node);
        dial_due(&node, &net);
        update_gauges(&node);
    }
}

fn restore_seen(node: &Node) {
    match super::persist::load(&node.config.data_dir) {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(
                ids = ids.len(),
                "restored the notification ids seen before the restart"
            );
            node.mesh.restore_seen(&ids);
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "ignoring the saved notification ids"),
    }
}

fn save_seen(node: &Node) {
    if let Err(error) = super::persist::save(&node.config.data_dir, &node.mesh.seen_summary()) {
        tracing::warn!(%error, "cannot save the notification ids seen");
    }
}

fn expire_pending(node: &Node) {
    let timeout_ms = 2 * node.config.sync_interval().as_millis() as u64;
    for pending in node
        .mesh
        .expire_pending(node.now_ms().saturating_sub(timeout_ms))
    {
        node.metrics
            .sync_errors
            .get(pending.sync_type.as_str())
            .increment(1);
        let message = format!("no answer within {timeout_ms} ms");
        node.mesh.record_error(
            node.unix_secs(),
            &pending.peer,
            Some(pending.sync_type),
            message,
        );
    }
}

/// Addresses worth dialing now: configured peers and known relays without a live link.
fn due_addresses(node: &Node) -> Vec<String> {
    let now_ms = node.now_ms();
    let own = node.config.advertised_addr();
    let peers_max = node.config.mesh.peers_max;
    let state = node.mesh.lock();
    let linked: Vec<&str> = state
        .links
        .keys()
        .filter_map(|id| state.members.get(id))
        .map(|m| m.address.as_str())
        .collect();
    let unlinked_members = state
        .members
        .iter()
        .filter(|(id, _)| !state.links.contains_key(*id))
        .map(|(_, m)| m.address.clone());
    let mut candidates: Vec<String> = node
        .config
        .mesh
        .peers
        .iter()
        .cloned()
        .chain(unlinked_members)
        .collect();
    candidates.sort();
    candidates.dedup();
    // A dial stays in flight while the link it opened is served: count only those whose
    // link is not up yet, or each outbound link would count twice against `peers_max`.
    let in_flight = state
        .dials
        .values()
        .filter(|d| {
            d.in_flight
                && !d
                    .relay_id
                    .as_ref()
                    .is_some_and(|id| state.links.contains_key(id))
        })
        .count();
    let budget = peers_max.saturating_sub(state.links.len() + in_flight);
    candidates
        .into_iter()
        .filter(|a| {
            !a.is_empty()
                && a != own
                && !state.self_addresses.contains(a)
                && !linked.contains(&a.as_str())
        })
        .filter(|a| {
            state.dials.get(a).is_none_or(|d| {
                let linked = d
                    .relay_id
                    .as_ref()
                    .is_some_and(|id| state.links.contains_key(id));
                !linked && !d.in_flight && d.next_attempt_ms <= now_ms
            })
        })
        .take(budget)
        .collect()
}

fn dial_due<N: Net>(node: &Arc<Node>, net: &N) {
    for address in due_addresses(node) {
        node.mesh
            .lock()
            .dials
            .entry(address.clone())
            .or_default()
            .in_flight = true;
        let (node, net) = (node.clone(), net.clone());
        tokio::spawn(async move {
            let outcome = dial(&node, &net, &address).await;
            finish_dial(&node, &address, outcome);
        });
    }
}

/// How a dial ended.
enum DialOutcome {
    /// A link was up (and has since closed): retry soon.
    Served,
    /// The address is this relay.
    ItsMe,
    Failed(String),
}

fn finish_dial(node: &Node, address: &str, outcome: DialOutcome) {
    let now_ms = node.now_ms();
    let cap = node
        .config
        .sync_interval()
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut state = node.mesh.lock();
    if matches!(outcome, DialOutcome::ItsMe) {
        state.self_addresses.insert(address.to_string());
        state.dials.remove(address);
        return;
    }
    let dial = state.dials.entry(address.to_string()).or_default();
    dial.in_flight = false;
    dial.attempts = match outcome {
        DialOutcome::Served => 0,
        _ => dial.attempts.saturating_add(1),
    };
    let backoff = DIAL_BACKOFF_MIN
        .saturating_mul(1 << dial.attempts.min(16))
        .min(cap);
    let half = backoff.as_millis() as u64 / 2;
    dial.next_attempt_ms = now_ms + half + node.rng.range_u64(0, half.max(1));
    if let DialOutcome::Failed(reason) = outcome {
        tracing::debug!(%address, attempts = dial.attempts, %reason, "peer dial failed");
    }
}

/// Connects, upgrades, handshakes as a relay, then serves the link until it closes.
async fn dial<N: Net>(node: &Arc<Node>, net: &N, address: &str) -> DialOutcome {
    let limit = node
        .config
        .limits
        .connection_timeout()
        .min(DIAL_TIMEOUT_MAX);
    let stream = match tokio::time::timeout(limit, net.connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return DialOutcome::Failed(format!("connect: {e}")),
        Err(_) => return DialOutcome::Failed("connect timed out".into()),
    };
    let request = crate::ws::client::upgrade_request(address);
    let upgraded = tokio::time::timeout(
        limit,
        fastwebsockets::handshake::client(&crate::ws::client::SpawnExecutor, request, stream),
    )
    .await;
    let ws = match upgraded {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return DialOutcome::Failed(format!("upgrade: {e}")),
        Err(_) => return DialOutcome::Failed("upgrade timed out".into()),
    };
    let (read_half, write_half) = tokio::io::split(ws.into_inner());
    let message_max = node.config.limits.ws_message_bytes_max + PEER_ENVELOPE_SLACK_BYTES;
    let mut reader = FrameReader::new(read_half, Role::Client, message_max);
    let mut writer = FrameWriter::new(write_half, Role::Client, node.rng.next_u64() as u32);
    let handshake = wire::encode_peer_handshake(
        node.relay_id(),
        node.config.advertised_addr(),
        node.config.auth.mesh_token.as_deref(),
    );
    if writer.push(FrameKind::Text, &handshake).await.is_err() || writer.flush().await.is_err() {
        return DialOutcome::Failed("handshake write failed".into());
    }
    let response = match tokio::time::timeout(limit, reader.next()).await {
        Ok(Ok(Incoming::Text(text))) => serde_json::from_slice::<PeerHandshakeResponse>(&text),
        Ok(other) => return DialOutcome::Failed(format!("no handshake response: {other:?}")),
        Err(_) => return DialOutcome::Failed("handshake timed out".into()),
    };
    let response = match response {
        Ok(r) if r.relay_id == node.relay_id() => return DialOutcome::ItsMe,
        Ok(r) if r.status == "accepted" => r,
        Ok(r) => return DialOutcome::Failed(format!("refused: {}", r.reason.unwrap_or_default())),
        Err(e) => return DialOutcome::Failed(format!("bad handshake response: {e}")),
    };
    let peer_id = response.relay_id;
    node.mesh
        .lock()
        .dials
        .entry(address.to_string())
        .or_default()
        .relay_id = Some(peer_id.clone());
    // Gossip the peer's own advertised address, not the one dialed: the route this relay
    // took (a proxy, a local name) may mean nothing to the others.
    let advertised = response
        .address
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| address.to_string());
    serve_outbound(node, reader, writer, peer_id, advertised).await;
    DialOutcome::Served
}

async fn serve_outbound<R, W>(
    node: &Arc<Node>,
    mut reader: FrameReader<R>,
    writer: FrameWriter<W>,
    peer_id: String,
    address: String,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let control = Arc::new(ClientControl::default());
    let (tx, rx) = tokio::sync::mpsc::channel(super::PEER_QUEUE_MAX);
    let writer_task = tokio::spawn(crate::ws::write_loop(writer, rx, control.clone()));
    let parts = LinkParts {
        peer_id,
        address,
        dialer: node.relay_id().to_string(),
        inbound: false,
        tx,
        control: control.clone(),
    };
    link::serve(node, &mut reader, parts).await;
    if control.close_reason().is_none() {
        control.close(CloseReason::NORMAL);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), writer_task).await;
}

fn update_gauges(node: &Node) {
    let now_ms = node.clock.unix_time().as_millis() as u64;
    let interval_ms = node.config.sync_interval().as_millis() as u64;
    let state = node.mesh.lock();
    let mut counts = [0usize; 3];
    for member in state.members.values() {
        let index = match health_from_age(now_ms.saturating_sub(member.last_seen_ms), interval_ms) {
            PeerHealth::Healthy => 0,
            PeerHealth::Degraded => 1,
            PeerHealth::Unreachable => 2,
        };
        counts[index] += 1;
    }
    for (gauge, count) in node.metrics.mesh_peers.iter().zip(counts) {
        gauge.set(count as f64);
    }
    node.metrics
        .mesh_known_relays
        .set((state.members.len() + 1) as f64);
    node.metrics.mesh_connections.set(state.links.len() as f64);
}
