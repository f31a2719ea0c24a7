//! A mesh with no peers and no chain, for the mesh's unit tests.

use std::sync::Arc;

use super::{ChainFigures, LocalStatus, Mesh, MeshParts};
use crate::logstore::LogStore;
use crate::protocol::HealthReport;
use crate::rt::{SeededRng, SharedClock, TokioClock};

/// The local status of a relay with no wallets and no chain.
struct Quiet;

impl LocalStatus for Quiet {
    fn health_report(&self) -> HealthReport {
        HealthReport {
            status: "healthy",
            uptime: 0,
            memory_usage: "0MB".into(),
            cpu_usage: "0%".into(),
            connections: 0,
        }
    }
    fn client_connections(&self) -> usize {
        0
    }
    fn set_unreachable_peers(&self, _: Vec<String>) {}
    fn chain_figures(&self) -> ChainFigures {
        ChainFigures::default()
    }
}

/// A mesh named `relay_id` on tokio's clock, logging to `log_store` if given.
pub(super) fn mesh(relay_id: &str, log_store: Option<Arc<dyn LogStore>>) -> Arc<Mesh> {
    let config = crate::config::Config {
        relay_id: relay_id.into(),
        ..Default::default()
    };
    mesh_with(config, log_store)
}

/// A mesh with `config` (its relay id, data directory, ...).
pub(super) fn mesh_with(
    config: crate::config::Config,
    log_store: Option<Arc<dyn LogStore>>,
) -> Arc<Mesh> {
    let clock: SharedClock = Arc::new(TokioClock);
    let rng = SeededRng::new(5);
    let identity = Arc::new(crate::identity::Identity::from_seed(&[5; 32]));
    let relay_id = config.relay_id.clone();
    Mesh::new(MeshParts {
        config: Arc::new(config),
        lifecycle: crate::lifecycle::Lifecycle::new(clock.clone()),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        hub: Arc::new(crate::hub::Hub::new()),
        origin: Arc::new(crate::routing::Origin::new(
            &relay_id, identity, &rng, &clock,
        )),
        rng,
        status: Arc::new(Quiet),
        log_store,
    })
}
