//! The wallet messages of the chain watcher: `watch` (register keys) and `unwatch`
//! (forget them), and their responses.
//!
//! Parsed field by field rather than by a derived deserializer, so a refusal names the
//! field and what is wrong with it ("watch: missing field `scan_secret_key`") instead of
//! a position in the text, and so no error ever quotes a value: the text holds a secret.

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// Labels one wallet may ask for (each costs a point addition per output scanned).
pub const LABELS_MAX: usize = 64;

/// `{"type":"watch", …}`: a wallet asks the relay to watch its keys. `Debug` redacts the
/// scan secret key. Unknown fields are ignored: the protocol may add fields, never remove
/// them.
#[derive(Clone, PartialEq, Eq)]
pub struct WatchRequest {
    pub scan_secret_key: String,
    pub spend_public_key: String,
    pub labels: Vec<u32>,
    pub birth_height: Option<u32>,
}

impl std::fmt::Debug for WatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchRequest")
            .field("scan_secret_key", &crate::secret::REDACTED)
            .field("spend_public_key", &self.spend_public_key)
            .field("labels", &self.labels)
            .field("birth_height", &self.birth_height)
            .finish()
    }
}

/// One message's fields, for errors that name the message and the field.
struct Fields<'a> {
    message: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn error(&self, what: impl std::fmt::Display) -> String {
        format!("{}: {what}", self.message)
    }

    /// A present, non-null field.
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn required_string(&self, name: &str, expected: &str) -> Result<String, String> {
        match self.get(name) {
            None => Err(self.error(format!("missing field `{name}`"))),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.error(format!(
                "`{name}` must be a string of {expected}, not {}",
                json_kind(other)
            ))),
        }
    }

    fn optional_u32(&self, name: &str) -> Result<Option<u32>, String> {
        self.get(name)
            .map(|v| as_u32(v).ok_or_else(|| self.error(format!("`{name}` {U32_EXPECTED}"))))
            .transpose()
    }

    fn labels(&self) -> Result<Vec<u32>, String> {
        let Some(value) = self.get("labels") else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = value else {
            return Err(self.error(format!(
                "`labels` must be an array of integers, not {}",
                json_kind(value)
            )));
        };
        if items.len() > LABELS_MAX {
            return Err(self.error(format!(
                "`labels` has {} entries, at most {LABELS_MAX} are allowed",
                items.len()
            )));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                as_u32(v).ok_or_else(|| self.error(format!("`labels[{i}]` {U32_EXPECTED}")))
            })
            .collect()
    }
}

const U32_EXPECTED: &str = "must be an integer from 0 to 4294967295";

fn as_u32(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// The JSON type of a value, to say what was sent without quoting it.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses `text` as a JSON object whose `type` is `kind`.
fn object(text: &str, kind: &'static str) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // Syntax errors carry no input, only where it broke.
        format!(
            "{kind}: not valid JSON (line {} column {})",
            e.line(),
            e.column()
        )
    })?;
    let Value::Object(map) = value else {
        return Err(format!("{kind}: the message must be a JSON object"));
    };
    if map.get("type").and_then(Value::as_str) != Some(kind) {
        return Err(format!("{kind}: `type` must be \"{kind}\""));
    }
    Ok(map)
}

impl WatchRequest {
    /// Parses a `watch` message. Key formats are checked when the keys are used
    /// (`chain::WatchHandle::register`), with their own field-naming errors.
    ///
    /// # Errors
    /// Not a JSON object, not a `watch` message, a missing required field or a field of
    /// the wrong type; the message names the field and never quotes a value.
    pub fn from_json(text: &str) -> Result<WatchRequest, String> {
        let map = object(text, "watch")?;
        let fields = Fields {
            message: "watch",
            map: &map,
        };
        Ok(WatchRequest {
            scan_secret_key: fields.required_string("scan_secret_key", "64 hex characters")?,
            spend_public_key: fields.required_string("spend_public_key", "66 hex characters")?,
            labels: fields.labels()?,
            birth_height: fields.optional_u32("birth_height")?,
        })
    }
}

/// `{"type":"unwatch","address":"tsp1…"}`: a wallet asks the relay to stop watching the
/// keys it registered on this connection under that address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnwatchRequest {
    pub address: String,
}

impl UnwatchRequest {
    /// # Errors
    /// Not a JSON object, not an `unwatch` message, `address` missing or not a string.
    pub fn from_json(text: &str) -> Result<UnwatchRequest, String> {
        let map = object(text, "unwatch")?;
        let fields = Fields {
            message: "unwatch",
            map: &map,
        };
        Ok(UnwatchRequest {
            address: fields.required_string("address", "a silent-payment address")?,
        })
    }
}

/// The answer to a `watch` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchOutcome {
    Accepted {
        address: String,
        /// Notifications kept while the wallet was away, delivered right after this answer.
        pending_delivered: usize,
        /// Notifications dropped while it was away because the pending store was full.
        pending_dropped: u64,
    },
    Rejected {
        reason: String,
    },
}

/// `{"type":"watch_response","status":"accepted","address":…,"pending_delivered":N,
/// "pending_dropped":M}` or `…"rejected","reason":…}`.
pub fn encode_watch_response(outcome: &WatchOutcome) -> Bytes {
    let value = match outcome {
        WatchOutcome::Accepted {
            address,
            pending_delivered,
            pending_dropped,
        } => json!({
            "type": "watch_response", "status": "accepted", "address": address,
            "pending_delivered": pending_delivered, "pending_dropped": pending_dropped,
        }),
        WatchOutcome::Rejected { reason } => {
            json!({"type": "watch_response", "status": "rejected", "reason": reason})
        }
    };
    super::to_bytes(&value)
}

/// `{"type":"unwatch_response","status":"accepted","address":…}` or
/// `…"rejected","address":…,"reason":…}`.
pub fn encode_unwatch_response(address: &str, refused: Option<&str>) -> Bytes {
    let value = match refused {
        None => json!({"type": "unwatch_response", "status": "accepted", "address": address}),
        Some(reason) => json!({
            "type": "unwatch_response", "status": "rejected", "address": address, "reason": reason,
        }),
    };
    super::to_bytes(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    fn watch(fields: &str) -> Result<WatchRequest, String> {
        WatchRequest::from_json(&format!(r#"{{"type":"watch",{fields}}}"#))
    }

    fn keys() -> String {
        format!(
            r#""scan_secret_key":"{SECRET}","spend_public_key":"02{}""#,
            "22".repeat(32)
        )
    }

    // Proves the issue's watch message parses and Debug redacts the secret.
    #[test]
    fn parses_and_redacts() {
        let req = watch(&format!(
            r#"{},"labels":[1,2],"birth_height":295000"#,
            keys()
        ))
        .unwrap();
        assert_eq!(
            (req.labels.clone(), req.birth_height),
            (vec![1, 2], Some(295000))
        );
        assert!(!format!("{req:?}").contains(SECRET));
        let bare = watch(&format!(r#"{},"labels":null,"birth_height":null"#, keys())).unwrap();
        assert_eq!((bare.labels, bare.birth_height), (vec![], None));
    }

    // Proves each refusal names the field and the problem, and never quotes the secret.
    #[test]
    fn refusals_name_the_field() {
        let spend = format!(r#""spend_public_key":"02{}""#, "22".repeat(32));
        let cases = [
            (spend.clone(), "watch: missing field `scan_secret_key`"),
            (
                format!(r#""scan_secret_key":"{SECRET}""#),
                "watch: missing field `spend_public_key`",
            ),
            (
                format!(r#""scan_secret_key":7,{spend}"#),
                "watch: `scan_secret_key` must be a string of 64 hex characters, not a number",
            ),
            (
                format!(r#"{},"labels":"{SECRET}""#, keys()),
                "watch: `labels` must be an array of integers, not a string",
            ),
            (
                format!(r#"{},"labels":[1,"{SECRET}"]"#, keys()),
                "watch: `labels[1]` must be an integer from 0 to 4294967295",
            ),
            (
                format!(r#"{},"labels":[{}]"#, keys(), vec!["1"; 65].join(",")),
                "watch: `labels` has 65 entries, at most 64 are allowed",
            ),
            (
                format!(r#"{},"birth_height":-1"#, keys()),
                "watch: `birth_height` must be an integer from 0 to 4294967295",
            ),
        ];
        for (fields, expected) in cases {
            let error = watch(&fields).unwrap_err();
            assert_eq!(error, expected, "{fields}");
            assert!(!error.contains(SECRET));
        }
        let not_watch = WatchRequest::from_json(r#"{"type":"ping"}"#).unwrap_err();
        assert_eq!(not_watch, r#"watch: `type` must be "watch""#);
        let broken =
            WatchRequest::from_json(&format!(r#"{{"type":"watch","scan_secret_key":"{SECRET}"#));
        assert!(broken.unwrap_err().starts_with("watch: not valid JSON"));
        assert_eq!(
            UnwatchRequest::from_json(r#"{"type":"unwatch"}"#).unwrap_err(),
            "unwatch: missing field `address`"
        );
    }

    // Proves the responses have the documented shapes.
    #[test]
    fn responses() {
        let ok = encode_watch_response(&WatchOutcome::Accepted {
            address: "tsp1x".into(),
            pending_delivered: 2,
            pending_dropped: 1,
        });
        let v: Value = serde_json::from_slice(&ok).unwrap();
        assert_eq!(
            v,
            json!({"type":"watch_response","status":"accepted","address":"tsp1x",
                   "pending_delivered":2,"pending_dropped":1})
        );
        let no = encode_watch_response(&WatchOutcome::Rejected {
            reason: "full".into(),
        });
        let v: Value = serde_json::from_slice(&no).unwrap();
        assert_eq!(
            v,
            json!({"type":"watch_response","status":"rejected","reason":"full"})
        );
        let v: Value = serde_json::from_slice(&encode_unwatch_response("tsp1x", None)).unwrap();
        assert_eq!(
            v,
            json!({"type":"unwatch_response","status":"accepted","address":"tsp1x"})
        );
        let v: Value =
            serde_json::from_slice(&encode_unwatch_response("tsp1x", Some("not watched"))).unwrap();
        assert_eq!(v["reason"], "not watched");
    }
}
