//! What relays sign, and the exact bytes each signature covers (`docs/mesh-protocol.md`
//! documents the same layouts, with test vectors this module's tests check).
//!
//! Every signature input starts with a domain label and a zero byte, so a signature made
//! for one purpose is never valid for another; variable fields are length-prefixed, so no
//! two different messages share an input.

use std::borrow::Cow;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::peer::{ADDRESS_BYTES_MAX, PeerHealth, address_fits, relay_id_fits};
use super::{Notification, to_bytes};
use crate::identity::{Identity, MAC_BYTES, PublicKey, Signature, VerifiedMemo};

/// Domain label of a notification's signature input.
pub const NOTIFICATION_DOMAIN: &[u8] = b"sdk_relay/mesh/notification/v1";
/// Domain label of a membership record's signature input.
pub const RECORD_DOMAIN: &[u8] = b"sdk_relay/mesh/record/v1";
/// Domain label of the handshake transcript.
pub const HANDSHAKE_DOMAIN: &[u8] = b"sdk_relay/mesh/handshake/v1";
/// Bytes of a handshake nonce.
pub const NONCE_BYTES: usize = 32;

/// Appends a field: its length as big-endian u16, then its bytes. Every field signed is
/// bounded far below 64 KiB (ids, types, addresses), except `data`, which uses
/// [`put_long`].
fn put_short(out: &mut Vec<u8>, field: &[u8]) {
    let len = u16::try_from(field.len()).expect("signed short fields are bounded below 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

fn put_long(out: &mut Vec<u8>, field: &[u8]) {
    let len = u32::try_from(field.len()).expect("notification data is bounded below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

fn start(domain: &[u8], capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 1 + capacity);
    out.extend_from_slice(domain);
    out.push(0);
    out
}

/// The bytes a notification's origin signs: domain, message id, origin relay id,
/// notification type, timestamp (u64 big-endian), and the exact bytes of `data`.
pub fn notification_input(n: &Notification) -> Vec<u8> {
    let mut out = start(
        NOTIFICATION_DOMAIN,
        n.message_id.len() + n.relay_id.len() + n.notification_type.len() + n.data.get().len() + 20,
    );
    put_short(&mut out, n.message_id.as_bytes());
    put_short(&mut out, n.relay_id.as_bytes());
    put_short(&mut out, n.notification_type.as_bytes());
    out.extend_from_slice(&n.timestamp.to_be_bytes());
    put_long(&mut out, n.data.get().as_bytes());
    // A private notification's topic is signed too, so no relay can send it to another
    // wallet or make it public; appended only when present (public ones sign as before).
    if !n.topic.is_empty() {
        put_short(&mut out, n.topic.as_bytes());
    }
    out
}

/// Signs a notification in place (its `signature` field).
pub fn sign_notification(identity: &Identity, n: &mut Notification) {
    n.signature = identity.sign(&notification_input(n)).to_hex();
}

/// Why a notification is not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationFault {
    /// The message id is not `<relay_id>-<boot nonce>-<seq>` of its own `relay_id`: a
    /// relay may only sign ids of its own stream.
    ForeignId,
    /// No signature, or not one made with the origin's key.
    BadSignature,
}

/// Checks that `n`'s message id belongs to its origin and that `key` (the origin's
/// bound key) signed it.
///
/// # Errors
/// What is wrong with it.
pub fn verify_notification(n: &Notification, key: &PublicKey) -> Result<(), NotificationFault> {
    verify_notification_with(n, key, None)
}

/// [`verify_notification`], through `memo` (signatures already known to verify, shared
/// by the relays of one process: `Trust::share_verified`) when given.
///
/// # Errors
/// What is wrong with it.
pub fn verify_notification_with(
    n: &Notification,
    key: &PublicKey,
    memo: Option<&VerifiedMemo>,
) -> Result<(), NotificationFault> {
    if message_id_origin(&n.message_id) != Some(n.relay_id.as_str()) {
        return Err(NotificationFault::ForeignId);
    }
    let signature = Signature::parse(&n.signature).map_err(|_| NotificationFault::BadSignature)?;
    if key.verifies_through(memo, &notification_input(n), &signature) {
        Ok(())
    } else {
        Err(NotificationFault::BadSignature)
    }
}

/// The relay id a notification id names: `<relay_id>-<8 hex digits>-<decimal seq>`.
/// Relay ids may hold `-`, so the id is read from the right.
pub fn message_id_origin(message_id: &str) -> Option<&str> {
    let (rest, seq) = message_id.rsplit_once('-')?;
    let (relay_id, nonce) = rest.rsplit_once('-')?;
    let digits = |s: &str, hex: bool| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (hex && b.is_ascii_hexdigit()))
    };
    (nonce.len() == 8 && digits(nonce, true) && digits(seq, false) && !relay_id.is_empty())
        .then_some(relay_id)
}

/// A relay's membership record, signed by that relay: who it is, its key, where to dial
/// it, how it says it is, and when it said so. Carried as signed in `StateSync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    pub relay_id: String,
    /// The subject's public key, 64 hex digits.
    pub public_key: String,
    /// Its advertised address (`host:port`).
    pub address: String,
    pub health: PeerHealth,
    /// Unix milliseconds when the subject signed it.
    pub timestamp_ms: u64,
    /// The subject's signature of [`record_input`], 128 hex digits.
    pub signature: String,
}

/// The bytes a record's subject signs: domain, relay id, public key (32 bytes), address,
/// health (its lowercase name), timestamp in unix milliseconds (u64 big-endian).
pub fn record_input(
    relay_id: &str,
    key: &PublicKey,
    address: &str,
    health: PeerHealth,
    timestamp_ms: u64,
) -> Vec<u8> {
    let mut out = start(RECORD_DOMAIN, relay_id.len() + address.len() + 64);
    put_short(&mut out, relay_id.as_bytes());
    out.extend_from_slice(key.as_bytes());
    put_short(&mut out, address.as_bytes());
    put_short(&mut out, health.as_str().as_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out
}

/// Why a record is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFault {
    /// An id or address empty or over its bound, or an unreadable key.
    Malformed,
    BadSignature,
}

impl SignedRecord {
    /// This relay's own record, signed now.
    pub fn sign(
        identity: &Identity,
        relay_id: &str,
        address: &str,
        health: PeerHealth,
        timestamp_ms: u64,
    ) -> SignedRecord {
        let key = identity.public();
        let signature = identity.sign(&record_input(relay_id, key, address, health, timestamp_ms));
        SignedRecord {
            relay_id: relay_id.to_string(),
            public_key: key.to_hex(),
            address: address.to_string(),
            health,
            timestamp_ms,
            signature: signature.to_hex(),
        }
    }

    /// Checks bounds and the subject's signature; returns the subject's key.
    ///
    /// # Errors
    /// What is wrong with the record.
    pub fn verify(&self) -> Result<PublicKey, RecordFault> {
        self.view().verify(None, None)
    }

    /// This record as a [`RecordView`] borrowing its fields.
    pub fn view(&self) -> RecordView<'_> {
        RecordView {
            relay_id: Cow::Borrowed(&self.relay_id),
            public_key: Cow::Borrowed(&self.public_key),
            address: Cow::Borrowed(&self.address),
            health: self.health,
            timestamp_ms: self.timestamp_ms,
            signature: Cow::Borrowed(&self.signature),
        }
    }

    /// Bytes this record takes in a StateSync, roughly (for the gossip budget).
    pub fn wire_bytes(&self) -> usize {
        self.relay_id.len() + self.address.len() + 64 + 128 + 120
    }
}

/// A membership record as a peer's StateSync carries it, its text borrowed from the
/// frame: the same fields, read the same way, as a [`SignedRecord`]. Peers gossip the same
/// records every interval and a relay keeps only the newest of each relay, so most
/// records received are looked at (id, timestamp) and dropped without allocating; only a
/// newer one is verified and made a [`SignedRecord`] to hold.
#[derive(Debug, Deserialize)]
pub struct RecordView<'a> {
    #[serde(borrow)]
    pub relay_id: Cow<'a, str>,
    #[serde(borrow)]
    pub public_key: Cow<'a, str>,
    #[serde(borrow)]
    pub address: Cow<'a, str>,
    pub health: PeerHealth,
    pub timestamp_ms: u64,
    #[serde(borrow)]
    pub signature: Cow<'a, str>,
}

impl RecordView<'_> {
    /// Checks bounds and the subject's signature; returns the subject's key. `known`:
    /// the key already bound to this relay id, if any. When the record names that very
    /// key, the parsed key is reused: reading a key from its 32 bytes is a point
    /// decompression, a good part of a verification's cost; a record naming another key
    /// has it parsed and checked as any other. `memo`: signatures already known to verify
    /// (`Trust::share_verified`).
    ///
    /// # Errors
    /// What is wrong with the record.
    pub fn verify(
        &self,
        known: Option<&PublicKey>,
        memo: Option<&VerifiedMemo>,
    ) -> Result<PublicKey, RecordFault> {
        if !relay_id_fits(&self.relay_id)
            || self.address.is_empty()
            || !address_fits(&self.address)
            || self.address.chars().any(char::is_control)
        {
            return Err(RecordFault::Malformed);
        }
        if self.public_key.len() != 64 {
            return Err(RecordFault::Malformed);
        }
        let key = match known.filter(|k| self.names_key(k)) {
            Some(known) => *known,
            None => PublicKey::parse(&self.public_key).map_err(|_| RecordFault::Malformed)?,
        };
        let signature = Signature::parse(&self.signature).map_err(|_| RecordFault::BadSignature)?;
        let input = record_input(
            &self.relay_id,
            &key,
            &self.address,
            self.health,
            self.timestamp_ms,
        );
        if key.verifies_through(memo, &input, &signature) {
            Ok(key)
        } else {
            Err(RecordFault::BadSignature)
        }
    }

    /// Whether `public_key` is `key` in hex (as `PublicKey::parse` would read it).
    fn names_key(&self, key: &PublicKey) -> bool {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(self.public_key.as_bytes(), &mut bytes).is_ok()
            && bytes == *key.as_bytes()
    }

    /// The owned record, to hold.
    pub fn to_record(&self) -> SignedRecord {
        SignedRecord {
            relay_id: self.relay_id.to_string(),
            public_key: self.public_key.to_string(),
            address: self.address.to_string(),
            health: self.health,
            timestamp_ms: self.timestamp_ms,
            signature: self.signature.to_string(),
        }
    }

    /// Whether this is `record`, field for field.
    pub fn is(&self, record: &SignedRecord) -> bool {
        self.timestamp_ms == record.timestamp_ms
            && self.health == record.health
            && self.relay_id == record.relay_id.as_str()
            && self.signature == record.signature.as_str()
            && self.public_key == record.public_key.as_str()
            && self.address == record.address.as_str()
    }
}

/// Bytes of a signed record's fields at most (ids, address, key and signature in hex).
pub const RECORD_BYTES_MAX: usize =
    super::peer::RELAY_ID_BYTES_MAX + ADDRESS_BYTES_MAX + 64 + 128 + 120;

/// Which side of the handshake a proof is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The relay that dialed.
    Dialer,
    /// The relay that accepted the connection.
    Acceptor,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Dialer => b'D',
            Role::Acceptor => b'A',
        }
    }
}

/// Both sides' claims, as the handshake binds them.
#[derive(Debug, Clone)]
pub struct Transcript<'a> {
    pub dialer_id: &'a str,
    pub dialer_key: &'a PublicKey,
    pub dialer_nonce: &'a [u8; NONCE_BYTES],
    /// The address the dialer advertises: signed, so the acceptor may dial it later.
    pub dialer_address: &'a str,
    pub acceptor_id: &'a str,
    pub acceptor_key: &'a PublicKey,
    pub acceptor_nonce: &'a [u8; NONCE_BYTES],
    pub acceptor_address: &'a str,
}

impl Transcript<'_> {
    /// What `role` signs (and MACs under the mesh token): domain, zero byte, the role
    /// (`D` or `A`), then for the dialer and then the acceptor: id, key, nonce, address.
    /// Ids and addresses are u16-length-prefixed; keys and nonces are 32 bytes each.
    pub fn input(&self, role: Role) -> Vec<u8> {
        let mut out = start(
            HANDSHAKE_DOMAIN,
            300 + self.dialer_id.len() + self.acceptor_id.len(),
        );
        out.push(role.byte());
        put_short(&mut out, self.dialer_id.as_bytes());
        out.extend_from_slice(self.dialer_key.as_bytes());
        out.extend_from_slice(self.dialer_nonce);
        put_short(&mut out, self.dialer_address.as_bytes());
        put_short(&mut out, self.acceptor_id.as_bytes());
        out.extend_from_slice(self.acceptor_key.as_bytes());
        out.extend_from_slice(self.acceptor_nonce);
        put_short(&mut out, self.acceptor_address.as_bytes());
        out
    }

    /// `role`'s proof: its signature of the transcript, and with a mesh token, the
    /// token's HMAC of it.
    pub fn prove(&self, role: Role, identity: &Identity, token: Option<&str>) -> Proof {
        let input = self.input(role);
        Proof {
            signature: identity.sign(&input).to_hex(),
            mac: token.map(|t| hex::encode(crate::identity::mac(t.as_bytes(), &input))),
        }
    }

    /// Checks `role`'s proof against the key it claimed (the transcript's) and, when
    /// this relay has a mesh token, the MAC.
    ///
    /// # Errors
    /// Which part failed.
    pub fn check(&self, role: Role, proof: &Proof, token: Option<&str>) -> Result<(), ProofFault> {
        let input = self.input(role);
        let key = match role {
            Role::Dialer => self.dialer_key,
            Role::Acceptor => self.acceptor_key,
        };
        let signature = Signature::parse(&proof.signature).map_err(|_| ProofFault::Signature)?;
        if !key.verifies(&input, &signature) {
            return Err(ProofFault::Signature);
        }
        if let Some(token) = token {
            let mut tag = [0u8; MAC_BYTES];
            let ok = proof
                .mac
                .as_deref()
                .is_some_and(|m| hex::decode_to_slice(m, &mut tag).is_ok())
                && crate::identity::mac_matches(token.as_bytes(), &input, &tag);
            if !ok {
                return Err(ProofFault::Token);
            }
        }
        Ok(())
    }
}

/// One side's handshake proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// Signature of the transcript (128 hex digits).
    pub signature: String,
    /// HMAC-SHA256 of the transcript under the mesh token (64 hex digits), when the mesh
    /// has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// Why a handshake proof is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofFault {
    /// The signature is not the claimed key's.
    Signature,
    /// The MAC is missing or not the mesh token's.
    Token,
}

/// The acceptor's challenge (step 2): who it is, its nonce, and its proof over the
/// transcript.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    pub relay_id: String,
    pub public_key: String,
    pub nonce: String,
    /// The acceptor's advertised address (signed in the transcript).
    pub address: String,
    #[serde(flatten)]
    pub proof: Proof,
}

pub fn encode_challenge(challenge: &Challenge) -> Bytes {
    let mut value = serde_json::to_value(challenge).expect("relay messages serialize");
    value["type"] = "handshake_challenge".into();
    to_bytes(&value)
}

/// The dialer's answer (step 3).
pub fn encode_proof(proof: &Proof) -> Bytes {
    let mut value = serde_json::to_value(proof).expect("relay messages serialize");
    value["type"] = "handshake_proof".into();
    to_bytes(&value)
}

/// Reads a `handshake_challenge` frame.
///
/// # Errors
/// Another message, or missing fields.
pub fn parse_challenge(text: &[u8]) -> Result<Challenge, String> {
    expect_type(text, "handshake_challenge")?;
    serde_json::from_slice(text).map_err(|e| e.to_string())
}

/// Reads a `handshake_proof` frame.
///
/// # Errors
/// Another message, or missing fields.
pub fn parse_proof(text: &[u8]) -> Result<Proof, String> {
    expect_type(text, "handshake_proof")?;
    serde_json::from_slice(text).map_err(|e| e.to_string())
}

fn expect_type(text: &[u8], kind: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    let found: Kind = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    if found.kind == kind {
        Ok(())
    } else {
        Err(format!(
            "expected `{kind}`, got `{}`",
            found.kind.chars().take(64).collect::<String>()
        ))
    }
}

/// Reads a 32-byte nonce from 64 hex digits.
pub fn parse_nonce(text: &str) -> Option<[u8; NONCE_BYTES]> {
    let mut out = [0u8; NONCE_BYTES];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests;
