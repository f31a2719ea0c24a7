//! One relay's life on the clock: when it started, whether it is draining, the signal
//! every task watches to stop, and a request for lame-duck mode (`POST /admin/drain`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// How long a reading of the wall clock serves `unix_secs_at` (see there).
const WALL_CLOCK_REUSE_MS: u64 = 1_000;

pub struct Lifecycle {
    clock: SharedClock,
    started_at: Instant,
    /// The wall clock's unix milliseconds minus `now_ms`, at its last reading by
    /// `unix_secs_at`, and that reading's `now_ms`.
    wall_minus_monotonic_ms: AtomicU64,
    wall_read_at_ms: AtomicU64,
    draining: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Set once lame-duck mode was requested from inside the relay (the HTTP API).
    lame_duck: watch::Sender<bool>,
}

impl Lifecycle {
    pub fn new(clock: SharedClock) -> Arc<Lifecycle> {
        let (shutdown, _) = watch::channel(false);
        let (lame_duck, _) = watch::channel(false);
        let started_at = clock.now();
        let unix_ms = clock.unix_time().as_millis() as u64;
        Arc::new(Lifecycle {
            started_at,
            clock,
            wall_minus_monotonic_ms: AtomicU64::new(unix_ms),
            wall_read_at_ms: AtomicU64::new(0),
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

    /// Whole unix seconds at `now_ms` (a reading of `now_ms` the caller already has). The
    /// wall clock is read again only once its last reading is a second old; in between,
    /// its distance from the monotonic clock is reused, so a timestamp per message (a
    /// `pong`'s) costs no second clock reading. A step of the wall clock shows within a
    /// second; between readings the two clocks run at the same rate.
    pub fn unix_secs_at(&self, now_ms: u64) -> u64 {
        // Acquire, paired with the Release below: whoever sees a reading's time sees its
        // offset (or a later one), never an older offset with a newer time.
        let read_at = self.wall_read_at_ms.load(Ordering::Acquire);
        // Another thread may have stored a later reading than `now_ms`: then read again.
        if now_ms >= read_at && now_ms - read_at < WALL_CLOCK_REUSE_MS {
            let offset = self.wall_minus_monotonic_ms.load(Ordering::Relaxed);
            return offset.saturating_add(now_ms) / 1000;
        }
        let unix_ms = self.unix_ms();
        self.wall_minus_monotonic_ms
            .store(unix_ms.saturating_sub(now_ms), Ordering::Relaxed);
        self.wall_read_at_ms.store(now_ms, Ordering::Release);
        unix_ms / 1000
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

#[cfg(test)]
mod tests {
    use super::Lifecycle;
    use crate::rt::ManualClock;

    /// Between two readings of the wall clock a second apart, unix time follows the
    /// monotonic clock; a step of the wall clock (an NTP correction) shows within a second.
    #[test]
    fn unix_time_follows_the_monotonic_clock_and_rereads_the_wall_every_second() {
        let clocks = ManualClock::new(1_800_000_000_500);
        let lifecycle = Lifecycle::new(clocks.clone());
        let readings_at_start = clocks.wall_readings();
        let mut seen = Vec::new();
        for _ in 0..9 {
            clocks.advance_ms(100);
            seen.push(lifecycle.unix_secs_at(lifecycle.now_ms()));
        }
        // 1_800_000_000.6 s to .4 s one second on: the second turns over on time.
        assert_eq!(seen[..4], [1_800_000_000; 4]);
        assert_eq!(seen[4..], [1_800_000_001; 5]);
        assert_eq!(
            clocks.wall_readings(),
            readings_at_start,
            "no reading of the wall clock within the first second"
        );
        // The wall clock steps back an hour; the next reading a second on sees it.
        clocks.step_wall_ms(-3_600_000);
        clocks.advance_ms(50);
        assert_eq!(lifecycle.unix_secs_at(lifecycle.now_ms()), 1_800_000_001);
        clocks.advance_ms(100);
        assert_eq!(lifecycle.unix_secs_at(lifecycle.now_ms()), 1_799_996_401);
        assert_eq!(clocks.wall_readings(), readings_at_start + 1);
    }
}
