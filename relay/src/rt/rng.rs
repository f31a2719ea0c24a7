use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The relay's one source of randomness (jitter, ids), seeded so a simulation replays.
///
/// ChaCha8 is portable: the same seed gives the same stream on every platform and version.
#[derive(Clone)]
pub struct SeededRng(Arc<Mutex<ChaCha8Rng>>);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))))
    }

    /// A uniformly random value in `[low, high)`; `low` when the range is empty.
    pub fn range_u64(&self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        self.lock().random_range(low..high)
    }

    pub fn next_u64(&self) -> u64 {
        self.lock().random()
    }

    /// A generator seeded with 32 bytes from the operating system: the production
    /// relay's, strong enough for the secret key it creates on first start.
    pub fn from_os() -> Self {
        SeededRng(Arc::new(Mutex::new(ChaCha8Rng::from_os_rng())))
    }

    /// 32 random bytes (a key seed, a handshake nonce).
    pub fn bytes32(&self) -> [u8; 32] {
        self.lock().random()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ChaCha8Rng> {
        // A panic while holding this lock cannot leave the generator inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for SeededRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeededRng")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_stream_and_different_seeds_differ() {
        let a: Vec<u64> = (0..4).map(|_| SeededRng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(SeededRng::new(7).next_u64(), SeededRng::new(8).next_u64());
        let rng = SeededRng::new(1);
        assert!(
            (0..100)
                .map(|_| rng.range_u64(10, 20))
                .all(|v| (10..20).contains(&v))
        );
    }
}
