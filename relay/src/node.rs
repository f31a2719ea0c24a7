//! One relay, assembled: the parts its tasks share, wired to each other, and the
//! read-only views the HTTP API answers with. Nothing here routes, counts or decides;
//! each part does that in its own module.

use std::sync::Arc;

use crate::chain::WatchHandle;
use crate::config::{BackboneKind, Config};
use crate::conn::Slots;
use crate::health::{Health, HealthStatus};
use crate::hub::Hub;
use crate::identity::Identity;
use crate::lifecycle::Lifecycle;
use crate::logs::LogRing;
use crate::logstore::{LogStore, RedbStore};
use crate::mesh::{LocalStatus, Mesh, MeshParts, RelayInfo, SyncMetrics, SyncStatus};
use crate::metrics::Metrics;
use crate::nats::{NatsBackbone, NatsParts};
use crate::process::ProcessFigures;
use crate::protocol::HealthReport;
use crate::protocol::peer::SyncType;
use crate::routing::{Backbone, BackboneLink, Origin, Publisher};
use crate::rt::{SeededRng, SharedClock};
use crate::wallets::Wallets;
use crate::ws::WsContext;

pub struct Node {
    pub config: Arc<Config>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    pub logs: LogRing,
    pub hub: Arc<Hub>,
    pub health: Arc<Health>,
    pub mesh: Arc<Mesh>,
    /// The NATS backbone, in NATS mode (`[backbone] kind = "nats"`): it then carries
    /// notifications and answers the mesh views instead of the mesh.
    pub nats: Option<Arc<NatsBackbone>>,
    /// The chain watcher's registry of watched wallets and its status.
    pub chain: WatchHandle,
    pub wallets: Arc<Wallets>,
    ws: Arc<WsContext>,
}

impl Node {
    /// A relay whose notification log is kept in `data_dir` (memory only, with a
    /// warning, when the file cannot be opened).
    pub fn new(config: Config, clock: SharedClock, rng: SeededRng, logs: LogRing) -> Arc<Node> {
        let store: Option<Arc<dyn LogStore>> = match RedbStore::open(&config.data_dir) {
            Ok(store) => Some(Arc::new(store)),
            Err(error) => {
                tracing::warn!(%error, "the notification log is kept in memory only");
                None
            }
        };
        Node::with_log_store(config, clock, rng, logs, store)
    }

    /// A relay whose notification log is kept in `log_store` (the simulator's disk).
    pub fn with_log_store(
        config: Config,
        clock: SharedClock,
        rng: SeededRng,
        logs: LogRing,
        log_store: Option<Arc<dyn LogStore>>,
    ) -> Arc<Node> {
        let config = Arc::new(config);
        let lifecycle = Lifecycle::new(clock.clone());
        // `main` loaded (or created) the key before starting, with a clear error if it
        // could not; the simulator creates it here from the seeded generator.
        let identity = Identity::load_or_create(&config.key_path(), || rng.bytes32())
            .unwrap_or_else(|e| panic!("the relay's key: {e}"));
        let origin = Arc::new(Origin::new(
            &config.relay_id,
            Arc::new(identity),
            &rng,
            &clock,
        ));
        let metrics = Arc::new(Metrics::new());
        let chain = WatchHandle::from_config(&config);
        #[cfg(not(feature = "mutations"))]
        let hub = Arc::new(Hub::new());
        #[cfg(feature = "mutations")]
        let hub = Arc::new(Hub::with_mutation(config.mutation));
        let ws_slots = Slots::with_gauge(
            config.limits.ws_connections_max,
            metrics.ws_connections.clone(),
        );
        let nats_mode = config.backbone.kind == BackboneKind::Nats;
        // Down until the NATS backbone connects; the mesh never sets it down.
        let backbone_link = BackboneLink::new(!nats_mode);
        let health = Arc::new(Health::new(
            lifecycle.clone(),
            metrics.clone(),
            chain.clone(),
            ws_slots.clone(),
            backbone_link.clone(),
        ));
        let mesh = Mesh::new(MeshParts {
            config: config.clone(),
            lifecycle: lifecycle.clone(),
            metrics: metrics.clone(),
            rng,
            hub: hub.clone(),
            origin: origin.clone(),
            status: health.clone(),
            log_store,
        });
        let nats = nats_mode.then(|| {
            NatsBackbone::new(NatsParts {
                config: config.clone(),
                lifecycle: lifecycle.clone(),
                metrics: metrics.clone(),
                hub: hub.clone(),
                health: health.clone(),
                link: backbone_link,
                identity: origin.identity().clone(),
            })
        });
        let backbone: Arc<dyn Backbone> = match &nats {
            Some(nats) => nats.clone(),
            None => mesh.clone(),
        };
        let publisher = Arc::new(Publisher::new(
            origin,
            lifecycle.clone(),
            metrics.clone(),
            backbone,
        ));
        let wallets = Arc::new(Wallets::new(
            chain.clone(),
            config.data_dir.clone(),
            config.watcher.wallet_away_secs_max,
            publisher.clone(),
            lifecycle.clone(),
            metrics.clone(),
        ));
        let ws = WsContext::new(
            config.clone(),
            lifecycle.clone(),
            metrics.clone(),
            hub.clone(),
            ws_slots,
            publisher,
            wallets.clone(),
            health.clone(),
            mesh.clone(),
        );
        Arc::new(Node {
            config,
            lifecycle,
            metrics,
            logs,
            hub,
            health,
            mesh,
            nats,
            chain,
            wallets,
            ws,
        })
    }

    /// What the wallet server runs on.
    pub fn ws_context(&self) -> Arc<WsContext> {
        self.ws.clone()
    }

    pub fn relay_id(&self) -> &str {
        &self.config.relay_id
    }
}

/// The figures the HTTP API shows.
impl Node {
    pub fn uptime_secs(&self) -> u64 {
        self.lifecycle.uptime_secs()
    }

    pub fn unix_secs(&self) -> u64 {
        self.lifecycle.unix_secs()
    }

    pub fn is_draining(&self) -> bool {
        self.lifecycle.is_draining()
    }

    pub fn health_status(&self) -> HealthStatus {
        self.health.status()
    }

    /// Open WebSocket connections, peer links accepted on the port included.
    pub fn ws_connections(&self) -> usize {
        self.ws.slots.taken()
    }

    /// Open WebSocket connections of clients (wallets), without peer links.
    pub fn client_connections(&self) -> usize {
        self.health.client_connections()
    }

    pub fn process_figures(&self) -> ProcessFigures {
        self.health.process_figures()
    }

    pub fn refresh_sampled_metrics(&self) {
        self.health.refresh_sampled_metrics();
    }

    /// Every known relay, this one first.
    pub fn relays(&self) -> Vec<RelayInfo> {
        match &self.nats {
            Some(nats) => nats.relays(),
            None => self.mesh.relays(),
        }
    }

    pub fn sync_status(&self) -> SyncStatus {
        match &self.nats {
            Some(nats) => nats.sync_status(),
            None => self.mesh.sync_status(),
        }
    }

    pub fn sync_metrics(&self) -> SyncMetrics {
        match &self.nats {
            Some(nats) => nats.sync_metrics(),
            None => self.mesh.sync_metrics(),
        }
    }

    /// Sends the named sync types to every live peer now; returns how many peers (none
    /// in NATS mode: relays have no links, their records renew on their own).
    pub fn force_sync(&self, types: &[SyncType]) -> usize {
        match &self.nats {
            Some(_) => 0,
            None => self.mesh.force_sync(types),
        }
    }
}

/// What the mesh tells its peers about this relay.
impl LocalStatus for Health {
    fn health_report(&self) -> HealthReport {
        self.report()
    }

    fn client_connections(&self) -> usize {
        Health::client_connections(self)
    }

    fn set_unreachable_peers(&self, addresses: Vec<String>) {
        Health::set_unreachable_peers(self, addresses);
    }

    fn chain_figures(&self) -> crate::mesh::ChainFigures {
        let chain = self.chain_status();
        crate::mesh::ChainFigures {
            scanned_height: chain.scanned_height.map(u64::from),
            tip_height: chain.core_tip.or(chain.blindbit_height).map(u64::from),
            lag: chain.lag.map(u64::from),
            degraded: chain.degraded.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every connection holds its task state (its reader and its writer, one task) for
    /// its whole life: a regression here (say, a stack buffer in a future) costs memory on
    /// every idle connection. Two tasks took up to 2048 + 1024 bytes; one takes less.
    ///
    /// The bound is tight on purpose. tokio allocates a task in cells aligned to 128
    /// bytes, so a few bytes more can cost 128 per connection: the release build's state
    /// went from 2,704 to 2,720 bytes (16 more) and idle memory from 4,370 to 4,510 bytes
    /// per connection. With the close path's timers on the heap it is 2,320 in release
    /// (1,968 in this debug build) and idle memory 3,990 bytes per connection.
    #[test]
    fn connection_task_state_stays_small() {
        let dir = std::env::temp_dir().join(format!("sdk_relay-node-{}", std::process::id()));
        let config = crate::config::Config {
            data_dir: dir.clone(),
            ..crate::config::Config::default()
        };
        let node = super::Node::new(
            config,
            std::sync::Arc::new(crate::rt::TokioClock),
            crate::rt::SeededRng::new(1),
            crate::logs::LogRing::new(1),
        );
        let bytes = crate::ws::task_state_bytes(node.ws_context());
        let _ = std::fs::remove_dir_all(dir);
        assert!(bytes <= 2000, "connection task state: {bytes} bytes");
    }
}
