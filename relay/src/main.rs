//! The `sdk_relay` binary: parse flags, bind the listeners, run the relay until SIGINT or
//! SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use sdk_relay::config::{Cli, Command, Config};
use sdk_relay::logs::{LOG_RECORDS_MAX, LogRing};
use sdk_relay::rt::{Env, Net as _, TokioClock, TokioNet};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Exit status for an unusable configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.run.load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sdk_relay: configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        // Secrets print as `***`, never in clear.
        print!(
            "{}",
            toml::to_string(&config.redacted()).unwrap_or_default()
        );
        if config.mesh_is_open() {
            eprintln!(
                "warning: the mesh is open: any relay may join and publish; set \
                 mesh.trusted_keys and/or auth.mesh_token"
            );
        }
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let rng = sdk_relay::rt::SeededRng::from_os();
    let identity =
        match sdk_relay::identity::Identity::load_or_create(&config.key_path(), || rng.bytes32()) {
            Ok(identity) => identity,
            Err(error) => {
                eprintln!("sdk_relay: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
    if let Some(Command::PublicKey) = cli.command {
        println!("{}", identity.public());
        return ExitCode::SUCCESS;
    }
    match run(config, rng) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sdk_relay: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config, rng: sdk_relay::rt::SeededRng) -> anyhow::Result<()> {
    let clock = Arc::new(TokioClock);
    let logs = LogRing::new(LOG_RECORDS_MAX);
    init_tracing(&config, &logs, clock.clone());
    raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async move {
        let net = TokioNet;
        let ws = net
            .bind(&config.ws_url)
            .await
            .with_context(|| format!("cannot listen on ws_url {}", config.ws_url))?;
        let http = net
            .bind(&config.http_url)
            .await
            .with_context(|| format!("cannot listen on http_url {}", config.http_url))?;
        let env = Env { net, clock, rng };
        sdk_relay::run(
            config,
            env,
            sdk_relay::Listeners { ws, http },
            logs,
            shutdown_signal(),
        )
        .await;
        Ok(())
    })
}

fn init_tracing(config: &Config, logs: &LogRing, clock: Arc<TokioClock>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SDK_RELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(config.log_level.as_str()));
    tracing_subscriber::registry()
        .with(filter)
        .with(sdk_relay::logs::stderr_layer(
            config.log_format,
            &config.relay_id,
        ))
        .with(logs.layer(clock))
        .init();
}

/// Each connection holds a descriptor: take the whole hard limit, so the configured
/// connection limit, not the default soft limit, is what bounds the relay.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit raised"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => tracing::info!("SIGINT received"),
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
