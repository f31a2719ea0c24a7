//! The mesh's clockwork: dial the relays it knows (with backoff and jitter), send syncs
//! on schedule or when forced, expire unanswered requests, keep the gauges current.

use std::sync::Arc;
use std::time::Duration;

use super::Mesh;
use super::Reply;
use super::link::{self, LinkParts};
use super::sync;
use crate::conn::codec::{FrameKind, FrameReader, FrameWriter, Incoming, Role};
use crate::conn::{CloseReason, Outlet, queue};
use crate::protocol::peer::{self, PeerHandshakeResponse, PeerHealth, SyncType};
use crate::rt::Net;

/// Dial backoff starts here and doubles per failed attempt, up to the sync interval
/// (clamped to 1-30 s), with jitter from the seeded RNG.
const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Bound on connecting and on the WebSocket + relay handshake.
const DIAL_TIMEOUT_MAX: Duration = Duration::from_secs(5);
/// Room for a forwarded notification's stamp over the client message limit.
pub const PEER_ENVELOPE_SLACK_BYTES: usize = 64 * 1024;

/// Runs the mesh until shutdown.
pub async fn run<N: Net>(mesh: Arc<Mesh>, net: N) {
    let interval = mesh.parts.config.sync_interval();
    let health_interval = mesh.parts.config.health_interval();
    let tick = (mesh.parts.config.limits.heartbeat_interval().min(interval) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut next_state = mesh.clock().now();
    let mut next_health = mesh.clock().now();
    restore_seen(&mesh);
    mesh.restore_log();
    tokio::spawn(super::durable::committer(mesh.clone()));
    tokio::spawn(super::discovery::run(mesh.clone(), net.clone()));
    loop {
        tokio::select! {
            biased;
            () = mesh.parts.lifecycle.shutdown_started() => {
                save_seen(&mesh);
                mesh.flush_log();
                return;
            }
            () = mesh.state.wake.notified() => {}
            () = mesh.clock().sleep(tick) => {}
        }
        let now = mesh.clock().now();
        let forced: Vec<SyncType> =
            std::mem::take(&mut *mesh.state.forced.lock().unwrap_or_else(|p| p.into_inner()))
                .into_iter()
                .collect();
        if !forced.is_empty() {
            sync::send_to_all(&mesh, &forced);
        }
        if now >= next_state {
            sync::send_to_all(&mesh, &[SyncType::StateSync, SyncType::MetricsSync]);
            next_state = now + interval;
            save_seen(&mesh);
            mesh.state.lock().next_sync = mesh.unix_secs() + interval.as_secs();
        }
        if now >= next_health {
            sync::send_to_all(&mesh, &[SyncType::HealthSync]);
            next_health = now + health_interval;
        }
        expire_pending(&mesh);
        mesh.expire_members();
        dial_due(&mesh, &net);
        update_gauges(&mesh);
    }
}

fn restore_seen(mesh: &Mesh) {
    match super::persist::load_bindings(&mesh.parts.config.data_dir) {
        Ok(saved) => {
            let restored = mesh.trust.restore(&saved);
            if restored > 0 {
                tracing::info!(restored, "restored the relay keys bound before the restart");
            }
        }
        Err(error) => tracing::warn!(%error, "ignoring the saved relay keys"),
    }
    match super::persist::load(&mesh.parts.config.data_dir) {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(
                ids = ids.len(),
                "restored the notification ids seen before the restart"
            );
            mesh.state.restore_seen(&ids);
        }
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "ignoring the saved notification ids"),
    }
}

pub(super) fn save_seen(mesh: &Mesh) {
    if let Err(error) = try_save_seen(mesh) {
        tracing::warn!(%error, "cannot save the notification ids seen");
    }
}

/// Saves the key bindings (when they changed) and the ids seen.
fn try_save_seen(mesh: &Mesh) -> Result<(), super::persist::PersistError> {
    // One save at a time: saves share a temporary file, and the last one to write must
    // be the one that read the newest ids.
    let mut saved = mesh
        .bindings_saved
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    // The bindings change rarely (a relay joins): written again only when they did.
    let made = mesh.trust.bindings_made();
    if *saved != made {
        match super::persist::save_bindings(&mesh.parts.config.data_dir, &mesh.trust.bindings()) {
            Ok(()) => *saved = made,
            Err(error) => tracing::warn!(%error, "cannot save the relay keys bound"),
        }
    }
    super::persist::save(&mesh.parts.config.data_dir, &mesh.state.seen_summary())
}

fn expire_pending(mesh: &Mesh) {
    let timeout_ms = 2 * mesh.parts.config.sync_interval().as_millis() as u64;
    for pending in mesh
        .state
        .expire_pending(mesh.now_ms().saturating_sub(timeout_ms))
    {
        if mesh.state.has_left(&pending.peer) {
            continue; // it said it was going: no answer was to be expected
        }
        mesh.parts
            .metrics
            .sync_errors
            .get(pending.sync_type)
            .increment(1);
        let message = format!("no answer within {timeout_ms} ms");
        mesh.state.record_error(
            mesh.unix_secs(),
            &pending.peer,
            Some(pending.sync_type),
            message,
        );
    }
}

/// Addresses worth dialing now: configured peers (and those `peers_dns` found) and known
/// relays without a live link.
///
/// Dial slots (`mesh.peers_max` less live links and dials in flight) go first to
/// configured peers, then to members that completed a handshake here (the most recently
/// seen first), then to addresses only gossip named, fewest failed attempts first; those
/// never hold more than `peers_max / UNPROVEN_DIALS_DIVISOR` slots (at least one), so
/// addresses that do not answer cannot keep a genuine peer from being redialed. The dial
/// table is pruned to the addresses still known first.
fn due_addresses(mesh: &Mesh) -> Vec<String> {
    let peers_max = mesh.parts.config.mesh.peers_max;
    // Every slot linked: nothing can be dialed, so nothing is looked at (this runs every
    // supervisor tick, and a full mesh is the steady state). Pruning the dial table can
    // wait too: it only grows by a dial, and a dial is only added after this returned
    // addresses, so after a pruning.
    if mesh.state.lock().links.len() >= peers_max {
        return Vec::new();
    }
    let now_ms = mesh.now_ms();
    let own = mesh.parts.config.advertised_addr();
    let mut configured = mesh.parts.config.mesh.peers.clone();
    configured.extend(mesh.discovered.addresses());
    let configured = &configured;
    let mut state = mesh.state.lock();
    state.prune_dials(configured);
    let state = &*state;
    let linked: std::collections::HashSet<&str> = state
        .links
        .keys()
        .filter_map(|id| state.members.get(id))
        .map(|m| m.address.as_str())
        .collect();
    let is_linked = |d: &super::state::DialState| {
        d.relay_id
            .as_ref()
            .is_some_and(|id| state.links.contains_key(id))
    };
    // Tier, then order within it: configured (0), proven (1, newest seen first),
    // unproven (2, fewest attempts first).
    let mut candidates: Vec<(u8, u64, &str)> =
        configured.iter().map(|a| (0u8, 0u64, a.as_str())).collect();
    for (id, m) in &state.members {
        if state.links.contains_key(id) || m.address.is_empty() {
            continue;
        }
        let proven = m.proven
            || state
                .dials
                .get(&m.address)
                .is_some_and(|d| d.relay_id.is_some());
        if proven {
            candidates.push((1, u64::MAX - m.last_seen_ms, m.address.as_str()));
        } else {
            let attempts = state.dials.get(&m.address).map_or(0, |d| d.attempts);
            candidates.push((2, u64::from(attempts), m.address.as_str()));
        }
    }
    candidates.sort_unstable();
    let mut queued = std::collections::HashSet::new();
    candidates.retain(|(_, _, a)| queued.insert(*a));
    // A dial stays in flight while the link it opened is served: count only those whose
    // link is not up yet, or each outbound link would count twice against `peers_max`.
    let mut in_flight = 0;
    let mut unproven_in_flight = 0;
    for d in state
        .dials
        .values()
        .filter(|d| d.in_flight && !is_linked(d))
    {
        in_flight += 1;
        if d.relay_id.is_none() {
            unproven_in_flight += 1;
        }
    }
    let mut budget = peers_max.saturating_sub(state.links.len() + in_flight);
    let mut unproven_budget = (peers_max / super::UNPROVEN_DIALS_DIVISOR)
        .max(1)
        .saturating_sub(unproven_in_flight);
    let mut due = Vec::new();
    for (tier, _, address) in candidates {
        if budget == 0 {
            break;
        }
        if address.is_empty()
            || address == own
            || state.self_addresses.contains(address)
            || linked.contains(address)
        {
            continue;
        }
        let dial = state.dials.get(address);
        if dial.is_some_and(|d| is_linked(d) || d.in_flight || d.next_attempt_ms > now_ms) {
            continue;
        }
        if tier == 2 {
            if unproven_budget == 0 {
                continue;
            }
            unproven_budget -= 1;
        }
        budget -= 1;
        due.push(address.to_string());
    }
    due
}

fn dial_due<N: Net>(mesh: &Arc<Mesh>, net: &N) {
    for address in due_addresses(mesh) {
        mesh.state
            .lock()
            .dials
            .entry(address.clone())
            .or_default()
            .in_flight = true;
        let (mesh, net) = (mesh.clone(), net.clone());
        tokio::spawn(async move {
            let outcome = dial(&mesh, &net, &address).await;
            finish_dial(&mesh, &address, outcome);
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

fn finish_dial(mesh: &Mesh, address: &str, outcome: DialOutcome) {
    let now_ms = mesh.now_ms();
    let cap = mesh
        .parts
        .config
        .sync_interval()
        .clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut state = mesh.state.lock();
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
    dial.next_attempt_ms = now_ms + half + mesh.parts.rng.range_u64(0, half.max(1));
    if let DialOutcome::Failed(reason) = outcome {
        tracing::debug!(%address, attempts = dial.attempts, %reason, "peer dial failed");
        let relay = dial.relay_id.clone();
        drop(state);
        // Only addresses the operator configured: one that only `peers_dns` names may be a
        // pod already gone that DNS still lists, and is dropped when the answer drops it.
        let configured = mesh.parts.config.mesh.peers.iter().any(|p| p == address);
        if configured && !mesh.state.left_at(address, relay.as_deref()) {
            count_configured_dial_failure(mesh, address, &reason);
        }
    }
}

/// A configured peer that cannot be reached is a sync error each time a dial fails
/// (paced by the dial backoff, at most about one per sync interval), unless it said it
/// was leaving: a planned restart is not an outage.
fn count_configured_dial_failure(mesh: &Mesh, address: &str, reason: &str) {
    mesh.parts.metrics.sync_errors_other.increment(1);
    let message = format!("configured peer {address} unreachable: {reason}");
    mesh.state
        .record_error(mesh.unix_secs(), address, None, message);
}

/// Consecutive failed dials after which a configured peer counts as unreachable
/// (`/health` degraded, `sdk_relay_mesh_configured_peers_unreachable`): about 1.4 s of
/// backoff, so one refused connection during a peer's restart is not an outage.
pub const CONFIGURED_PEER_FAILED_DIALS: u32 = 3;

/// Configured peer addresses with no live link, `CONFIGURED_PEER_FAILED_DIALS` failed
/// dials in a row, and no `leaving` from the relay last found there.
fn unreachable_configured(mesh: &Mesh) -> Vec<String> {
    let failing: Vec<(String, Option<String>)> = {
        let state = mesh.state.lock();
        mesh.parts
            .config
            .mesh
            .peers
            .iter()
            .filter_map(|address| {
                let dial = state.dials.get(address)?;
                let linked = dial
                    .relay_id
                    .as_ref()
                    .is_some_and(|id| state.links.contains_key(id));
                (!linked && dial.attempts >= CONFIGURED_PEER_FAILED_DIALS)
                    .then(|| (address.clone(), dial.relay_id.clone()))
            })
            .collect()
    };
    failing
        .into_iter()
        .filter(|(address, relay)| !mesh.state.left_at(address, relay.as_deref()))
        .map(|(address, _)| address)
        .collect()
}

/// How to dial peers: over TLS (`wss://`) when `[mesh] tls` is set. Built at each dial,
/// so a replaced CA or client certificate file applies from the next dial on.
fn peer_tls(
    config: &crate::config::MeshConfig,
) -> Result<Option<crate::conn::tls::ClientTls>, crate::conn::tls::TlsError> {
    if !config.tls {
        return Ok(None);
    }
    let client_cert = config
        .client_cert_file
        .as_deref()
        .zip(config.client_key_file.as_deref())
        .map(|(cert_file, key_file)| crate::conn::tls::ClientCert {
            cert_file,
            key_file,
        });
    crate::conn::tls::ClientTls::new(config.ca_file.as_deref(), client_cert).map(Some)
}

/// Connects (over TLS when configured), upgrades, handshakes as a relay, then serves the
/// link until it closes.
async fn dial<N: Net>(mesh: &Mesh, net: &N, address: &str) -> DialOutcome {
    let limit = mesh
        .parts
        .config
        .limits
        .connection_timeout()
        .min(DIAL_TIMEOUT_MAX);
    let tls = match peer_tls(&mesh.parts.config.mesh) {
        Ok(tls) => tls,
        Err(e) => return DialOutcome::Failed(format!("TLS: {e}")),
    };
    let connecting = crate::conn::tls::dial(net, address, tls.as_ref());
    let stream = match tokio::time::timeout(limit, connecting).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return DialOutcome::Failed(format!("connect: {e}")),
        Err(_) => return DialOutcome::Failed("connect timed out".into()),
    };
    let request = crate::conn::client::upgrade_request(address);
    let upgraded = tokio::time::timeout(
        limit,
        fastwebsockets::handshake::client(&crate::conn::client::SpawnExecutor, request, stream),
    )
    .await;
    let ws = match upgraded {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return DialOutcome::Failed(format!("upgrade: {e}")),
        Err(_) => return DialOutcome::Failed("upgrade timed out".into()),
    };
    let (read_half, write_half) = tokio::io::split(ws.into_inner());
    let message_max = mesh.parts.config.limits.ws_message_bytes_max + PEER_ENVELOPE_SLACK_BYTES;
    let mut reader = FrameReader::new(read_half, Role::Client, message_max);
    let mut writer = FrameWriter::new(write_half, Role::Client, mesh.parts.rng.next_u64() as u32);
    let dialer_nonce = mesh.parts.rng.bytes32();
    let handshake = peer::encode_peer_handshake(
        mesh.relay_id(),
        mesh.parts.config.advertised_addr(),
        &mesh.parts.origin.identity().public().to_hex(),
        &hex::encode(dialer_nonce),
    );
    reader.set_message_bytes_max(super::handshake::HANDSHAKE_BYTES_MAX);
    let proven = match prove_ourselves(
        mesh,
        &mut reader,
        &mut writer,
        &handshake,
        &dialer_nonce,
        limit,
    )
    .await
    {
        Ok(proven) => proven,
        Err(outcome) => return outcome,
    };
    reader.set_message_bytes_max(message_max);
    let peer_id = proven.relay_id;
    mesh.state
        .lock()
        .dials
        .entry(address.to_string())
        .or_default()
        .relay_id = Some(peer_id.clone());
    // Gossip the peer's own advertised address (signed in the handshake), not the one
    // dialed: the route this relay took (a proxy, a local name) may mean nothing to the
    // others.
    let advertised = proven.address;
    serve_outbound(mesh, reader, writer, peer_id, advertised).await;
    DialOutcome::Served
}

/// Steps 1 to 4 of the handshake on the dialer's side: send `handshake`, check the
/// acceptor's challenge, send the proof, read `accepted`.
async fn prove_ourselves<R, W>(
    mesh: &Mesh,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    handshake: &[u8],
    dialer_nonce: &[u8; 32],
    limit: Duration,
) -> Result<super::handshake::Proven, DialOutcome>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    if writer.push(FrameKind::Text, handshake).await.is_err() || writer.flush().await.is_err() {
        return Err(DialOutcome::Failed("handshake write failed".into()));
    }
    let text = read_text(reader, limit).await?;
    let challenge = match super::handshake_reply(&text) {
        Reply::Challenge(challenge) => challenge,
        Reply::Response(r) => return Err(refused_outcome(mesh, r)),
        Reply::Bad(e) => return Err(DialOutcome::Failed(format!("bad handshake reply: {e}"))),
    };
    if challenge.relay_id == mesh.relay_id() {
        return Err(DialOutcome::ItsMe);
    }
    let answer = match super::handshake::answer_challenge(mesh, dialer_nonce, &challenge) {
        Ok(answer) => answer,
        Err(refusal) => {
            mesh.count_refusal(&challenge.relay_id, refusal);
            return Err(DialOutcome::Failed(format!(
                "acceptor refused: {}",
                refusal.as_str()
            )));
        }
    };
    if writer.push(FrameKind::Text, &answer.proof).await.is_err() || writer.flush().await.is_err() {
        return Err(DialOutcome::Failed("handshake proof write failed".into()));
    }
    let text = read_text(reader, limit).await?;
    match super::handshake_reply(&text) {
        Reply::Response(r) if r.status == "accepted" && r.relay_id == answer.proven.relay_id => {
            Ok(answer.proven)
        }
        Reply::Response(r) => Err(refused_outcome(mesh, r)),
        _ => Err(DialOutcome::Failed("no handshake response".into())),
    }
}

async fn read_text<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    limit: Duration,
) -> Result<bytes::Bytes, DialOutcome> {
    match tokio::time::timeout(limit, reader.next()).await {
        Ok(Ok(Incoming::Text(text))) => Ok(text),
        Ok(other) => Err(DialOutcome::Failed(format!(
            "no handshake reply: {other:?}"
        ))),
        Err(_) => Err(DialOutcome::Failed("handshake timed out".into())),
    }
}

/// A `handshake_response` that is not an acceptance of the relay this one checked.
fn refused_outcome(mesh: &Mesh, response: PeerHandshakeResponse) -> DialOutcome {
    if response.relay_id == mesh.relay_id() {
        return DialOutcome::ItsMe;
    }
    if !peer::relay_id_fits(&response.relay_id) {
        mesh.parts.metrics.mesh_rejected.increment(1);
    }
    DialOutcome::Failed(format!(
        "refused: {}",
        response
            .reason
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect::<String>()
    ))
}

async fn serve_outbound<R, W>(
    mesh: &Mesh,
    mut reader: FrameReader<R>,
    writer: FrameWriter<W>,
    peer_id: String,
    address: String,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let bound = queue::Bound {
        frames: super::PEER_QUEUE_MAX,
        bytes: super::PEER_QUEUE_BYTES_MAX,
    };
    let (outlet, rx) = Outlet::new(bound);
    let control = outlet.control().clone();
    let writer_task = tokio::spawn(crate::conn::write_loop(writer, rx));
    let parts = LinkParts {
        peer_id,
        address,
        dialer: mesh.relay_id().to_string(),
        inbound: false,
        outlet,
    };
    link::serve(mesh, &mut reader, parts).await;
    if control.close_reason().is_none() {
        control.close(CloseReason::NORMAL);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), writer_task).await;
}

fn update_gauges(mesh: &Mesh) {
    #[cfg(feature = "mutations")]
    if let Some(crate::mutation::Mutation::PhantomMembers { count }) = mesh.parts.config.mutation {
        for i in 1..=count {
            mesh.state
                .heard(&format!("phantom-{i}"), None, mesh.unix_ms());
        }
    }
    let unreachable = unreachable_configured(mesh);
    mesh.parts
        .metrics
        .mesh_configured_peers_unreachable
        .set(unreachable.len() as f64);
    mesh.parts.status.set_unreachable_peers(unreachable);
    let now_ms = mesh.unix_ms();
    let interval_ms = mesh.parts.config.sync_interval().as_millis() as u64;
    let state = mesh.state.lock();
    let mut counts = [0usize; 4];
    for member in state.members.values() {
        let index = match member.health(now_ms, interval_ms) {
            PeerHealth::Healthy => 0,
            PeerHealth::Degraded => 1,
            PeerHealth::Unreachable => 2,
            PeerHealth::Left => 3,
        };
        counts[index] += 1;
    }
    for (gauge, count) in mesh.parts.metrics.mesh_peers.iter().zip(counts) {
        gauge.set(count as f64);
    }
    mesh.parts
        .metrics
        .mesh_known_relays
        .set((state.members.len() + 1) as f64);
    mesh.parts
        .metrics
        .mesh_connections
        .set(state.links.len() as f64);
    mesh.parts
        .metrics
        .mesh_dial_addresses
        .set(state.dials.len() as f64);
}

#[cfg(test)]
mod tests {
    /// A mesh saving to a data directory of its own, named `name`.
    fn saving_mesh(name: &str) -> (std::path::PathBuf, std::sync::Arc<super::Mesh>) {
        let dir = std::env::temp_dir().join(format!("sdk_relay_{name}_{}", std::process::id()));
        let config = crate::config::Config {
            relay_id: "saver".into(),
            data_dir: dir.clone(),
            ..Default::default()
        };
        (dir, crate::mesh::testing::mesh_with(config, None))
    }

    /// The key bindings are written at the first save, and again only once a binding
    /// was made: the witness is the file, removed in between.
    #[tokio::test]
    async fn bindings_are_saved_again_only_when_they_changed() {
        let (dir, mesh) = saving_mesh("bindings");
        let file = dir.join("mesh-keys.json");
        super::save_seen(&mesh);
        assert!(file.exists(), "the first save writes them");
        std::fs::remove_file(&file).unwrap();
        super::save_seen(&mesh);
        assert!(!file.exists(), "nothing changed: not written again");
        let other = crate::identity::Identity::from_seed(&[8; 32]);
        mesh.trust.bind("other", other.public()).unwrap();
        super::save_seen(&mesh);
        let saved = super::super::persist::load_bindings(&dir).unwrap();
        assert!(saved.iter().any(|(id, _)| id == "other"), "{saved:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A relay stopping saves its ids twice at once (the supervisor when the shutdown
    /// starts, the drain when its window ends): every save must succeed and leave a
    /// whole file, not two writers sharing one temporary file.
    #[tokio::test]
    async fn saves_at_the_same_time_all_succeed() {
        let (dir, mesh) = saving_mesh("saves");
        let failures = std::thread::scope(|scope| {
            let savers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..100)
                            .filter(|_| super::try_save_seen(&mesh).is_err())
                            .count()
                    })
                })
                .collect();
            savers.into_iter().map(|s| s.join().unwrap()).sum::<usize>()
        });
        assert_eq!(failures, 0, "saves that failed");
        assert!(super::super::persist::load(&dir).is_ok(), "a whole file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
