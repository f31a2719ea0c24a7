//! Every message the relay reads or writes, and nothing else: the wallet protocol
//! (`inbound`, `outbound`), the peer protocol between relays (`peer`), and what the chain
//! watcher tells wallets (`chain`) and the wallets' `watch`/`unwatch` (`watch`). Pure
//! code, no I/O.
//!
//! Inbound messages are parsed in one pass into a flat envelope and then validated per
//! `type`; a notification's `data` stays raw JSON, so a 1 MiB payload is routed without
//! being parsed into a tree or re-serialized; its nesting depth is bounded by a linear
//! scan of its bytes (`depth`), so subscribers' parsers never meet what they cannot read.

pub mod chain;
mod depth;
mod inbound;
mod kinds;
mod outbound;
pub mod peer;
pub mod peer_metrics;
pub mod signed;
pub mod split;
pub mod watch;

pub use depth::{DATA_DEPTH_MAX, within_depth};
pub use inbound::{ClientMessage, Handshake, ParseError, Publish, parse_client_message};
pub use kinds::{InboundKind, LabelValue, OutboundKind};
pub use outbound::{
    HealthReport, Notification, encode_error, encode_handshake_accepted, encode_handshake_rejected,
    encode_health, encode_notification_ack, encode_pong, encode_reconnect, encode_resumed,
    encode_state_sync, encode_subscriptions, with_resume_token,
};

/// The relay's software version, reported in handshakes, health and sync.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest `notification_type`, `client_id` or subscription name accepted, in bytes.
pub const NAME_BYTES_MAX: usize = 128;
/// Most notification types one `subscribe` may name, and one client may hold.
pub const SUBSCRIPTIONS_MAX: usize = 64;
/// Characters of a `resume` token a relay reads at most (larger is refused unread); every
/// token a relay issues fits (64 subscriptions of 128 bytes, 64 streams of 8 ranges).
pub const RESUME_TOKEN_CHARS_MAX: usize = 24 * 1024;
/// The subscription that matches every notification type.
pub const SUBSCRIBE_ALL: &str = "*";
/// Names starting with this are private topics, never notification types: a wallet's
/// own chain events travel the mesh on its topic (`wallet:` and 32 hex digits, derived
/// from its keys), which only a connection that proved the wallet (`watch`, or a resume
/// token naming it) is subscribed to. `subscribe` and `publish` refuse such names.
pub const PRIVATE_TOPIC_PREFIX: &str = "wallet:";
/// Hex digits after the prefix of a wallet's topic.
pub const WALLET_TOPIC_HEX_DIGITS: usize = 32;

/// Whether `name` is reserved for private topics (see [`PRIVATE_TOPIC_PREFIX`]).
pub fn is_private_name(name: &str) -> bool {
    name.starts_with(PRIVATE_TOPIC_PREFIX)
}

/// Whether `topic` is a well-formed wallet topic: the prefix and 32 lowercase hex digits.
pub fn is_wallet_topic(topic: &str) -> bool {
    topic.strip_prefix(PRIVATE_TOPIC_PREFIX).is_some_and(|hex| {
        hex.len() == WALLET_TOPIC_HEX_DIGITS
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// What a client may do or receive, asked for in its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Receives the relay's `sync` messages.
    Sync,
    /// Receives notifications (starts subscribed to every type).
    Notifications,
    /// May publish notifications.
    Publish,
    /// The other side is a relay: a mesh link.
    Relay,
    /// Receives a `resume_token` with every notification and may `resume` a session.
    Resume,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Sync => "sync",
            Capability::Notifications => "notifications",
            Capability::Publish => "publish",
            Capability::Relay => "relay",
            Capability::Resume => "resume",
        }
    }

    pub fn parse(s: &str) -> Option<Capability> {
        match s {
            "sync" => Some(Capability::Sync),
            "notifications" => Some(Capability::Notifications),
            "publish" => Some(Capability::Publish),
            "relay" => Some(Capability::Relay),
            "resume" => Some(Capability::Resume),
            _ => None,
        }
    }
}

/// A set of capabilities, as a small bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u8);

impl Capabilities {
    pub fn contains(self, c: Capability) -> bool {
        self.0 & Self::bit(c) != 0
    }
    pub fn insert(&mut self, c: Capability) {
        self.0 |= Self::bit(c);
    }
    pub fn remove(&mut self, c: Capability) {
        self.0 &= !Self::bit(c);
    }
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        [
            Capability::Sync,
            Capability::Notifications,
            Capability::Publish,
            Capability::Relay,
            Capability::Resume,
        ]
        .into_iter()
        .filter(move |c| self.contains(*c))
    }
    fn bit(c: Capability) -> u8 {
        1 << (c as u8)
    }
}

/// Serializes one of our own messages; plain structs and JSON values cannot fail.
fn to_bytes<T: serde::Serialize>(value: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(value).expect("relay messages serialize"))
}

/// Machine-readable codes of `error` messages.
pub mod error_code {
    pub const MALFORMED_JSON: &str = "malformed_json";
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    pub const INVALID_MESSAGE: &str = "invalid_message";
    pub const FORBIDDEN: &str = "forbidden";
    pub const ALREADY_HANDSHAKEN: &str = "already_handshaken";
    /// The message was over the connection's message rate and was not processed.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The backbone (NATS) could not store the notification: it was not published.
    pub const BACKBONE_UNAVAILABLE: &str = "backbone_unavailable";
    /// A `resume` token that is forged, corrupted, or from an unknown relay.
    pub const INVALID_RESUME_TOKEN: &str = "invalid_resume_token";
}

#[cfg(test)]
mod tests;
