//! Messages between relays, on the same WebSocket port clients use.
//!
//! After a handshake with capability `relay`, peers exchange `sync` requests (the
//! specification's shape) answered by `sync_response`, flooded `notification`s, and
//! `fetch` requests that anti-entropy uses to recover missed notifications.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::signed::RecordView;

use super::{DATA_DEPTH_MAX, NAME_BYTES_MAX, Notification, VERSION, to_bytes, within_depth};

/// Bytes of a relay id a peer names (handshake, gossip, notification stamp): as a
/// wallet's names are bounded.
pub const RELAY_ID_BYTES_MAX: usize = NAME_BYTES_MAX;
/// Bytes of an address a peer names: a DNS name (255) and `:port`.
pub const ADDRESS_BYTES_MAX: usize = 255 + 6;
/// Bytes of a message id (a notification's, a fetched one's, a sync request's):
/// `<relay_id>-<boot nonce>-<seq>` fits with room to spare.
pub const MESSAGE_ID_BYTES_MAX: usize = 256;
/// Bytes of a notification type, as wallets are bound.
pub const NOTIFICATION_TYPE_BYTES_MAX: usize = NAME_BYTES_MAX;
/// Bytes of each StateSync state field (uptime, version, network).
pub const STATE_FIELD_BYTES_MAX: usize = 64;

/// Whether a relay id a peer names is within bounds (non-empty, at most
/// `RELAY_ID_BYTES_MAX` bytes).
pub fn relay_id_fits(id: &str) -> bool {
    !id.is_empty() && id.len() <= RELAY_ID_BYTES_MAX
}

/// Whether an address a peer names is within `ADDRESS_BYTES_MAX` (empty is allowed: no
/// address).
pub fn address_fits(address: &str) -> bool {
    address.len() <= ADDRESS_BYTES_MAX
}

impl GossipRelay {
    /// Whether every name in the record is within its bound.
    pub fn fits(&self) -> bool {
        relay_id_fits(&self.relay_id) && address_fits(&self.address)
    }
}

impl StatePayload {
    /// Whether every field is within `STATE_FIELD_BYTES_MAX`.
    pub fn fits(&self) -> bool {
        [&self.uptime, &self.version, &self.network]
            .iter()
            .all(|f| f.len() <= STATE_FIELD_BYTES_MAX)
    }
}

/// Why a forwarded notification is dropped: a name over its bound.
///
/// # Errors
/// A message id empty or over `MESSAGE_ID_BYTES_MAX`, a relay id over
/// `RELAY_ID_BYTES_MAX`, a notification type over `NOTIFICATION_TYPE_BYTES_MAX` bytes
/// or reserved for private topics, a topic that is not a wallet topic.
pub fn notification_fits(n: &Notification) -> Result<(), &'static str> {
    if n.message_id.is_empty() || n.message_id.len() > MESSAGE_ID_BYTES_MAX {
        return Err("message id empty or too long");
    }
    if n.relay_id.len() > RELAY_ID_BYTES_MAX {
        return Err("relay id too long");
    }
    if n.notification_type.len() > NOTIFICATION_TYPE_BYTES_MAX {
        return Err("notification type too long");
    }
    if super::is_private_name(&n.notification_type) {
        return Err("notification type names a private topic");
    }
    if !n.topic.is_empty() && !super::is_wallet_topic(&n.topic) {
        return Err("topic is not a wallet topic");
    }
    Ok(())
}

/// The three kinds of sync relays exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum SyncType {
    StateSync,
    HealthSync,
    MetricsSync,
}

impl SyncType {
    pub const ALL: [SyncType; 3] = [
        SyncType::StateSync,
        SyncType::HealthSync,
        SyncType::MetricsSync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SyncType::StateSync => "StateSync",
            SyncType::HealthSync => "HealthSync",
            SyncType::MetricsSync => "MetricsSync",
        }
    }

    pub fn parse(s: &str) -> Option<SyncType> {
        SyncType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl super::LabelValue for SyncType {
    const ALL: &'static [Self] = &SyncType::ALL;
    fn as_str(self) -> &'static str {
        SyncType::as_str(self)
    }
}

/// How a relay looks from here: heard from recently, late, gone, or gone on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerHealth {
    Healthy,
    Degraded,
    Unreachable,
    /// It said it was leaving (lame duck, shutdown) and has not linked again since: a
    /// planned departure, not a fault. Local only: gossip never carries it.
    Left,
}

impl PeerHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerHealth::Healthy => "healthy",
            PeerHealth::Degraded => "degraded",
            PeerHealth::Unreachable => "unreachable",
            PeerHealth::Left => "left",
        }
    }
}

/// Seq ranges (inclusive) of one origin stream present in a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSummary {
    pub stream: String,
    pub ranges: Vec<(u64, u64)>,
}

/// A relay as gossiped in `StateSync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GossipRelay {
    pub relay_id: String,
    pub address: String,
    pub last_seen: u64,
    pub health: PeerHealth,
}

/// The relay's state as StateSync carries it (`uptime` a string, as the specification shows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatePayload {
    pub uptime: String,
    pub version: String,
    pub network: String,
}

/// The `payload` of a sync request or response; which parts are present depends on the
/// sync type.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StatePayload>,
    /// The sender's advertised address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The specification's informational list of known relays (unsigned: relays do not
    /// learn membership from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relays: Option<Vec<GossipRelay>>,
    /// Membership records, each signed by its subject: what relays learn membership
    /// and addresses to dial from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<super::signed::SignedRecord>>,
    /// Summary of the sender's notification log, for anti-entropy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<StreamSummary>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<serde_json::Value>,
}

/// A sync payload as a peer sent it, read in one pass over the frame and borrowing from
/// it: the parts a relay takes in (state, address, signed records, log summary,
/// metrics). Every StateSync carries the sender's whole gossip, the same from one interval
/// to the next: records are read as [`RecordView`]s (no allocation per record), and the
/// unsigned `relays` list, which relays never believe, is skipped whatever its shape (the
/// frame must still be valid JSON). `health` is not read: nothing takes it in from a
/// peer.
#[derive(Debug, Default, Deserialize)]
pub struct PeerPayload<'a> {
    #[serde(default)]
    pub state: Option<StatePayload>,
    #[serde(default)]
    pub address: Option<String>,
    /// The unsigned `relays` list, skipped: relays never believe it.
    #[serde(default)]
    pub relays: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    pub records: Option<Vec<RecordView<'a>>>,
    #[serde(default)]
    pub log: Option<Vec<StreamSummary>>,
    /// MetricsSync's figures, read straight into their fields, leniently.
    #[serde(default, borrow)]
    pub metrics: Option<super::peer_metrics::PeerMetrics<'a>>,
}

/// Every field a peer message may carry; `type` says which matter.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    sync_type: Option<String>,
    #[serde(default)]
    relay_id: Option<String>,
    #[serde(default, borrow)]
    payload: Option<PeerPayload<'a>>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    notification_type: Option<String>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    message_ids: Option<Vec<String>>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    topic: Option<String>,
}

/// A message from a peer; a sync's payload borrows from the frame it was read from.
#[derive(Debug)]
pub enum PeerMessage<'a> {
    Sync {
        sync_type: SyncType,
        relay_id: String,
        message_id: String,
        payload: PeerPayload<'a>,
    },
    SyncResponse {
        sync_type: SyncType,
        relay_id: String,
        request_id: String,
        payload: PeerPayload<'a>,
    },
    Notification(Notification),
    Fetch(Vec<String>),
    /// The peer is going away on purpose (lame duck, shutdown): mark it `left`, not
    /// unreachable, and count nothing that follows as an error.
    Leaving,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("malformed peer message: {0}")]
    Malformed(String),
    #[error("peer message `{0}` lacks `{1}`")]
    Missing(String, &'static str),
    #[error("unknown peer message type `{0}`")]
    UnknownType(String),
    /// A forwarded notification whose `data` nests deeper than wallets may publish: a
    /// peer (a different version, or a faulty one) may not pass on what this relay would
    /// have refused from a wallet.
    #[error(
        "peer notification `{0}`: `data` nests deeper than the limit of {DATA_DEPTH_MAX} levels"
    )]
    TooDeep(String),
}

/// Parses one text frame from a peer.
///
/// # Errors
/// Malformed JSON, an unknown type, or missing fields.
pub fn parse(text: &[u8]) -> Result<PeerMessage<'_>, WireError> {
    let e: Envelope =
        serde_json::from_slice(text).map_err(|e| WireError::Malformed(e.to_string()))?;
    let kind = e.kind.clone();
    let need = |v: Option<String>, field| v.ok_or_else(|| WireError::Missing(kind.clone(), field));
    match e.kind.as_str() {
        "sync" | "sync_response" => {
            let sync_type = need(e.sync_type, "sync_type")?;
            let sync_type = SyncType::parse(&sync_type)
                .ok_or_else(|| WireError::Missing(kind.clone(), "sync_type"))?;
            let relay_id = need(e.relay_id, "relay_id")?;
            let payload = e.payload.unwrap_or_default();
            if e.kind == "sync" {
                Ok(PeerMessage::Sync {
                    sync_type,
                    relay_id,
                    message_id: need(e.message_id, "message_id")?,
                    payload,
                })
            } else {
                let request_id = need(e.request_id, "request_id")?;
                Ok(PeerMessage::SyncResponse {
                    sync_type,
                    relay_id,
                    request_id,
                    payload,
                })
            }
        }
        "notification" => {
            let message_id = need(e.message_id, "message_id")?;
            let data = e
                .data
                .ok_or_else(|| WireError::Missing(kind.clone(), "data"))?;
            if !within_depth(data.get().as_bytes(), DATA_DEPTH_MAX) {
                return Err(WireError::TooDeep(message_id.chars().take(64).collect()));
            }
            Ok(PeerMessage::Notification(Notification {
                message_id,
                relay_id: need(e.relay_id, "relay_id")?,
                notification_type: need(e.notification_type, "notification_type")?,
                data,
                timestamp: e.timestamp.unwrap_or_default(),
                topic: e.topic.unwrap_or_default(),
                signature: e.signature.unwrap_or_default(),
            }))
        }
        "fetch" => Ok(PeerMessage::Fetch(e.message_ids.unwrap_or_default())),
        "leaving" => Ok(PeerMessage::Leaving),
        other => Err(WireError::UnknownType(other.chars().take(64).collect())),
    }
}

/// A sync request or response as it goes on the wire, serialized straight from the
/// payload's types (no intermediate `serde_json::Value` tree: a StateSync carries every
/// member's record, and each relay sends two per peer and interval).
#[derive(Serialize)]
struct SyncFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sync_type: &'static str,
    relay_id: &'a str,
    payload: &'a RawValue,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

/// A sync payload encoded once, to be sent in many frames (every peer's request, and
/// answers within a moment of each other, carry the same).
pub type EncodedPayload = std::sync::Arc<Box<RawValue>>;

/// A sync frame's bytes, written into a buffer sized for its payload at once (a StateSync
/// request is tens of kilobytes, sent to every peer: grown from empty, the buffer would be
/// reallocated and copied a dozen times per frame).
fn frame_bytes(frame: &SyncFrame<'_>) -> Bytes {
    let envelope = 128 + frame.relay_id.len();
    let ids = frame.message_id.map_or(0, str::len) + frame.request_id.map_or(0, str::len);
    let mut out = Vec::with_capacity(frame.payload.get().len() + envelope + 2 * ids);
    serde_json::to_writer(&mut out, frame).expect("relay messages serialize");
    Bytes::from(out)
}

pub fn encode_payload(payload: &SyncPayload) -> EncodedPayload {
    // Serializing plain data to JSON cannot fail; `{}` is never reached.
    let raw = serde_json::value::to_raw_value(payload)
        .unwrap_or_else(|_| RawValue::from_string("{}".into()).expect("valid JSON"));
    std::sync::Arc::new(raw)
}

pub fn encode_sync(
    sync_type: SyncType,
    relay_id: &str,
    message_id: &str,
    payload: &RawValue,
    timestamp: u64,
) -> Bytes {
    frame_bytes(&SyncFrame {
        kind: "sync",
        sync_type: sync_type.as_str(),
        relay_id,
        payload,
        timestamp,
        message_id: Some(message_id),
        request_id: None,
    })
}

pub fn encode_sync_response(
    sync_type: SyncType,
    relay_id: &str,
    request_id: &str,
    payload: &RawValue,
    timestamp: u64,
) -> Bytes {
    frame_bytes(&SyncFrame {
        kind: "sync_response",
        sync_type: sync_type.as_str(),
        relay_id,
        payload,
        timestamp,
        message_id: None,
        request_id: Some(request_id),
    })
}

/// Tells a peer this relay is leaving on purpose (lame duck, shutdown); the link then
/// closes with 1001.
pub fn encode_leaving(relay_id: &str, reason: &str, timestamp: u64) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "leaving",
        "relay_id": relay_id,
        "reason": reason,
        "timestamp": timestamp,
    }))
}

pub fn encode_fetch(ids: &[String]) -> Bytes {
    to_bytes(&serde_json::json!({ "type": "fetch", "message_ids": ids }))
}

/// The handshake a relay sends when it dials a peer (step 1 of `docs/mesh-protocol.md`):
/// its id, address, the key it will prove, and a fresh nonce (both 64 hex digits). No
/// token: the mesh token is proven by a MAC in `handshake_proof`, never sent.
pub fn encode_peer_handshake(
    relay_id: &str,
    address: &str,
    public_key: &str,
    nonce: &str,
) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "handshake",
        "client_id": relay_id,
        "version": VERSION,
        "capabilities": ["relay"],
        "relay_id": relay_id,
        "address": address,
        "public_key": public_key,
        "nonce": nonce,
    }))
}

/// The acceptor's answer to a peer handshake.
#[derive(Debug, Deserialize)]
pub struct PeerHandshakeResponse {
    pub status: String,
    pub relay_id: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// The acceptor's advertised address: what this relay gossips about it.
    #[serde(default)]
    pub address: Option<String>,
}

pub fn encode_peer_accepted(relay_id: &str, address: &str, timestamp: u64) -> Bytes {
    to_bytes(&serde_json::json!({
        "type": "handshake_response",
        "status": "accepted",
        "relay_id": relay_id,
        "version": VERSION,
        "capabilities": ["relay"],
        "address": address,
        "timestamp": timestamp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_round_trips() {
        let payload = SyncPayload {
            state: Some(StatePayload {
                uptime: "5".into(),
                version: "1".into(),
                network: "signet".into(),
            }),
            relays: Some(vec![GossipRelay {
                relay_id: "b".into(),
                address: "h:1".into(),
                last_seen: 9,
                health: PeerHealth::Degraded,
            }]),
            ..SyncPayload::default()
        };
        let bytes = encode_sync(
            SyncType::StateSync,
            "a",
            "a-1-s1",
            &encode_payload(&payload),
            3,
        );
        let PeerMessage::Sync {
            sync_type,
            relay_id,
            message_id,
            payload,
        } = parse(&bytes).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (sync_type, relay_id.as_str(), message_id.as_str()),
            (SyncType::StateSync, "a", "a-1-s1")
        );
        assert!(payload.relays.is_some(), "skipped, not kept");
        assert_eq!(payload.state.expect("state is read").network, "signet");
    }

    #[test]
    fn a_sync_response_names_its_request_and_carries_its_records() {
        let identity = crate::identity::Identity::from_seed(&[7; 32]);
        let record = super::super::signed::SignedRecord::sign(
            &identity,
            "a",
            "h:1",
            PeerHealth::Healthy,
            42,
        );
        let payload = SyncPayload {
            records: Some(vec![record.clone()]),
            log: Some(vec![StreamSummary {
                stream: "a-1".into(),
                ranges: vec![(1, 3)],
            }]),
            ..SyncPayload::default()
        };
        let bytes = encode_sync_response(
            SyncType::StateSync,
            "a",
            "b-1-s9",
            &encode_payload(&payload),
            3,
        );
        let wire: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(wire["type"], "sync_response");
        assert!(wire.get("message_id").is_none(), "{wire}");
        let PeerMessage::SyncResponse {
            sync_type,
            request_id,
            payload,
            ..
        } = parse(&bytes).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (sync_type, request_id.as_str()),
            (SyncType::StateSync, "b-1-s9")
        );
        let back = payload.records.unwrap();
        assert_eq!(back[0].signature, record.signature);
        assert!(back[0].is(&record), "the record survives the wire");
        assert!(
            back[0].verify(None, None).is_ok(),
            "and still verifies after it"
        );
        assert_eq!(payload.log.unwrap()[0].ranges, [(1, 3)]);
    }

    /// The unsigned `relays` list is skipped whatever its shape (nothing reads it); the
    /// rest of the payload is still read, and a frame that is not JSON is still refused.
    #[test]
    fn the_relay_list_is_skipped_not_read() {
        let frame = |relays: &str| {
            format!(
                r#"{{"type":"sync","sync_type":"StateSync","relay_id":"a","message_id":"m","payload":{{"relays":{relays},"address":"a:1"}}}}"#
            )
        };
        for relays in [
            r#"[{"relay_id":"b","address":"h:1","last_seen":1,"health":"healthy"}]"#,
            r#"[{"relay_id":7,"health":"great"}]"#,
            r#"{"relay_id":"b"}"#,
        ] {
            let text = frame(relays);
            let Ok(PeerMessage::Sync { payload, .. }) = parse(text.as_bytes()) else {
                panic!("{relays}")
            };
            assert!(payload.relays.is_some());
            assert_eq!(payload.address.as_deref(), Some("a:1"));
        }
        assert!(matches!(
            parse(frame(r#"[{"relay_id":"b",]"#).as_bytes()),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn forwarded_notifications_keep_their_stamp() {
        let n = Notification {
            topic: String::new(),
            message_id: "a-1-7".into(),
            relay_id: "a".into(),
            notification_type: "t".into(),
            data: RawValue::from_string(r#"{"x":1}"#.into()).unwrap(),
            timestamp: 11,
            signature: "ab".repeat(64),
        };
        let PeerMessage::Notification(back) = parse(&n.encode()).unwrap() else {
            panic!()
        };
        assert_eq!(
            (back.message_id.as_str(), back.timestamp, back.data.get()),
            ("a-1-7", 11, r#"{"x":1}"#)
        );
        assert_eq!(back.signature, n.signature);
    }

    #[test]
    fn a_forwarded_notification_nested_too_deep_is_refused() {
        let notification = |levels: usize| {
            let data = format!("{}{}", "[".repeat(levels), "]".repeat(levels));
            Notification {
                topic: String::new(),
                message_id: "a-1-8".into(),
                relay_id: "a".into(),
                notification_type: "t".into(),
                data: RawValue::from_string(data).unwrap(),
                timestamp: 12,
                signature: String::new(),
            }
            .encode()
        };
        assert!(matches!(
            parse(&notification(DATA_DEPTH_MAX)),
            Ok(PeerMessage::Notification(_))
        ));
        assert!(matches!(
            parse(&notification(DATA_DEPTH_MAX + 1)),
            Err(WireError::TooDeep(id)) if id == "a-1-8"
        ));
        // Far deeper than serde_json's own limit: refused, no recursion, on a small stack.
        let deep = notification(200_000);
        let refused = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || matches!(parse(&deep), Err(WireError::TooDeep(_))))
            .unwrap()
            .join()
            .unwrap();
        assert!(refused);
    }

    #[test]
    fn names_a_peer_sends_are_bounded() {
        let record = |id: usize, address: usize| GossipRelay {
            relay_id: "i".repeat(id),
            address: "a".repeat(address),
            last_seen: 0,
            health: PeerHealth::Healthy,
        };
        assert!(record(RELAY_ID_BYTES_MAX, ADDRESS_BYTES_MAX).fits());
        assert!(!record(RELAY_ID_BYTES_MAX + 1, 1).fits());
        assert!(!record(0, 1).fits());
        assert!(!record(1, ADDRESS_BYTES_MAX + 1).fits());
        let mut n = Notification {
            topic: String::new(),
            message_id: "m".repeat(MESSAGE_ID_BYTES_MAX),
            relay_id: "a".into(),
            notification_type: "t".repeat(NOTIFICATION_TYPE_BYTES_MAX),
            data: RawValue::from_string("1".into()).unwrap(),
            timestamp: 0,
            signature: String::new(),
        };
        assert!(notification_fits(&n).is_ok());
        n.message_id.push('m');
        assert!(notification_fits(&n).is_err());
        let state = StatePayload {
            uptime: "1".into(),
            version: "v".repeat(STATE_FIELD_BYTES_MAX + 1),
            network: "signet".into(),
        };
        assert!(!state.fits());
    }

    #[test]
    fn leaving_round_trips() {
        let frame = encode_leaving("a", "lame_duck", 5);
        assert!(matches!(parse(&frame), Ok(PeerMessage::Leaving)));
        assert_eq!(PeerHealth::Left.as_str(), "left");
    }

    #[test]
    fn bad_peer_messages_are_errors() {
        assert!(matches!(parse(b"{"), Err(WireError::Malformed(_))));
        assert!(matches!(
            parse(br#"{"type":"sync"}"#),
            Err(WireError::Missing(..))
        ));
        assert!(matches!(
            parse(br#"{"type":"x"}"#),
            Err(WireError::UnknownType(_))
        ));
    }
}
