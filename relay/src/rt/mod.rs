//! The seam between the relay and the world: network, clock and randomness.
//!
//! Every socket, timer, timestamp and random choice in the relay goes through these
//! traits, so the same code runs on tokio in production and on turmoil in simulation.
//! Only this module may read the host's clocks (clippy `disallowed-methods` enforces it).

mod clock;
mod net;
mod rng;

#[cfg(test)]
pub use clock::ManualClock;
pub use clock::{Clock, SharedClock, TokioClock};
pub use net::{Listener, Net, TokioListener, TokioNet};
pub use rng::SeededRng;

/// Everything the relay needs from its environment, handed in by `main`, a test or the
/// simulator.
#[derive(Clone)]
pub struct Env<N: Net> {
    pub net: N,
    pub clock: SharedClock,
    pub rng: SeededRng,
    /// Signatures (records, notifications) known to verify, shared with the other relays
    /// of this process (the simulator's mesh); `None` in production, where a relay has a
    /// process of its own.
    pub verified: Option<std::sync::Arc<crate::identity::VerifiedMemo>>,
}

impl Env<TokioNet> {
    /// The production environment: tokio sockets and timers, the host's wall clock.
    pub fn tokio(seed: u64) -> Self {
        Env {
            net: TokioNet,
            clock: std::sync::Arc::new(TokioClock),
            rng: SeededRng::new(seed),
            verified: None,
        }
    }
}
