//! A relay played by the test: it speaks the peer protocol of `docs/mesh-protocol.md`
//! (the challenge–response handshake, signed notifications and membership records) with
//! a key of its own, so tests can join a relay as an honest peer and then misbehave.

use std::net::SocketAddr;

use sdk_relay::identity::{Identity, PublicKey};
use sdk_relay::protocol::Notification;
use sdk_relay::protocol::peer::PeerHealth;
use sdk_relay::protocol::signed::{self, Proof, Role, SignedRecord, Transcript};
use serde_json::{Value, json};

use super::Client;

/// The key seed of a relay played or configured by a test, derived from its name (tests
/// need no secrecy).
pub fn seed_of(name: &str) -> [u8; 32] {
    let mut seed = [0x5a; 32];
    for (i, b) in name.bytes().enumerate() {
        seed[i % 32] ^= b.rotate_left(i as u32 / 32);
    }
    seed
}

/// The key of `seed_of(name)`.
pub fn identity_of(name: &str) -> Identity {
    Identity::from_seed(&seed_of(name))
}

/// Writes `seed_of(name)` as a key file (mode 0600) in `dir`, for a relay the test can
/// then sign for.
pub fn write_key_file(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.key"));
    let _ = std::fs::remove_file(&path);
    Identity::load_or_create(&path, || seed_of(name)).expect("key file written");
    path
}

/// How a fake relay presents itself.
pub struct Claim<'a> {
    pub relay_id: &'a str,
    pub address: &'a str,
    /// The key it proves (and names, unless `named_key` says otherwise).
    pub identity: &'a Identity,
    /// The key it names in its handshake, if not its own (it cannot prove it).
    pub named_key: Option<PublicKey>,
    pub token: Option<&'a str>,
}

impl<'a> Claim<'a> {
    pub fn honest(relay_id: &'a str, identity: &'a Identity) -> Claim<'a> {
        Claim {
            relay_id,
            address: "127.0.0.1:9",
            identity,
            named_key: None,
            token: None,
        }
    }
}

/// Dials `relay` and runs the dialer's side of the handshake. `Ok` with the link when
/// accepted; `Err` with the relay's last message (its rejection) or the close code.
pub async fn join(relay: SocketAddr, claim: &Claim<'_>) -> Result<Client, String> {
    let mut peer = Client::connect(relay).await.expect("upgrade accepted");
    let nonce = [0x3c; 32];
    let named = claim.named_key.unwrap_or(*claim.identity.public());
    peer.send_json(&json!({
        "type": "handshake", "client_id": claim.relay_id,
        "version": sdk_relay::protocol::VERSION, "capabilities": ["relay"],
        "relay_id": claim.relay_id, "address": claim.address,
        "public_key": named.to_hex(), "nonce": hex::encode(nonce),
    }))
    .await;
    let challenge = next(&mut peer).await?;
    if challenge["type"] != "handshake_challenge" {
        return Err(challenge.to_string());
    }
    let acceptor_key = PublicKey::parse(challenge["public_key"].as_str().unwrap()).unwrap();
    let acceptor_nonce = signed::parse_nonce(challenge["nonce"].as_str().unwrap()).unwrap();
    let transcript = Transcript {
        dialer_id: claim.relay_id,
        dialer_key: &named,
        dialer_nonce: &nonce,
        dialer_address: claim.address,
        acceptor_id: challenge["relay_id"].as_str().unwrap(),
        acceptor_key: &acceptor_key,
        acceptor_nonce: &acceptor_nonce,
        acceptor_address: challenge["address"].as_str().unwrap(),
    };
    let proof: Proof = transcript.prove(Role::Dialer, claim.identity, claim.token);
    peer.send_text(std::str::from_utf8(&signed::encode_proof(&proof)).unwrap())
        .await;
    let response = next(&mut peer).await?;
    if response["type"] == "handshake_response" && response["status"] == "accepted" {
        Ok(peer)
    } else {
        Err(response.to_string())
    }
}

async fn next(peer: &mut Client) -> Result<Value, String> {
    peer.recv()
        .await
        .map_err(|code| format!("closed with {code:?}"))
}

/// A notification from `relay_id`'s stream, signed with `identity`.
pub fn signed_notification(identity: &Identity, relay_id: &str, id: &str, data: Value) -> Value {
    let mut n = Notification {
        topic: String::new(),
        message_id: id.to_string(),
        relay_id: relay_id.to_string(),
        notification_type: "t".to_string(),
        data: serde_json::value::RawValue::from_string(data.to_string()).unwrap(),
        timestamp: 1,
        signature: String::new(),
    };
    signed::sign_notification(identity, &mut n);
    serde_json::from_slice(&n.encode()).unwrap()
}

/// A membership record of `relay_id` at `address`, signed by `identity`, at unix ms
/// `timestamp_ms`.
pub fn record(identity: &Identity, relay_id: &str, address: &str, timestamp_ms: u64) -> Value {
    let r = SignedRecord::sign(
        identity,
        relay_id,
        address,
        PeerHealth::Healthy,
        timestamp_ms,
    );
    serde_json::to_value(r).unwrap()
}

/// Unix milliseconds now (records carry wall-clock time).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A StateSync from `relay_id` carrying `records`.
pub fn state_sync_with_records(relay_id: &str, message_id: &str, records: Vec<Value>) -> Value {
    json!({
        "type": "sync", "sync_type": "StateSync", "relay_id": relay_id,
        "message_id": message_id, "payload": {"records": records}, "timestamp": 1,
    })
}
