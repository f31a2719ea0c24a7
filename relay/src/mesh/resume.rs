//! Resuming a wallet's session from a resume token: what it missed is replayed from the
//! log, in per-origin order, each notification once, then `resumed` says whether the
//! wallet has everything (`recovered: false` when part of the gap left the log).
//!
//! The replay holds the route lock: no notification is admitted meanwhile, so none can be
//! both replayed and delivered live, nor fall between the two. Replays are therefore one
//! at a time, and each is bounded (`resume::ReplayBudget`: half the wallet's queue).

use std::collections::HashMap;
use std::sync::Arc;

use super::Mesh;
use crate::conn::{CloseReason, Outbound};
use crate::hub::ClientId;
use crate::protocol::{self, Notification, OutboundKind, SUBSCRIBE_ALL};
use crate::resume::budget::{self, ReplayBudget};
use crate::resume::{Position, StreamKey, Token, TokenError, message_position, stream_key, token};

/// `resumed.reason` when the token named more than it could carry.
const REASON_TRUNCATED: &str = "token_truncated";

/// What a resume will send.
struct Plan {
    /// Missed notifications matching the token's subscriptions, in per-origin order.
    replay: Vec<(StreamKey, u64, Arc<Notification>)>,
    /// Notifications the wallet missed that are no longer in the log.
    evicted: u64,
}

impl Mesh {
    pub(super) fn serve_resume(&self, client: ClientId, text: &str) -> Result<(), TokenError> {
        let token = token::verify(text, |id| {
            if id == self.relay_id() {
                Some(*self.issuer.public_key())
            } else {
                self.trust.key_of(id)
            }
        })?;
        let _route = self.route_guard();
        let (log, relay_position) = self.state.resume_view();
        let plan = plan(&token, &log, &relay_position);
        let limits = &self.parts.config.limits;
        let mut budget = ReplayBudget::new(
            limits.ws_outbound_queue_max,
            limits.ws_outbound_queue_bytes_max,
        );
        let mut position = token.position.clone();
        let mut limited = false;
        let now = self.unix_secs();
        for (key, seq, notification) in &plan.replay {
            let frame = notification.encode();
            if !budget.has_room(frame.len()) {
                limited = true;
                break;
            }
            position.insert(*key, *seq);
            let token_text = self.issuer.issue(
                token.subscriptions.iter().map(String::as_str),
                &position,
                now,
            );
            let frame = protocol::with_resume_token(&frame, &token_text);
            let frame_bytes = frame.len();
            let delivery = self.parts.hub.send_to(client, Outbound::Text(frame));
            let delivered = delivery.delivered;
            self.parts
                .metrics
                .count_delivery(delivery, OutboundKind::Notification, frame_bytes);
            if delivered == 0 {
                // The wallet is gone (or cut as slow): its last token stays exact.
                return Ok(());
            }
            budget.spend(frame_bytes);
        }
        let replayed = budget.frames() as u64;
        let reason = if limited {
            Some(budget::REASON_LIMIT)
        } else if plan.evicted > 0 {
            Some(budget::REASON_EVICTED)
        } else if token.truncated {
            Some(REASON_TRUNCATED)
        } else {
            None
        };
        let frame = protocol::encode_resumed(reason.is_none(), replayed, reason);
        self.parts
            .metrics
            .count_sent(OutboundKind::Resumed, frame.len());
        tracing::info!(
            client,
            issuer = %token.issuer,
            replayed,
            evicted = plan.evicted,
            reason = reason.unwrap_or("-"),
            "wallet resumed"
        );
        if self
            .parts
            .hub
            .send_to(client, Outbound::Text(frame))
            .delivered
            == 0
        {
            return Ok(());
        }
        if limited {
            self.parts.hub.close(client, CloseReason::REPLAY_LIMIT);
            return Ok(());
        }
        // What it had plus what was replayed: a kept payment it got either way is not
        // handed to it again when it registers its keys (`Hub::resumed_with`).
        self.parts.hub.resume(
            client,
            position,
            &token.subscriptions,
            protocol::SUBSCRIPTIONS_MAX,
        );
        Ok(())
    }
}

impl Mesh {
    /// Sends every wallet `frame(token)`, with a fresh resume token for those resuming
    /// (lame duck's `reconnect`); returns the delivery and the bytes sent.
    pub fn send_with_tokens(
        &self,
        frame: impl Fn(Option<&str>) -> bytes::Bytes,
    ) -> (crate::conn::Delivery, usize) {
        let _route = self.route_guard();
        let position = self.state.position();
        let tokens = crate::hub::TokenContext {
            issuer: &self.issuer,
            position: &position,
            now_unix: self.unix_secs(),
        };
        self.parts.hub.send_each(&tokens, frame)
    }
}

impl Mesh {
    /// Calls `send(token)` under the route lock, `token` a fresh resume token for wallet
    /// `client` when it is resumable: what `send` queues to it comes after everything the
    /// token names (all that was offered to it before) but the notifications `withheld`
    /// (sent to it next, out of band: a wallet's kept payments).
    pub fn with_token(
        &self,
        client: ClientId,
        withheld: &[String],
        send: &mut dyn FnMut(Option<&str>),
    ) {
        let _route = self.route_guard();
        let mut position = self.state.position();
        for (key, seq) in withheld.iter().filter_map(|id| message_position(id)) {
            position.remove(&key, seq);
        }
        let tokens = crate::hub::TokenContext {
            issuer: &self.issuer,
            position: &position,
            now_unix: self.unix_secs(),
        };
        send(self.parts.hub.token_of(client, &tokens).as_deref());
    }
}

/// What to replay, and how much of the gap the log no longer holds.
fn plan(token: &Token, log: &[Arc<Notification>], relay: &Position) -> Plan {
    let all = token.subscriptions.iter().any(|s| s == SUBSCRIBE_ALL);
    let mut in_log_missing: HashMap<StreamKey, u64> = HashMap::new();
    let mut replay = Vec::new();
    for notification in log {
        let Some((stream, seq)) = notification
            .message_id
            .rsplit_once('-')
            .and_then(|(s, q)| Some((s, q.parse::<u64>().ok()?)))
        else {
            continue;
        };
        let key = stream_key(stream);
        if token.position.contains(&key, seq) {
            continue;
        }
        *in_log_missing.entry(key).or_default() += 1;
        if notification.is_for(&token.subscriptions, all) {
            replay.push((stream.to_string(), key, seq, notification.clone()));
        }
    }
    replay.sort_by(|a, b| (&a.0, a.2).cmp(&(&b.0, b.2)));
    let empty = Default::default();
    let evicted = relay
        .streams()
        .map(|(key, ranges)| {
            let missing = ranges.count_not_in(token.position.stream(key).unwrap_or(&empty));
            missing.saturating_sub(in_log_missing.get(key).copied().unwrap_or(0))
        })
        .fold(0u64, u64::saturating_add);
    Plan {
        replay: replay
            .into_iter()
            .map(|(_, key, seq, n)| (key, seq, n))
            .collect(),
        evicted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(topic: &str, kind: &str) -> Notification {
        Notification::for_test("r", "r-00000001-1", kind, topic)
    }

    // Proves a replay gives a private notification only to a token naming its topic (not
    // to `*`, not by type), and never matches a public type by a private topic's name.
    #[test]
    fn a_replay_matches_private_notifications_by_topic_only() {
        let topic = format!("wallet:{}", "ab".repeat(16));
        let private = note(&topic, "payment_detected");
        let owner = vec!["block_mined".to_string(), topic.clone()];
        assert!(private.is_for(&owner, false));
        assert!(!private.is_for(&["*".to_string()], true));
        assert!(!private.is_for(&["payment_detected".to_string()], false));
        assert!(!note("", &topic).is_for(&owner, false));
        assert!(note("", "block_mined").is_for(&owner, false));
    }
}
