//! One relay's life on the clock: when it started, whether it is draining, and the
//! signal every task watches to stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::rt::SharedClock;

pub struct Lifecycle {
    clock: SharedClock,
    started_at: Instant,
    draining: AtomicBool,
    shutdown: watch::Sender<bool>,
}

impl Lifecycle {
    pub fn new(clock: SharedClock) -> Arc<Lifecycle> {
        let (shutdown, _) = watch::channel(false);
        Arc::new(Lifecycle {
            started_at: clock.now(),
            clock,
            draining: AtomicBool::new(false),
            shutdown,
        })
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub fn uptime_secs(&self) -> u64 {
        self.clock.now().duration_since(self.started_at).as_secs()
    }

    /// Milliseconds since start on the monotonic clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now().duration_since(self.started_at).as_millis() as u64
    }

    pub fn unix_secs(&self) -> u64 {
        self.clock.unix_secs()
    }

    /// Wall-clock unix milliseconds (when relays were last heard from).
    pub fn unix_ms(&self) -> u64 {
        self.clock.unix_time().as_millis() as u64
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the shutdown: listeners stop, clients are closed with 1001.
    pub fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
    }

    /// Completes once shutdown has begun.
    pub async fn shutdown_started(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|started| *started).await;
    }
}
