//! The resume token: a wallet's position and subscriptions, signed by the relay that
//! issued it, as an opaque URL-safe base64 string.
//!
//! Layout (before base64url without padding), all integers LEB128 varints unless said:
//! ```text
//! u8 version (1) | u8 flags (bit 0: truncated) | issued_at (unix secs)
//! u8 len + issuer relay id
//! count + per subscription: u8 len + name
//! count + per stream: 6-byte stream key, count + per range: lo - previous hi, hi - lo
//! 64-byte Ed25519 signature of "sdk_relay/resume/token/v1" 0x00 + everything above
//! ```
//! A position larger than the bounds (streams, ranges per stream) is cut and the token
//! marked truncated: a resume from it reports `recovered: false`, never a silent gap.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::position::{Position, RangeSet, StreamKey};
use crate::identity::{Identity, PublicKey, SIGNATURE_BYTES, Signature};

/// Streams a token names at most (one per relay boot; 50 relays fit with room).
pub const TOKEN_STREAMS_MAX: usize = 64;
/// Seq ranges per stream at most (a relay's own view is contiguous but for partitions).
pub const TOKEN_RANGES_PER_STREAM_MAX: usize = 8;
/// Subscriptions a token carries at most (the relay's own per-client bound).
pub const TOKEN_SUBSCRIPTIONS_MAX: usize = crate::protocol::SUBSCRIPTIONS_MAX;
/// Characters of a token a relay reads at most (larger is refused unread).
pub const TOKEN_CHARS_MAX: usize = crate::protocol::RESUME_TOKEN_CHARS_MAX;
const VERSION: u8 = 1;
const FLAG_TRUNCATED: u8 = 1;
const DOMAIN: &[u8] = b"sdk_relay/resume/token/v1\0";
const ISSUER_BYTES_MAX: usize = 128;

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub issuer: String,
    pub issued_at: u64,
    /// Part of the position did not fit: resuming from it cannot be exact.
    pub truncated: bool,
    pub subscriptions: Vec<String>,
    pub position: Position,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("resume token malformed: {0}")]
    Malformed(&'static str),
    #[error("resume token issued by relay `{0}`, whose key this relay does not know")]
    UnknownIssuer(String),
    #[error("resume token signature does not verify (forged or corrupted)")]
    BadSignature,
    #[error("resume is not available: {0}")]
    Unsupported(&'static str),
    /// A NATS-mode relay got a token whose position is not in its stream (issued by a
    /// mesh-mode relay, or for another or a re-created stream).
    #[error("resume token names another backbone or stream than this relay's")]
    OtherStream,
}

/// Issues tokens for this relay.
pub struct Issuer {
    relay_id: String,
    identity: Arc<Identity>,
    /// Tokens signed so far (each is an Ed25519 signature: what the hub's sharing saves).
    signed: std::sync::atomic::AtomicU64,
}

impl Issuer {
    pub fn new(relay_id: &str, identity: Arc<Identity>) -> Issuer {
        Issuer {
            relay_id: relay_id.to_string(),
            identity,
            signed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Tokens signed so far.
    pub fn tokens_signed(&self) -> u64 {
        self.signed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn relay_id(&self) -> &str {
        &self.relay_id
    }

    pub fn public_key(&self) -> &PublicKey {
        self.identity.public()
    }

    /// A token for a wallet subscribed to `subscriptions`, accounted for `position`.
    pub fn issue<'a>(
        &self,
        subscriptions: impl IntoIterator<Item = &'a str>,
        position: &Position,
        issued_at: u64,
    ) -> String {
        let mut body = Vec::with_capacity(256);
        body.push(VERSION);
        body.push(0); // flags, set below
        put_varint(&mut body, issued_at);
        let issuer = &self.relay_id.as_bytes()[..self.relay_id.len().min(ISSUER_BYTES_MAX)];
        body.push(issuer.len() as u8);
        body.extend_from_slice(issuer);
        let subscriptions: Vec<&str> = subscriptions
            .into_iter()
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .take(TOKEN_SUBSCRIPTIONS_MAX)
            .collect();
        put_varint(&mut body, subscriptions.len() as u64);
        for name in subscriptions {
            body.push(name.len() as u8);
            body.extend_from_slice(name.as_bytes());
        }
        let truncated = put_position(&mut body, position);
        if truncated {
            body[1] |= FLAG_TRUNCATED;
        }
        let signature = self.identity.sign(&signed_input(&body));
        self.signed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        body.extend_from_slice(&signature.to_bytes());
        URL_SAFE_NO_PAD.encode(body)
    }
}

/// Writes the position within the bounds; true when part of it was left out.
fn put_position(body: &mut Vec<u8>, position: &Position) -> bool {
    let mut truncated = position.len() > TOKEN_STREAMS_MAX;
    let streams: Vec<(&StreamKey, &RangeSet)> =
        position.streams().take(TOKEN_STREAMS_MAX).collect();
    put_varint(body, streams.len() as u64);
    for (key, ranges) in streams {
        body.extend_from_slice(key);
        let ranges = ranges.ranges();
        // The lowest ranges are kept: a cut claims less than was received (never more).
        let kept = &ranges[..ranges.len().min(TOKEN_RANGES_PER_STREAM_MAX)];
        truncated |= kept.len() < ranges.len();
        put_varint(body, kept.len() as u64);
        let mut previous_hi = 0u64;
        for &(lo, hi) in kept {
            put_varint(body, lo - previous_hi);
            put_varint(body, hi - lo);
            previous_hi = hi;
        }
    }
    truncated
}

fn signed_input(body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(DOMAIN.len() + body.len());
    input.extend_from_slice(DOMAIN);
    input.extend_from_slice(body);
    input
}

/// Checks a token: its layout, then its issuer's signature (`key_of` names the key each
/// relay id is bound to).
///
/// # Errors
/// Too long, not base64url, a layout violation, an issuer with no known key, or a
/// signature that does not verify.
pub fn verify(text: &str, key_of: impl Fn(&str) -> Option<PublicKey>) -> Result<Token, TokenError> {
    if text.len() > TOKEN_CHARS_MAX {
        return Err(TokenError::Malformed("too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::Malformed("not base64url"))?;
    if bytes.len() < SIGNATURE_BYTES + 4 {
        return Err(TokenError::Malformed("too short"));
    }
    let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_BYTES);
    let token = parse_body(body)?;
    let key =
        key_of(&token.issuer).ok_or_else(|| TokenError::UnknownIssuer(token.issuer.clone()))?;
    let signature: [u8; SIGNATURE_BYTES] = signature
        .try_into()
        .map_err(|_| TokenError::Malformed("signature"))?;
    if !key.verifies(&signed_input(body), &Signature::from_bytes(&signature)) {
        return Err(TokenError::BadSignature);
    }
    Ok(token)
}

fn parse_body(body: &[u8]) -> Result<Token, TokenError> {
    let mut r = Reader { bytes: body };
    if r.byte()? != VERSION {
        return Err(TokenError::Malformed("unknown version"));
    }
    let flags = r.byte()?;
    if flags & !FLAG_TRUNCATED != 0 {
        return Err(TokenError::Malformed("unknown flags"));
    }
    let issued_at = r.varint()?;
    let issuer_len = usize::from(r.byte()?);
    let issuer = r.text(issuer_len)?;
    if issuer.is_empty() {
        return Err(TokenError::Malformed("empty issuer"));
    }
    let subscription_count = r.count(TOKEN_SUBSCRIPTIONS_MAX)?;
    let mut subscriptions = Vec::with_capacity(subscription_count);
    for _ in 0..subscription_count {
        let len = usize::from(r.byte()?);
        let name = r.text(len)?;
        if name.is_empty() || name.len() > crate::protocol::NAME_BYTES_MAX {
            return Err(TokenError::Malformed("subscription name"));
        }
        subscriptions.push(name);
    }
    let stream_count = r.count(TOKEN_STREAMS_MAX)?;
    let mut position = Position::default();
    let mut previous_key: Option<StreamKey> = None;
    for _ in 0..stream_count {
        let key: StreamKey = r
            .take(6)?
            .try_into()
            .map_err(|_| TokenError::Malformed("stream key"))?;
        if previous_key.is_some_and(|p| p >= key) {
            return Err(TokenError::Malformed("streams not in order"));
        }
        previous_key = Some(key);
        let range_count = r.count(TOKEN_RANGES_PER_STREAM_MAX)?;
        let mut ranges = Vec::with_capacity(range_count);
        let mut previous_hi = 0u64;
        for i in 0..range_count {
            let gap = r.varint()?;
            if i > 0 && gap < 2 {
                return Err(TokenError::Malformed("ranges not disjoint"));
            }
            let lo = previous_hi
                .checked_add(gap)
                .ok_or(TokenError::Malformed("seq overflow"))?;
            let hi = lo
                .checked_add(r.varint()?)
                .ok_or(TokenError::Malformed("seq overflow"))?;
            ranges.push((lo, hi));
            previous_hi = hi;
        }
        position.set_stream(key, RangeSet::from_sorted(ranges));
    }
    if !r.bytes.is_empty() {
        return Err(TokenError::Malformed("trailing bytes"));
    }
    Ok(Token {
        issuer,
        issued_at,
        truncated: flags & FLAG_TRUNCATED != 0,
        subscriptions,
        position,
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a token body; every read is bounded by what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.bytes.len() < n {
            return Err(TokenError::Malformed("truncated"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, TokenError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(TokenError::Malformed("varint overflow"));
            }
            value |= part << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(TokenError::Malformed("varint overflow"))
    }

    fn count(&mut self, max: usize) -> Result<usize, TokenError> {
        let n = self.varint()?;
        if n > max as u64 {
            return Err(TokenError::Malformed("count over its bound"));
        }
        Ok(n as usize)
    }

    fn text(&mut self, len: usize) -> Result<String, TokenError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|_| TokenError::Malformed("not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resume::stream_key;

    fn issuer(seed: u8, id: &str) -> Issuer {
        Issuer::new(id, Arc::new(Identity::from_seed(&[seed; 32])))
    }

    fn sample_position(streams: usize) -> Position {
        let mut position = Position::default();
        for i in 0..streams {
            let key = stream_key(&format!("relay-{i}-0000abcd"));
            position.insert_range(key, 1, 1000 + i as u64);
        }
        position
    }

    #[test]
    fn a_token_round_trips_and_verifies_on_another_relay() {
        let a = issuer(0x11, "relay-a");
        let position = sample_position(3);
        let text = a.issue(["payments", "blocks"], &position, 1_700_000_000);
        let key = *a.public_key();
        let token = verify(&text, |id| (id == "relay-a").then_some(key)).unwrap();
        assert_eq!(token.issuer, "relay-a");
        assert_eq!(token.subscriptions, vec!["payments", "blocks"]);
        assert_eq!(token.position, position);
        assert!(!token.truncated);
    }

    #[test]
    fn fifty_relays_fit_in_one_kibibyte() {
        let a = issuer(0x11, "relay-with-a-rather-long-name-01");
        let text = a.issue(["payments", "*"], &sample_position(50), 1_700_000_000);
        assert!(text.len() <= 1024, "{} characters", text.len());
    }

    #[test]
    fn over_the_bounds_the_token_is_marked_truncated() {
        let a = issuer(0x11, "relay-a");
        let key = *a.public_key();
        let text = a.issue(["*"], &sample_position(TOKEN_STREAMS_MAX + 1), 1);
        let token = verify(&text, |_| Some(key)).unwrap();
        assert!(token.truncated);
        assert_eq!(token.position.len(), TOKEN_STREAMS_MAX);
    }

    #[test]
    fn forged_corrupted_and_foreign_tokens_are_refused() {
        let a = issuer(0x11, "relay-a");
        let key = *a.public_key();
        let text = a.issue(["*"], &sample_position(2), 1);
        // Another key signing under relay-a's name.
        let forger = issuer(0x22, "relay-a").issue(["*"], &sample_position(2), 1);
        assert_eq!(
            verify(&forger, |_| Some(key)),
            Err(TokenError::BadSignature)
        );
        // Every single-byte change is refused (never a panic).
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 0x01;
            let changed = URL_SAFE_NO_PAD.encode(&bytes);
            assert!(verify(&changed, |_| Some(key)).is_err(), "byte {i}");
            bytes[i] ^= 0x01;
        }
        assert!(matches!(
            verify(&text, |_| None),
            Err(TokenError::UnknownIssuer(_))
        ));
        assert!(verify("", |_| Some(key)).is_err());
        assert!(verify("!!!", |_| Some(key)).is_err());
        assert!(verify(&"A".repeat(TOKEN_CHARS_MAX + 1), |_| Some(key)).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let text = URL_SAFE_NO_PAD.encode(&bytes);
            let key = *issuer(0x11, "relay-a").public_key();
            let _ = verify(&text, |_| Some(key));
        }
    }
}
