//! The messages a load test sends, built once and patched in place, and the cheap
//! recognition of what comes back (no JSON parse on the hot path).

use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::ws::{OpCode, encode_frame, find};

/// Notification type the load test publishes.
pub const NOTIFICATION_TYPE: &str = "loadtest";
const LT_NS_KEY: &[u8] = br#""lt_ns":""#;
const SEQ_KEY: &[u8] = br#""seq":""#;
const LT_NS_DIGITS: usize = 20;
const SEQ_DIGITS: usize = 10;
/// Where in a delivered notification the send time is looked for.
const MARKER_SEARCH_BYTES_MAX: usize = 512;
/// Searchers for the two markers, built once: every delivery is searched for both, and
/// building a searcher per search cost as much as the search.
static LT_NS_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(LT_NS_KEY));
static SEQ_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(SEQ_KEY));

/// The relay's handshake, asking for `capabilities`.
pub fn handshake_message(client_id: &str, capabilities: &[&str], token: Option<&str>) -> String {
    let mut message = serde_json::json!({
        "type": "handshake",
        "client_id": client_id,
        "version": "1.0.0",
        "capabilities": capabilities,
    });
    if let Some(token) = token {
        message["token"] = token.into();
    }
    message.to_string()
}

/// A ping of exactly `size` bytes (at least the fixed part): padding sits in the `id`,
/// which the relay echoes in its `pong`, so both directions carry about `size` bytes.
pub fn ping_message(size: usize) -> Vec<u8> {
    let head = br#"{"type":"ping","id":""#;
    let tail = br#""}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    [&head[..], &vec![b'x'; pad], tail].concat()
}

/// Whether a relay message is a `pong` (the relay serializes `type` first).
pub fn is_pong(payload: &[u8]) -> bool {
    payload.starts_with(br#"{"type":"pong""#) || message_type(payload).as_deref() == Some("pong")
}

/// Whether a relay message is a `notification`.
pub fn is_notification(payload: &[u8]) -> bool {
    payload.starts_with(br#"{"type":"notification","#)
        || message_type(payload).as_deref() == Some("notification")
}

/// The `type` of a relay message, by a full parse (only off the hot path).
pub fn message_type(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_slice::<Typed>(payload)
        .ok()
        .map(|t| t.kind)
}

/// A notification frame built once; each send patches its send time and sequence number.
pub struct Publication {
    frame: Vec<u8>,
    lt_ns_at: usize,
    seq_at: usize,
}

impl Publication {
    fn payload(pad: usize) -> Vec<u8> {
        format!(
            r#"{{"type":"notification","notification_type":"{NOTIFICATION_TYPE}","data":{{"lt_ns":"{}","seq":"{}","pad":"{}"}}}}"#,
            "0".repeat(LT_NS_DIGITS),
            "0".repeat(SEQ_DIGITS),
            "x".repeat(pad)
        )
        .into_bytes()
    }

    /// The smallest publication (no padding).
    pub fn payload_bytes_min() -> usize {
        Self::payload(0).len()
    }

    /// A publication whose WebSocket payload is exactly `size` bytes (at least the min).
    pub fn new(size: usize) -> Publication {
        let payload = Self::payload(size.saturating_sub(Self::payload_bytes_min()));
        let frame = encode_frame(OpCode::Text, &payload);
        let header = frame.len() - payload.len();
        let lt_ns_at = header + find(&payload, LT_NS_KEY).expect("key present") + LT_NS_KEY.len();
        let seq_at = header + find(&payload, SEQ_KEY).expect("key present") + SEQ_KEY.len();
        Publication {
            frame,
            lt_ns_at,
            seq_at,
        }
    }

    /// The encoded frame carrying `lt_ns` (send time) and `seq`.
    pub fn frame(&mut self, lt_ns: u64, seq: u64) -> &[u8] {
        write_digits(
            &mut self.frame[self.lt_ns_at..self.lt_ns_at + LT_NS_DIGITS],
            lt_ns,
        );
        write_digits(&mut self.frame[self.seq_at..self.seq_at + SEQ_DIGITS], seq);
        &self.frame
    }
}

/// Writes `value` zero-padded into `out` (its low digits, if it does not fit).
fn write_digits(out: &mut [u8], mut value: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn read_digits(payload: &[u8], key: &Finder<'_>, digits: usize) -> Option<u64> {
    let window = &payload[..payload.len().min(MARKER_SEARCH_BYTES_MAX)];
    let at = key.find(window)? + key.needle().len();
    let text = payload.get(at..at + digits)?;
    text.iter().try_fold(0_u64, |acc, b| {
        b.is_ascii_digit()
            .then(|| acc.wrapping_mul(10).wrapping_add(u64::from(b - b'0')))
    })
}

/// The send time and sequence number in a delivered publication, as relayed (relay
/// envelope around `data`) or verbatim (baseline).
pub fn read_publication(payload: &[u8]) -> Option<(u64, u64)> {
    Some((
        read_digits(payload, &LT_NS_FINDER, LT_NS_DIGITS)?,
        read_digits(payload, &SEQ_FINDER, SEQ_DIGITS)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages have the requested size and stay valid JSON of the right type.
    #[test]
    fn messages_have_the_requested_size() {
        for size in [64, 1000, 1 << 20] {
            let ping = ping_message(size);
            assert_eq!(ping.len(), size);
            assert_eq!(message_type(&ping).as_deref(), Some("ping"));
        }
        for size in [Publication::payload_bytes_min(), 1000, 1 << 20] {
            let mut publication = Publication::new(size);
            let frame = publication.frame(1, 2).to_vec();
            let header_len = crate::ws::encode_frame(OpCode::Text, &vec![0; size]).len() - size;
            assert_eq!(frame.len(), header_len + size);
            assert_eq!(
                message_type(&frame[header_len..]).as_deref(),
                Some("notification")
            );
        }
    }

    /// A patched publication reads back its time and sequence, also inside the relay's
    /// envelope.
    #[test]
    fn publications_carry_time_and_sequence() {
        let mut publication = Publication::new(200);
        let frame = publication.frame(123_456_789_012, 42).to_vec();
        let header = frame.len() - 200;
        let payload = &frame[header..];
        let parsed: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(parsed["notification_type"], NOTIFICATION_TYPE);
        assert_eq!(read_publication(payload), Some((123_456_789_012, 42)));
        let relayed = format!(
            r#"{{"type":"notification","notification_type":"loadtest","data":{},"timestamp":1,"message_id":"m","relay_id":"r"}}"#,
            serde_json::to_string(&parsed["data"]).unwrap()
        );
        assert!(is_notification(relayed.as_bytes()));
        assert_eq!(
            read_publication(relayed.as_bytes()),
            Some((123_456_789_012, 42))
        );
    }

    /// Pongs are recognized by prefix or, in another field order, by parsing.
    #[test]
    fn pongs_are_recognized() {
        assert!(is_pong(br#"{"type":"pong","id":"x","timestamp":1}"#));
        assert!(is_pong(br#"{"id":"x","type":"pong"}"#));
        assert!(!is_pong(br#"{"type":"health"}"#));
    }
}
