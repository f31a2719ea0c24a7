//! The consumer: this relay's durable consumer on the stream delivers every notification
//! (its own included) to this relay's subscribers, then acknowledges it. A redelivery (an
//! acknowledgement lost to a server failure) finds its id among those already delivered
//! and is only acknowledged again; after a restart the consumer resumes after the last
//! acknowledged notification.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures_util::StreamExt;

use super::NatsBackbone;
use super::connect;
use crate::protocol::OutboundKind;
use crate::protocol::peer::{self, PeerMessage};

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

pub async fn run(backbone: Arc<NatsBackbone>, js: jetstream::Context) {
    let mut seen = Seen::default();
    loop {
        if let Err(error) = consume(&backbone, &js, &mut seen).await {
            backbone.record_error(format!("consume: {error}"));
            tracing::warn!(%error, "backbone consumer stopped; starting it again");
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

async fn consume(
    backbone: &NatsBackbone,
    js: &jetstream::Context,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    let config = backbone.config();
    let timeout = Duration::from_secs(config.publish_timeout_secs);
    let stream = tokio::time::timeout(timeout, connect::ensure_stream(js, config)).await??;
    let durable = format!("relay_{}", connect::token(backbone.relay_id()));
    let consumer: jetstream::consumer::Consumer<pull::Config> = tokio::time::timeout(
        timeout,
        stream.get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                // Notifications are delivered in stream order, so acknowledging one
                // acknowledges every one before it: one confirmed ack per batch.
                ack_policy: AckPolicy::All,
                // A new relay starts with what is published from now on; a restarted one
                // resumes where it acknowledged.
                deliver_policy: DeliverPolicy::New,
                ack_wait: ACK_WAIT,
                max_ack_pending: ACK_PENDING_MAX,
                ..Default::default()
            },
        ),
    )
    .await??;
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
        let (message, acker) = message.split();
        deliver(backbone, seen, &message.payload);
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

/// Delivers one stored notification to this relay's subscribers unless it was already.
fn deliver(backbone: &NatsBackbone, seen: &mut Seen, payload: &[u8]) {
    let metrics = &backbone.metrics.relay;
    // Stored by another relay: as hostile as anything a peer sends.
    let notification = match peer::parse(payload) {
        Ok(PeerMessage::Notification(n)) if peer::notification_fits(&n).is_ok() => n,
        _ => {
            metrics.mesh_rejected.increment(1);
            return;
        }
    };
    if !seen.insert(&notification.message_id) {
        metrics.dedup_hits.increment(1);
        return;
    }
    metrics.dedup_misses.increment(1);
    let frame = notification.encode();
    let delivery = backbone
        .hub
        .publish(&notification.notification_type, &frame);
    metrics.count_delivery(delivery, OutboundKind::Notification, frame.len());
}

/// Ids already delivered, the oldest forgotten first (by count and by bytes).
#[derive(Default)]
pub struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Seen {
    /// Remembers `id`; false when it was already there.
    pub fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        self.ids.insert(id.to_string());
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
}

#[cfg(test)]
mod tests {
    #[test]
    fn seen_drops_repeats_and_stays_bounded() {
        let mut seen = super::Seen::default();
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        for i in 0..super::SEEN_MAX + 10 {
            seen.insert(&i.to_string());
        }
        assert!(seen.order.len() <= super::SEEN_MAX);
        assert!(seen.insert("a"), "the oldest id was forgotten");
    }
}
