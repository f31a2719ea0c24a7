//! The publisher: sends what waits in the outbox to the stream, each with `Nats-Msg-Id`
//! set to the notification id, so a retry after a lost acknowledgement is dropped by the
//! server rather than stored twice. An item leaves the outbox only once acknowledged.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_nats::jetstream::{self, message::PublishMessage};

use super::NatsBackbone;

/// Notifications in flight at once (published, acknowledgement awaited).
const IN_FLIGHT_MAX: usize = 256;
/// Pause after a failed round, doubled up to the maximum while failures go on.
const RETRY_DELAY_MIN: Duration = Duration::from_millis(100);
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

pub async fn run(backbone: Arc<NatsBackbone>, js: jetstream::Context) {
    let timeout = Duration::from_secs(backbone.config().publish_timeout_secs);
    let mut delay = RETRY_DELAY_MIN;
    // This relay's record (its key) is in the bucket before any of its notifications is
    // in the stream: every relay that reads one can find the key that signed it.
    while !backbone.keys_read() {
        tokio::time::sleep(RETRY_DELAY_MIN).await;
    }
    loop {
        if backbone.outbox.is_empty() {
            backbone.outbox.ready.notified().await;
            continue;
        }
        let batch = backbone.outbox.peek(IN_FLIGHT_MAX);
        let sent = batch.items.len();
        let (stored, error) = publish_batch(&js, batch.items, timeout, &backbone).await;
        backbone.outbox.stored(stored);
        backbone.refresh_buffer_gauge();
        match error {
            None => {
                backbone.set_publishing(true);
                delay = RETRY_DELAY_MIN;
            }
            Some(error) => {
                backbone
                    .metrics
                    .publish_failures
                    .increment((sent - stored) as u64);
                backbone.set_publishing(false);
                backbone.record_error(format!("publish: {error}"));
                tracing::warn!(%error, waiting = backbone.outbox.len(), "backbone publish failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_DELAY_MAX);
            }
        }
    }
}

/// Publishes every item, then awaits the acknowledgements in order: returns how many
/// from the front were stored, and the first error.
async fn publish_batch(
    js: &jetstream::Context,
    items: Vec<(String, String, bytes::Bytes)>,
    timeout: Duration,
    backbone: &NatsBackbone,
) -> (usize, Option<String>) {
    let mut acks = Vec::with_capacity(items.len());
    let started = backbone.lifecycle.clock().now();
    for (message_id, subject, payload) in items {
        let publish = PublishMessage::build()
            .payload(payload)
            .message_id(message_id);
        match tokio::time::timeout(timeout, js.send_publish(subject, publish)).await {
            Ok(Ok(ack)) => acks.push(ack),
            Ok(Err(error)) => {
                return wait_acks(acks, timeout, Some(error.to_string()), started, backbone).await;
            }
            Err(_) => {
                return wait_acks(
                    acks,
                    timeout,
                    Some("publish timed out".into()),
                    started,
                    backbone,
                )
                .await;
            }
        }
    }
    wait_acks(acks, timeout, None, started, backbone).await
}

async fn wait_acks(
    acks: Vec<jetstream::context::PublishAckFuture>,
    timeout: Duration,
    publish_error: Option<String>,
    started: Instant,
    backbone: &NatsBackbone,
) -> (usize, Option<String>) {
    let mut stored = 0;
    let mut error = None;
    for ack in acks {
        let failure = match tokio::time::timeout(timeout, ack).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("acknowledgement timed out".to_string()),
        };
        match failure {
            None if error.is_none() => {
                stored += 1;
                backbone.record_ack_latency(started.elapsed());
            }
            None => {}
            Some(e) => {
                error.get_or_insert(e);
            }
        }
    }
    (stored, error.or(publish_error))
}
