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
