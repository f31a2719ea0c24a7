//! What the hostile host says, in the peer protocol (`docs/mesh-protocol.md`): its
//! signed handshake, notifications stamped with any origin and signed by any key (or
//! none), membership records, sync messages. Every notification it makes carries the
//! mark `data.byzantine = <attack>`, so a wallet that receives one is seen to have
//! received a forgery.

use bytes::Bytes;
use sdk_relay::identity::{Identity, PublicKey};
use sdk_relay::protocol::Notification;
use sdk_relay::protocol::peer::PeerHealth;
use sdk_relay::protocol::signed::{self, SignedRecord};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// The key of the mark in a forged notification's `data`.
pub const MARK: &str = "byzantine";

/// Unix seconds of the simulated wall clock.
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

pub fn unix_ms() -> u64 {
    turmoil::since_epoch().map_or(crate::rt::SIM_EPOCH_UNIX_SECS * 1000, |d| {
        d.as_millis() as u64
    })
}

/// Step 1 of the handshake: a relay named `relay_id` with `key`, advertising `address`.
pub fn handshake(relay_id: &str, address: &str, key: &PublicKey, nonce: &[u8; 32]) -> Value {
    json!({
        "type": "handshake",
        "client_id": relay_id,
        "version": sdk_relay::protocol::VERSION,
        "capabilities": ["relay"],
        "relay_id": relay_id,
        "address": address,
        "public_key": key.to_hex(),
        "nonce": hex(nonce),
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a forged notification is signed.
#[derive(Debug, Clone, Copy)]
pub enum Signing<'a> {
    /// No signature at all.
    Unsigned,
    /// 128 hex digits that are no one's signature.
    Garbage,
    /// A real signature, by a key that is not the origin's.
    By(&'a Identity),
}

/// A notification `message_id` stamped as published on `origin`, marked with `attack`.
pub fn notification(message_id: &str, origin: &str, attack: &str, signing: Signing) -> Bytes {
    let data = json!({MARK: attack, "amount_sats": 100_000_000}).to_string();
    let mut n = Notification {
        topic: String::new(),
        message_id: message_id.to_string(),
        relay_id: origin.to_string(),
        notification_type: "payment_detected".into(),
        data: RawValue::from_string(data).expect("JSON"),
        timestamp: unix_secs(),
        signature: String::new(),
    };
    match signing {
        Signing::Unsigned => {}
        Signing::Garbage => n.signature = "ab".repeat(64),
        Signing::By(identity) => signed::sign_notification(identity, &mut n),
    }
    n.encode()
}

/// A genuine notification frame with its `data` replaced by a marked one (its signature
/// kept).
pub fn tampered(genuine: &[u8], attack: &str) -> Option<Bytes> {
    let mut message: Value = serde_json::from_slice(genuine).ok()?;
    message["data"] = json!({MARK: attack, "amount_sats": 100_000_000});
    Some(bytes(&message))
}

/// A membership record of `relay_id` at `address`, signed by `signer`, as of
/// `timestamp_ms`.
pub fn record(signer: &Identity, relay_id: &str, address: &str, timestamp_ms: u64) -> Value {
    let record = SignedRecord::sign(signer, relay_id, address, PeerHealth::Healthy, timestamp_ms);
    serde_json::to_value(record).expect("records serialize")
}

/// An entry of the informational (unsigned) `relays` list.
pub fn listed(relay_id: &str, address: &str, last_seen: u64) -> Value {
    json!({
        "relay_id": relay_id,
        "address": address,
        "last_seen": last_seen,
        "health": "healthy",
    })
}

/// A `sync` request of `sync_type` from `relay_id` with `payload`.
pub fn sync(sync_type: &str, relay_id: &str, message_id: &str, payload: &Value) -> Bytes {
    bytes(&json!({
        "type": "sync",
        "sync_type": sync_type,
        "relay_id": relay_id,
        "payload": payload,
        "timestamp": unix_secs(),
        "message_id": message_id,
    }))
}

/// The answer to a relay's `sync` request `request_id`.
pub fn sync_response(sync_type: &str, relay_id: &str, request_id: &str, payload: &Value) -> Bytes {
    bytes(&json!({
        "type": "sync_response",
        "sync_type": sync_type,
        "relay_id": relay_id,
        "payload": payload,
        "timestamp": unix_secs(),
        "request_id": request_id,
    }))
}

pub fn fetch(ids: &[String]) -> Bytes {
    bytes(&json!({"type": "fetch", "message_ids": ids}))
}

pub fn bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// `<stream>-<seq>` split into the stream (`<relay_id>-<nonce>`) and the seq.
pub fn split_id(message_id: &str) -> Option<(&str, u64)> {
    let (stream, seq) = message_id.rsplit_once('-')?;
    Some((stream, seq.parse().ok()?))
}

/// The relay id a stream (`<relay_id>-<nonce>`) belongs to.
pub fn stream_origin(stream: &str) -> &str {
    stream.rsplit_once('-').map_or(stream, |(origin, _)| origin)
}
