//! The kinds of messages, as metrics label them. The label sets are these enums, so a
//! new message type cannot be counted under the wrong label.

use super::ClientMessage;

/// A closed set of label values for one metric label.
pub trait LabelValue: Copy + PartialEq + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
}

macro_rules! label_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $label:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant,)* }

        impl LabelValue for $name {
            const ALL: &'static [Self] = &[$($name::$variant,)*];
            fn as_str(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }
        }
    };
}

label_enum!(
    /// What a client sent: a message type, or `invalid` for what could not be parsed.
    InboundKind {
        Handshake => "handshake",
        Ping => "ping",
        Subscribe => "subscribe",
        Unsubscribe => "unsubscribe",
        Notification => "notification",
        Watch => "watch",
        Unwatch => "unwatch",
        Resume => "resume",
        Invalid => "invalid",
    }
);

label_enum!(
    /// What the relay sent a client.
    OutboundKind {
        HandshakeResponse => "handshake_response",
        Pong => "pong",
        Notification => "notification",
        NotificationAck => "notification_ack",
        Health => "health",
        Sync => "sync",
        Error => "error",
        Subscriptions => "subscriptions",
        WatchResponse => "watch_response",
        Reconnect => "reconnect",
        UnwatchResponse => "unwatch_response",
        Resumed => "resumed",
    }
);

impl ClientMessage<'_> {
    pub fn kind(&self) -> InboundKind {
        match self {
            ClientMessage::Handshake(_) => InboundKind::Handshake,
            ClientMessage::Ping { .. } => InboundKind::Ping,
            ClientMessage::Subscribe(_) => InboundKind::Subscribe,
            ClientMessage::Unsubscribe(_) => InboundKind::Unsubscribe,
            ClientMessage::Publish(_) => InboundKind::Notification,
            ClientMessage::Watch => InboundKind::Watch,
            ClientMessage::Unwatch => InboundKind::Unwatch,
            ClientMessage::Resume(_) => InboundKind::Resume,
        }
    }
}
