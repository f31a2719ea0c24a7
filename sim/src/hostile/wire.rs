//! What the hostile host says, in the peer protocol (`docs/mesh-protocol.md`): its
//! handshake, notifications stamped with any origin, gossip records and sync messages.
//! Every notification it makes carries the mark `data.byzantine = <attack>`, so a wallet
//! that receives one is seen to have received a forgery.

use bytes::Bytes;
use serde_json::{Value, json};

/// The key of the mark in a forged notification's `data`.
pub const MARK: &str = "byzantine";

/// Unix seconds of the simulated wall clock.
pub fn unix_secs() -> u64 {
    turmoil::since_epoch().map_or(crate::rt::SIM_EPOCH_UNIX_SECS, |d| d.as_secs())
}

/// The handshake of a relay named `relay_id` advertising `address`.
pub fn handshake(relay_id: &str, address: &str) -> Value {
    json!({
        "type": "handshake",
        "client_id": relay_id,
        "version": sdk_relay::protocol::VERSION,
        "capabilities": ["relay"],
        "relay_id": relay_id,
        "address": address,
    })
}

/// A notification `message_id` stamped as published on `origin`, marked with `attack`.
pub fn notification(message_id: &str, origin: &str, attack: &str) -> Bytes {
    bytes(&json!({
        "type": "notification",
        "message_id": message_id,
        "relay_id": origin,
        "notification_type": "payment_detected",
        "data": {MARK: attack, "amount_sats": 100_000_000},
        "timestamp": unix_secs(),
    }))
}

/// A genuine notification frame with its `data` replaced by a marked one.
pub fn tampered(genuine: &[u8], attack: &str) -> Option<Bytes> {
    let mut message: Value = serde_json::from_slice(genuine).ok()?;
    message["data"] = json!({MARK: attack, "amount_sats": 100_000_000});
    Some(bytes(&message))
}

/// A gossip record.
pub fn record(relay_id: &str, address: &str, last_seen: u64) -> Value {
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

fn bytes(value: &Value) -> Bytes {
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
