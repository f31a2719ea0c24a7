//! `[watcher]`: which keys the relay watches on chain and how hard it polls.
//!
//! Kept apart from `config.rs` because it holds a secret (the scan key) that must be
//! redactable and must never reach logs or `GET /config` in clear.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::secret::{REDACTED, redact};

/// Longest deadline for one chain source call: past it, `/health` would report a hung
/// source too late to be of use.
pub const REQUEST_TIMEOUT_SECS_MAX: u64 = 600;

/// `[watcher]`: polling cadence, the relay's own silent-payment keys, reorg and wallet bounds.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatcherConfig {
    /// Seconds between two looks at the chain tip.
    pub poll_interval_secs: u64,
    /// Deadline of one call to Bitcoin Core or Blindbit, connect included. A call that
    /// misses it is a failure at once (`/health` degraded), retried at the next poll.
    pub request_timeout_secs: u64,
    /// The relay's own scan secret key (64 hex). Secret: serialized (`GET /config`,
    /// `check-config`) and debug-printed only as `***`.
    #[serde(serialize_with = "serialize_redacted")]
    pub scan_secret_key: Option<String>,
    /// A file holding the scan secret key, so it need not sit in the TOML file.
    pub scan_secret_key_file: Option<PathBuf>,
    /// The relay's own spend public key (66 hex, compressed).
    pub spend_public_key: Option<String>,
    /// First block that can hold a payment to the relay's own key.
    pub birth_height: Option<u32>,
    /// Deepest reorg handled; also the number of (height, hash) pairs remembered.
    pub reorg_depth_max: u32,
    /// Wallets that may be registered at once, away ones included.
    pub wallets_max: usize,
    /// Blocks one chain source may be behind the other (Blindbit behind Core while it
    /// indexes, or Core behind Blindbit) before the watcher is `degraded` and
    /// `/health/ready` answers 503.
    pub lag_blocks_max: u32,
    /// Keep wallet registrations (scan secret keys included, in a 0600 file in
    /// `data_dir`) and the payments found for a wallet while it is away, across
    /// disconnections and restarts. Off: a registration ends with its connection.
    pub persist_wallets: bool,
    /// A wallet away (no connection open) longer than this is forgotten: its scan key
    /// leaves the disk and its kept payments are dropped.
    pub wallet_away_secs_max: u64,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            poll_interval_secs: 10,
            request_timeout_secs: 30,
            scan_secret_key: None,
            scan_secret_key_file: None,
            spend_public_key: None,
            birth_height: None,
            reorg_depth_max: 100,
            wallets_max: 1000,
            lag_blocks_max: 1,
            persist_wallets: true,
            wallet_away_secs_max: 30 * 24 * 3600,
        }
    }
}

impl std::fmt::Debug for WatcherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.redacted();
        f.debug_struct("WatcherConfig")
            .field("poll_interval_secs", &r.poll_interval_secs)
            .field("request_timeout_secs", &r.request_timeout_secs)
            .field("scan_secret_key", &r.scan_secret_key)
            .field("scan_secret_key_file", &r.scan_secret_key_file)
            .field("spend_public_key", &r.spend_public_key)
            .field("birth_height", &r.birth_height)
            .field("reorg_depth_max", &r.reorg_depth_max)
            .field("wallets_max", &r.wallets_max)
            .field("lag_blocks_max", &r.lag_blocks_max)
            .field("persist_wallets", &r.persist_wallets)
            .field("wallet_away_secs_max", &r.wallet_away_secs_max)
            .finish()
    }
}

fn serialize_redacted<S: serde::Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_some(REDACTED),
        None => serializer.serialize_none(),
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("watcher.{key}"),
        message: message.into(),
    }
}

fn is_hex(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_hexdigit())
}

impl WatcherConfig {
    /// A copy safe to show (`GET /config`, `check-config`): the scan secret key is replaced.
    pub fn redacted(&self) -> WatcherConfig {
        WatcherConfig {
            scan_secret_key: redact(self.scan_secret_key.as_deref()).map(Into::into),
            ..self.clone()
        }
    }

    /// Whether the relay's own key is configured (it then needs a spend key too).
    pub fn has_own_key(&self) -> bool {
        self.scan_secret_key.is_some() || self.scan_secret_key_file.is_some()
    }

    /// Checks bounds and key formats; never echoes the secret key.
    ///
    /// # Errors
    /// The first invalid value, as `ConfigError::Invalid { key: "watcher.<key>", .. }`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("poll_interval_secs", self.poll_interval_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("reorg_depth_max", u64::from(self.reorg_depth_max)),
            ("wallets_max", self.wallets_max as u64),
            ("wallet_away_secs_max", self.wallet_away_secs_max),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.request_timeout_secs > REQUEST_TIMEOUT_SECS_MAX {
            return Err(invalid(
                "request_timeout_secs",
                format!("must be at most {REQUEST_TIMEOUT_SECS_MAX}"),
            ));
        }
        if self.scan_secret_key.is_some() && self.scan_secret_key_file.is_some() {
            return Err(invalid(
                "scan_secret_key_file",
                "use either scan_secret_key or scan_secret_key_file",
            ));
        }
        if let Some(key) = &self.scan_secret_key
            && !is_hex(key, 64)
        {
            return Err(invalid("scan_secret_key", "must be 64 hex characters"));
        }
        self.validate_spend_key()
    }

    fn validate_spend_key(&self) -> Result<(), ConfigError> {
        match (&self.spend_public_key, self.has_own_key()) {
            (Some(key), _) if !is_hex(key, 66) => Err(invalid(
                "spend_public_key",
                "must be 66 hex characters (a compressed public key)",
            )),
            (None, true) => Err(invalid(
                "spend_public_key",
                "must be set when a scan secret key is configured",
            )),
            (Some(_), false) => Err(invalid(
                "scan_secret_key",
                "must be set (or scan_secret_key_file) when spend_public_key is set",
            )),
            _ => Ok(()),
        }
    }

    /// The scan secret key as hex: from the TOML value or read from the key file.
    ///
    /// # Errors
    /// The key file cannot be read (the error names the file, never its content).
    pub fn scan_secret_key_hex(&self) -> Result<Option<String>, ConfigError> {
        if let Some(key) = &self.scan_secret_key {
            return Ok(Some(key.clone()));
        }
        match &self.scan_secret_key_file {
            Some(path) => read_key_file(path).map(Some),
            None => Ok(None),
        }
    }
}

fn read_key_file(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(
            "scan_secret_key_file",
            format!("cannot read {}: {}", path.display(), e.kind()),
        )
    })?;
    let key = text.trim().to_string();
    if !is_hex(&key, 64) {
        return Err(invalid(
            "scan_secret_key_file",
            format!("{} must hold 64 hex characters", path.display()),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn own() -> WatcherConfig {
        WatcherConfig {
            scan_secret_key: Some(SECRET.into()),
            spend_public_key: Some(format!("02{}", "ab".repeat(32))),
            ..WatcherConfig::default()
        }
    }

    // Proves the defaults of the issue and that the secret never shows in Debug or redacted().
    #[test]
    fn defaults_and_redaction() {
        let d = WatcherConfig::default();
        assert_eq!((d.poll_interval_secs, d.reorg_depth_max), (10, 100));
        d.validate().unwrap();
        let c = own();
        c.validate().unwrap();
        assert!(!format!("{c:?}").contains(SECRET));
        let r = c.redacted();
        assert_eq!(r.scan_secret_key.as_deref(), Some(REDACTED));
        assert!(!toml::to_string(&r).unwrap().contains(SECRET));
        let serialized = toml::to_string(&c).unwrap();
        assert!(!serialized.contains(SECRET) && serialized.contains(REDACTED));
    }

    // Proves each invalid value is refused under its `watcher.` key, without echoing secrets.
    #[test]
    fn invalid_values_name_their_key() {
        let key_of = |c: WatcherConfig| match c.validate() {
            Err(ConfigError::Invalid { key, message }) => {
                assert!(!message.contains(SECRET));
                key
            }
            other => panic!("expected invalid, got {other:?}"),
        };
        let mut c = own();
        c.poll_interval_secs = 0;
        assert_eq!(key_of(c), "watcher.poll_interval_secs");
        let mut c = own();
        c.request_timeout_secs = 0;
        assert_eq!(key_of(c), "watcher.request_timeout_secs");
        let mut c = own();
        c.request_timeout_secs = REQUEST_TIMEOUT_SECS_MAX + 1;
        assert_eq!(key_of(c), "watcher.request_timeout_secs");
        let mut c = own();
        c.wallets_max = 0;
        assert_eq!(key_of(c), "watcher.wallets_max");
        let mut c = own();
        c.scan_secret_key = Some("zz".into());
        assert_eq!(key_of(c), "watcher.scan_secret_key");
        let mut c = own();
        c.spend_public_key = Some("02".into());
        assert_eq!(key_of(c), "watcher.spend_public_key");
        let mut c = own();
        c.spend_public_key = None;
        assert_eq!(key_of(c), "watcher.spend_public_key");
        let mut c = own();
        c.scan_secret_key_file = Some("k".into());
        assert_eq!(key_of(c), "watcher.scan_secret_key_file");
    }

    // Proves the `[watcher]` table parses inside a full relay config and is validated there.
    #[test]
    fn parses_inside_relay_config() {
        let text = format!(
            "[watcher]\npoll_interval_secs = 3\nscan_secret_key = \"{SECRET}\"\nspend_public_key = \"02{}\"\nbirth_height = 295000\n",
            "ab".repeat(32)
        );
        let config = crate::config::Config::from_toml_str(&text).unwrap();
        assert_eq!(config.watcher.poll_interval_secs, 3);
        assert_eq!(config.watcher.birth_height, Some(295000));
        config.validate().unwrap();
        assert!(crate::config::Config::from_toml_str("[watcher]\nbogus = 1\n").is_err());
        let bad = crate::config::Config::from_toml_str("[watcher]\nreorg_depth_max = 0\n").unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("watcher.reorg_depth_max")
        );
    }
}
