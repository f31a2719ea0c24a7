use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Capabilities, Capability, DATA_DEPTH_MAX, NAME_BYTES_MAX, SUBSCRIPTIONS_MAX, error_code,
    within_depth,
};

/// Every field any client message may carry; `type` selects which are required.
/// One flat struct (not a tagged enum) so that `data` can stay borrowed raw JSON.
#[derive(Deserialize, Default)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    notification_types: Option<Vec<String>>,
    #[serde(default)]
    notification_type: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    relay_id: Option<String>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// A message holding a `type` and at most an `id`, nothing else: the shape of a `ping`,
/// the most frequent message, parsed on its own first. Through the full envelope (a dozen
/// optional fields, a few hundred bytes) a ping spent more time moving that struct than
/// reading its text; any other field makes this parse give up where it stands. What it
/// read before that (at most the `type` and an `id`) is read again by the envelope: at
/// worst twice the bytes of a message, which its size limit bounds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypeAndId<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
}

/// A validated message from a client.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    Handshake(Handshake),
    /// `id`, when present, is echoed in the `pong`: its JSON text, as the client wrote it.
    Ping {
        id: Option<&'a str>,
    },
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    Publish(Publish<'a>),
    /// A wallet registering its keys with the chain watcher; the whole text is parsed by
    /// `watch::WatchRequest`, which keeps the secret out of every log and error.
    Watch,
    /// A wallet asking the relay to stop watching keys it registered; the whole text is
    /// parsed by `watch::UnwatchRequest`.
    Unwatch,
    /// Resume a session from a token (`crate::resume`), right after the handshake.
    Resume(String),
}

/// A client's handshake. `token` is a credential (a `auth.ws_tokens` or `auth.mesh_token`
/// value when right): `Debug` shows it as `***`.
#[derive(Clone)]
pub struct Handshake {
    pub client_id: String,
    pub version: String,
    /// The capabilities asked for; unknown names are ignored (never granted).
    pub capabilities: Capabilities,
    pub token: Option<String>,
    /// For relays (capability `relay`): the dialing relay's id and advertised address.
    pub relay_id: Option<String>,
    pub address: Option<String>,
    /// For relays: the key the dialer claims (it proves it in `handshake_proof`) and its
    /// fresh nonce, both 64 hex digits (`docs/mesh-protocol.md`).
    pub public_key: Option<String>,
    pub nonce: Option<String>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("client_id", &self.client_id)
            .field("version", &self.version)
            .field("capabilities", &self.capabilities)
            .field("token", &crate::secret::redact(self.token.as_deref()))
            .field("relay_id", &self.relay_id)
            .field("address", &self.address)
            .field("public_key", &self.public_key)
            .field("nonce", &self.nonce)
            .finish()
    }
}

#[derive(Debug)]
pub struct Publish<'a> {
    pub notification_type: String,
    pub data: &'a RawValue,
}

/// Why a message could not be accepted; each maps to an `error` message code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("`{kind}`: {message}")]
    Invalid { kind: &'static str, message: String },
}

impl ParseError {
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::MalformedJson(_) => error_code::MALFORMED_JSON,
            ParseError::UnknownType(_) => error_code::UNKNOWN_TYPE,
            ParseError::Invalid { .. } => error_code::INVALID_MESSAGE,
        }
    }
}

fn invalid(kind: &'static str, message: impl Into<String>) -> ParseError {
    ParseError::Invalid {
        kind,
        message: message.into(),
    }
}

/// Parses and validates one text frame from a client.
///
/// # Errors
/// Not a JSON object with a string `type`, an unknown `type`, or missing/invalid fields.
pub fn parse_client_message(text: &str) -> Result<ClientMessage<'_>, ParseError> {
    // Pings first, the most frequent message: as clients write them without spaces, then
    // any other shape of `type` and `id` alone. What each shortcut accepts the envelope
    // reads the same way (every other field absent); whatever they refuse goes through the
    // envelope, errors included.
    if let Some(id) = plain_ping(text) {
        return Ok(ClientMessage::Ping { id });
    }
    match serde_json::from_str::<TypeAndId<'_>>(text) {
        Ok(TypeAndId { kind, id }) if kind == "ping" => ping(id),
        // Read once: a `type` and an `id` alone are the envelope with every other field
        // absent (a long `id` is not read a second time).
        Ok(TypeAndId { kind, id }) => interpret(Envelope {
            kind,
            id,
            ..Envelope::default()
        }),
        Err(_) => parse_with_envelope(text),
    }
}

/// `parse_client_message` without its shortcuts.
fn parse_with_envelope(text: &str) -> Result<ClientMessage<'_>, ParseError> {
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        // A well-formed object without a usable `type` is an invalid message, not bad JSON.
        if e.is_data() {
            invalid("message", message)
        } else {
            ParseError::MalformedJson(message)
        }
    })?;
    interpret(envelope)
}

/// The message an envelope holds, checked against what its `type` requires.
fn interpret(envelope: Envelope<'_>) -> Result<ClientMessage<'_>, ParseError> {
    match envelope.kind.as_ref() {
        "handshake" => handshake(envelope).map(ClientMessage::Handshake),
        "ping" => ping(envelope.id),
        "subscribe" => {
            names("subscribe", envelope.notification_types).map(ClientMessage::Subscribe)
        }
        "unsubscribe" => {
            names("unsubscribe", envelope.notification_types).map(ClientMessage::Unsubscribe)
        }
        "notification" => publish(envelope).map(ClientMessage::Publish),
        "watch" => Ok(ClientMessage::Watch),
        "unwatch" => Ok(ClientMessage::Unwatch),
        "resume" => resume_token(envelope.token).map(ClientMessage::Resume),
        other => Err(ParseError::UnknownType(truncate(other))),
    }
}

fn ping(id: Option<&RawValue>) -> Result<ClientMessage<'_>, ParseError> {
    if let Some(id) = id {
        check_depth("ping", "id", id)?;
    }
    Ok(ClientMessage::Ping {
        id: id.map(RawValue::get),
    })
}

/// `Some(id)` for a ping written `{"type":"ping"}`, or `{"type":"ping","id":ID}` where ID
/// is a string without escapes or an integer, with no spaces: read without a JSON parser,
/// which spent more on a ping than the rest of its round trip in the relay. Any other text
/// is `None` (the caller parses it). The reader checked UTF-8 already.
fn plain_ping(text: &str) -> Option<Option<&str>> {
    let rest = text.strip_prefix(r#"{"type":"ping""#)?;
    if rest == "}" {
        return Some(None);
    }
    let id = rest.strip_prefix(r#","id":"#)?.strip_suffix('}')?;
    (is_plain_string(id) || is_plain_integer(id)).then_some(Some(id))
}

/// A JSON string with no escape inside: quotes around characters that are neither a
/// quote, a backslash nor a control character.
fn is_plain_string(json: &str) -> bool {
    json.len() >= 2
        && json.starts_with('"')
        && json.ends_with('"')
        // Every byte looked at, without stopping early: the compiler checks many at once.
        && json.as_bytes()[1..json.len() - 1]
            .iter()
            .fold(true, |plain, &b| plain & (b != b'"') & (b != b'\\') & (b >= 0x20))
}

/// A JSON integer: an optional minus, then `0` or digits that do not start with `0`.
fn is_plain_integer(json: &str) -> bool {
    match json.strip_prefix('-').unwrap_or(json).as_bytes() {
        [b'0'] => true,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

fn handshake(envelope: Envelope<'_>) -> Result<Handshake, ParseError> {
    let client_id = envelope
        .client_id
        .ok_or_else(|| invalid("handshake", "missing `client_id`"))?;
    check_name("handshake", "client_id", &client_id)?;
    let version = envelope.version.unwrap_or_default();
    if version.len() > NAME_BYTES_MAX {
        return Err(invalid("handshake", "`version` is too long"));
    }
    let asked = envelope.capabilities.unwrap_or_default();
    if asked.len() > 16 {
        return Err(invalid("handshake", "too many `capabilities`"));
    }
    let mut capabilities = Capabilities::default();
    for name in &asked {
        if let Some(c) = Capability::parse(name) {
            capabilities.insert(c);
        }
    }
    if capabilities.contains(Capability::Relay) {
        check_name(
            "handshake",
            "relay_id",
            envelope.relay_id.as_deref().unwrap_or_default(),
        )?;
        // An address is a host name (up to 255 bytes) and a port, as gossip bounds it.
        let address = envelope.address.as_deref().unwrap_or_default();
        if address.is_empty()
            || address.len() > super::peer::ADDRESS_BYTES_MAX
            || address.chars().any(char::is_control)
        {
            return Err(invalid(
                "handshake",
                format!(
                    "`address` must be 1 to {} printable bytes",
                    super::peer::ADDRESS_BYTES_MAX
                ),
            ));
        }
        for (field, value) in [
            ("public_key", &envelope.public_key),
            ("nonce", &envelope.nonce),
        ] {
            let hex64 = value
                .as_deref()
                .is_some_and(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
            if !hex64 {
                return Err(invalid(
                    "handshake",
                    format!("`{field}` must be 64 hexadecimal digits"),
                ));
            }
        }
    }
    Ok(Handshake {
        client_id,
        version,
        capabilities,
        token: envelope.token,
        relay_id: envelope.relay_id,
        address: envelope.address,
        public_key: envelope.public_key,
        nonce: envelope.nonce,
    })
}

fn names(kind: &'static str, list: Option<Vec<String>>) -> Result<Vec<String>, ParseError> {
    let list = list.ok_or_else(|| invalid(kind, "missing `notification_types`"))?;
    if list.is_empty() || list.len() > SUBSCRIPTIONS_MAX {
        return Err(invalid(
            kind,
            format!("`notification_types` must hold 1 to {SUBSCRIPTIONS_MAX} names"),
        ));
    }
    for name in &list {
        check_name(kind, "notification_types", name)?;
        if kind == "subscribe" && super::is_private_name(name) {
            return Err(invalid(kind, private_refusal("notification_types")));
        }
    }
    Ok(list)
}

fn resume_token(token: Option<String>) -> Result<String, ParseError> {
    let token = token.ok_or_else(|| invalid("resume", "missing `token`"))?;
    if token.is_empty() || token.len() > super::RESUME_TOKEN_CHARS_MAX {
        return Err(invalid(
            "resume",
            format!(
                "`token` must be 1 to {} characters",
                super::RESUME_TOKEN_CHARS_MAX
            ),
        ));
    }
    Ok(token)
}

fn publish(envelope: Envelope<'_>) -> Result<Publish<'_>, ParseError> {
    let notification_type = envelope
        .notification_type
        .ok_or_else(|| invalid("notification", "missing `notification_type`"))?;
    check_name("notification", "notification_type", &notification_type)?;
    if super::is_private_name(&notification_type) {
        return Err(invalid(
            "notification",
            private_refusal("notification_type"),
        ));
    }
    if notification_type == super::SUBSCRIBE_ALL {
        return Err(invalid("notification", "`*` is not a notification type"));
    }
    let data = envelope
        .data
        .ok_or_else(|| invalid("notification", "missing `data`"))?;
    check_depth("notification", "data", data)?;
    Ok(Publish {
        notification_type,
        data,
    })
}

/// Why a name reserved for private topics is refused where a wallet names it.
fn private_refusal(field: &str) -> String {
    format!(
        "`{field}`: names starting with `{}` are private topics, subscribed by `watch` or a resume token only",
        super::PRIVATE_TOPIC_PREFIX
    )
}

fn check_name(kind: &'static str, field: &str, value: &str) -> Result<(), ParseError> {
    if value.is_empty() || value.len() > NAME_BYTES_MAX || value.chars().any(char::is_control) {
        return Err(invalid(
            kind,
            format!("`{field}` must be 1 to {NAME_BYTES_MAX} printable bytes"),
        ));
    }
    Ok(())
}

/// Raw JSON the relay passes on (a notification's `data`, a ping's `id`) nests at most
/// [`DATA_DEPTH_MAX`] levels: the relay never parses it, but its receivers do.
fn check_depth(kind: &'static str, field: &str, raw: &RawValue) -> Result<(), ParseError> {
    if within_depth(raw.get().as_bytes(), DATA_DEPTH_MAX) {
        Ok(())
    } else {
        Err(invalid(
            kind,
            format!("`{field}` nests deeper than the limit of {DATA_DEPTH_MAX} levels"),
        ))
    }
}

/// Echoing a client's text back in an error is bounded.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::{parse_client_message, parse_with_envelope};

    /// The shortcut for pings answers every text exactly as the full envelope does: pings
    /// with and without ids, with other fields, malformed, duplicated, deep or escaped.
    #[test]
    fn the_ping_shortcut_answers_as_the_envelope_does() {
        let deep = format!(
            r#"{{"type":"ping","id":{}1{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        let texts = [
            r#"{"type":"ping"}"#,
            r#"{"type":"ping","id":42}"#,
            r#"{"id":"x","type":"ping"}"#,
            r#"{"type":"ping","id":{"a":[1,2]}}"#,
            r#"{"type":"ping","id":null}"#,
            r#"{"type":"p\u0069ng","id":1}"#,
            r#"{"type":"ping","id":1,"client_id":"c"}"#,
            r#"{"type":"ping","id":1,"client_id":5}"#,
            r#"{"type":"ping","type":"ping"}"#,
            r#"{"type":"ping","id":1,"id":2}"#,
            r#"{"type":"ping","id":}"#,
            r#"{"type":"ping"} trailing"#,
            r#"{"type":5}"#,
            r#"{"id":1}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"watch","id":1}"#,
            r#"{"type":"resume","id":1}"#,
            r#"{"type":"handshake","id":"a"}"#,
            r#"{"type":"notification"}"#,
            r#"{"type":"nope","id":2}"#,
            r#"["ping"]"#,
            r#"{"type":"ping","id":"a\"b"}"#,
            r#"{"type":"ping","id":"a\u0001"}"#,
            "{\"type\":\"ping\",\"id\":\"a\u{1}\"}",
            "{\"type\":\"ping\",\"id\":\"\u{e9}\u{7f}\"}",
            r#"{"type":"ping","id":""}"#,
            r#"{"type":"ping","id":"a\nb"}"#,
            r#"{"type":"ping","id":"a\qb"}"#,
            r#"{"type":"ping","id":"\u00zz"}"#,
            "{\"type\":\"ping\",\"id\":\"\u{1f}\"}",
            r#"{"type":"ping","id":"}"#,
            r#"{"type":"ping","id":"a"}}"#,
            r#"{"type":"ping","id":"a","x":"b"}"#,
            r#"{"type":"ping","id":-0}"#,
            r#"{"type":"ping","id":007}"#,
            r#"{"type":"ping","id":-}"#,
            r#"{"type":"ping","id":1.5}"#,
            r#"{"type":"ping","id":123456789012345678901234567890}"#,
            r#"{"type":"ping","id":true}"#,
            r#"{"type":"ping" }"#,
            r#"{"type":"ping"}}"#,
            r#"{"type":"pingx"}"#,
            &deep,
        ];
        for text in texts {
            assert_eq!(
                format!("{:?}", parse_client_message(text)),
                format!("{:?}", parse_with_envelope(text)),
                "{text}"
            );
        }
    }

    proptest::proptest! {
        /// Texts near a ping's shape, built from pieces the shortcuts treat specially
        /// (quotes, backslashes, control characters, digits, braces, spaces), are answered
        /// exactly as the envelope answers them.
        #[test]
        fn texts_near_a_ping_are_answered_as_the_envelope_does(
            prefix in proptest::sample::select(vec![
                r#"{"type":"ping","id":"#,
                r#"{"type":"ping""#,
                r#"{"type": "ping","id":"#,
                r#"{"id":"#,
                r#"{"type":"ping","id":"x","id":"#,
            ]),
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "\"", "\\", "a", "\u{e9}", "0", "7", "-", ".", "e", "}", "{", "[", "]", ",",
                " ", "\u{1}", "\u{1f}", "\u{7f}", "null", r#""type":"ping""#, ":",
            ]), 0..8),
            quoted in proptest::bool::ANY,
            close in proptest::bool::ANY,
        ) {
            let mut text = prefix.to_string();
            let quote = if quoted { "\"" } else { "" };
            text.push_str(quote);
            text.extend(pieces);
            text.push_str(quote);
            if close {
                text.push('}');
            }
            proptest::prop_assert_eq!(
                format!("{:?}", parse_client_message(&text)),
                format!("{:?}", parse_with_envelope(&text)),
                "{}", text
            );
        }
    }
}
