//! The `sdk_relay` binary: parse flags, bind the listeners, run the relay until SIGINT or
//! SIGTERM (shutdown) or SIGUSR2 (lame duck).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use sdk_relay::config::{Cli, Command, Config};
use sdk_relay::conn::tls::{ClientCert, ClientTls, ServerTls};
use sdk_relay::lifecycle::Stop;
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
    // Held until the process exits (`public-key` only reads, and may run beside a relay).
    let _data_dir_lock = match cli.command {
        Some(Command::PublicKey) => None,
        _ => match lock_data_dir(&config.data_dir) {
            Ok(lock) => Some(lock),
            Err(error) => {
                eprintln!("sdk_relay: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
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

/// Takes `data_dir/relay.lock` for this process: the directory holds the relay's key, its
/// identity in the mesh, so two relays started on one directory would be one relay twice
/// (the mesh refuses the second as an impostor) and would share one log. The lock goes
/// with the process, however it ends.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let path = data_dir.join("relay.lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data_dir {} is in use by another relay process ({} is locked); give each \
             relay its own --data-dir",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
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
    let tls = load_tls(&config)?;
    runtime.block_on(async move {
        // Before anything can announce the relay: a signal from then on is never lost.
        let signals = Signals::install().context("cannot install the signal handlers")?;
        let net = TokioNet;
        let ws = net
            .bind(&config.ws_url)
            .await
            .with_context(|| format!("cannot listen on ws_url {}", config.ws_url))?;
        let http = net
            .bind(&config.http_url)
            .await
            .with_context(|| format!("cannot listen on http_url {}", config.http_url))?;
        let env = Env {
            net,
            clock,
            rng,
            verified: None,
        };
        sdk_relay::run_until(
            config,
            env,
            sdk_relay::Listeners { ws, http, tls },
            logs,
            signals.next_stop(),
        )
        .await;
        Ok(())
    })
}

/// The certificate both listeners serve, when `[tls]` is set; the mesh's client side is
/// checked too, so a bad file stops the start-up with its reason instead of failing
/// every dial later.
fn load_tls(config: &Config) -> anyhow::Result<Option<Arc<ServerTls>>> {
    if config.mesh.tls {
        let client_cert = config
            .mesh
            .client_cert_file
            .as_deref()
            .zip(config.mesh.client_key_file.as_deref())
            .map(|(cert_file, key_file)| ClientCert {
                cert_file,
                key_file,
            });
        ClientTls::new(config.mesh.ca_file.as_deref(), client_cert)
            .context("cannot load the mesh's TLS files")?;
    }
    let Some((cert, key)) = config.tls.files() else {
        return Ok(None);
    };
    let tls = ServerTls::load(cert, key, config.limits.tls_handshake_timeout())
        .context("cannot load the TLS certificate")?;
    tracing::info!(cert = %cert.display(), "TLS on: serving WSS and HTTPS");
    Ok(Some(Arc::new(tls)))
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

/// The signals that stop the relay, registered with the OS when installed (not when
/// first awaited), so one arriving during start-up is delivered, not fatal.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    lame_duck: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
                lame_duck: signal(SignalKind::user_defined2())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Completes on SIGINT or SIGTERM (shutdown) or SIGUSR2 (lame duck).
    async fn next_stop(mut self) -> Stop {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {
                    tracing::info!("SIGINT received");
                    Stop::Shutdown
                }
                _ = self.terminate.recv() => {
                    tracing::info!("SIGTERM received");
                    Stop::Shutdown
                }
                _ = self.lame_duck.recv() => {
                    tracing::info!("SIGUSR2 received: lame duck");
                    Stop::LameDuck
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Stop::Shutdown
        }
    }
}
