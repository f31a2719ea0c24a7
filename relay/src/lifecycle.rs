//! One relay's life on the clock: when it started, whether it is draining, the signal
//! every task watches to stop, and a request for lame-duck mode (`POST /admin/drain`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::rt::SharedClock;

/// How a relay is asked to stop; both drain the same way, over a different time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT, SIGTERM (or the embedder's shutdown future): wallets are closed over
    /// `limits.shutdown_drain_secs`.
    Shutdown,
    /// SIGUSR2 or `POST /admin/drain`: wallets are closed over `limits.lame_duck_secs`.
    LameDuck,
}

impl Stop {
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Shutdown => "shutdown",
            Stop::LameDuck => "lame_duck",
        }
    }
}

/// A shutdown future that completes with `()` asks for a plain shutdown.
impl From<()> for Stop {
    fn from((): ()) -> Stop {
        Stop::Shutdown
    }
}

pub struct Lifecycle {
    clock: SharedClock,
    started_at: Instant,
    draining: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Set once lame-duck mode was requested from inside the relay (the HTTP API).
    lame_duck: watch::Sender<bool>,
}

impl Lifecycle {
    pub fn new(clock: SharedClock) -> Arc<Lifecycle> {
        let (shutdown, _) = watch::channel(false);
        let (lame_duck, _) = watch::channel(false);
        Arc::new(Lifecycle {
            started_at: clock.now(),
            clock,
            draining: AtomicBool::new(false),
            shutdown,
            lame_duck,
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

    /// Asks `run` to enter lame-duck mode; false when the relay is already draining.
    pub fn request_lame_duck(&self) -> bool {
        !self.is_draining() && !self.lame_duck.send_replace(true)
    }

    /// Completes once lame-duck mode was requested.
    pub async fn lame_duck_requested(&self) {
        let mut rx = self.lame_duck.subscribe();
        let _ = rx.wait_for(|requested| *requested).await;
    }

    /// Completes once shutdown has begun.
    pub async fn shutdown_started(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|started| *started).await;
    }
}
