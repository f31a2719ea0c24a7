//! A StateSync payload encoded in parts: the fields other than `records` once, and each
//! membership record once, so that the answers a relay gives its peers' requests, each
//! carrying only the records that request did not show (`docs/mesh-protocol.md`), are
//! put together from bytes already encoded rather than serialized (and checked) anew.
//!
//! Every part is serde_json's own output, so the spliced text is JSON by construction;
//! the wire format is the ordinary sync payload (`records` is simply a shorter list).

use bytes::Bytes;
use serde_json::value::RawValue;

use super::peer::{EncodedPayload, SyncPayload, SyncType};
use super::signed::SignedRecord;

/// A membership record with its JSON encoding, made once for the many StateSyncs that
/// carry it.
#[derive(Debug, Clone)]
pub struct EncodedRecord {
    pub record: SignedRecord,
    json: Box<str>,
}

impl EncodedRecord {
    pub fn new(record: SignedRecord) -> EncodedRecord {
        // Plain strings and numbers: serializing cannot fail.
        let json = serde_json::to_string(&record).expect("a record serializes");
        EncodedRecord {
            record,
            json: json.into_boxed_str(),
        }
    }

    /// Bytes this record takes in a payload's `records` list (its separator aside).
    pub fn wire_len(&self) -> usize {
        self.json.len()
    }
}

/// A sync payload's fields other than `records`, encoded once: the members of the JSON
/// object, without its braces (empty when it has none).
#[derive(Debug, Clone)]
pub struct PayloadHead(String);

impl PayloadHead {
    /// The fields of `payload` but its records (which it should not carry: they are
    /// spliced in per message).
    pub fn encode(payload: &SyncPayload) -> PayloadHead {
        debug_assert!(payload.records.is_none(), "records are spliced in");
        let object = serde_json::to_string(payload).expect("a payload serializes");
        // `{…}`: the members are what lies between the braces.
        PayloadHead(object[1..object.len() - 1].to_string())
    }

    /// Bytes of the head's members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `{<head>,"records":[r1,r2,…]}` appended to `out`.
fn write_payload(out: &mut Vec<u8>, head: &PayloadHead, records: &[&EncodedRecord]) {
    out.push(b'{');
    out.extend_from_slice(head.0.as_bytes());
    if !head.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(br#""records":["#);
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(record.json.as_bytes());
    }
    out.extend_from_slice(b"]}");
}

fn payload_len(head: &PayloadHead, records: &[&EncodedRecord]) -> usize {
    head.len() + 16 + records.iter().map(|r| r.wire_len() + 1).sum::<usize>()
}

/// The payload `head` with `records`, as one encoded payload (a sync request, sent to
/// every peer alike).
pub fn payload(head: &PayloadHead, records: &[&EncodedRecord]) -> EncodedPayload {
    let mut out = Vec::with_capacity(payload_len(head, records));
    write_payload(&mut out, head, records);
    // Spliced from serde_json's output, so valid JSON and UTF-8; checked once per
    // request round (a request goes to every peer), never per answer.
    let text = String::from_utf8(out).expect("spliced from UTF-8 parts");
    let raw = RawValue::from_string(text).expect("spliced from JSON parts");
    std::sync::Arc::new(raw)
}

/// A `sync_response` to request `request_id` whose payload is `head` with `records`:
/// the same message as `peer::encode_sync_response` (fields in another order), written
/// straight from the encoded parts.
pub fn encode_sync_response(
    sync_type: SyncType,
    relay_id: &str,
    request_id: &str,
    head: &PayloadHead,
    records: &[&EncodedRecord],
    timestamp: u64,
) -> Bytes {
    let mut out =
        Vec::with_capacity(160 + relay_id.len() + request_id.len() + payload_len(head, records));
    out.extend_from_slice(br#"{"type":"sync_response","sync_type":"#);
    write_string(&mut out, sync_type.as_str());
    out.extend_from_slice(br#","relay_id":"#);
    write_string(&mut out, relay_id);
    out.extend_from_slice(br#","request_id":"#);
    write_string(&mut out, request_id);
    out.extend_from_slice(br#","timestamp":"#);
    out.extend_from_slice(timestamp.to_string().as_bytes());
    out.extend_from_slice(br#","payload":"#);
    write_payload(&mut out, head, records);
    out.push(b'}');
    Bytes::from(out)
}

/// A JSON string, escaped as serde_json escapes it.
fn write_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::protocol::peer::{self, PeerHealth, PeerMessage, StatePayload, StreamSummary};

    fn record(seed: u8, id: &str) -> SignedRecord {
        let identity = Identity::from_seed(&[seed; 32]);
        SignedRecord::sign(&identity, id, "h:1", PeerHealth::Healthy, 42)
    }

    fn head() -> SyncPayload {
        SyncPayload {
            state: Some(StatePayload {
                uptime: "5".into(),
                version: "1".into(),
                network: "signet".into(),
            }),
            address: Some("a\"quoted\":1".into()),
            log: Some(vec![StreamSummary {
                stream: "a-1".into(),
                ranges: vec![(1, 3)],
            }]),
            ..SyncPayload::default()
        }
    }

    /// A spliced answer reads back as the same message `peer::encode_sync_response`
    /// writes from the whole payload: same fields, same records, in order.
    #[test]
    fn a_spliced_answer_is_the_ordinary_message() {
        let records = [record(1, "a"), record(2, "b\u{1}\"")];
        let encoded: Vec<EncodedRecord> = records.iter().cloned().map(EncodedRecord::new).collect();
        let parts: Vec<&EncodedRecord> = encoded.iter().collect();
        let spliced = encode_sync_response(
            SyncType::StateSync,
            "relay-\"a\"",
            "b-1-\\s9",
            &PayloadHead::encode(&head()),
            &parts,
            7,
        );
        let whole = SyncPayload {
            records: Some(records.to_vec()),
            ..head()
        };
        let ordinary = peer::encode_sync_response(
            SyncType::StateSync,
            "relay-\"a\"",
            "b-1-\\s9",
            &peer::encode_payload(&whole),
            7,
        );
        let read = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).unwrap();
        assert_eq!(read(&spliced), read(&ordinary));
        let Ok(PeerMessage::SyncResponse { payload, .. }) = peer::parse(&spliced) else {
            panic!("{}", String::from_utf8_lossy(&spliced))
        };
        let back = payload.records.unwrap();
        assert!(back[0].is(&records[0]) && back[1].is(&records[1]));
    }

    /// No records, no other field: still a payload (`{"records":[]}`); a request payload
    /// spliced the same way is the ordinary one.
    #[test]
    fn empty_parts_still_make_json() {
        let empty = PayloadHead::encode(&SyncPayload::default());
        let frame = encode_sync_response(SyncType::StateSync, "a", "m", &empty, &[], 1);
        let wire: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(wire["payload"], serde_json::json!({"records": []}));

        let one = EncodedRecord::new(record(3, "c"));
        let request = payload(&PayloadHead::encode(&head()), &[&one]);
        let whole = SyncPayload {
            records: Some(vec![one.record.clone()]),
            ..head()
        };
        let read = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        assert_eq!(
            read(request.get()),
            read(peer::encode_payload(&whole).get())
        );
    }
}
