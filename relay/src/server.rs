//! `run`: one relay, from handed-in listeners to a drained shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::hub::{CloseReason, Outbound};
use crate::logs::LogRing;
use crate::node::Node;
use crate::protocol;
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
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::ws::serve(node.clone(), listeners.ws));
    tasks.spawn(crate::http::serve(node.clone(), listeners.http));
    tasks.spawn(heartbeat(node.clone()));
    tasks.spawn(state_sync_to_clients(node.clone()));
    tasks.spawn(crate::mesh::run(node.clone(), env.net.clone()));
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
    node.begin_shutdown();
    node.hub.close_all(CloseReason::SHUTDOWN);
    let deadline = Duration::from_secs(node.config.limits.shutdown_drain_secs);
    let waited = tokio::time::timeout(deadline, async {
        while node.ws_connections() > 0 {
            node.hub.close_all(CloseReason::SHUTDOWN);
            node.clock.sleep(Duration::from_millis(10)).await;
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
                node.publish_chain_event(&event);
            }
        }
    };
    let config = node.config.clone();
    let watcher = crate::chain::run(
        &config,
        env,
        node.chain.clone(),
        events_tx,
        node.shutdown_started(),
    );
    let (result, ()) = tokio::join!(watcher, pump);
    if let Err(error) = result {
        tracing::error!(%error, "chain watcher stopped");
    }
}

/// Every heartbeat: a `health` message and a ping frame to every client, and clients not
/// heard from within the connection timeout are closed.
async fn heartbeat(node: Arc<Node>) {
    let limits = &node.config.limits;
    let period = limits.heartbeat_interval();
    let timeout_ms = limits.connection_timeout().as_millis() as u64;
    loop {
        node.clock.sleep(period).await;
        let frame = node.health_frame();
        let delivery = node.hub.broadcast(Outbound::Text(frame.clone()), false);
        node.count_delivery(delivery, "health", frame.len());
        let pings = node.hub.broadcast(Outbound::Ping, false);
        node.metrics
            .ws_slow_consumers
            .increment(pings.slow_disconnects as u64);
        let idle = node
            .hub
            .close_idle(node.now_ms().saturating_sub(timeout_ms));
        if idle > 0 {
            tracing::info!(
                clients = idle,
                "closed clients silent past the connection timeout"
            );
        }
    }
}

/// Every sync interval, the relay's own `StateSync` to clients that asked for `sync`.
async fn state_sync_to_clients(node: Arc<Node>) {
    loop {
        node.clock.sleep(node.config.sync_interval()).await;
        let frame = protocol::encode_state_sync(
            node.relay_id(),
            node.config.network.as_str(),
            node.uptime_secs(),
            &node.next_sync_id(),
            node.unix_secs(),
        );
        let delivery = node.hub.broadcast(Outbound::Text(frame.clone()), true);
        node.count_delivery(delivery, "sync", frame.len());
    }
}
