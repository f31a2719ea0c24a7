//! `run`: one relay, from handed-in listeners to a drained shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::conn::CloseReason;
use crate::logs::LogRing;
use crate::node::Node;
use crate::rt::{Env, Net};

/// The sockets a relay serves, bound by the caller (`main`, a test, the simulator).
pub struct Listeners<L> {
    pub ws: L,
    pub http: L,
}

/// Runs a relay until `shutdown` completes, then stops accepting, closes clients with
/// 1001 and waits (at most `limits.shutdown_drain_secs`) for them to go.
pub async fn run<N: Net>(
    config: Config,
    env: Env<N>,
    listeners: Listeners<N::Listener>,
    logs: LogRing,
    shutdown: impl Future<Output = ()> + Send,
) {
    let node = Node::new(config, env.clock.clone(), env.rng.clone(), logs);
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
    tasks.spawn(crate::ws::serve(ws.clone(), listeners.ws));
    tasks.spawn(crate::http::serve(node.clone(), listeners.http));
    tasks.spawn(crate::ws::heartbeat(ws.clone()));
    let mesh = node.mesh.clone();
    let payloads: crate::ws::SyncPayloads = Arc::new(move |t| mesh.sync_payload(t));
    tasks.spawn(crate::ws::syncs_to_clients(ws, payloads));
    tasks.spawn(crate::mesh::run(node.mesh.clone(), env.net.clone()));
    tasks.spawn(chain_watcher(node.clone(), env.clone()));

    shutdown.await;
    drain(&node).await;
    tasks.abort_all();
    tracing::info!(relay_id = %node.relay_id(), "relay stopped");
}

async fn drain(node: &Arc<Node>) {
    tracing::info!(
        clients = node.ws_connections(),
        "shutting down: closing clients"
    );
    node.lifecycle.begin_shutdown();
    node.hub.close_all(CloseReason::SHUTDOWN);
    let deadline = Duration::from_secs(node.config.limits.shutdown_drain_secs);
    let waited = tokio::time::timeout(deadline, async {
        while node.ws_connections() > 0 {
            node.hub.close_all(CloseReason::SHUTDOWN);
            node.lifecycle
                .clock()
                .sleep(Duration::from_millis(10))
                .await;
        }
    })
    .await;
    if waited.is_err() {
        tracing::warn!(
            clients = node.ws_connections(),
            "drain time over; dropping remaining connections"
        );
    }
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
