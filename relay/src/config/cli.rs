//! Command-line flags and `SDK_RELAY_*` environment variables (clap reads both; a flag
//! wins over its variable), layered over the TOML file and the defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::{Config, ConfigError, LogFormat, LogLevel, Network};

/// sdk_relay: the relay that Bitcoin Silent Payments wallets connect to.
///
/// Serves wallets over WebSocket, operators over a REST API, and links with other relays
/// into a mesh. Every flag can also be set through the environment variable shown, or in
/// the TOML file given by --config (precedence: flag > environment > file > default).
#[derive(Debug, Parser)]
#[command(name = "sdk_relay", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration, print the effective values as TOML, and exit
    /// (status 0 when valid, 2 when not).
    CheckConfig,
    /// Print this relay's public key (64 hex digits, what other relays list in
    /// `mesh.trusted_keys`), creating the key file first if there is none, and exit.
    PublicKey,
}

/// Flags shared by running and `check-config`.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML configuration file (tables and keys as in `GET /config`).
    #[arg(
        long,
        short = 'c',
        env = "SDK_RELAY_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// This relay's id, unique in the mesh [default: relay-1].
    #[arg(long, env = "SDK_RELAY_RELAY_ID", global = true, value_name = "ID")]
    pub relay_id: Option<String>,

    /// WebSocket listen address for wallets and peer relays [default: 0.0.0.0:8090].
    #[arg(
        long,
        env = "SDK_RELAY_WS_ADDR",
        global = true,
        value_name = "HOST:PORT"
    )]
    pub ws_addr: Option<String>,

    /// HTTP API listen address [default: 0.0.0.0:8091].
    #[arg(
        long,
        env = "SDK_RELAY_HTTP_ADDR",
        global = true,
        value_name = "HOST:PORT"
    )]
    pub http_addr: Option<String>,

    /// Address other relays dial to reach this one [default: the WebSocket address].
    #[arg(
        long,
        env = "SDK_RELAY_ADVERTISE_ADDR",
        global = true,
        value_name = "HOST:PORT"
    )]
    pub advertise_addr: Option<String>,

    /// A peer relay's WebSocket address; repeat the flag, or comma-separate in the
    /// variable. Replaces `[mesh] peers` from the file.
    #[arg(
        long = "peer",
        env = "SDK_RELAY_PEERS",
        global = true,
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub peers: Vec<String>,

    /// A public key (64 hex digits or base64) of a relay allowed to join the mesh; repeat
    /// the flag, or comma-separate in the variable. Replaces `[mesh] trusted_keys`.
    #[arg(
        long = "trusted-key",
        env = "SDK_RELAY_TRUSTED_KEYS",
        global = true,
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub trusted_keys: Vec<String>,

    /// The shared mesh secret relays prove (by MAC, never sent) to link; prefer the
    /// variable to the flag, which other local users can read. Replaces
    /// `[auth] mesh_token`.
    #[arg(
        long,
        env = "SDK_RELAY_MESH_TOKEN",
        global = true,
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub mesh_token: Option<String>,

    /// The relay's secret key file [default: <data_dir>/relay.key, created on first
    /// start with mode 0600]. Replaces `[mesh] key_file`.
    #[arg(long, env = "SDK_RELAY_KEY_FILE", global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Bitcoin network: mainnet, testnet, signet or regtest [default: signet].
    #[arg(long, env = "SDK_RELAY_NETWORK", global = true, value_name = "NAME")]
    pub network: Option<Network>,

    /// Directory for state that survives restarts [default: ./data].
    #[arg(long, env = "SDK_RELAY_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Minimum level of log records: trace, debug, info, warn or error [default: info].
    #[arg(long, env = "SDK_RELAY_LOG_LEVEL", global = true, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,

    /// Process log format: text (coloured only on a terminal) or json (one object a
    /// line, for log collectors) [default: text].
    #[arg(
        long,
        env = "SDK_RELAY_LOG_FORMAT",
        global = true,
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,
}

impl RunArgs {
    /// The effective configuration: defaults, then the file, then environment and flags.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or a value is invalid (the error names the key).
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    fn apply(&self, config: &mut Config) {
        if let Some(v) = &self.relay_id {
            config.relay_id = v.clone();
        }
        if let Some(v) = &self.ws_addr {
            config.ws_url = v.clone();
        }
        if let Some(v) = &self.http_addr {
            config.http_url = v.clone();
        }
        if let Some(v) = &self.advertise_addr {
            config.advertise_addr = Some(v.clone());
        }
        if !self.peers.is_empty() {
            config.mesh.peers = self
                .peers
                .iter()
                .filter(|p| !p.is_empty())
                .cloned()
                .collect();
        }
        if !self.trusted_keys.is_empty() {
            config.mesh.trusted_keys = self
                .trusted_keys
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect();
        }
        if let Some(v) = &self.mesh_token {
            config.auth.mesh_token = Some(v.clone());
        }
        if let Some(v) = &self.key_file {
            config.mesh.key_file = Some(v.clone());
        }
        if let Some(v) = self.network {
            config.network = v;
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = self.log_level {
            config.log_level = v;
        }
        if let Some(v) = self.log_format {
            config.log_format = v;
        }
    }
}
