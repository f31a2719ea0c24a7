//! One live link to a peer relay, whichever side dialed: register it, read and handle
//! the peer's messages, ping it, and cut it off when it goes silent.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;

use super::Mesh;
use super::state::{Arrival, LinkRefused, Pending};
use super::sync;
use crate::conn::codec::{FrameReader, Incoming, ReadError};
use crate::conn::{CloseReason, Outbound, Outlet};
use crate::protocol::peer::{self, PeerMessage, SyncType};

/// A handshaken link, ready to serve.
pub struct LinkParts {
    pub peer_id: String,
    pub address: String,
    /// The relay id of the side that dialed.
    pub dialer: String,
    pub inbound: bool,
    pub outlet: Outlet,
}

/// Registers the link, then handles the peer's frames until the link closes.
pub(super) async fn serve<R: AsyncRead + Unpin>(
    mesh: &Mesh,
    reader: &mut FrameReader<R>,
    parts: LinkParts,
) {
    let LinkParts {
        peer_id,
        address,
        dialer,
        inbound,
        outlet,
    } = parts;
    #[cfg(feature = "mutations")]
    if let Some(crate::mutation::Mutation::RefuseLink { peer }) = mesh.parts.config.mutation
        && peer_id == format!("relay-{peer}")
    {
        outlet.close(CloseReason {
            code: 1000,
            reason: "refused (mutation)",
        });
        return;
    }
    let registered = mesh.state.register_link(
        mesh.relay_id(),
        &peer_id,
        (outlet.clone(), dialer),
        mesh.parts.config.mesh.peers_max,
    );
    let link_id = match registered {
        Ok(id) => id,
        Err(refused) => {
            let reason = match refused {
                LinkRefused::Duplicate => "duplicate link",
                LinkRefused::Full => "peers_max reached",
            };
            tracing::debug!(peer = %peer_id, reason, "peer link refused");
            outlet.close(CloseReason { code: 1000, reason });
            return;
        }
    };
    tracing::info!(peer = %peer_id, %address, inbound, "peer link up");
    mesh.state.heard(&peer_id, Some(&address), mesh.unix_ms());
    sync::send_all_types_to(mesh, &peer_id);
    read_loop(mesh, reader, &peer_id, &outlet).await;
    mesh.state.unregister_link(&peer_id, link_id);
    mesh.state.forget_pending(&peer_id);
    let reason = outlet.control().close_reason();
    if mesh.state.has_left(&peer_id) {
        tracing::info!(peer = %peer_id, "peer left: a planned departure, not an error");
    } else {
        tracing::info!(peer = %peer_id, reason = ?reason.map(|r| r.reason), "peer link down");
        count_if_unanswering(mesh, &peer_id, reason);
    }
}

/// A link that ended because the peer stopped answering (silent past the connection
/// timeout, or gone without a close frame) is a sync error: `/sync/status` lists it and
/// `sync_metrics.error_count` counts it, so the error-rate alert sees a peer outage.
fn count_if_unanswering(mesh: &Mesh, peer_id: &str, reason: Option<CloseReason>) {
    let message = match reason {
        Some(CloseReason::IDLE_TIMEOUT) => format!(
            "link timed out: nothing heard for {} s",
            mesh.parts.config.limits.connection_timeout_secs
        ),
        Some(reason) if reason.is_abnormal() => {
            format!("link lost without a close frame ({})", reason.reason)
        }
        _ => return,
    };
    mesh.parts.metrics.sync_errors_other.increment(1);
    mesh.state
        .record_error(mesh.unix_secs(), peer_id, None, message);
}

async fn read_loop<R: AsyncRead + Unpin>(
    mesh: &Mesh,
    reader: &mut FrameReader<R>,
    peer_id: &str,
    outlet: &Outlet,
) {
    let control = outlet.control();
    let limits = &mesh.parts.config.limits;
    let idle_ms = limits.connection_timeout().as_millis() as u64;
    let mut ticker = tokio::time::interval(limits.heartbeat_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard_ms = mesh.now_ms();
    let mut marked_heard_ms = 0;
    let window_ms = mesh.parts.config.sync_interval().as_millis() as u64;
    let mut rates = Rates {
        syncs: Rate::of_syncs(window_ms),
        fetches: Rate::of_syncs(window_ms),
        notifications: Rate::of_notifications(limits.mesh_notifications_per_second_max),
    };
    loop {
        let frame = tokio::select! {
            biased;
            () = control.closed() => return,
            _ = ticker.tick() => {
                if mesh.now_ms().saturating_sub(last_heard_ms) > idle_ms {
                    control.close(CloseReason::IDLE_TIMEOUT);
                    return;
                }
                outlet.offer(Outbound::Ping);
                continue;
            }
            frame = reader.next() => frame,
        };
        last_heard_ms = mesh.now_ms();
        // A busy link brings many frames a second (notifications flooded by every peer):
        // the member is marked heard at most every `HEARD_RESOLUTION_MS`. Its last-seen
        // time is shown in seconds and judged in sync intervals (whole seconds), so a
        // mark a tenth of a second old says the same; the link's own idle timeout above
        // still counts every frame.
        let unix_ms = mesh.unix_ms();
        if unix_ms.abs_diff(marked_heard_ms) >= HEARD_RESOLUTION_MS {
            mesh.state.heard(peer_id, None, unix_ms);
            marked_heard_ms = unix_ms;
        }
        if let Some(reason) = on_frame(mesh, peer_id, outlet, &mut rates, frame) {
            control.close(reason);
            return;
        }
    }
}

/// How often a link marks its peer heard at most (see `read_loop`).
const HEARD_RESOLUTION_MS: u64 = 100;

/// A peer whose log summary broke its bounds: cut as a policy violation.
const INVALID_SUMMARY: CloseReason = CloseReason {
    code: 1008,
    reason: "invalid log summary",
};
/// A peer asking more than twice `SYNC_REQUESTS_PER_INTERVAL_MAX` in one interval.
const TOO_FAST: CloseReason = CloseReason {
    code: 1008,
    reason: "sync requests or fetches too fast",
};
/// A peer bringing more than twice `mesh_notifications_per_second_max` in one second.
const NOTIFICATIONS_TOO_FAST: CloseReason = CloseReason {
    code: 1008,
    reason: "notifications too fast",
};

/// What one peer sent of one kind in the current window, against its bound.
struct Rate {
    /// Admitted per window; up to as many again are dropped, then the link is cut.
    max: usize,
    window_ms: u64,
    /// How the window reads in a breach's message ("sync interval", "second").
    window_name: &'static str,
    /// What becomes of the excess, in a breach's message.
    excess: &'static str,
    cut: CloseReason,
    window_start_ms: u64,
    count: usize,
}

/// How a message fits the peer's rate.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    Answer,
    /// Over `max` in this window: dropped.
    Excess {
        first: bool,
    },
    /// Over twice that: the peer is cut.
    Cut,
}

impl Rate {
    /// Sync requests (or fetches): `SYNC_REQUESTS_PER_INTERVAL_MAX` per sync interval.
    fn of_syncs(interval_ms: u64) -> Rate {
        Rate::new(
            super::SYNC_REQUESTS_PER_INTERVAL_MAX,
            interval_ms,
            ("sync interval", "left unanswered"),
            TOO_FAST,
        )
    }

    /// New notifications: `max` a second.
    fn of_notifications(max: u32) -> Rate {
        Rate::new(
            max as usize,
            1000,
            ("second", "dropped unchecked"),
            NOTIFICATIONS_TOO_FAST,
        )
    }

    /// `wording`: how the window reads and what becomes of the excess, in a breach's
    /// message.
    fn new(
        max: usize,
        window_ms: u64,
        (window_name, excess): (&'static str, &'static str),
        cut: CloseReason,
    ) -> Rate {
        Rate {
            max,
            window_ms: window_ms.max(1),
            window_name,
            excess,
            cut,
            window_start_ms: 0,
            count: 0,
        }
    }

    fn admit(&mut self, now_ms: u64) -> Admit {
        if self.count == 0 || now_ms.saturating_sub(self.window_start_ms) >= self.window_ms {
            self.window_start_ms = now_ms;
            self.count = 0;
        }
        self.count += 1;
        if self.count <= self.max {
            Admit::Answer
        } else if self.count <= self.max.saturating_mul(2) {
            Admit::Excess {
                first: self.count == self.max + 1,
            }
        } else {
            Admit::Cut
        }
    }
}

struct Rates {
    /// Sync requests, and sync responses that answer no pending request.
    syncs: Rate,
    fetches: Rate,
    /// Notifications not seen before (what costs a signature check).
    notifications: Rate,
}

fn on_frame(
    mesh: &Mesh,
    peer_id: &str,
    outlet: &Outlet,
    rates: &mut Rates,
    frame: Result<Incoming, ReadError>,
) -> Option<CloseReason> {
    if let Some(reason) = crate::conn::ending(&frame) {
        return Some(reason);
    }
    match frame {
        Ok(Incoming::Text(text)) => on_text(mesh, peer_id, outlet, rates, &text),
        Ok(Incoming::Ping(payload)) => {
            outlet.offer(Outbound::Pong(payload));
            None
        }
        _ => None,
    }
}

/// Counts and records a peer's breach of the protocol's bounds.
fn breach(mesh: &Mesh, peer_id: &str, sync_type: Option<SyncType>, message: String) {
    match sync_type {
        Some(sync_type) => mesh.parts.metrics.sync_errors.get(sync_type).increment(1),
        None => mesh.parts.metrics.sync_errors_other.increment(1),
    }
    tracing::info!(peer = %peer_id, %message, "peer breached the protocol's bounds");
    mesh.state
        .record_error(mesh.unix_secs(), peer_id, sync_type, message);
}

/// Counts and records a message dropped for naming something over its length bound (no
/// log line: a peer sending many would only fill the log).
fn rejected(mesh: &Mesh, peer_id: &str, sync_type: Option<SyncType>, why: &str) {
    mesh.parts.metrics.mesh_rejected.increment(1);
    match sync_type {
        Some(sync_type) => mesh.parts.metrics.sync_errors.get(sync_type).increment(1),
        None => mesh.parts.metrics.sync_errors_other.increment(1),
    }
    let message = format!("dropped: {why}");
    mesh.state
        .record_error(mesh.unix_secs(), peer_id, sync_type, message);
}

/// Applies the peer's rate to one message; `Some` when the message is to be dropped
/// (`Some(None)`) or the link cut (`Some(Some(reason))`).
fn over_rate(
    mesh: &Mesh,
    peer_id: &str,
    rate: &mut Rate,
    sync_type: Option<SyncType>,
    what: &str,
) -> Option<Option<CloseReason>> {
    let (max, per) = (rate.max, rate.window_name);
    match rate.admit(mesh.now_ms()) {
        Admit::Answer => None,
        Admit::Excess { first } => {
            if first {
                let message = format!("{what} over {max} per {per}: {}", rate.excess);
                breach(mesh, peer_id, sync_type, message);
            } else if let Some(sync_type) = sync_type {
                mesh.parts.metrics.sync_errors.get(sync_type).increment(1);
            } else {
                mesh.parts.metrics.sync_errors_other.increment(1);
            }
            Some(None)
        }
        Admit::Cut => {
            let message = format!("{what} over {} per {per}: link cut", 2 * max);
            breach(mesh, peer_id, sync_type, message);
            Some(Some(rate.cut))
        }
    }
}

/// Checks a log summary before anything reads it; a bad one cuts the link.
fn summary_refused(
    mesh: &Mesh,
    peer_id: &str,
    sync_type: SyncType,
    payload: &peer::PeerPayload<'_>,
) -> Option<CloseReason> {
    let log = payload.log.as_deref()?;
    let why = super::seen::validate(log).err()?;
    breach(
        mesh,
        peer_id,
        Some(sync_type),
        format!("log summary rejected: {why}"),
    );
    Some(INVALID_SUMMARY)
}

fn on_text(
    mesh: &Mesh,
    peer_id: &str,
    outlet: &Outlet,
    rates: &mut Rates,
    text: &Bytes,
) -> Option<CloseReason> {
    let message = match peer::parse(text) {
        Ok(message) => message,
        Err(error) => {
            // A peer speaking nonsense is counted, never trusted, never fatal to others.
            mesh.parts.metrics.sync_errors_other.increment(1);
            mesh.state
                .record_error(mesh.unix_secs(), peer_id, None, error.to_string());
            return None;
        }
    };
    match message {
        PeerMessage::Sync {
            sync_type,
            relay_id: _,
            message_id,
            payload,
        } => {
            mesh.parts.metrics.sync_received.get(sync_type).increment(1);
            if let Some(verdict) = over_rate(
                mesh,
                peer_id,
                &mut rates.syncs,
                Some(sync_type),
                "sync requests",
            ) {
                return verdict;
            }
            if message_id.len() > peer::MESSAGE_ID_BYTES_MAX {
                // Its answer would echo the id: dropped unanswered (after the rate, so a
                // flood of them is cut like any other).
                rejected(mesh, peer_id, Some(sync_type), "sync request id too long");
                return None;
            }
            if let Some(reason) = summary_refused(mesh, peer_id, sync_type, &payload) {
                return Some(reason);
            }
            sync::observe(mesh, peer_id, outlet, &payload);
            let frame = sync::answer(mesh, sync_type, &message_id, &payload);
            outlet.offer(Outbound::Text(frame));
        }
        PeerMessage::SyncResponse {
            sync_type,
            relay_id: _,
            request_id,
            payload,
        } => {
            // A response that answers nothing this relay asked counts like a request.
            if !on_sync_response(mesh, peer_id, sync_type, &request_id)
                && let Some(verdict) = over_rate(
                    mesh,
                    peer_id,
                    &mut rates.syncs,
                    Some(sync_type),
                    "unsolicited sync responses",
                )
            {
                return verdict;
            }
            if let Some(reason) = summary_refused(mesh, peer_id, sync_type, &payload) {
                return Some(reason);
            }
            sync::observe(mesh, peer_id, outlet, &payload);
        }
        PeerMessage::Notification(notification) => {
            // Admitted before, so verified before: a repeat (each relay hears most
            // notifications from several peers) is dropped without a signature check.
            let arrival = mesh.state.arrival(&notification.message_id);
            if arrival == Arrival::Seen {
                mesh.parts.metrics.dedup_hits.increment(1);
                return None;
            }
            // Bounded before the signature check it would cost; a genuine one dropped
            // here is fetched by anti-entropy (it is not marked seen). What this relay
            // fetched is not counted: a catch-up answers up to `FETCH_IDS_MAX` at once,
            // and the ids asked for are bounded by this relay's own fetches.
            if arrival == Arrival::Unsolicited
                && mesh.bounds_notifications()
                && let Some(verdict) = over_rate(
                    mesh,
                    peer_id,
                    &mut rates.notifications,
                    None,
                    "new notifications",
                )
            {
                mesh.parts.metrics.mesh_rejected.increment(1);
                return verdict;
            }
            if let Err(why) = peer::notification_fits(&notification) {
                rejected(mesh, peer_id, None, why);
                return None;
            }
            // Verified before admission: what fails is neither delivered nor forwarded,
            // and never marked seen, so a forged id cannot suppress the genuine one.
            if let Err(why) = mesh.trust.verify(&notification)
                && !mesh.skips_verification()
            {
                mesh.count_unverified(peer_id, &notification, why);
                return None;
            }
            mesh.route(Arc::new(notification), Some(peer_id));
        }
        PeerMessage::Leaving => {
            tracing::info!(peer = %peer_id, "peer is leaving (lame duck or shutdown)");
            mesh.state.mark_left(peer_id);
        }
        PeerMessage::Fetch(mut ids) => {
            if let Some(verdict) = over_rate(mesh, peer_id, &mut rates.fetches, None, "fetches") {
                return verdict;
            }
            let asked = ids.len();
            ids.retain(|id| id.len() <= peer::MESSAGE_ID_BYTES_MAX);
            if ids.len() < asked {
                mesh.parts
                    .metrics
                    .mesh_rejected
                    .increment((asked - ids.len()) as u64);
                let message = format!("fetch: {} ids too long, dropped", asked - ids.len());
                breach(mesh, peer_id, None, message);
            }
            answer_fetch(mesh, outlet, &ids);
        }
    }
    None
}

/// Answers a fetch: each distinct id once, at most `FETCH_IDS_MAX` of them, in the order
/// asked, until the next would pass `FETCH_ANSWER_BYTES_MAX` (the first is always sent).
fn answer_fetch(mesh: &Mesh, outlet: &Outlet, ids: &[String]) {
    let mut distinct = HashSet::new();
    let ids: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| distinct.insert(*id))
        .take(super::dedup::FETCH_IDS_MAX)
        .collect();
    let mut bytes = 0usize;
    for notification in mesh.state.logged(&ids) {
        let frame = notification.encode();
        if bytes > 0 && bytes.saturating_add(frame.len()) > super::FETCH_ANSWER_BYTES_MAX {
            break;
        }
        bytes += frame.len();
        if outlet.offer(Outbound::Text(frame)) != crate::conn::Offered::Queued {
            break;
        }
    }
}

/// Matches a response to a pending request; false when it answers none.
fn on_sync_response(mesh: &Mesh, peer_id: &str, sync_type: SyncType, request_id: &str) -> bool {
    let now_ms = mesh.now_ms();
    match mesh
        .state
        .complete_pending(request_id, now_ms, mesh.unix_secs())
    {
        Some((Pending { sync_type, .. }, rtt_ms)) => {
            mesh.parts
                .metrics
                .sync_responses
                .get(sync_type)
                .increment(1);
            mesh.parts
                .metrics
                .sync_rtt(sync_type)
                .record(rtt_ms as f64 / 1000.0);
            true
        }
        None => {
            tracing::debug!(peer = %peer_id, sync_type = sync_type.as_str(), "late or unknown sync response");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::SYNC_REQUESTS_PER_INTERVAL_MAX as MAX;

    #[test]
    fn a_rate_answers_up_to_the_bound_per_window_then_drops_then_cuts() {
        let mut rate = Rate::of_syncs(1000);
        for _ in 0..MAX {
            assert_eq!(rate.admit(5), Admit::Answer);
        }
        assert_eq!(rate.admit(5), Admit::Excess { first: true });
        for _ in 1..MAX {
            assert_eq!(rate.admit(5), Admit::Excess { first: false });
        }
        assert_eq!(rate.admit(5), Admit::Cut);
        // A new interval starts afresh.
        assert_eq!(rate.admit(1005), Admit::Answer);
        for _ in 1..MAX {
            assert_eq!(rate.admit(1500), Admit::Answer);
        }
        assert_eq!(rate.admit(1500), Admit::Excess { first: true });
    }

    /// Notifications have their own bound, per second.
    #[test]
    fn notifications_are_bounded_per_second() {
        let mut rate = Rate::of_notifications(3);
        let admitted: Vec<Admit> = (0..7).map(|_| rate.admit(10)).collect();
        assert_eq!(
            admitted,
            [
                Admit::Answer,
                Admit::Answer,
                Admit::Answer,
                Admit::Excess { first: true },
                Admit::Excess { first: false },
                Admit::Excess { first: false },
                Admit::Cut,
            ]
        );
        assert_eq!(rate.admit(1010), Admit::Answer, "a new second");
        assert_eq!(rate.cut, NOTIFICATIONS_TOO_FAST);
    }
}
