//! Configuration: defaults from the specification, a TOML file, `SDK_RELAY_*` environment
//! variables and command-line flags, in increasing order of precedence.
//!
//! The TOML keys mirror `GET /config`. Validation names the offending key, so an operator
//! knows what to fix before the relay starts.

mod backbone;
mod cli;
mod watcher;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::{REDACTED, redact};
pub use backbone::{BackboneConfig, BackboneKind};
pub use cli::{Cli, Command, RunArgs};
pub use watcher::WatcherConfig;

/// The effective configuration of one relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub relay_id: String,
    pub network: Network,
    /// WebSocket listen address (`host:port`).
    pub ws_url: String,
    /// HTTP API listen address (`host:port`).
    pub http_url: String,
    /// The address other relays should dial; defaults to `ws_url`.
    pub advertise_addr: Option<String>,
    /// Where the relay keeps state that survives a restart.
    pub data_dir: PathBuf,
    pub log_level: LogLevel,
    /// How the process log (stderr) is written: `text` or `json` (one object a line).
    pub log_format: LogFormat,
    pub sync: SyncConfig,
    pub mesh: MeshConfig,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub bitcoin_core: Option<BitcoinCoreConfig>,
    pub blindbit: Option<BlindbitConfig>,
    pub watcher: WatcherConfig,
    /// What carries notifications between relays: the mesh (default) or NATS JetStream.
    pub backbone: BackboneConfig,
    /// A deliberate fault for the simulator's negative controls; never in production
    /// builds, never read from a file.
    #[cfg(feature = "mutations")]
    #[serde(skip)]
    pub mutation: Option<crate::mutation::Mutation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Mainnet,
    Testnet,
    Signet,
    Regtest,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mainnet" | "main" | "bitcoin" => Ok(Network::Mainnet),
            "testnet" | "test" | "testnet4" => Ok(Network::Testnet),
            "signet" => Ok(Network::Signet),
            "regtest" => Ok(Network::Regtest),
            other => Err(format!(
                "unknown network `{other}` (mainnet, testnet, signet, regtest)"
            )),
        }
    }
}

/// The process log's format: human-readable lines (coloured only on a terminal), or one
/// JSON object a line. Either way every record carries the relay id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format `{other}` (text, json)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            other => Err(format!(
                "unknown log level `{other}` (trace, debug, info, warn, error)"
            )),
        }
    }
}

/// `[sync]`: how often the relay exchanges state with its peers, in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub interval: u64,
    pub health_interval: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval: 30,
            health_interval: 60,
        }
    }
}

/// `[tls]`: the certificate both listeners serve (WSS on the WebSocket port, HTTPS on the
/// API port). Absent files mean plaintext, the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: Option<PathBuf>,
    /// Seconds between checks of the files' size and modification time; a change
    /// reloads them (as SIGHUP does). 0: reload on SIGHUP only.
    pub reload_check_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            reload_check_secs: 10,
        }
    }
}

impl TlsConfig {
    /// The certificate and key files, when TLS is on.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

/// `[mesh]`: the relays to dial at start-up and how many links to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    pub peers: Vec<String>,
    pub peers_max: usize,
    /// Peer links `/health/ready` requires before it answers 200 (0: none); at most
    /// `peers_max`.
    pub ready_peers_min: usize,
    /// DNS names (`host:port`) whose every address is a peer: resolved every
    /// `peers_dns_interval_secs`, each address dialed, addresses no longer in the answer
    /// no longer dialed (a Kubernetes headless Service names every relay pod this way).
    pub peers_dns: Vec<String>,
    pub peers_dns_interval_secs: u64,
    /// The relay's secret key file (default `<data_dir>/relay.key`, created on first
    /// start with mode 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Public keys (64 hex digits or base64) of the relays allowed to join this mesh;
    /// empty = any key (then `auth.mesh_token`, if set, is what gates the mesh).
    pub trusted_keys: Vec<String>,
    /// Dial peers over TLS (`wss://`): every peer then serves `[tls]`.
    pub tls: bool,
    /// PEM CA certificates that peers' certificates must chain to (default: the bundled
    /// web roots).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (and `client_key_file`) presented when dialing peers.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            peers: Vec::new(),
            peers_max: 32,
            ready_peers_min: 0,
            peers_dns: Vec::new(),
            peers_dns_interval_secs: 15,
            key_file: None,
            trusted_keys: Vec::new(),
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

/// `[limits]`: every bound the relay enforces on clients. All must be positive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub ws_connections_max: usize,
    pub ws_message_bytes_max: usize,
    pub heartbeat_interval_secs: u64,
    pub connection_timeout_secs: u64,
    /// Frames queued for one client before it is disconnected as a slow consumer.
    pub ws_outbound_queue_max: usize,
    /// Bytes queued for one client before it is disconnected as a slow consumer (a
    /// message alone in the queue always fits).
    pub ws_outbound_queue_bytes_max: usize,
    /// Messages per second one handshaken wallet may send, sustained (token bucket).
    pub ws_messages_per_second_max: u32,
    /// Messages one wallet may send at once (the bucket's size); it starts full.
    pub ws_messages_burst_max: u32,
    pub http_requests_per_minute_max: u32,
    pub http_body_bytes_max: usize,
    pub http_timeout_secs: u64,
    pub http_connections_max: usize,
    /// Connections one client address may hold at once on the WebSocket port.
    pub ws_connections_per_address_max: usize,
    /// Connections one client address may hold at once on the HTTP API port.
    pub http_connections_per_address_max: usize,
    /// Seconds a new WebSocket connection may take to send its upgrade request (clamped
    /// to `connection_timeout_secs`).
    pub upgrade_timeout_secs: u64,
    /// Seconds an upgraded connection may take to handshake (clamped to
    /// `connection_timeout_secs`).
    pub handshake_timeout_secs: u64,
    /// Seconds a new connection may take to complete its TLS handshake (clamped to
    /// `connection_timeout_secs`); only with `[tls]`.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds over which the relay closes its wallets at SIGINT/SIGTERM (and waits for
    /// them to go).
    pub shutdown_drain_secs: u64,
    /// Seconds over which lame-duck mode (SIGUSR2, `POST /admin/drain`) spreads closing
    /// its wallets, so they do not all reconnect elsewhere at once.
    pub lame_duck_secs: u64,
    /// Bytes of notifications the mesh keeps for anti-entropy and resumes (besides the
    /// 10,000-entry count and the age bound); the oldest are dropped first.
    pub notification_log_bytes_max: usize,
    /// Seconds a notification stays in the log: anti-entropy repairs and resumes reach
    /// this far back (a resume across an older gap reports `recovered: false`).
    pub notification_log_retention_secs: u64,
    /// New notifications one peer link may bring in a second (each costs a signature
    /// check): past it they are dropped unchecked, for anti-entropy to fetch later; past
    /// twice it the link is cut.
    pub mesh_notifications_per_second_max: u32,
}

/// Default `limits.notification_log_bytes_max`: 64 MiB, 6,400 notifications of 10 KiB
/// (the count bound, 10,000, binds below ~6.5 KiB), 64 of the largest (1 MiB).
pub const NOTIFICATION_LOG_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Smallest `limits.notification_log_bytes_max`: one notification of the default maximum
/// size (1 MiB) must fit.
pub const NOTIFICATION_LOG_BYTES_MAX_MIN: usize = 1 << 20;

/// Default `limits.mesh_notifications_per_second_max`: a signature check costs ~35 µs
/// here, so one link flooding at this rate takes at most about a third of a core; a mesh
/// whose wallets publish more than this in all needs it raised on every relay.
pub const MESH_NOTIFICATIONS_PER_SECOND_MAX_DEFAULT: u32 = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ws_connections_max: 1000,
            ws_message_bytes_max: 1 << 20,
            heartbeat_interval_secs: 30,
            connection_timeout_secs: 60,
            ws_outbound_queue_max: 1024,
            ws_outbound_queue_bytes_max: 16 << 20,
            ws_messages_per_second_max: 100,
            ws_messages_burst_max: 200,
            http_requests_per_minute_max: 1000,
            http_body_bytes_max: 10 << 20,
            http_timeout_secs: 30,
            http_connections_max: 100,
            ws_connections_per_address_max: 100,
            http_connections_per_address_max: 20,
            upgrade_timeout_secs: 10,
            handshake_timeout_secs: 10,
            tls_handshake_timeout_secs: 10,
            shutdown_drain_secs: 5,
            lame_duck_secs: 30,
            notification_log_bytes_max: NOTIFICATION_LOG_BYTES_MAX_DEFAULT,
            notification_log_retention_secs: 3600,
            mesh_notifications_per_second_max: MESH_NOTIFICATIONS_PER_SECOND_MAX_DEFAULT,
        }
    }
}

impl Limits {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs)
    }
    pub fn connection_timeout(&self) -> Duration {
        Duration::from_secs(self.connection_timeout_secs)
    }
    /// The bound on the HTTP exchange before a WebSocket upgrade.
    pub fn upgrade_timeout(&self) -> Duration {
        Duration::from_secs(self.upgrade_timeout_secs.min(self.connection_timeout_secs))
    }
    /// The bound on a TLS handshake.
    pub fn tls_handshake_timeout(&self) -> Duration {
        Duration::from_secs(
            self.tls_handshake_timeout_secs
                .min(self.connection_timeout_secs),
        )
    }
    /// The bound on the time from the upgrade to the handshake.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(
            self.handshake_timeout_secs
                .min(self.connection_timeout_secs),
        )
    }
}

/// `[auth]`: empty lists and absent values mean open access. Every field but
/// `http_basic_user` is a secret: `Debug` and [`Config::redacted`] show it as `***`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens a WebSocket client must present in its handshake; empty = open.
    pub ws_tokens: Vec<String>,
    pub http_basic_user: Option<String>,
    pub http_basic_password: Option<String>,
    /// Shared secret relays present to each other.
    pub mesh_token: Option<String>,
}

/// `[bitcoin_core]`: `rpc_password` is a secret (`Debug` and [`Config::redacted`] show
/// `***`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BitcoinCoreConfig {
    pub url: String,
    #[serde(default)]
    pub wallet: Option<String>,
    #[serde(default)]
    pub rpc_user: Option<String>,
    #[serde(default)]
    pub rpc_password: Option<String>,
    #[serde(default)]
    pub cookie_file: Option<PathBuf>,
    /// PEM CA certificates an `https://` URL's certificate must chain to (default: the
    /// bundled web roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlindbitConfig {
    pub url: String,
    /// PEM CA certificates an `https://` URL's certificate must chain to (default: the
    /// bundled web roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl AuthConfig {
    /// A copy safe to show: each token and password replaced by `***`, absent ones absent.
    pub fn redacted(&self) -> AuthConfig {
        AuthConfig {
            ws_tokens: self.ws_tokens.iter().map(|_| REDACTED.into()).collect(),
            http_basic_user: self.http_basic_user.clone(),
            http_basic_password: redact(self.http_basic_password.as_deref()).map(Into::into),
            mesh_token: redact(self.mesh_token.as_deref()).map(Into::into),
        }
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.redacted();
        f.debug_struct("AuthConfig")
            .field("ws_tokens", &r.ws_tokens)
            .field("http_basic_user", &r.http_basic_user)
            .field("http_basic_password", &r.http_basic_password)
            .field("mesh_token", &r.mesh_token)
            .finish()
    }
}

impl BitcoinCoreConfig {
    /// A copy safe to show: the RPC password replaced by `***` when set.
    pub fn redacted(&self) -> BitcoinCoreConfig {
        BitcoinCoreConfig {
            rpc_password: redact(self.rpc_password.as_deref()).map(Into::into),
            ..self.clone()
        }
    }
}

impl std::fmt::Debug for BitcoinCoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.redacted();
        f.debug_struct("BitcoinCoreConfig")
            .field("url", &r.url)
            .field("wallet", &r.wallet)
            .field("rpc_user", &r.rpc_user)
            .field("rpc_password", &r.rpc_password)
            .field("cookie_file", &r.cookie_file)
            .field("ca_file", &r.ca_file)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            relay_id: "relay-1".into(),
            network: Network::Signet,
            ws_url: "0.0.0.0:8090".into(),
            http_url: "0.0.0.0:8091".into(),
            advertise_addr: None,
            data_dir: PathBuf::from("data"),
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            sync: SyncConfig::default(),
            mesh: MeshConfig::default(),
            limits: Limits::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            bitcoin_core: None,
            blindbit: None,
            watcher: WatcherConfig::default(),
            backbone: BackboneConfig::default(),
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Reads a TOML file; unknown keys are refused.
    ///
    /// # Errors
    /// The file cannot be read, is not TOML, or holds an unknown key or a mistyped value.
    pub fn from_toml_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::from_toml_str(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    /// Parses TOML text; the error message names the key and line at fault.
    ///
    /// # Errors
    /// Text that is not TOML, unknown keys, mistyped values.
    pub fn from_toml_str(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// A copy safe to show (`check-config`, `GET /config`): every secret (WebSocket
    /// tokens, HTTP and mesh passwords, the Core RPC password, the scan secret key)
    /// replaced by `***`; unset secrets stay unset. `Debug` shows the same.
    pub fn redacted(&self) -> Config {
        Config {
            auth: self.auth.redacted(),
            bitcoin_core: self.bitcoin_core.as_ref().map(BitcoinCoreConfig::redacted),
            watcher: self.watcher.redacted(),
            backbone: self.backbone.redacted(),
            ..self.clone()
        }
    }

    /// The address other relays dial to reach this one.
    pub fn advertised_addr(&self) -> &str {
        self.advertise_addr.as_deref().unwrap_or(&self.ws_url)
    }

    pub fn sync_interval(&self) -> Duration {
        Duration::from_secs(self.sync.interval)
    }

    pub fn health_interval(&self) -> Duration {
        Duration::from_secs(self.sync.health_interval)
    }

    /// Where the relay's secret key is kept.
    pub fn key_path(&self) -> PathBuf {
        crate::identity::key_path(&self.data_dir, self.mesh.key_file.as_deref())
    }

    /// The keys in `mesh.trusted_keys` (validated: unreadable ones are refused at load).
    pub fn trusted_keys(&self) -> Vec<crate::identity::PublicKey> {
        self.mesh
            .trusted_keys
            .iter()
            .filter_map(|k| crate::identity::PublicKey::parse(k).ok())
            .collect()
    }

    /// Whether any relay may join the mesh: neither `mesh.trusted_keys` nor
    /// `auth.mesh_token` is set.
    pub fn mesh_is_open(&self) -> bool {
        self.mesh.trusted_keys.is_empty() && self.auth.mesh_token.is_none()
    }

    /// Checks every value and the relationships between them.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_relay_id(&self.relay_id)?;
        validate_host_port("ws_url", &self.ws_url, true)?;
        validate_host_port("http_url", &self.http_url, true)?;
        if let Some(addr) = &self.advertise_addr {
            validate_host_port("advertise_addr", addr, false)?;
        }
        for (i, peer) in self.mesh.peers.iter().enumerate() {
            validate_host_port(&format!("mesh.peers[{i}]"), peer, false)?;
        }
        for (i, name) in self.mesh.peers_dns.iter().enumerate() {
            validate_host_port(&format!("mesh.peers_dns[{i}]"), name, false)?;
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        self.validate_advertised()?;
        self.validate_positive()?;
        self.validate_ordering()?;
        self.validate_budgets()?;
        self.validate_connection_bounds()?;
        self.validate_auth()?;
        self.validate_chain_sources()?;
        self.validate_tls()?;
        self.validate_backbone()?;
        self.watcher.validate()
    }

    /// NATS mode replaces the mesh's links: configured peers would never be dialed.
    fn validate_backbone(&self) -> Result<(), ConfigError> {
        if self.backbone.kind == BackboneKind::Nats && !self.mesh.peers.is_empty() {
            return Err(invalid(
                "mesh.peers",
                "must be empty with `backbone.kind = \"nats\"` (relays meet through NATS)",
            ));
        }
        self.backbone.validate(self.limits.ws_message_bytes_max)
    }

    /// With peers configured, this relay tells them where to dial it back: an unspecified
    /// host (`0.0.0.0`, `[::]`, as the default `ws_url` has) cannot be dialed. Without
    /// peers nothing is advertised, and the defaults stay usable.
    fn validate_advertised(&self) -> Result<(), ConfigError> {
        if self.mesh.peers.is_empty() && self.mesh.peers_dns.is_empty() {
            return Ok(());
        }
        let addr = self.advertised_addr();
        if host_is_unspecified(addr) {
            let source = if self.advertise_addr.is_some() {
                "advertise_addr"
            } else {
                "ws_url, as advertise_addr is not set"
            };
            return Err(invalid(
                "advertise_addr",
                format!(
                    "`{addr}` (from {source}) is an unspecified address that peers cannot \
                     dial back; with mesh.peers configured, set --advertise-addr \
                     (SDK_RELAY_ADVERTISE_ADDR, or advertise_addr in the file) to the \
                     host:port other relays reach this one at"
                ),
            ));
        }
        Ok(())
    }

    fn validate_positive(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive = [
            ("sync.interval", self.sync.interval),
            ("sync.health_interval", self.sync.health_interval),
            ("mesh.peers_max", self.mesh.peers_max as u64),
            (
                "mesh.peers_dns_interval_secs",
                self.mesh.peers_dns_interval_secs,
            ),
            ("limits.ws_connections_max", l.ws_connections_max as u64),
            ("limits.ws_message_bytes_max", l.ws_message_bytes_max as u64),
            ("limits.heartbeat_interval_secs", l.heartbeat_interval_secs),
            ("limits.connection_timeout_secs", l.connection_timeout_secs),
            (
                "limits.ws_outbound_queue_max",
                l.ws_outbound_queue_max as u64,
            ),
            (
                "limits.ws_outbound_queue_bytes_max",
                l.ws_outbound_queue_bytes_max as u64,
            ),
            (
                "limits.ws_messages_per_second_max",
                u64::from(l.ws_messages_per_second_max),
            ),
            (
                "limits.ws_messages_burst_max",
                u64::from(l.ws_messages_burst_max),
            ),
            (
                "limits.http_requests_per_minute_max",
                u64::from(l.http_requests_per_minute_max),
            ),
            ("limits.http_body_bytes_max", l.http_body_bytes_max as u64),
            ("limits.http_timeout_secs", l.http_timeout_secs),
            ("limits.http_connections_max", l.http_connections_max as u64),
            ("limits.shutdown_drain_secs", l.shutdown_drain_secs),
            ("limits.lame_duck_secs", l.lame_duck_secs),
            (
                "limits.notification_log_bytes_max",
                l.notification_log_bytes_max as u64,
            ),
            (
                "limits.notification_log_retention_secs",
                l.notification_log_retention_secs,
            ),
            (
                "limits.mesh_notifications_per_second_max",
                u64::from(l.mesh_notifications_per_second_max),
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }

    /// The per-address caps and the short timeouts before the handshake (kept apart from
    /// `validate_positive` so the keys added here stay on lines of their own).
    fn validate_connection_bounds(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive: [(&str, u64); 5] = [
            (
                "limits.ws_connections_per_address_max",
                l.ws_connections_per_address_max as u64,
            ),
            (
                "limits.http_connections_per_address_max",
                l.http_connections_per_address_max as u64,
            ),
            ("limits.upgrade_timeout_secs", l.upgrade_timeout_secs),
            ("limits.handshake_timeout_secs", l.handshake_timeout_secs),
            (
                "limits.tls_handshake_timeout_secs",
                l.tls_handshake_timeout_secs,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }

    fn validate_ordering(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.heartbeat_interval_secs >= l.connection_timeout_secs {
            return Err(invalid(
                "limits.heartbeat_interval_secs",
                format!(
                    "must be less than limits.connection_timeout_secs ({} >= {}), or live clients time out between pings",
                    l.heartbeat_interval_secs, l.connection_timeout_secs
                ),
            ));
        }
        if self.mesh.ready_peers_min > self.mesh.peers_max {
            return Err(invalid(
                "mesh.ready_peers_min",
                format!(
                    "must not exceed mesh.peers_max ({} > {}), or the relay can never be ready",
                    self.mesh.ready_peers_min, self.mesh.peers_max
                ),
            ));
        }
        if self.sync.interval > self.sync.health_interval {
            return Err(invalid(
                "sync.interval",
                format!(
                    "must not exceed sync.health_interval ({} > {}): health is judged from the state sync cadence",
                    self.sync.interval, self.sync.health_interval
                ),
            ));
        }
        Ok(())
    }

    fn validate_budgets(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.ws_outbound_queue_bytes_max < 2 * l.ws_message_bytes_max {
            return Err(invalid(
                "limits.ws_outbound_queue_bytes_max",
                format!(
                    "must be at least twice limits.ws_message_bytes_max ({} < 2 × {}): a \
                     client must be able to have two messages of the largest size queued",
                    l.ws_outbound_queue_bytes_max, l.ws_message_bytes_max
                ),
            ));
        }
        let least = NOTIFICATION_LOG_BYTES_MAX_MIN.max(l.ws_message_bytes_max);
        if l.notification_log_bytes_max < least {
            return Err(invalid(
                "limits.notification_log_bytes_max",
                format!(
                    "must be at least {least} (1 MiB and limits.ws_message_bytes_max), so \
                     that one notification of the largest size fits ({} < {least})",
                    l.notification_log_bytes_max
                ),
            ));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if a.ws_tokens.iter().any(|t| t.is_empty()) {
            return Err(invalid(
                "auth.ws_tokens",
                "tokens must not be empty strings",
            ));
        }
        match (&a.http_basic_user, &a.http_basic_password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() && !u.contains(':') => Ok(()),
            (Some(u), Some(_)) if u.contains(':') => {
                Err(invalid("auth.http_basic_user", "must not contain `:`"))
            }
            (None, None) => Ok(()),
            (Some(_), None) | (Some(_), Some(_)) => Err(invalid(
                "auth.http_basic_password",
                "must be set and non-empty when auth.http_basic_user is set",
            )),
            (None, Some(_)) => Err(invalid(
                "auth.http_basic_user",
                "must be set when auth.http_basic_password is set",
            )),
        }?;
        if a.mesh_token.as_deref() == Some("") {
            return Err(invalid("auth.mesh_token", "must not be empty when set"));
        }
        for (i, key) in self.mesh.trusted_keys.iter().enumerate() {
            if let Err(e) = crate::identity::PublicKey::parse(key) {
                return Err(invalid(&format!("mesh.trusted_keys[{i}]"), e.to_string()));
            }
        }
        if !a.ws_tokens.is_empty() && self.mesh_is_open() {
            // A relay handshake is not a wallet's: with an open mesh anyone could join as
            // a relay and publish to every wallet, around the token gate.
            return Err(invalid(
                "auth.ws_tokens",
                "are set but the mesh is open: anyone could join as a relay and bypass \
                 them; set mesh.trusted_keys and/or auth.mesh_token",
            ));
        }
        Ok(())
    }

    fn validate_chain_sources(&self) -> Result<(), ConfigError> {
        if let Some(core) = &self.bitcoin_core {
            validate_http_url("bitcoin_core.url", &core.url)?;
            if core.rpc_user.is_some() != core.rpc_password.is_some() {
                return Err(invalid(
                    "bitcoin_core.rpc_password",
                    "rpc_user and rpc_password must be set together",
                ));
            }
            if core.rpc_user.is_some() && core.cookie_file.is_some() {
                return Err(invalid(
                    "bitcoin_core.cookie_file",
                    "use either rpc_user/rpc_password or cookie_file",
                ));
            }
        }
        if let Some(blindbit) = &self.blindbit {
            validate_http_url("blindbit.url", &blindbit.url)?;
        }
        Ok(())
    }
}

impl Config {
    /// Certificate and key come in pairs; mesh TLS needs this relay to serve TLS too (a
    /// peer dials back the same way).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let pairs = [
            (
                "tls.key_file",
                self.tls.cert_file.is_some(),
                self.tls.key_file.is_some(),
            ),
            (
                "mesh.client_key_file",
                self.mesh.client_cert_file.is_some(),
                self.mesh.client_key_file.is_some(),
            ),
        ];
        for (key, cert, private_key) in pairs {
            if cert != private_key {
                return Err(invalid(
                    key,
                    "a certificate file and its key file must be set together",
                ));
            }
        }
        if self.mesh.tls && self.tls.files().is_none() {
            return Err(invalid(
                "mesh.tls",
                "peers dial each other the same way: set tls.cert_file and tls.key_file \
                 (--tls-cert, --tls-key) too",
            ));
        }
        let files = [
            ("tls.cert_file", self.tls.cert_file.as_deref()),
            ("tls.key_file", self.tls.key_file.as_deref()),
            ("mesh.ca_file", self.mesh.ca_file.as_deref()),
            (
                "mesh.client_cert_file",
                self.mesh.client_cert_file.as_deref(),
            ),
            ("mesh.client_key_file", self.mesh.client_key_file.as_deref()),
            (
                "bitcoin_core.ca_file",
                self.bitcoin_core
                    .as_ref()
                    .and_then(|c| c.ca_file.as_deref()),
            ),
            (
                "blindbit.ca_file",
                self.blindbit.as_ref().and_then(|c| c.ca_file.as_deref()),
            ),
        ];
        for (key, path) in files {
            if path.is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(key, "must not be empty when set"));
            }
        }
        Ok(())
    }
}

fn validate_relay_id(id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "relay_id",
            format!("`{id}` must be 1-64 characters of [A-Za-z0-9._-]"),
        ))
    }
}

/// True when the host of `host:port` is `0.0.0.0` or `::` (bracketed or not).
fn host_is_unspecified(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
}

/// Checks `host:port` (IPv6 hosts in brackets). A port of 0 is allowed only for
/// listen addresses (the OS picks one).
pub fn validate_host_port(key: &str, value: &str, listen: bool) -> Result<(), ConfigError> {
    let bad = |why: &str| invalid(key, format!("`{value}` is not a host:port address: {why}"));
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| bad("missing `:port`"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| bad("port must be a number 0-65535"))?;
    if port == 0 && !listen {
        return Err(bad("port 0 cannot be dialed"));
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let hostname_ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if hostname_ok {
        Ok(())
    } else {
        Err(bad("invalid host name"))
    }
}

fn validate_http_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let (rest, default_port) = match value.strip_prefix("https://") {
        Some(rest) => (rest, 443),
        None => (
            value.strip_prefix("http://").ok_or_else(|| {
                invalid(
                    key,
                    format!("`{value}` must start with http:// or https://"),
                )
            })?,
            80,
        ),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    validate_host_port(key, &with_port, false)
}

#[cfg(test)]
mod tests;
