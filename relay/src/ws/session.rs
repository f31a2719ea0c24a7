//! The protocol state machine of one client: handshake first, then requests.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use super::codec::{FrameReader, Incoming, ReadError};
use crate::hub::{ClientControl, ClientId, CloseReason, Outbound};
use crate::node::Node;
use crate::protocol::{
    self, Capabilities, Capability, ClientMessage, Handshake, ParseError, error_code,
};

/// Wallets one connection may register with the chain watcher.
const WALLETS_PER_CONNECTION_MAX: usize = 8;

pub struct Session {
    node: Arc<Node>,
    id: ClientId,
    tx: mpsc::Sender<Outbound>,
    control: Arc<ClientControl>,
    /// Granted at the handshake; `None` until then.
    granted: Option<Capabilities>,
    /// Set when the other side handshook as a relay: (relay id, advertised address).
    peer: Option<(String, String)>,
    /// Wallets this connection registered with the chain watcher.
    wallets: Vec<crate::chain::WalletId>,
}

impl Session {
    pub fn new(
        node: Arc<Node>,
        id: ClientId,
        tx: mpsc::Sender<Outbound>,
        control: Arc<ClientControl>,
    ) -> Self {
        Session {
            node,
            id,
            tx,
            control,
            granted: None,
            peer: None,
            wallets: Vec::new(),
        }
    }

    /// Reads and handles messages until the connection is to close; the reason is then
    /// recorded in the control block.
    pub async fn run<R: AsyncRead + Unpin>(&mut self, reader: &mut FrameReader<R>) {
        let handshake_deadline = self
            .node
            .clock
            .sleep(self.node.config.limits.connection_timeout());
        tokio::pin!(handshake_deadline);
        loop {
            let next = tokio::select! {
                biased;
                () = self.control.closed() => return,
                () = &mut handshake_deadline, if self.granted.is_none() => {
                    self.node.metrics.ws_handshakes.get("timeout").increment(1);
                    self.control.close(CloseReason::HANDSHAKE_TIMEOUT);
                    return;
                }
                next = reader.next() => next,
            };
            self.control.touch(self.node.now_ms());
            if let Some(reason) = self.on_frame(next) {
                self.control.close(reason);
                return;
            }
            if let Some((peer_id, address)) = self.peer.take() {
                return self.serve_peer(reader, peer_id, address).await;
            }
        }
    }

    /// The rest of the connection is a mesh link.
    async fn serve_peer<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut FrameReader<R>,
        peer_id: String,
        address: String,
    ) {
        let limit =
            self.node.config.limits.ws_message_bytes_max + crate::mesh::PEER_ENVELOPE_SLACK_BYTES;
        reader.set_message_bytes_max(limit);
        let parts = crate::mesh::LinkParts {
            // The peer dialed this link: the tie-break between two links to the same
            // peer must know that, or both ends drop the link the other one keeps.
            dialer: peer_id.clone(),
            peer_id,
            address,
            inbound: true,
            tx: self.tx.clone(),
            control: self.control.clone(),
        };
        // A peer link is not a client: the connection gauge counts wallets only.
        self.node.metrics.ws_connections.decrement(1.0);
        crate::mesh::serve_inbound(&self.node, reader, parts).await;
        self.node.metrics.ws_connections.increment(1.0);
        if self.control.close_reason().is_none() {
            self.control.close(CloseReason::NORMAL);
        }
    }

    /// Handles one frame; `Some` closes the connection with that reason.
    fn on_frame(&mut self, frame: Result<Incoming, ReadError>) -> Option<CloseReason> {
        if let Some(reason) = super::ending(&frame) {
            return Some(reason);
        }
        match frame {
            Ok(Incoming::Text(text)) => {
                self.node
                    .metrics
                    .ws_received_bytes
                    .increment(text.len() as u64);
                self.on_text(&text)
            }
            Ok(Incoming::Ping(payload)) => self.send(Outbound::Pong(payload)),
            _ => None,
        }
    }

    fn on_text(&mut self, text: &Bytes) -> Option<CloseReason> {
        // The reader validated UTF-8.
        let text = std::str::from_utf8(text).unwrap_or_default();
        let parsed = protocol::parse_client_message(text);
        let Some(granted) = self.granted else {
            return self.before_handshake(parsed);
        };
        let message = match parsed {
            Ok(message) => message,
            Err(error) => return self.reject_message(&error),
        };
        match message {
            ClientMessage::Handshake(_) => {
                self.count_in("handshake");
                self.send_error(
                    error_code::ALREADY_HANDSHAKEN,
                    "the handshake was already done",
                )
            }
            ClientMessage::Ping { id } => {
                self.count_in("ping");
                self.send_text("pong", protocol::encode_pong(id, self.node.unix_secs()))
            }
            ClientMessage::Subscribe(names) => {
                self.count_in("subscribe");
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
                self.count_in("unsubscribe");
                let names = self.node.hub.unsubscribe(self.id, &names);
                self.send_subscriptions(&names)
            }
            ClientMessage::Watch => {
                self.count_in("watch");
                self.watch(text)
            }
            ClientMessage::Publish(publish) => {
                self.count_in("notification");
                if !granted.contains(Capability::Publish) {
                    return self.send_error(
                        error_code::FORBIDDEN,
                        "capability `publish` was not granted",
                    );
                }
                let notification = self
                    .node
                    .publish_local(publish.notification_type, publish.data);
                let ack = protocol::encode_notification_ack(
                    &notification.message_id,
                    notification.timestamp,
                );
                self.send_text("notification_ack", ack)
            }
        }
    }

    fn before_handshake(
        &mut self,
        parsed: Result<ClientMessage<'_>, ParseError>,
    ) -> Option<CloseReason> {
        match parsed {
            Ok(ClientMessage::Handshake(handshake)) => {
                self.count_in("handshake");
                self.handshake(handshake)
            }
            _ => {
                self.count_in("invalid");
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
            return self.relay_handshake(handshake);
        }
        let node = self.node.clone();
        let limits = &node.config.limits;
        let tokens = &node.config.auth.ws_tokens;
        let token_ok = tokens.is_empty()
            || handshake
                .token
                .as_deref()
                .is_some_and(|t| tokens.iter().any(|known| constant_time_eq(known, t)));
        if !token_ok {
            node.metrics.ws_handshakes.get("rejected").increment(1);
            let reason = if handshake.token.is_some() {
                "invalid token"
            } else {
                "token required"
            };
            tracing::info!(client_id = %handshake.client_id, reason, "handshake rejected");
            let frame = protocol::encode_handshake_rejected(
                node.relay_id(),
                reason,
                limits.heartbeat_interval_secs,
                node.unix_secs(),
            );
            self.send_text("handshake_response", frame);
            return Some(CloseReason::AUTH);
        }
        let granted = handshake.capabilities;
        self.granted = Some(granted);
        node.hub.join(
            self.id,
            self.tx.clone(),
            self.control.clone(),
            granted.contains(Capability::Notifications),
            granted.contains(Capability::Sync),
        );
        node.metrics.ws_handshakes.get("accepted").increment(1);
        tracing::debug!(client_id = %handshake.client_id, version = %handshake.version, "client handshake accepted");
        let response = protocol::encode_handshake_accepted(
            node.relay_id(),
            granted,
            limits.heartbeat_interval_secs,
            node.unix_secs(),
        );
        self.send_text("handshake_response", response)
            .or_else(|| self.send_text("health", node.health_frame()))
    }

    /// A relay dialing in: check the mesh token, answer, and become a mesh link.
    fn relay_handshake(&mut self, handshake: Handshake) -> Option<CloseReason> {
        let node = self.node.clone();
        let token_ok = match &node.config.auth.mesh_token {
            None => true,
            Some(expected) => handshake
                .token
                .as_deref()
                .is_some_and(|t| constant_time_eq(expected, t)),
        };
        let peer_id = handshake.relay_id.unwrap_or_default();
        let refusal = if !token_ok {
            Some(("invalid mesh token", CloseReason::AUTH))
        } else if peer_id == node.relay_id() {
            Some(("that is this relay", CloseReason::NORMAL))
        } else {
            None
        };
        if let Some((reason, close)) = refusal {
            node.metrics.ws_handshakes.get("rejected").increment(1);
            tracing::info!(peer = %peer_id, reason, "relay handshake refused");
            let heartbeat = node.config.limits.heartbeat_interval_secs;
            let frame = protocol::encode_handshake_rejected(
                node.relay_id(),
                reason,
                heartbeat,
                node.unix_secs(),
            );
            self.send_text("handshake_response", frame);
            return Some(close);
        }
        node.metrics.ws_handshakes.get("accepted").increment(1);
        let mut granted = Capabilities::default();
        granted.insert(Capability::Relay);
        self.granted = Some(granted);
        self.peer = Some((peer_id, handshake.address.unwrap_or_default()));
        let response = crate::mesh::wire::encode_peer_accepted(
            node.relay_id(),
            node.config.advertised_addr(),
            node.unix_secs(),
        );
        self.send_text("handshake_response", response)
    }

    /// Registers a wallet's keys with the chain watcher; its payments come back on this
    /// connection.
    fn watch(&mut self, text: &str) -> Option<CloseReason> {
        use crate::chain::{WatchOutcome, WatchRequest, encode_watch_response};
        let outcome = if self.wallets.len() >= WALLETS_PER_CONNECTION_MAX {
            let reason = format!("at most {WALLETS_PER_CONNECTION_MAX} wallets per connection");
            WatchOutcome::Rejected { reason }
        } else {
            match WatchRequest::from_json(text)
                .and_then(|request| self.node.chain.register(request))
            {
                Ok((wallet, address)) => {
                    self.node.bind_wallet(wallet, self.id);
                    self.wallets.push(wallet);
                    WatchOutcome::Accepted { address }
                }
                Err(reason) => WatchOutcome::Rejected { reason },
            }
        };
        self.send_text("watch_response", encode_watch_response(&outcome))
    }

    fn reject_message(&mut self, error: &ParseError) -> Option<CloseReason> {
        self.count_in("invalid");
        self.send_error(error.code(), &error.to_string())
    }

    fn send_subscriptions(&mut self, names: &[String]) -> Option<CloseReason> {
        self.send_text(
            "subscriptions",
            protocol::encode_subscriptions(names.iter().map(String::as_str)),
        )
    }

    fn send_error(&mut self, code: &str, message: &str) -> Option<CloseReason> {
        self.node.metrics.ws_errors_sent.increment(1);
        self.send_text("error", protocol::encode_error(code, message))
    }

    fn send_text(&mut self, kind: &str, frame: Bytes) -> Option<CloseReason> {
        self.node.metrics.ws_sent.get(kind).increment(1);
        self.node
            .metrics
            .ws_sent_bytes
            .increment(frame.len() as u64);
        self.send(Outbound::Text(frame))
    }

    /// Queues without waiting; a client that lets its queue fill is disconnected.
    fn send(&mut self, message: Outbound) -> Option<CloseReason> {
        match self.tx.try_send(message) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.node.metrics.ws_slow_consumers.increment(1);
                Some(CloseReason::SLOW_CONSUMER)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Some(CloseReason {
                code: super::connection::ABNORMAL,
                reason: "writer gone",
            }),
        }
    }

    fn count_in(&self, kind: &str) {
        self.node.metrics.ws_received.get(kind).increment(1);
    }
}

/// Compares secrets without revealing, through timing, where they first differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

impl Drop for Session {
    fn drop(&mut self) {
        for wallet in self.wallets.drain(..) {
            self.node.release_wallet(wallet);
        }
    }
}
