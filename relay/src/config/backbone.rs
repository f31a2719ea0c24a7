//! `[backbone]`: what carries notifications between relays. `mesh` (the default) is the
//! relay's own flooding mesh and needs no other service; `nats` publishes every
//! notification to a NATS JetStream stream that every relay consumes.
//!
//! Kept apart from `config.rs` because it holds secrets (NATS password, token) that must
//! be redactable and must never reach logs or `GET /config` in clear.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};
use crate::secret::redact;

/// Which backbone carries notifications between relays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    #[default]
    Mesh,
    Nats,
}

impl BackboneKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackboneKind::Mesh => "mesh",
            BackboneKind::Nats => "nats",
        }
    }
}

impl std::str::FromStr for BackboneKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "mesh" => Ok(BackboneKind::Mesh),
            "nats" => Ok(BackboneKind::Nats),
            other => Err(format!("unknown backbone `{other}` (mesh, nats)")),
        }
    }
}

/// `[backbone]`. Only `kind` matters in mesh mode; the other keys configure NATS.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackboneConfig {
    pub kind: BackboneKind,
    /// NATS servers (`nats://host:port` or `tls://host:port`); the client reconnects to
    /// any of them (and to those the cluster announces).
    pub urls: Vec<String>,
    /// User and password authentication (both or neither).
    pub user: Option<String>,
    /// Secret: shown as `***`.
    #[serde(serialize_with = "serialize_redacted")]
    pub password: Option<String>,
    /// Token authentication. Secret: shown as `***`.
    #[serde(serialize_with = "serialize_redacted")]
    pub token: Option<String>,
    /// A `.creds` file (JWT and nkey seed), for decentralized authentication.
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU…`), for nkey authentication.
    pub nkey_file: Option<PathBuf>,
    /// PEM certificates to trust for the servers' TLS (TLS is then required).
    pub ca_file: Option<PathBuf>,
    /// The JetStream stream notifications go to (created when missing); the membership
    /// bucket is named `<stream>_relays`.
    pub stream: String,
    /// Copies of the stream and the membership bucket kept in the cluster (1 to 5).
    pub replicas: usize,
    /// Bytes of notifications waiting for the stream's acknowledgement while the backbone
    /// is slow or down; beyond it publications are refused (`backbone_unavailable`).
    pub buffer_bytes_max: usize,
    /// Seconds one publication may wait for its acknowledgement before it is retried.
    pub publish_timeout_secs: u64,
    /// Seconds the stream keeps a notification (and deduplicates its id: two minutes,
    /// at most this).
    pub max_age_secs: u64,
}

impl Default for BackboneConfig {
    fn default() -> Self {
        BackboneConfig {
            kind: BackboneKind::Mesh,
            urls: Vec::new(),
            user: None,
            password: None,
            token: None,
            creds_file: None,
            nkey_file: None,
            ca_file: None,
            stream: "SDK_RELAY".into(),
            replicas: 1,
            buffer_bytes_max: 16 << 20,
            publish_timeout_secs: 5,
            max_age_secs: 3600,
        }
    }
}

/// Longest stream name (the bucket adds `_relays`, and KV names are bounded too).
pub const STREAM_NAME_BYTES_MAX: usize = 48;
/// Most replicas JetStream keeps of a stream.
pub const REPLICAS_MAX: usize = 5;

fn serialize_redacted<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    redact(v.as_deref()).serialize(s)
}

impl BackboneConfig {
    /// A copy safe to show: password and token replaced by `***` when set.
    pub fn redacted(&self) -> BackboneConfig {
        BackboneConfig {
            password: redact(self.password.as_deref()).map(Into::into),
            token: redact(self.token.as_deref()).map(Into::into),
            ..self.clone()
        }
    }

    /// Checks the NATS keys when `kind = "nats"` (mesh mode ignores them).
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self, message_bytes_max: usize) -> Result<(), ConfigError> {
        if self.kind == BackboneKind::Mesh {
            return Ok(());
        }
        if self.urls.is_empty() {
            return Err(invalid(
                "backbone.urls",
                "`kind = \"nats\"` needs at least one NATS server URL",
            ));
        }
        for (i, url) in self.urls.iter().enumerate() {
            validate_url(url).map_err(|m| invalid(&format!("backbone.urls[{i}]"), m))?;
        }
        self.validate_credentials()?;
        if self.stream.is_empty()
            || self.stream.len() > STREAM_NAME_BYTES_MAX
            || !self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid(
                "backbone.stream",
                format!("1 to {STREAM_NAME_BYTES_MAX} of A-Z a-z 0-9 _ -"),
            ));
        }
        if !(1..=REPLICAS_MAX).contains(&self.replicas) {
            return Err(invalid(
                "backbone.replicas",
                format!("must be 1 to {REPLICAS_MAX}"),
            ));
        }
        if self.buffer_bytes_max < message_bytes_max {
            return Err(invalid(
                "backbone.buffer_bytes_max",
                format!(
                    "must hold at least one message of limits.ws_message_bytes_max ({message_bytes_max} bytes)"
                ),
            ));
        }
        if self.publish_timeout_secs == 0 {
            return Err(invalid("backbone.publish_timeout_secs", "must be positive"));
        }
        if self.max_age_secs < 120 {
            return Err(invalid(
                "backbone.max_age_secs",
                "must be at least 120 (the stream's deduplication window)",
            ));
        }
        Ok(())
    }

    fn validate_credentials(&self) -> Result<(), ConfigError> {
        let kinds = [
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
            self.creds_file.is_some(),
            self.nkey_file.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(invalid(
                "backbone",
                "use one of user/password, token, creds_file, nkey_file",
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(invalid(
                "backbone.password",
                "user and password go together",
            ));
        }
        for (key, path) in [
            ("backbone.creds_file", &self.creds_file),
            ("backbone.nkey_file", &self.nkey_file),
            ("backbone.ca_file", &self.ca_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(invalid(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        Ok(())
    }
}

/// `nats://`, `tls://` (or no scheme) followed by `host:port`.
fn validate_url(url: &str) -> Result<(), String> {
    let rest = ["nats://", "tls://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .unwrap_or(url);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!(
            "`{url}` is not nats://host:port or tls://host:port"
        )),
    }
}

impl std::fmt::Debug for BackboneConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.redacted();
        f.debug_struct("BackboneConfig")
            .field("kind", &r.kind)
            .field("urls", &r.urls)
            .field("user", &r.user)
            .field("password", &r.password)
            .field("token", &r.token)
            .field("creds_file", &r.creds_file)
            .field("nkey_file", &r.nkey_file)
            .field("ca_file", &r.ca_file)
            .field("stream", &r.stream)
            .field("replicas", &r.replicas)
            .field("buffer_bytes_max", &r.buffer_bytes_max)
            .field("publish_timeout_secs", &r.publish_timeout_secs)
            .field("max_age_secs", &r.max_age_secs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{BackboneConfig, BackboneKind};

    fn nats() -> BackboneConfig {
        BackboneConfig {
            kind: BackboneKind::Nats,
            urls: vec!["nats://127.0.0.1:4222".into()],
            ..BackboneConfig::default()
        }
    }

    #[test]
    fn mesh_needs_nothing_and_nats_needs_urls() {
        assert!(BackboneConfig::default().validate(1 << 20).is_ok());
        assert!(nats().validate(1 << 20).is_ok());
        let none = BackboneConfig {
            urls: vec![],
            ..nats()
        };
        let error = none.validate(1 << 20).unwrap_err().to_string();
        assert!(error.contains("backbone.urls"), "{error}");
    }

    #[test]
    fn names_the_bad_key() {
        let cases: Vec<(BackboneConfig, &str)> = vec![
            (
                BackboneConfig {
                    urls: vec!["http://x".into()],
                    ..nats()
                },
                "backbone.urls[0]",
            ),
            (
                BackboneConfig {
                    stream: "a.b".into(),
                    ..nats()
                },
                "backbone.stream",
            ),
            (
                BackboneConfig {
                    replicas: 0,
                    ..nats()
                },
                "backbone.replicas",
            ),
            (
                BackboneConfig {
                    user: Some("u".into()),
                    ..nats()
                },
                "backbone.password",
            ),
            (
                BackboneConfig {
                    token: Some("t".into()),
                    user: Some("u".into()),
                    password: Some("p".into()),
                    ..nats()
                },
                "one of",
            ),
            (
                BackboneConfig {
                    buffer_bytes_max: 10,
                    ..nats()
                },
                "backbone.buffer_bytes_max",
            ),
        ];
        for (config, key) in cases {
            let error = config.validate(1 << 20).unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_serialization() {
        let config = BackboneConfig {
            password: Some("hunter2".into()),
            user: Some("relay".into()),
            ..nats()
        };
        let shown = format!("{config:?} {}", toml::to_string(&config).unwrap());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
        let token = BackboneConfig {
            token: Some("s3cret".into()),
            ..nats()
        };
        let shown = format!("{token:?} {}", toml::to_string(&token.redacted()).unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
