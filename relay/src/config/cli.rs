//! Command-line flags and `SDK_RELAY_*` environment variables (clap reads both; a flag
//! wins over its variable), layered over the TOML file and the defaults.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::{BackboneKind, Config, ConfigError, LogFormat, LogLevel, Network};

/// sdk_relay: the relay that Bitcoin Silent Payments wallets connect to.
///
/// Serves wallets over WebSocket, operators over a REST API, and links with other relays
/// into a mesh. Every flag can also be set through the environment variable shown, or in
/// the TOML file given by --config (precedence: flag > environment > file > default).
///
/// Signals: SIGINT or SIGTERM drains the relay (peers told it is leaving, wallets sent
/// `reconnect` and closed with 1001 over [limits] shutdown_drain_secs) and exits 0;
/// SIGUSR2, like `POST /admin/drain`, does the same over [limits] lame_duck_secs (lame
/// duck, for rolling restarts).
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

    /// A DNS name whose every address is a peer relay (a Kubernetes headless Service),
    /// re-resolved every `[mesh] peers_dns_interval_secs`; repeat the flag, or
    /// comma-separate in the variable. Replaces `[mesh] peers_dns` from the file.
    #[arg(
        long = "peer-dns",
        env = "SDK_RELAY_PEERS_DNS",
        global = true,
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub peers_dns: Vec<String>,
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

    /// PEM certificate chain served on both ports (WSS and HTTPS); with --tls-key.
    /// Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "SDK_RELAY_TLS_CERT", global = true, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "SDK_RELAY_TLS_KEY", global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Deadline in seconds of one call to Bitcoin Core or Blindbit; a call that misses it
    /// marks the chain watcher degraded at once [default: 30].
    #[arg(
        long,
        env = "SDK_RELAY_WATCHER_REQUEST_TIMEOUT_SECS",
        global = true,
        value_name = "SECS"
    )]
    pub watcher_request_timeout_secs: Option<u64>,

    /// What carries notifications between relays: mesh (built in, no other service) or
    /// nats (a NATS JetStream stream; set --nats-url) [default: mesh].
    #[arg(long, env = "SDK_RELAY_BACKBONE", global = true, value_name = "KIND")]
    pub backbone: Option<BackboneKind>,

    /// A NATS server URL (nats://host:port, tls://host:port); repeat the flag, or
    /// comma-separate in the variable. Replaces `[backbone] urls` from the file.
    #[arg(
        long = "nats-url",
        env = "SDK_RELAY_NATS_URLS",
        global = true,
        value_name = "URL",
        value_delimiter = ','
    )]
    pub nats_urls: Vec<String>,

    /// NATS user (with SDK_RELAY_NATS_PASSWORD).
    #[arg(long, env = "SDK_RELAY_NATS_USER", global = true, value_name = "USER")]
    pub nats_user: Option<String>,

    /// NATS password; prefer the variable to the flag (flags show in `ps`).
    #[arg(
        long,
        env = "SDK_RELAY_NATS_PASSWORD",
        global = true,
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub nats_password: Option<String>,

    /// NATS token; prefer the variable to the flag (flags show in `ps`).
    #[arg(
        long,
        env = "SDK_RELAY_NATS_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub nats_token: Option<String>,

    /// NATS credentials file (JWT + nkey seed).
    #[arg(
        long,
        env = "SDK_RELAY_NATS_CREDS_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub nats_creds_file: Option<PathBuf>,

    /// File holding a NATS nkey seed.
    #[arg(
        long,
        env = "SDK_RELAY_NATS_NKEY_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub nats_nkey_file: Option<PathBuf>,

    /// PEM CA certificates for the NATS servers' TLS.
    #[arg(
        long,
        env = "SDK_RELAY_NATS_CA_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub nats_ca_file: Option<PathBuf>,

    /// JetStream stream name [default: SDK_RELAY].
    #[arg(
        long,
        env = "SDK_RELAY_NATS_STREAM",
        global = true,
        value_name = "NAME"
    )]
    pub nats_stream: Option<String>,

    /// Replicas of the stream and membership bucket, 1 to 5 [default: 1].
    #[arg(long, env = "SDK_RELAY_NATS_REPLICAS", global = true, value_name = "N")]
    pub nats_replicas: Option<usize>,
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
        if !self.peers_dns.is_empty() {
            config.mesh.peers_dns = self
                .peers_dns
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
        if let Some(v) = &self.tls_cert {
            config.tls.cert_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            config.tls.key_file = Some(v.clone());
        }
        if let Some(v) = self.watcher_request_timeout_secs {
            config.watcher.request_timeout_secs = v;
        }
        self.apply_backbone(config);
    }

    fn apply_backbone(&self, config: &mut Config) {
        let backbone = &mut config.backbone;
        if let Some(v) = self.backbone {
            backbone.kind = v;
        }
        if !self.nats_urls.is_empty() {
            backbone.urls = self
                .nats_urls
                .iter()
                .filter(|u| !u.is_empty())
                .cloned()
                .collect();
        }
        let strings = [
            (&self.nats_user, &mut backbone.user),
            (&self.nats_password, &mut backbone.password),
            (&self.nats_token, &mut backbone.token),
        ];
        for (flag, key) in strings {
            if flag.is_some() {
                key.clone_from(flag);
            }
        }
        let paths = [
            (&self.nats_creds_file, &mut backbone.creds_file),
            (&self.nats_nkey_file, &mut backbone.nkey_file),
            (&self.nats_ca_file, &mut backbone.ca_file),
        ];
        for (flag, key) in paths {
            if flag.is_some() {
                key.clone_from(flag);
            }
        }
        if let Some(v) = &self.nats_stream {
            backbone.stream = v.clone();
        }
        if let Some(v) = self.nats_replicas {
            backbone.replicas = v;
        }
    }
}
