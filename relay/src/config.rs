//! Configuration: defaults from the specification, a TOML file, `SDK_RELAY_*` environment
//! variables and command-line flags, in increasing order of precedence.
//!
//! The TOML keys mirror `GET /config`. Validation names the offending key, so an operator
//! knows what to fix before the relay starts.

mod cli;
mod watcher;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    pub sync: SyncConfig,
    pub mesh: MeshConfig,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub bitcoin_core: Option<BitcoinCoreConfig>,
    pub blindbit: Option<BlindbitConfig>,
    pub watcher: WatcherConfig,
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

/// `[mesh]`: the relays to dial at start-up and how many links to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    pub peers: Vec<String>,
    pub peers_max: usize,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            peers: Vec::new(),
            peers_max: 32,
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
    /// Messages per second one handshaken wallet may send, sustained (token bucket).
    pub ws_messages_per_second_max: u32,
    /// Messages one wallet may send at once (the bucket's size); it starts full.
    pub ws_messages_burst_max: u32,
    pub http_requests_per_minute_max: u32,
    pub http_body_bytes_max: usize,
    pub http_timeout_secs: u64,
    pub http_connections_max: usize,
    /// Seconds the relay waits for clients to close at shutdown.
    pub shutdown_drain_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ws_connections_max: 1000,
            ws_message_bytes_max: 1 << 20,
            heartbeat_interval_secs: 30,
            connection_timeout_secs: 60,
            ws_outbound_queue_max: 1024,
            ws_messages_per_second_max: 100,
            ws_messages_burst_max: 200,
            http_requests_per_minute_max: 1000,
            http_body_bytes_max: 10 << 20,
            http_timeout_secs: 30,
            http_connections_max: 100,
            shutdown_drain_secs: 5,
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
}

/// `[auth]`: empty lists and absent values mean open access.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Tokens a WebSocket client must present in its handshake; empty = open.
    pub ws_tokens: Vec<String>,
    pub http_basic_user: Option<String>,
    pub http_basic_password: Option<String>,
    /// Shared secret relays present to each other.
    pub mesh_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlindbitConfig {
    pub url: String,
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
            sync: SyncConfig::default(),
            mesh: MeshConfig::default(),
            limits: Limits::default(),
            auth: AuthConfig::default(),
            bitcoin_core: None,
            blindbit: None,
            watcher: WatcherConfig::default(),
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
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        self.validate_positive()?;
        self.validate_ordering()?;
        self.validate_auth()?;
        self.validate_chain_sources()?;
        self.watcher.validate()
    }

    fn validate_positive(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        let positive: [(&str, u64); 15] = [
            ("sync.interval", self.sync.interval),
            ("sync.health_interval", self.sync.health_interval),
            ("mesh.peers_max", self.mesh.peers_max as u64),
            ("limits.ws_connections_max", l.ws_connections_max as u64),
            ("limits.ws_message_bytes_max", l.ws_message_bytes_max as u64),
            ("limits.heartbeat_interval_secs", l.heartbeat_interval_secs),
            ("limits.connection_timeout_secs", l.connection_timeout_secs),
            (
                "limits.ws_outbound_queue_max",
                l.ws_outbound_queue_max as u64,
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
    let rest = value
        .strip_prefix("http://")
        .ok_or_else(|| invalid(key, format!("`{value}` must start with http://")))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let with_port = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    validate_host_port(key, &with_port, false)
}

#[cfg(test)]
mod tests;
