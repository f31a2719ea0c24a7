use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Capabilities, Capability, DATA_DEPTH_MAX, NAME_BYTES_MAX, SUBSCRIPTIONS_MAX, error_code,
    within_depth,
};

/// Every field any client message may carry; `type` selects which are required.
/// One flat struct (not a tagged enum) so that `data` can stay borrowed raw JSON.
#[derive(Deserialize)]
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

/// A validated message from a client.
#[derive(Debug)]
pub enum ClientMessage<'a> {
    Handshake(Handshake),
    /// `id`, when present, is echoed in the `pong`.
    Ping {
        id: Option<&'a RawValue>,
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
    let envelope: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        // A well-formed object without a usable `type` is an invalid message, not bad JSON.
        if e.is_data() {
            invalid("message", message)
        } else {
            ParseError::MalformedJson(message)
        }
    })?;
    match envelope.kind.as_ref() {
        "handshake" => handshake(envelope).map(ClientMessage::Handshake),
        "ping" => {
            if let Some(id) = envelope.id {
                check_depth("ping", "id", id)?;
            }
            Ok(ClientMessage::Ping { id: envelope.id })
        }
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
