//! The protocol state machine of one client: handshake first, then requests.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;

use super::WsContext;
use super::rate::{RateLimit, Verdict};
use crate::chain::{
    UnwatchRequest, WatchOutcome, WatchRequest, encode_unwatch_response, encode_watch_response,
};
use crate::conn::codec::{FrameReader, InPlace, Incoming, ReadError};
use crate::conn::{CloseReason, Offered, Outbound, Outlet};
use crate::hub::ClientId;
use crate::protocol::{
    self, Capability, ClientMessage, Handshake, InboundKind, OutboundKind, ParseError, error_code,
};
use crate::routing::{Accepted, Refused};
use crate::wallets::Registered;

/// Wallets one connection may register with the chain watcher.
const WALLETS_PER_CONNECTION_MAX: usize = 8;

/// The `message_id` of a notification frame the relay encoded (empty if it has none).
fn message_id_of(frame: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        message_id: String,
    }
    serde_json::from_slice::<Id>(frame)
        .map(|id| id.message_id)
        .unwrap_or_default()
}

pub struct Session {
    node: Arc<WsContext>,
    id: ClientId,
    outlet: Outlet,
    /// Granted at the handshake; `None` until then.
    granted: Option<protocol::Capabilities>,
    /// Set when the other side handshook as a relay: the connection goes to the mesh.
    /// Boxed: it is rare and large, and the session lives in every connection's task.
    peer: Option<Box<Handshake>>,
    /// Wallets this connection registered with the chain watcher, with their addresses
    /// (what `unwatch` names).
    wallets: Vec<(crate::chain::WalletId, String)>,
    /// The message rate allowed; full at the handshake (the handshake itself is free).
    rate: RateLimit,
}

/// How a session ended.
pub enum SessionEnd {
    /// The connection is to close; the reason is in its control block.
    Closed,
    /// The other side is a relay: hand the connection to the mesh.
    Peer(Handshake),
}

impl Session {
    pub fn new(node: Arc<WsContext>, id: ClientId, outlet: Outlet) -> Self {
        let rate = RateLimit::new(&node.config.limits, node.lifecycle.now_ms());
        Session {
            node,
            id,
            outlet,
            granted: None,
            peer: None,
            wallets: Vec::new(),
            rate,
        }
    }

    /// Reads and handles messages until the connection is to close (the reason is then
    /// recorded in the control block) or turns out to be a relay's.
    pub async fn run<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>) -> SessionEnd {
        let control = self.outlet.control().clone();
        // On the heap and dropped at the handshake: an idle wallet's task does not carry
        // a spent timer for its whole life.
        let mut handshake_deadline = Some(Box::pin(
            self.node
                .lifecycle
                .clock()
                .sleep(self.node.config.limits.handshake_timeout()),
        ));
        // One registration for the whole session, not one per message.
        let closed = control.closed();
        tokio::pin!(closed);
        loop {
            if self.granted.is_some() {
                handshake_deadline = None;
            }
            let waiting = handshake_deadline.is_some();
            let deadline = futures_util::future::OptionFuture::from(handshake_deadline.as_mut());
            let next = tokio::select! {
                biased;
                () = &mut closed => return SessionEnd::Closed,
                _ = deadline, if waiting => {
                    self.node.metrics.ws_handshakes.get("timeout").increment(1);
                    control.close(CloseReason::HANDSHAKE_TIMEOUT);
                    return SessionEnd::Closed;
                }
                next = reader.next_in_place() => next,
            };
            // One reading of the clock per message, for the idle timer and the rate.
            let now_ms = self.node.lifecycle.now_ms();
            control.touch(now_ms);
            if let Some(reason) = self.on_frame(next, now_ms) {
                control.close(reason);
                return SessionEnd::Closed;
            }
            if let Some(handshake) = self.peer.take() {
                return SessionEnd::Peer(*handshake);
            }
        }
    }

    /// Handles one frame; `Some` closes the connection with that reason.
    fn on_frame(
        &mut self,
        frame: Result<InPlace<'_>, ReadError>,
        now_ms: u64,
    ) -> Option<CloseReason> {
        let frame = match frame {
            Ok(InPlace::Text(text)) => return self.on_text(text, now_ms),
            Ok(InPlace::Frame(frame)) => Ok(frame),
            Err(error) => Err(error),
        };
        if let Some(reason) = crate::conn::ending(&frame) {
            return Some(reason);
        }
        match frame {
            // A large message, copied out of the read buffer; the reader validated UTF-8.
            Ok(Incoming::Text(text)) => {
                self.on_text(std::str::from_utf8(&text).unwrap_or_default(), now_ms)
            }
            Ok(Incoming::Ping(payload)) => self.send(Outbound::Pong(payload)),
            _ => None,
        }
    }

    fn on_text(&mut self, text: &str, now_ms: u64) -> Option<CloseReason> {
        self.node
            .metrics
            .ws_received_bytes
            .increment(text.len() as u64);
        // Over the rate, a message is not even parsed.
        if self.granted.is_some()
            && let Some(close) = self.over_rate(now_ms)
        {
            return close;
        }
        let parsed = protocol::parse_client_message(text);
        let Some(granted) = self.granted else {
            return self.before_handshake(parsed);
        };
        let message = match parsed {
            Ok(message) => message,
            Err(error) => return self.reject_message(&error),
        };
        self.count_in(message.kind());
        if granted.contains(Capability::Resume) && self.node.hub.is_paused(self.id) {
            if let ClientMessage::Resume(token) = &message {
                return self.resume(token);
            }
            // Any other first message starts a fresh session.
            self.node.hub.unpause(self.id);
        }
        match message {
            ClientMessage::Handshake(_) => self.send_error(
                error_code::ALREADY_HANDSHAKEN,
                "the handshake was already done",
            ),
            ClientMessage::Ping { id } => {
                let unix_secs = self.node.lifecycle.unix_secs_at(now_ms);
                let pong = protocol::encode_pong(id, unix_secs);
                self.send_text(OutboundKind::Pong, pong)
            }
            ClientMessage::Subscribe(names) => {
                let names = self
                    .node
                    .hub
                    .subscribe(self.id, &names, protocol::SUBSCRIPTIONS_MAX);
                match names {
                    Ok(names) => self.send_subscriptions(&names),
                    Err(_) => self.send_error(
                        error_code::INVALID_MESSAGE,
                        &format!(
                            "at most {} subscriptions per client",
                            protocol::SUBSCRIPTIONS_MAX
                        ),
                    ),
                }
            }
            ClientMessage::Unsubscribe(names) => {
                let names = self.node.hub.unsubscribe(self.id, &names);
                self.send_subscriptions(&names)
            }
            ClientMessage::Watch => self.watch(text),
            ClientMessage::Unwatch => self.unwatch(text),
            ClientMessage::Resume(_) => self.send_error(
                error_code::INVALID_MESSAGE,
                "`resume` must be the first message after a handshake with capability `resume`",
            ),
            ClientMessage::Publish(publish) => {
                if !granted.contains(Capability::Publish) {
                    return self.send_error(
                        error_code::FORBIDDEN,
                        "capability `publish` was not granted",
                    );
                }
                let (notification, accepted) = self
                    .node
                    .publisher
                    .publish(publish.notification_type, publish.data);
                let ack = protocol::encode_notification_ack(
                    &notification.message_id,
                    notification.timestamp,
                );
                match accepted {
                    Accepted::Routed => self.send_text(OutboundKind::NotificationAck, ack),
                    Accepted::Refused(Refused(why)) => {
                        self.send_error(error_code::BACKBONE_UNAVAILABLE, why)
                    }
                    Accepted::Pending(stored) => {
                        self.ack_when_stored(stored, ack);
                        None
                    }
                }
            }
        }
    }

    /// Answers `notification_ack` once the backbone says it stored the notification, or
    /// an error if it refused it. The backbone bounds what it holds (in bytes) and
    /// answers every publication, so these waits are bounded in number and in time.
    fn ack_when_stored(
        &self,
        stored: tokio::sync::oneshot::Receiver<Result<(), Refused>>,
        ack: Bytes,
    ) {
        let node = self.node.clone();
        let outlet = self.outlet.clone();
        tokio::spawn(async move {
            let (kind, frame) = match stored.await {
                Ok(Ok(())) => (OutboundKind::NotificationAck, ack),
                Ok(Err(Refused(why))) => (
                    OutboundKind::Error,
                    protocol::encode_error(error_code::BACKBONE_UNAVAILABLE, why),
                ),
                Err(_) => (
                    OutboundKind::Error,
                    protocol::encode_error(
                        error_code::BACKBONE_UNAVAILABLE,
                        "the backbone stopped before storing the notification",
                    ),
                ),
            };
            if kind == OutboundKind::Error {
                node.metrics.ws_errors_sent.increment(1);
            }
            node.metrics.count_sent(kind, frame.len());
            if outlet.offer(Outbound::Text(frame)) == Offered::CutSlow {
                node.metrics.ws_slow_consumers.increment(1);
            }
        });
    }

    /// Takes this message's token: `None` to process it; `Some(None)` when it was refused
    /// (answered `rate_limited`), `Some(Some(reason))` to close the connection.
    fn over_rate(&mut self, now_ms: u64) -> Option<Option<CloseReason>> {
        let limits = &self.node.config.limits;
        match self.rate.check(limits, now_ms) {
            Verdict::Allowed => None,
            Verdict::Refused => {
                self.node.metrics.ws_rate_limited.increment(1);
                let message = format!(
                    "over {} messages per second (bursts of {}): message not processed",
                    limits.ws_messages_per_second_max, limits.ws_messages_burst_max
                );
                Some(self.send_error(error_code::RATE_LIMITED, &message))
            }
            Verdict::Close => {
                self.node.metrics.ws_rate_limited.increment(1);
                tracing::info!(
                    client = self.id,
                    "closing a wallet that kept sending over its message rate"
                );
                Some(Some(CloseReason::RATE_LIMITED))
            }
        }
    }

    fn before_handshake(
        &mut self,
        parsed: Result<ClientMessage<'_>, ParseError>,
    ) -> Option<CloseReason> {
        match parsed {
            Ok(ClientMessage::Handshake(handshake)) => {
                self.count_in(InboundKind::Handshake);
                self.handshake(handshake)
            }
            _ => {
                self.count_in(InboundKind::Invalid);
                self.node
                    .metrics
                    .ws_handshakes
                    .get("protocol_error")
                    .increment(1);
                Some(CloseReason::BEFORE_HANDSHAKE)
            }
        }
    }

    fn handshake(&mut self, handshake: Handshake) -> Option<CloseReason> {
        if handshake.capabilities.contains(Capability::Relay) {
            // A relay dialing in: the mesh answers it and serves the link.
            self.peer = Some(Box::new(handshake));
            return None;
        }
        let node = self.node.clone();
        let limits = &node.config.limits;
        let tokens = &node.config.auth.ws_tokens;
        let token_ok = tokens.is_empty()
            || handshake.token.as_deref().is_some_and(|t| {
                tokens
                    .iter()
                    .any(|known| crate::secret::matches(known.as_bytes(), t.as_bytes()))
            });
        if !token_ok {
            node.metrics.ws_handshakes.get("rejected").increment(1);
            let reason = if handshake.token.is_some() {
                "invalid token"
            } else {
                "token required"
            };
            tracing::info!(client_id = %handshake.client_id, reason, "handshake rejected");
            let frame = protocol::encode_handshake_rejected(
                &node.config.relay_id,
                reason,
                limits.heartbeat_interval_secs,
                node.lifecycle.unix_secs(),
            );
            self.send_text(OutboundKind::HandshakeResponse, frame);
            return Some(CloseReason::AUTH);
        }
        let granted = handshake.capabilities;
        self.granted = Some(granted);
        self.rate = RateLimit::new(limits, node.lifecycle.now_ms());
        node.hub.join_client(
            self.id,
            self.outlet.clone(),
            granted.contains(Capability::Notifications),
            granted.contains(Capability::Sync),
            granted.contains(Capability::Resume),
        );
        node.metrics.ws_handshakes.get("accepted").increment(1);
        tracing::debug!(client_id = %handshake.client_id, version = %handshake.version, "client handshake accepted");
        let response = protocol::encode_handshake_accepted(
            &node.config.relay_id,
            granted,
            limits.heartbeat_interval_secs,
            node.lifecycle.unix_secs(),
        );
        self.send_text(OutboundKind::HandshakeResponse, response)
            .or_else(|| self.send_text(OutboundKind::Health, node.health.frame()))
    }

    /// Resumes the session from `token` (replayed notifications and `resumed` are sent by
    /// the backbone); a refused token is answered with an error and starts a fresh session.
    fn resume(&mut self, token: &str) -> Option<CloseReason> {
        match self.node.publisher.resume(self.id, token) {
            Ok(()) => None,
            Err(refused) => {
                tracing::info!(client = self.id, reason = %refused, "resume token refused");
                self.node.hub.unpause(self.id);
                self.send_error(error_code::INVALID_RESUME_TOKEN, &refused.to_string())
            }
        }
    }

    /// Registers a wallet's keys with the chain watcher; its payments come back on this
    /// connection, those kept while it was away first.
    fn watch(&mut self, text: &str) -> Option<CloseReason> {
        let request = match WatchRequest::from_json(text) {
            Ok(_) if self.wallets.len() >= WALLETS_PER_CONNECTION_MAX => {
                return self.refuse_watch(format!(
                    "watch: at most {WALLETS_PER_CONNECTION_MAX} wallets per connection"
                ));
            }
            Ok(_) if self.node.hub.subscriptions(self.id).len() >= protocol::SUBSCRIPTIONS_MAX => {
                return self.refuse_watch(format!(
                    "watch: a wallet's payments come on a subscription of its own, and this \
                     connection holds {} already",
                    protocol::SUBSCRIPTIONS_MAX
                ));
            }
            Ok(request) => request,
            Err(reason) => return self.refuse_watch(reason),
        };
        let node = self.node.clone();
        node.wallets
            .register(request, self.id, |registered| match registered {
                Ok(registered) => self.accept_watch(registered),
                Err(reason) => self.refuse_watch(reason),
            })
    }

    fn refuse_watch(&mut self, reason: String) -> Option<CloseReason> {
        let outcome = WatchOutcome::Rejected { reason };
        self.send_text(OutboundKind::WatchResponse, encode_watch_response(&outcome))
    }

    /// Subscribes the connection to the wallet's private topic, answers an accepted
    /// `watch`, then sends what was kept for the wallet while it was away, oldest first,
    /// but what this session resumed with already (a resume replayed it, or the position
    /// it resumed from names it). A resumable connection gets a resume token with each.
    fn accept_watch(&mut self, registered: Registered) -> Option<CloseReason> {
        if !self.wallets.iter().any(|(id, _)| *id == registered.wallet) {
            self.wallets
                .push((registered.wallet, registered.address.clone()));
        }
        // Checked before registering: there is room for it.
        let _ = self.node.hub.subscribe(
            self.id,
            std::slice::from_ref(&registered.topic),
            protocol::SUBSCRIPTIONS_MAX,
        );
        let kept: Vec<(String, Bytes)> = registered
            .kept
            .frames
            .into_iter()
            .map(|frame| (message_id_of(&frame), frame))
            .filter(|(id, _)| !self.node.hub.resumed_with(self.id, id))
            .collect();
        let ids: Vec<String> = kept.iter().map(|(id, _)| id.clone()).collect();
        let outcome = WatchOutcome::Accepted {
            address: registered.address,
            pending_delivered: kept.len(),
            pending_dropped: registered.kept.dropped,
        };
        let answer = encode_watch_response(&outcome);
        let mut close = self.send_with_token(OutboundKind::WatchResponse, answer, &ids);
        for (sent, (_, frame)) in kept.into_iter().enumerate() {
            close = close.or_else(|| {
                self.send_with_token(OutboundKind::Notification, frame, &ids[sent + 1..])
            });
        }
        close
    }

    /// Sends `frame`, with a resume token when the connection is resumable (in order with
    /// its notifications; naming all it was offered but `withheld`).
    fn send_with_token(
        &mut self,
        kind: OutboundKind,
        frame: Bytes,
        withheld: &[String],
    ) -> Option<CloseReason> {
        let resumable = self
            .granted
            .is_some_and(|granted| granted.contains(Capability::Resume));
        if !resumable {
            return self.send_text(kind, frame);
        }
        let (publisher, id) = (self.node.publisher.clone(), self.id);
        let mut close = None;
        let mut send = |token: Option<&str>| {
            let framed = match token {
                Some(token) => protocol::with_resume_token(&frame, token),
                None => frame.clone(),
            };
            close = self.send_text(kind, framed);
        };
        if publisher.with_token(id, withheld, &mut send) {
            close
        } else {
            self.send_text(kind, frame)
        }
    }

    /// Stops watching a wallet this connection registered, named by its address.
    fn unwatch(&mut self, text: &str) -> Option<CloseReason> {
        let request = match UnwatchRequest::from_json(text) {
            Ok(request) => request,
            Err(reason) => {
                let frame = encode_unwatch_response("", Some(&reason));
                return self.send_text(OutboundKind::UnwatchResponse, frame);
            }
        };
        let address = request.address;
        let Some(index) = self.wallets.iter().position(|(_, a)| *a == address) else {
            let reason =
                "unwatch: `address` is not watched by this connection (send `watch` first)";
            let frame = encode_unwatch_response(&address, Some(reason));
            return self.send_text(OutboundKind::UnwatchResponse, frame);
        };
        let (wallet, _) = self.wallets.remove(index);
        self.node.wallets.unwatch(wallet);
        self.send_text(
            OutboundKind::UnwatchResponse,
            encode_unwatch_response(&address, None),
        )
    }

    fn reject_message(&mut self, error: &ParseError) -> Option<CloseReason> {
        self.count_in(InboundKind::Invalid);
        self.send_error(error.code(), &error.to_string())
    }

    fn send_subscriptions(&mut self, names: &[String]) -> Option<CloseReason> {
        self.send_text(
            OutboundKind::Subscriptions,
            protocol::encode_subscriptions(names.iter().map(String::as_str)),
        )
    }

    fn send_error(&mut self, code: &str, message: &str) -> Option<CloseReason> {
        self.node.metrics.ws_errors_sent.increment(1);
        self.send_text(OutboundKind::Error, protocol::encode_error(code, message))
    }

    fn send_text(&mut self, kind: OutboundKind, frame: Bytes) -> Option<CloseReason> {
        self.node.metrics.count_sent(kind, frame.len());
        self.send(Outbound::Text(frame))
    }

    /// Queues without waiting; a client that lets its queue fill is disconnected.
    fn send(&mut self, message: Outbound) -> Option<CloseReason> {
        match self.outlet.offer(message) {
            Offered::Queued => None,
            Offered::CutSlow => {
                self.node.metrics.ws_slow_consumers.increment(1);
                Some(CloseReason::SLOW_CONSUMER)
            }
            Offered::Dropped => Some(
                self.outlet
                    .control()
                    .close_reason()
                    .unwrap_or(CloseReason::WRITER_GONE),
            ),
        }
    }

    fn count_in(&self, kind: InboundKind) {
        self.node.metrics.ws_received.get(kind).increment(1);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (wallet, _) in self.wallets.drain(..) {
            self.node.wallets.release(wallet, self.id);
        }
    }
}
