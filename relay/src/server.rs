//! `run`: one relay, from handed-in listeners to a drained shutdown.

mod drain;

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::conn::tls::ServerTls;
use crate::lifecycle::Stop;
use crate::logs::LogRing;
use crate::node::Node;
use crate::rt::{Env, Net};
use std::time::Duration;

/// The sockets a relay serves, bound by the caller (`main`, a test, the simulator), and
/// the certificate both serve when TLS is on (loaded by the caller, so a bad one stops
/// the start-up with its reason).
pub struct Listeners<L> {
    pub ws: L,
    pub http: L,
    pub tls: Option<Arc<ServerTls>>,
}

/// Runs a relay until `shutdown` completes, then drains it as `Stop::Shutdown` does
/// (see `run_until`).
pub async fn run<N: Net>(
    config: Config,
    env: Env<N>,
    listeners: Listeners<N::Listener>,
    logs: LogRing,
    shutdown: impl Future<Output = ()> + Send,
) {
    let stop = async move {
        shutdown.await;
        Stop::Shutdown
    };
    run_until(config, env, listeners, logs, stop).await;
}

/// Runs a relay until `stop` completes or lame-duck mode is asked for over the HTTP API
/// (`POST /admin/drain`), then drains: it stops accepting, tells its peers it is leaving,
/// sends every wallet a `reconnect` naming the other healthy relays, closes wallets with
/// 1001 spread over `limits.lame_duck_secs` (`Stop::LameDuck`) or
/// `limits.shutdown_drain_secs` (`Stop::Shutdown`), closes peer links with 1001, and
/// returns.
pub async fn run_until<N: Net>(
    config: Config,
    env: Env<N>,
    listeners: Listeners<N::Listener>,
    logs: LogRing,
    stop: impl Future<Output = Stop> + Send,
) {
    let node = Node::new(config, env.clock.clone(), env.rng.clone(), logs);
    serve_node(node, env, listeners, stop).await;
}

/// `run`, with the notification log kept in `log_store` rather than in `data_dir` (the
/// simulator's disk, which survives the relay's crashes).
pub async fn run_with_log_store<N: Net>(
    config: Config,
    env: Env<N>,
    listeners: Listeners<N::Listener>,
    logs: LogRing,
    log_store: Option<std::sync::Arc<dyn crate::logstore::LogStore>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let node = Node::with_log_store(config, env.clock.clone(), env.rng.clone(), logs, log_store);
    let stop = async move {
        shutdown.await;
        Stop::Shutdown
    };
    serve_node(node, env, listeners, stop).await;
}

async fn serve_node<N: Net>(
    node: std::sync::Arc<Node>,
    env: Env<N>,
    listeners: Listeners<N::Listener>,
    stop: impl Future<Output = Stop> + Send,
) {
    if let Some(memo) = &env.verified {
        node.mesh.share_verified(memo.clone());
    }
    tracing::info!(
        relay_id = %node.relay_id(),
        network = node.config.network.as_str(),
        ws = %node.config.ws_url,
        http = %node.config.http_url,
        "relay started"
    );
    if node.config.mesh_is_open() {
        tracing::warn!(
            "the mesh is open: any relay may join and publish to this relay's wallets; \
             set mesh.trusted_keys and/or auth.mesh_token"
        );
    }
    let ws = node.ws_context();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::ws::serve(
        ws.clone(),
        listeners.ws,
        listeners.tls.clone(),
    ));
    tasks.spawn(crate::http::serve(
        node.clone(),
        listeners.http,
        listeners.tls.clone(),
    ));
    if let Some(tls) = listeners.tls {
        tasks.spawn(reload_certificates(node.clone(), tls));
    }
    tasks.spawn(crate::ws::heartbeat(ws.clone()));
    let mesh = node.mesh.clone();
    let payloads: crate::ws::SyncPayloads = Arc::new(move |t| mesh.sync_payload(t));
    tasks.spawn(crate::ws::syncs_to_clients(ws, payloads));
    match &node.nats {
        // NATS mode: relays meet through NATS; the mesh dials nobody.
        Some(nats) => drop(tasks.spawn(crate::nats::run(nats.clone()))),
        None => drop(tasks.spawn(crate::mesh::run(node.mesh.clone(), env.net.clone()))),
    }
    tasks.spawn(chain_watcher(node.clone(), env.clone()));

    let stop = tokio::select! {
        stop = stop => stop,
        () = node.lifecycle.lame_duck_requested() => Stop::LameDuck,
    };
    drain::drain(&node, stop).await;
    tasks.abort_all();
    tracing::info!(relay_id = %node.relay_id(), "relay stopped");
}

/// Reloads the certificate on SIGHUP and when its files change (checked every
/// `[tls] reload_check_secs`). A certificate that does not load is logged and counted,
/// and the one in force stays; live connections are never touched either way.
async fn reload_certificates(node: Arc<Node>, tls: Arc<ServerTls>) {
    let interval = Duration::from_secs(node.config.tls.reload_check_secs);
    let mut hangup = hangup_signal();
    let clock = node.lifecycle.clock().clone();
    loop {
        let polled = async {
            if interval.is_zero() {
                std::future::pending::<()>().await;
            }
            clock.sleep(interval).await;
        };
        let why = tokio::select! {
            () = polled => {
                if !tls.files_changed() {
                    continue;
                }
                "files changed"
            }
            () = next_hangup(&mut hangup) => "SIGHUP",
        };
        match tls.reload() {
            Ok(()) => {
                node.metrics.tls_reloads.get("ok").increment(1);
                node.metrics.tls_reload_failing.set(0.0);
                tracing::info!(trigger = why, "TLS certificate reloaded");
            }
            Err(error) => {
                node.metrics.tls_reloads.get("error").increment(1);
                node.metrics.tls_reload_failing.set(1.0);
                tracing::error!(
                    trigger = why,
                    %error,
                    "TLS certificate reload failed; the previous certificate stays in force"
                );
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP"))
        .ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    if let Some(signal) = hangup
        && signal.recv().await.is_some()
    {
        return;
    }
    std::future::pending().await
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

/// Events the watcher may queue before it pauses scanning (it never drops one).
const CHAIN_EVENTS_MAX: usize = 256;

/// Runs the chain watcher (if sources are configured) and publishes what it sees.
async fn chain_watcher<N: Net>(node: Arc<Node>, env: Env<N>) {
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel(CHAIN_EVENTS_MAX);
    let pump = {
        let node = node.clone();
        async move {
            while let Some(event) = events_rx.recv().await {
                node.wallets.deliver(&event);
            }
        }
    };
    let config = node.config.clone();
    let watcher = crate::chain::run(
        &config,
        env,
        node.chain.clone(),
        events_tx,
        node.lifecycle.shutdown_started(),
    );
    let (result, ()) = tokio::join!(watcher, pump);
    if let Err(error) = result {
        tracing::error!(%error, "chain watcher stopped");
    }
}
