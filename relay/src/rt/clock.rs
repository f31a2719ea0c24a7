use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Monotonic time, sleeping and wall-clock time.
///
/// tokio's timers are simulated by turmoil, but `std::time` is not, so wall-clock
/// unix time (for `timestamp` fields) must come from here too.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic now, for deadlines and round-trip measurements.
    fn now(&self) -> Instant;
    /// Time since the unix epoch, for `timestamp` fields and `last_seen`.
    fn unix_time(&self) -> Duration;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> tokio::time::Sleep {
        tokio::time::sleep(duration)
    }

    /// Whole seconds since the unix epoch.
    fn unix_secs(&self) -> u64 {
        self.unix_time().as_secs()
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The host's clocks, through tokio.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioClock;

impl Clock for TokioClock {
    #[allow(clippy::disallowed_methods)] // The seam itself.
    fn now(&self) -> Instant {
        Instant::now()
    }

    #[allow(clippy::disallowed_methods)] // The seam itself.
    fn unix_time(&self) -> Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// Time that moves only when a test says: a monotonic clock and a wall clock that move
/// together (`advance_ms`) or apart (`step_wall_ms`), counting the wall clock's readings.
#[cfg(test)]
pub struct ManualClock {
    start: Instant,
    monotonic_ms: std::sync::atomic::AtomicU64,
    wall_ms: std::sync::atomic::AtomicI64,
    wall_readings: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl ManualClock {
    /// Monotonic time from now, the wall clock at `wall_ms` unix milliseconds.
    pub fn new(wall_ms: i64) -> Arc<ManualClock> {
        #[allow(clippy::disallowed_methods)] // A fixed origin for the manual clock.
        let start = Instant::now();
        Arc::new(ManualClock {
            start,
            monotonic_ms: 0.into(),
            wall_ms: wall_ms.into(),
            wall_readings: 0.into(),
        })
    }

    /// Both clocks move on by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.monotonic_ms.fetch_add(ms, Relaxed);
        self.wall_ms.fetch_add(ms as i64, Relaxed);
    }

    /// The wall clock alone steps by `ms` (an NTP correction).
    pub fn step_wall_ms(&self, ms: i64) {
        self.wall_ms
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How often the wall clock was read.
    pub fn wall_readings(&self) -> u64 {
        self.wall_readings
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
impl Clock for ManualClock {
    fn now(&self) -> Instant {
        let ms = self.monotonic_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.start + Duration::from_millis(ms)
    }

    fn unix_time(&self) -> Duration {
        use std::sync::atomic::Ordering::Relaxed;
        self.wall_readings.fetch_add(1, Relaxed);
        Duration::from_millis(self.wall_ms.load(Relaxed).max(0) as u64)
    }
}
