//! Resuming a wallet's session in NATS mode. A token issued here names the stream (its
//! identity) and the sequence of the last notification routed to the wallet, `1..=S`:
//! every relay reads the same stream in the same order, so any relay that knows the
//! issuer's key (learned from its signed record in the membership bucket) can serve it.
//!
//! The replay holds the route lock, as the mesh's does: this relay's consumer delivers
//! nothing meanwhile, so the replay reads the stream from `S + 1` up to what this relay
//! has routed (`R`) and the wallet then gets live notifications from `R + 1`: none lost,
//! none twice. Replays run one at a time (a bounded queue of requests) and each is
//! bounded in bytes and by half the wallet's queue, like the mesh's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::consume::{Route, admissible, position_to};
use super::{NatsBackbone, connect, members};
use crate::conn::{CloseReason, Outbound};
use crate::hub::ClientId;
use crate::protocol::{self, OutboundKind, SUBSCRIBE_ALL};
use crate::resume::budget::{self, ReplayBudget};
use crate::resume::{StreamKey, Token, TokenError, token};

/// Resumes waiting for their replay at most; more are refused (the wallet starts fresh
/// and may resume again with the same token later).
const QUEUED_MAX: usize = 64;
/// How long a replay may read the stream in all.
const REPLAY_TIME_MAX: Duration = Duration::from_secs(20);
/// Messages one pull asks for.
const BATCH: usize = 256;

/// `resumed.reason` when the stream could not be read to the end.
const REASON_UNAVAILABLE: &str = "backbone_unavailable";

/// A resume waiting for its replay.
pub struct Request {
    client: ClientId,
    token: Checked,
}

/// A token verified, naming this stream up to `from`.
struct Verified {
    token: Token,
    stream: StreamKey,
    from: u64,
}

/// How far a token was checked when its resume was queued.
enum Checked {
    Verified(Verified),
    /// Issued by a relay whose record this relay has not read yet: its key is looked up
    /// in the membership bucket, then the token is checked again.
    UnknownIssuer {
        issuer: String,
        text: String,
    },
}

/// Resume requests, from the wallets' sessions to the one task that replays.
pub struct Queue {
    sender: mpsc::Sender<Request>,
    receiver: Mutex<Option<mpsc::Receiver<Request>>>,
}

impl Queue {
    pub fn new() -> Queue {
        let (sender, receiver) = mpsc::channel(QUEUED_MAX);
        Queue {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

/// Checks a token and queues its replay.
///
/// # Errors
/// The token does not verify, names another stream, or too many resumes wait.
pub fn request(backbone: &NatsBackbone, client: ClientId, text: &str) -> Result<(), TokenError> {
    let token = match check(backbone, text) {
        Ok(verified) => Checked::Verified(verified),
        Err(TokenError::UnknownIssuer(issuer)) => Checked::UnknownIssuer {
            issuer,
            text: text.to_string(),
        },
        Err(refused) => return Err(refused),
    };
    backbone
        .resumes
        .sender
        .try_send(Request { client, token })
        .map_err(|_| TokenError::Unsupported("too many resumes waiting; try again"))
}

fn check(backbone: &NatsBackbone, text: &str) -> Result<Verified, TokenError> {
    // Until both are reached, neither the token's stream nor its issuer's key can be
    // checked.
    let stream = backbone
        .stream_key()
        .filter(|_| backbone.bucket.get().is_some())
        .ok_or(TokenError::Unsupported(
            "this relay has not reached its NATS stream yet",
        ))?;
    let token = token::verify(text, |id| backbone.key_of(id))?;
    let from = sequence_in(&token, &stream)?;
    Ok(Verified {
        token,
        stream,
        from,
    })
}

/// Refuses a queued resume as the session refuses one at once: an error, then a fresh
/// session.
fn refuse(backbone: &NatsBackbone, client: ClientId, refused: &TokenError) {
    tracing::info!(client, reason = %refused, "resume token refused");
    let frame = protocol::encode_error(
        protocol::error_code::INVALID_RESUME_TOKEN,
        &refused.to_string(),
    );
    backbone.metrics.relay.ws_errors_sent.increment(1);
    backbone
        .metrics
        .relay
        .count_sent(OutboundKind::Error, frame.len());
    backbone.hub.send_to(client, Outbound::Text(frame));
    backbone.hub.unpause(client);
}

/// The last sequence a NATS-mode token names: its position must be exactly `1..=S` of
/// this stream (`0..=S` is read the same).
fn sequence_in(token: &Token, stream: &StreamKey) -> Result<u64, TokenError> {
    let mut streams = token.position.streams();
    match (streams.next(), streams.next()) {
        (Some((key, ranges)), None) if key == stream => match ranges.ranges() {
            [(lo, hi)] if *lo <= 1 => Ok(*hi),
            _ => Err(TokenError::OtherStream),
        },
        _ => Err(TokenError::OtherStream),
    }
}

/// Serves queued resumes one at a time, for the life of the relay.
pub async fn run(backbone: Arc<NatsBackbone>, js: jetstream::Context) {
    let receiver = backbone
        .resumes
        .receiver
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(mut receiver) = receiver else {
        return;
    };
    while let Some(Request { client, token }) = receiver.recv().await {
        let verified = match token {
            Checked::Verified(verified) => verified,
            Checked::UnknownIssuer { issuer, text } => {
                members::fetch_key(&backbone, &issuer).await;
                match check(&backbone, &text) {
                    Ok(verified) => verified,
                    Err(refused) => {
                        refuse(&backbone, client, &refused);
                        continue;
                    }
                }
            }
        };
        let route = backbone.route.lock().await;
        serve(&backbone, &js, &route, client, verified).await;
    }
}

/// One resume being served: whom, from which token, against what this relay routed.
struct Serving<'a> {
    backbone: &'a NatsBackbone,
    client: ClientId,
    route: &'a Route,
    token: &'a Token,
    stream: StreamKey,
}

/// What a replay did.
#[derive(Default)]
struct Replayed {
    count: u64,
    /// Why it stopped short of `R`, if it did: the wallet is closed and resumes again.
    stopped: Option<&'static str>,
    evicted: bool,
    /// The wallet went away (or was cut as slow) during the replay.
    gone: bool,
}

async fn serve(
    backbone: &NatsBackbone,
    js: &jetstream::Context,
    route: &Route,
    client: ClientId,
    verified: Verified,
) {
    let Verified {
        token,
        stream,
        from,
    } = verified;
    let mut replayed = Replayed::default();
    if route.stream != Some(stream) {
        // The stream was created again since the token was checked: its sequences are
        // not the token's.
        replayed.evicted = true;
    } else if from < route.routed {
        let read = tokio::time::timeout(
            REPLAY_TIME_MAX,
            replay(
                &Serving {
                    backbone,
                    client,
                    route,
                    token: &token,
                    stream,
                },
                js,
                from,
                &mut replayed,
            ),
        )
        .await;
        match read {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(client, %error, "resume replay could not read the stream");
                replayed.stopped = Some(REASON_UNAVAILABLE);
            }
            Err(_) => replayed.stopped = Some(REASON_UNAVAILABLE),
        }
    }
    if replayed.gone {
        return;
    }
    let reason = replayed
        .stopped
        .or(replayed.evicted.then_some(budget::REASON_EVICTED));
    let frame = protocol::encode_resumed(reason.is_none(), replayed.count, reason);
    backbone
        .metrics
        .relay
        .count_sent(OutboundKind::Resumed, frame.len());
    tracing::info!(
        client,
        issuer = %token.issuer,
        from,
        to = route.routed,
        replayed = replayed.count,
        reason = reason.unwrap_or("-"),
        "wallet resumed"
    );
    if backbone
        .hub
        .send_to(client, Outbound::Text(frame))
        .delivered
        == 0
    {
        return;
    }
    if replayed.stopped.is_some() {
        backbone.hub.close(client, CloseReason::REPLAY_LIMIT);
        return;
    }
    let skip = if route.stream == Some(stream) {
        token.position
    } else {
        Default::default()
    };
    backbone.hub.resume(
        client,
        skip,
        &token.subscriptions,
        protocol::SUBSCRIPTIONS_MAX,
    );
}

/// Sends the wallet every notification of its subscriptions stored after `from` and
/// routed here (up to `route.routed`), in stream order, each with its own token.
async fn replay(
    serving: &Serving<'_>,
    js: &jetstream::Context,
    from: u64,
    replayed: &mut Replayed,
) -> anyhow::Result<()> {
    let Serving {
        backbone,
        route,
        token,
        ..
    } = *serving;
    let config = backbone.config();
    let timeout = Duration::from_secs(config.publish_timeout_secs);
    let mut stream = tokio::time::timeout(timeout, js.get_stream(&config.stream)).await??;
    let first = tokio::time::timeout(timeout, stream.info())
        .await??
        .state
        .first_sequence;
    // What the stream no longer holds (age or size limits) cannot be replayed.
    replayed.evicted = first > from + 1;
    let start = first.max(from + 1);
    if start > route.routed {
        return Ok(());
    }
    let all = token.subscriptions.iter().any(|s| s == SUBSCRIBE_ALL);
    // One subscription: the server filters (2.9 takes one filter subject per consumer).
    let filter_subject = match token.subscriptions.as_slice() {
        // Private topics travel under their notification's type, not their own name.
        [one] if !all && !protocol::is_private_name(one) => connect::subject(&config.stream, one),
        _ => String::new(),
    };
    let consumer = tokio::time::timeout(
        timeout,
        stream.create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: AckPolicy::None,
            filter_subject,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        }),
    )
    .await??;
    let name = consumer.cached_info().name.clone();
    let pending = consumer.cached_info().num_pending;
    let result = send_from(serving, &consumer, pending, replayed).await;
    // Ephemeral: the server also drops it after `inactive_threshold`.
    let _ = tokio::time::timeout(timeout, stream.delete_consumer(&name)).await;
    result
}

async fn send_from(
    serving: &Serving<'_>,
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    pending: u64,
    replayed: &mut Replayed,
) -> anyhow::Result<()> {
    let Serving {
        backbone,
        client,
        route,
        token,
        stream: stream_key,
    } = *serving;
    let timeout = Duration::from_secs(backbone.config().publish_timeout_secs);
    let all = token.subscriptions.iter().any(|s| s == SUBSCRIBE_ALL);
    let limits = &backbone.config.limits;
    let mut budget = ReplayBudget::new(
        limits.ws_outbound_queue_max,
        limits.ws_outbound_queue_bytes_max,
    );
    let mut messages = tokio::time::timeout(
        timeout,
        consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .expires(timeout)
            .messages(),
    )
    .await??;
    // Every message pending when the consumer was made is read, or up to `routed`.
    for _ in 0..pending {
        let message = match tokio::time::timeout(timeout, messages.next()).await? {
            Some(Ok(message)) => message,
            Some(Err(error)) => anyhow::bail!(error),
            None => anyhow::bail!("the stream's messages ended"),
        };
        let seq = message
            .info()
            .map_err(|e| anyhow::anyhow!(e))?
            .stream_sequence;
        if seq > route.routed {
            break;
        }
        let Some(notification) = admissible(backbone, &message.payload).await else {
            continue;
        };
        let wanted = notification.is_for(&token.subscriptions, all);
        // A copy stored again under another id was dropped live: drop it here too.
        let repeat = route
            .seen
            .first_seq(&notification.message_id)
            .is_some_and(|first| first != seq);
        if !wanted || repeat {
            continue;
        }
        let frame = notification.encode();
        if !budget.has_room(frame.len()) {
            replayed.stopped = Some(budget::REASON_LIMIT);
            return Ok(());
        }
        let position = position_to(stream_key, seq);
        let token_text = backbone.issuer.issue(
            token.subscriptions.iter().map(String::as_str),
            &position,
            backbone.lifecycle.unix_secs(),
        );
        let frame = protocol::with_resume_token(&frame, &token_text);
        let frame_bytes = frame.len();
        let delivery = backbone.hub.send_to(client, Outbound::Text(frame));
        let delivered = delivery.delivered;
        backbone
            .metrics
            .relay
            .count_delivery(delivery, OutboundKind::Notification, frame_bytes);
        if delivered == 0 {
            // The wallet is gone (or cut as slow): its last token stays exact.
            replayed.gone = true;
            return Ok(());
        }
        budget.spend(frame_bytes);
        replayed.count += 1;
    }
    Ok(())
}

impl NatsBackbone {
    /// Sends every wallet `frame(token)`, with a fresh token for those resuming (lame
    /// duck's `reconnect`): a position in the stream, valid on the relays they move to.
    pub async fn send_with_tokens(
        &self,
        frame: impl Fn(Option<&str>) -> bytes::Bytes,
    ) -> (crate::conn::Delivery, usize) {
        let route = self.route.lock().await;
        let position = route
            .stream
            .map(|stream| position_to(stream, route.routed))
            .unwrap_or_default();
        let tokens = crate::hub::TokenContext {
            issuer: &self.issuer,
            position: &position,
            now_unix: self.lifecycle.unix_secs(),
        };
        self.hub.send_each(&tokens, frame)
    }
}
