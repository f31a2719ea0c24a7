use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Capabilities, VERSION, to_bytes};

/// A notification as it travels the mesh: stamped once by the relay where it was
/// published, and never changed after.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Notification {
    /// Unique in the mesh: the origin relay's id, its boot nonce, and a sequence number.
    pub message_id: String,
    /// The relay where it was published.
    pub relay_id: String,
    pub notification_type: String,
    pub data: Box<RawValue>,
    /// Unix seconds at publication.
    pub timestamp: u64,
    /// Empty for a public notification (delivered by type); else the private topic it is
    /// for (`protocol::is_wallet_topic`): delivered only to connections subscribed to
    /// that topic, never by type nor to `*`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub topic: String,
    /// The origin relay's Ed25519 signature (128 hex digits) of every field above
    /// (`protocol::signed::notification_input`); empty until signed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub signature: String,
}

#[cfg(test)]
impl Notification {
    /// An unsigned notification with `{}` as data and timestamp 0, for tests that route,
    /// log or deliver one (`topic` empty for a public one).
    pub fn for_test(relay_id: &str, message_id: &str, kind: &str, topic: &str) -> Notification {
        Notification {
            message_id: message_id.into(),
            relay_id: relay_id.into(),
            notification_type: kind.into(),
            topic: topic.into(),
            data: serde_json::value::RawValue::from_string("{}".into()).expect("valid JSON"),
            timestamp: 0,
            signature: String::new(),
        }
    }
}

impl Notification {
    /// The frame clients receive, serialized once and shared by every delivery.
    pub fn encode(&self) -> Bytes {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            notification_type: &'a str,
            data: &'a RawValue,
            timestamp: u64,
            message_id: &'a str,
            relay_id: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            topic: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            signature: &'a str,
        }
        to_bytes(&Wire {
            kind: "notification",
            notification_type: &self.notification_type,
            data: &self.data,
            timestamp: self.timestamp,
            message_id: &self.message_id,
            relay_id: &self.relay_id,
            topic: &self.topic,
            signature: &self.signature,
        })
    }

    /// Whether a wallet with `subscriptions` receives this notification (`all`: they
    /// include `*`): a private one by its topic only, a public one by its type (or `*`),
    /// never by a name reserved for private topics. The one rule for live delivery's
    /// replays, whatever the backbone.
    pub fn is_for(&self, subscriptions: &[String], all: bool) -> bool {
        if !self.topic.is_empty() {
            return subscriptions.contains(&self.topic);
        }
        if super::is_private_name(&self.notification_type) {
            return false;
        }
        all || subscriptions.contains(&self.notification_type)
    }
}

fn capability_names(capabilities: Capabilities) -> Vec<&'static str> {
    capabilities.iter().map(|c| c.as_str()).collect()
}

#[derive(Serialize)]
struct HandshakeResponse<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    relay_id: &'a str,
    version: &'static str,
    capabilities: Vec<&'static str>,
    heartbeat_interval: u64,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

pub fn encode_handshake_accepted(
    relay_id: &str,
    granted: Capabilities,
    heartbeat_interval_secs: u64,
    timestamp: u64,
) -> Bytes {
    to_bytes(&HandshakeResponse {
        kind: "handshake_response",
        status: "accepted",
        relay_id,
        version: VERSION,
        capabilities: capability_names(granted),
        heartbeat_interval: heartbeat_interval_secs,
        timestamp,
        reason: None,
    })
}

pub fn encode_handshake_rejected(
    relay_id: &str,
    reason: &str,
    heartbeat_interval_secs: u64,
    timestamp: u64,
) -> Bytes {
    to_bytes(&HandshakeResponse {
        kind: "handshake_response",
        status: "rejected",
        relay_id,
        version: VERSION,
        capabilities: Vec::new(),
        heartbeat_interval: heartbeat_interval_secs,
        timestamp,
        reason: Some(reason),
    })
}

/// `{"type":"pong","id":…,"timestamp":…}`, the `id` echoed as it came (omitted when
/// absent). Written by hand to its exact length: one allocation per pong, and an `id` of a
/// megabyte is copied once (serializing into a growing buffer copied it again at every
/// doubling). `tests::pongs_are_what_serde_json_writes` holds it to serde_json's output.
pub fn encode_pong(id: Option<&str>, timestamp: u64) -> Bytes {
    const HEAD: &[u8] = br#"{"type":"pong","#;
    const ID: &[u8] = br#""id":"#;
    const TIMESTAMP: &[u8] = br#""timestamp":"#;
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(timestamp).as_bytes();
    let id_len = id.map_or(0, |id| ID.len() + id.len() + 1);
    let mut out = Vec::with_capacity(HEAD.len() + id_len + TIMESTAMP.len() + digits.len() + 1);
    out.extend_from_slice(HEAD);
    if let Some(id) = id {
        out.extend_from_slice(ID);
        out.extend_from_slice(id.as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(TIMESTAMP);
    out.extend_from_slice(digits);
    out.push(b'}');
    // Exactly full: `Bytes` takes the vector without allocating a shared handle.
    debug_assert_eq!(out.len(), out.capacity());
    Bytes::from(out)
}

pub fn encode_error(code: &str, message: &str) -> Bytes {
    #[derive(Serialize)]
    struct ErrorMessage<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: &'a str,
        message: &'a str,
    }
    to_bytes(&ErrorMessage {
        kind: "error",
        code,
        message,
    })
}

/// The client's subscriptions after a `subscribe` or `unsubscribe`.
pub fn encode_subscriptions<'a>(types: impl IntoIterator<Item = &'a str>) -> Bytes {
    #[derive(Serialize)]
    struct Subscriptions<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        notification_types: Vec<&'a str>,
    }
    to_bytes(&Subscriptions {
        kind: "subscriptions",
        notification_types: types.into_iter().collect(),
    })
}

/// Tells a publisher the id its notification was given.
pub fn encode_notification_ack(message_id: &str, timestamp: u64) -> Bytes {
    #[derive(Serialize)]
    struct Ack<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        message_id: &'a str,
        timestamp: u64,
    }
    to_bytes(&Ack {
        kind: "notification_ack",
        message_id,
        timestamp,
    })
}

/// A notification frame (as `Notification::encode` made it) with a `resume_token` field
/// added; the token is base64url, so it needs no escaping.
pub fn with_resume_token(frame: &[u8], token: &str) -> Bytes {
    let body = frame.strip_suffix(b"}").unwrap_or(frame);
    let mut out = Vec::with_capacity(body.len() + token.len() + 20);
    out.extend_from_slice(body);
    out.extend_from_slice(b",\"resume_token\":\"");
    out.extend_from_slice(token.as_bytes());
    out.extend_from_slice(b"\"}");
    Bytes::from(out)
}

/// Ends a resume: how many missed notifications were replayed and whether the wallet has
/// everything it missed (`recovered: false` with a `reason` when part of the gap is gone).
pub fn encode_resumed(recovered: bool, replayed: u64, reason: Option<&str>) -> Bytes {
    #[derive(Serialize)]
    struct Resumed<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        recovered: bool,
        replayed: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    }
    to_bytes(&Resumed {
        kind: "resumed",
        recovered,
        replayed,
        reason,
    })
}

/// Tells a wallet the relay is going away (lame duck or shutdown) and where to go: the
/// public WebSocket URLs of the other healthy relays, then the relay closes it with 1001.
/// `resume_token` is a fresh token for wallets that handshook with capability `resume`
/// (`null` for the others); `reason` is `lame_duck` or `shutdown`.
pub fn encode_reconnect(
    relays: &[String],
    reason: &str,
    resume_token: Option<&str>,
    timestamp: u64,
) -> Bytes {
    #[derive(Serialize)]
    struct Reconnect<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        reason: &'a str,
        relays: &'a [String],
        resume_token: Option<&'a str>,
        timestamp: u64,
    }
    to_bytes(&Reconnect {
        kind: "reconnect",
        reason,
        relays,
        resume_token,
        timestamp,
    })
}

/// The figures a `health` message reports, in the specification's units.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub status: &'static str,
    pub uptime: u64,
    /// Resident memory, e.g. `"128MB"`.
    pub memory_usage: String,
    /// CPU use over the last window, e.g. `"5%"`.
    pub cpu_usage: String,
    pub connections: usize,
}

pub fn encode_health(report: &HealthReport, timestamp: u64) -> Bytes {
    #[derive(Serialize)]
    struct Metrics<'a> {
        uptime: u64,
        memory_usage: &'a str,
        cpu_usage: &'a str,
        connections: usize,
    }
    #[derive(Serialize)]
    struct Health<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        status: &'a str,
        metrics: Metrics<'a>,
        timestamp: u64,
    }
    to_bytes(&Health {
        kind: "health",
        status: report.status,
        metrics: Metrics {
            uptime: report.uptime,
            memory_usage: &report.memory_usage,
            cpu_usage: &report.cpu_usage,
            connections: report.connections,
        },
        timestamp,
    })
}

/// The relay's own `StateSync`, as sent to clients that asked for `sync`.
pub fn encode_state_sync(
    relay_id: &str,
    network: &str,
    uptime_secs: u64,
    message_id: &str,
    timestamp: u64,
) -> Bytes {
    let message = serde_json::json!({
        "type": "sync",
        "sync_type": "StateSync",
        "relay_id": relay_id,
        "payload": { "state": {
            "uptime": uptime_secs.to_string(),
            "version": VERSION,
            "network": network,
        }},
        "timestamp": timestamp,
        "message_id": message_id,
    });
    to_bytes(&message)
}
