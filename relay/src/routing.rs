//! How a notification accepted on this relay (a wallet's publish, a chain event) reaches
//! every subscriber: it is stamped with a mesh-unique id, then handed to the backbone,
//! which delivers it to this relay's subscribers and carries it to every other relay.
//!
//! The mesh (`mesh::Mesh`) is the backbone. Another way of carrying notifications between
//! relays (a message bus) implements [`Backbone`] beside it; the wallet server and the
//! HTTP API only ever see a [`Publisher`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::value::RawValue;

use crate::identity::Identity;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::protocol::Notification;
use crate::rt::{SeededRng, SharedClock};

/// Carries notifications this relay originated to subscribers here and elsewhere.
pub trait Backbone: Send + Sync + 'static {
    fn publish(&self, notification: Arc<Notification>) -> Accepted;

    /// Resumes wallet connection `client` (a hub client id) from a resume token: replays
    /// what it missed, then sends it `resumed`, then delivers live again.
    ///
    /// # Errors
    /// The token is malformed, from an unknown relay, or its signature does not verify.
    fn resume(&self, client: u64, token: &str) -> Result<(), crate::resume::TokenError>;

    /// Calls `send(token)` so that what it queues to wallet connection `client` comes in
    /// order with its notifications, `token` a fresh resume token naming everything
    /// offered to it before but the notifications `withheld` (ids of what the caller
    /// sends it next); `None` when it is not resumable. Returns false (without calling
    /// `send`) when this backbone issues no tokens.
    fn with_token(
        &self,
        client: u64,
        withheld: &[String],
        send: &mut dyn FnMut(Option<&str>),
    ) -> bool {
        let _ = (client, withheld, send);
        false
    }
}

/// What a backbone did with a publication, and so when the wallet may be told it was
/// accepted (`notification_ack`).
pub enum Accepted {
    /// Routed already (the mesh): acknowledge now.
    Routed,
    /// Handed to a message system: acknowledge when it says it stored it (`Ok`), or
    /// answer the error (`Err`). The sender is dropped only after an answer or a refusal.
    Pending(tokio::sync::oneshot::Receiver<Result<(), Refused>>),
    /// Not taken: nothing was stored anywhere.
    Refused(Refused),
}

/// Why a backbone refused a publication, as the wallet's error message says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// Whether the backbone reaches the other relays. The mesh leaves it up (its links have
/// health of their own); a message-system backbone says when it lost its servers, and
/// the relay then reports itself degraded and not ready.
#[derive(Debug)]
pub struct BackboneLink {
    up: std::sync::atomic::AtomicBool,
}

impl BackboneLink {
    pub fn new(up: bool) -> Arc<BackboneLink> {
        Arc::new(BackboneLink {
            up: std::sync::atomic::AtomicBool::new(up),
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }
}

/// Ids for what this relay originates: `<relay_id>-<boot nonce>-<seq>` for notifications,
/// `<relay_id>-<boot nonce>-s<seq>` for sync messages.
pub struct Origin {
    relay_id: String,
    /// Signs every notification this relay originates.
    identity: Arc<Identity>,
    /// Makes ids unique across restarts of the same relay id.
    boot_nonce: u32,
    next_message_seq: AtomicU64,
    next_sync_seq: AtomicU64,
}

impl Origin {
    pub fn new(
        relay_id: &str,
        identity: Arc<Identity>,
        rng: &SeededRng,
        clock: &SharedClock,
    ) -> Origin {
        // Mixing the wall clock in keeps ids unique when a simulated relay restarts with
        // the same seed.
        let boot_nonce = (rng.next_u64() ^ clock.unix_time().as_millis() as u64) as u32;
        Origin {
            relay_id: relay_id.to_string(),
            identity,
            boot_nonce,
            next_message_seq: AtomicU64::new(1),
            next_sync_seq: AtomicU64::new(1),
        }
    }

    pub fn relay_id(&self) -> &str {
        &self.relay_id
    }

    /// This relay's key pair.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// A message id unique in the mesh: relay id, boot nonce, sequence.
    pub fn next_message_id(&self) -> String {
        let seq = self.next_message_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:08x}-{seq}", self.relay_id, self.boot_nonce)
    }

    /// Notifications this relay has stamped since it started.
    pub fn notifications_originated(&self) -> u64 {
        self.next_message_seq.load(Ordering::Relaxed) - 1
    }

    /// An id for a sync message, from its own sequence so notification sequences stay
    /// contiguous (anti-entropy summarizes them as ranges).
    pub fn next_sync_id(&self) -> String {
        let seq = self.next_sync_seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:08x}-s{seq}", self.relay_id, self.boot_nonce)
    }

    /// A notification from this relay, stamped now and signed: every relay checks the
    /// signature against this relay's key before it delivers or forwards it.
    pub fn stamp(
        &self,
        notification_type: String,
        data: Box<RawValue>,
        now_unix: u64,
    ) -> Notification {
        self.stamp_for(String::new(), notification_type, data, now_unix)
    }

    /// `stamp`, for a private `topic` (empty: public), which the signature covers.
    pub fn stamp_for(
        &self,
        topic: String,
        notification_type: String,
        data: Box<RawValue>,
        now_unix: u64,
    ) -> Notification {
        let mut notification = Notification {
            message_id: self.next_message_id(),
            relay_id: self.relay_id.clone(),
            notification_type,
            data,
            timestamp: now_unix,
            topic,
            signature: String::new(),
        };
        crate::protocol::signed::sign_notification(&self.identity, &mut notification);
        notification
    }
}

/// Where wallets' publications and the relay's own chain events enter the backbone.
pub struct Publisher {
    origin: Arc<Origin>,
    lifecycle: Arc<Lifecycle>,
    metrics: Arc<Metrics>,
    backbone: Arc<dyn Backbone>,
}

impl Publisher {
    pub fn new(
        origin: Arc<Origin>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        backbone: Arc<dyn Backbone>,
    ) -> Publisher {
        Publisher {
            origin,
            lifecycle,
            metrics,
            backbone,
        }
    }

    /// Stamps a notification and sends it to every subscriber in the mesh; says when
    /// the backbone has it.
    pub fn publish(
        &self,
        notification_type: String,
        data: &RawValue,
    ) -> (Arc<Notification>, Accepted) {
        self.publish_to(String::new(), notification_type, data)
    }

    /// `publish` on a private `topic`: through the mesh and its log like any other, but
    /// delivered only to the connections subscribed to the topic.
    pub fn publish_to(
        &self,
        topic: String,
        notification_type: String,
        data: &RawValue,
    ) -> (Arc<Notification>, Accepted) {
        let notification = Arc::new(self.origin.stamp_for(
            topic,
            notification_type,
            data.to_owned(),
            self.lifecycle.unix_secs(),
        ));
        self.metrics.notifications_published.increment(1);
        let accepted = self.backbone.publish(notification.clone());
        (notification, accepted)
    }

    /// Resumes a wallet's session from its token (see [`Backbone::resume`]).
    ///
    /// # Errors
    /// The token is refused.
    pub fn resume(&self, client: u64, token: &str) -> Result<(), crate::resume::TokenError> {
        self.backbone.resume(client, token)
    }

    /// See [`Backbone::with_token`].
    pub fn with_token(
        &self,
        client: u64,
        withheld: &[String],
        send: &mut dyn FnMut(Option<&str>),
    ) -> bool {
        self.backbone.with_token(client, withheld, send)
    }

    pub fn origin(&self) -> &Arc<Origin> {
        &self.origin
    }
}
