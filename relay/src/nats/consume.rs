//! The consumer: this relay's durable consumer on the stream delivers every notification
//! (its own included) to this relay's subscribers, then acknowledges it. A redelivery (an
//! acknowledgement lost to a server failure) finds its id among those already delivered
//! and is only acknowledged again; after a restart the consumer resumes after the last
//! acknowledged notification.
//!
//! Every relay reads the same stream in the same order, so the stream sequence of the
//! last notification this relay routed is a position valid on every relay: resume tokens
//! name it (`Route::routed`), and `resume` replays from the stream what comes after it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures_util::StreamExt;

use super::NatsBackbone;
use super::connect;
use crate::hub::TokenContext;
use crate::protocol::peer::{self, PeerMessage};
use crate::protocol::{Notification, OutboundKind};
use crate::resume::{Position, StreamKey, stream_key};

/// Notifications handed out and not yet acknowledged, per relay.
const ACK_PENDING_MAX: i64 = 4096;
/// Ids remembered against redelivery, and their bytes.
const SEEN_MAX: usize = 100_000;
const SEEN_BYTES_MAX: usize = 8 << 20;
/// Longest single wait for the next message (quiet streams are normal).
const IDLE_MAX: Duration = Duration::from_secs(30);
/// Time an unacknowledged notification waits before the server redelivers it.
const ACK_WAIT: Duration = Duration::from_secs(10);
/// Acknowledgements awaiting the server's confirmation.
const ACKS_IN_FLIGHT_MAX: usize = 64;
/// Deliveries one acknowledgement covers at most (ack policy `all`)...
const ACK_EVERY: usize = 128;
/// ...and the longest a delivery waits for its acknowledgement when the stream pauses.
const ACK_FLUSH: Duration = Duration::from_millis(20);
/// Tries to get one acknowledgement confirmed.
const ACK_ATTEMPTS: usize = 3;
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// How often the consumer looks whether the members' keys were read, before it starts.
const KEYS_POLL: Duration = Duration::from_millis(50);

/// What this relay routed from the stream (guarded by the backbone's route lock).
#[derive(Default)]
pub struct Route {
    /// Ids already delivered, with the stream sequence each was first stored at.
    pub seen: Seen,
    /// The stream sequence of the last notification routed (delivered, or dropped as a
    /// repeat or unverified): every earlier one is accounted for.
    pub routed: u64,
    /// The stream's identity in positions (`stream_identity`).
    pub stream: Option<StreamKey>,
}

/// The stream's name and creation time, hashed: a token from another stream, or from a
/// stream deleted and created again (its sequences restart), names another key.
pub fn stream_identity(info: &jetstream::stream::Info) -> StreamKey {
    stream_key(&format!(
        "nats:{}:{}",
        info.config.name,
        info.created.unix_timestamp_nanos()
    ))
}

/// The position of a wallet accounted for every stream sequence up to `seq`.
pub fn position_to(stream: StreamKey, seq: u64) -> Position {
    let mut position = Position::default();
    position.insert_range(stream, 1, seq);
    position
}

pub async fn run(backbone: Arc<NatsBackbone>, js: jetstream::Context) {
    // Set when the stream skipped ahead of what this relay routed (see `consume`).
    let mut restart_from = None;
    loop {
        if let Err(error) = consume(&backbone, &js, &mut restart_from).await {
            backbone.record_error(format!("consume: {error}"));
            tracing::warn!(%error, "backbone consumer stopped; starting it again");
        }
        if restart_from.is_none() {
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }
}

/// Consumes until an error, or until a gap: a notification past the next one this
/// relay expects while the stream still holds the ones between (the server handed them
/// to a connection that died, and would redeliver them only after `ACK_WAIT`, after
/// later ones, and an acknowledgement of a later one would cover them). Then the
/// consumer is made again from the first missing one, so delivery stays in stream
/// order and nothing is skipped; what is delivered twice, `seen` drops.
async fn consume(
    backbone: &NatsBackbone,
    js: &jetstream::Context,
    restart_from: &mut Option<u64>,
) -> anyhow::Result<()> {
    let config = backbone.config();
    let timeout = Duration::from_secs(config.publish_timeout_secs);
    // The members' keys first: what is consumed before would fail verification.
    while !backbone.keys_read() {
        tokio::time::sleep(KEYS_POLL).await;
    }
    let mut stream = tokio::time::timeout(timeout, connect::ensure_stream(js, config)).await??;
    let identity = stream_identity(tokio::time::timeout(timeout, stream.info()).await??);
    let durable = format!("relay_{}", connect::token(backbone.relay_id()));
    let deliver_policy = match *restart_from {
        Some(start_sequence) => {
            tracing::info!(
                start_sequence,
                "backbone consumer made again from the first missing notification"
            );
            match tokio::time::timeout(timeout, stream.delete_consumer(&durable)).await? {
                Ok(_) => {}
                Err(error) if error.to_string().contains("not found") => {}
                Err(error) => anyhow::bail!(error),
            }
            DeliverPolicy::ByStartSequence { start_sequence }
        }
        // A new relay starts with what is published from now on; a restarted one
        // resumes where it acknowledged.
        None => DeliverPolicy::New,
    };
    let consumer: jetstream::consumer::Consumer<pull::Config> = tokio::time::timeout(
        timeout,
        stream.get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                // Notifications are delivered in stream order, so acknowledging one
                // acknowledges every one before it: one confirmed ack per batch.
                ack_policy: AckPolicy::All,
                deliver_policy,
                ack_wait: ACK_WAIT,
                max_ack_pending: ACK_PENDING_MAX,
                ..Default::default()
            },
        ),
    )
    .await??;
    *restart_from = None;
    start_route(backbone, identity, &consumer).await;
    let mut messages = tokio::time::timeout(
        timeout,
        consumer
            .stream()
            .max_messages_per_batch(256)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(15))
            .messages(),
    )
    .await??;
    let mut acks = tokio::task::JoinSet::new();
    // The last delivered notification not yet acknowledged, and how many it covers.
    let mut unacked: Option<(jetstream::message::Acker, usize)> = None;
    loop {
        // With deliveries to acknowledge, a short pause in the stream flushes them; else
        // the pull's idle heartbeats bound this wait (when they stop, the stream yields
        // an error) and the timeout only keeps the loop from waiting without limit.
        let wait = if unacked.is_some() {
            ACK_FLUSH
        } else {
            IDLE_MAX
        };
        let Ok(next) = tokio::time::timeout(wait, messages.next()).await else {
            if let Some((acker, _)) = unacked.take() {
                spawn_confirm(&mut acks, acker, timeout).await;
            }
            continue;
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => anyhow::bail!(error),
            None => anyhow::bail!("the pull ended"),
        };
        let seq = message
            .info()
            .map_err(|e| anyhow::anyhow!(e))?
            .stream_sequence;
        let (message, acker) = message.split();
        {
            let mut route = backbone.route.lock().await;
            let expected = route.routed + 1;
            if seq > expected {
                let first = tokio::time::timeout(timeout, stream.info())
                    .await??
                    .state
                    .first_sequence;
                // Gone from the stream (age, size, purge): nothing to wait for.
                if first <= expected {
                    tracing::warn!(
                        expected,
                        got = seq,
                        "backbone consumer skipped ahead; starting it again from the first missing notification"
                    );
                    *restart_from = Some(expected);
                    return Ok(());
                }
            }
            deliver(backbone, &mut route, &message.payload, seq).await;
        }
        let covered = unacked.take().map_or(0, |(_, n)| n) + 1;
        if covered >= ACK_EVERY {
            spawn_confirm(&mut acks, acker, timeout).await;
        } else {
            unacked = Some((acker, covered));
        }
    }
}

async fn spawn_confirm(
    acks: &mut tokio::task::JoinSet<()>,
    acker: jetstream::message::Acker,
    timeout: Duration,
) {
    while acks.len() >= ACKS_IN_FLIGHT_MAX {
        acks.join_next().await;
    }
    while acks.try_join_next().is_some() {}
    acks.spawn(confirm(acker, timeout));
}

/// Acknowledges a delivered notification and waits for the server to confirm it,
/// retrying: an acknowledgement lost (say, while the consumer's leader moves to another
/// server) would have the notification redelivered, and after a restart this relay no
/// longer remembers it delivered it.
async fn confirm(acker: jetstream::message::Acker, timeout: Duration) {
    for _ in 0..ACK_ATTEMPTS {
        if let Ok(Ok(())) = tokio::time::timeout(timeout, acker.double_ack()).await {
            return;
        }
    }
    tracing::debug!("acknowledgement not confirmed; the notification may be redelivered");
}

/// Sets the route up for this consumer: a new stream starts from nothing; on the same
/// stream the position never goes back (a consumer started again redelivers what was
/// not acknowledged, which `seen` drops). A new consumer starts after the stream's last
/// sequence, a restarted one after its acknowledgement floor: what comes before was
/// routed before this relay could have issued a token (or, for a relay that restarted,
/// before it restarted).
async fn start_route(
    backbone: &NatsBackbone,
    identity: StreamKey,
    consumer: &jetstream::consumer::Consumer<pull::Config>,
) {
    let info = consumer.cached_info();
    // A consumer that never delivered reports where it starts in `delivered` (its ack
    // floor is still 0); one that did resumes after its ack floor.
    let floor = if info.delivered.consumer_sequence == 0 {
        info.delivered.stream_sequence
    } else {
        info.ack_floor.stream_sequence
    };
    let mut route = backbone.route.lock().await;
    if route.stream != Some(identity) {
        *route = Route {
            stream: Some(identity),
            ..Route::default()
        };
    }
    route.routed = route.routed.max(floor);
    backbone.set_stream_key(identity);
}

/// Parses a notification read from the stream and checks its origin's signature; `None`
/// (counted) when it must not be delivered.
pub async fn admissible(backbone: &NatsBackbone, payload: &[u8]) -> Option<Notification> {
    let metrics = &backbone.metrics.relay;
    // Anything with NATS credentials may write to the stream: as hostile as a peer.
    let notification = match peer::parse(payload) {
        Ok(PeerMessage::Notification(n)) if peer::notification_fits(&n).is_ok() => n,
        _ => {
            metrics.mesh_rejected.increment(1);
            return None;
        }
    };
    if let Err(why) = backbone.verify(&notification).await {
        backbone.count_unverified(&notification, why);
        return None;
    }
    Some(notification)
}

/// Delivers the notification stored at `seq` to this relay's subscribers unless it was
/// already (or is not believed); resumable wallets get a token naming `seq`.
async fn deliver(backbone: &NatsBackbone, route: &mut Route, payload: &[u8], seq: u64) {
    route.routed = route.routed.max(seq);
    let metrics = &backbone.metrics.relay;
    let Some(notification) = admissible(backbone, payload).await else {
        return;
    };
    if !route.seen.insert(&notification.message_id, seq) {
        metrics.dedup_hits.increment(1);
        return;
    }
    metrics.dedup_misses.increment(1);
    let frame = notification.encode();
    let stream_seq = route.stream.map(|key| (key, seq));
    let position = stream_seq
        .filter(|_| backbone.hub.has_resumable())
        .map(|(key, seq)| position_to(key, seq));
    let tokens = position.as_ref().map(|position| TokenContext {
        issuer: &backbone.issuer,
        position,
        now_unix: backbone.lifecycle.unix_secs(),
    });
    let delivery = backbone
        .hub
        .publish_at(&notification, &frame, stream_seq, tokens.as_ref());
    metrics.count_delivery(delivery, OutboundKind::Notification, frame.len());
}

/// Ids already delivered, each with the stream sequence it was first delivered from, the
/// oldest forgotten first (by count and by bytes).
#[derive(Default)]
pub struct Seen {
    ids: HashMap<String, u64>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Seen {
    /// Remembers `id` as delivered from `seq`; false when it was already there.
    pub fn insert(&mut self, id: &str, seq: u64) -> bool {
        if self.ids.contains_key(id) {
            return false;
        }
        self.ids.insert(id.to_string(), seq);
        self.order.push_back(id.to_string());
        self.bytes += id.len();
        while self.order.len() > SEEN_MAX || self.bytes > SEEN_BYTES_MAX {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.ids.remove(&old);
        }
        true
    }

    /// The stream sequence `id` was first delivered from, if remembered.
    pub fn first_seq(&self, id: &str) -> Option<u64> {
        self.ids.get(id).copied()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn seen_drops_repeats_and_stays_bounded() {
        let mut seen = super::Seen::default();
        assert!(seen.insert("a", 1));
        assert!(!seen.insert("a", 2));
        assert_eq!(seen.first_seq("a"), Some(1));
        for i in 0..super::SEEN_MAX + 10 {
            seen.insert(&i.to_string(), 3);
        }
        assert!(seen.order.len() <= super::SEEN_MAX);
        assert!(seen.insert("a", 4), "the oldest id was forgotten");
    }
}
