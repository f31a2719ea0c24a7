//! Per-client-address request rate limit: a token bucket per IP address, refilled at
//! `http_requests_per_minute_max` per minute, in a table of bounded size.
//!
//! When the table is full, buckets that have refilled completely are dropped first (a
//! full bucket is the same as no bucket), then the least recently seen address. A flood
//! of new addresses therefore costs bounded memory and can at worst reset some clients'
//! buckets, never grow the table.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;
use tokio::time::Instant;

/// Client addresses tracked at once.
pub const RATE_ADDRESSES_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct RateLimiter {
    /// Bucket size: a client may burst a whole minute's allowance.
    capacity: f64,
    tokens_per_sec: f64,
    addresses_max: usize,
    buckets: Mutex<BTreeMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(requests_per_minute_max: u32, addresses_max: usize) -> Self {
        assert!(requests_per_minute_max > 0, "validated by the config");
        assert!(addresses_max > 0);
        let capacity = f64::from(requests_per_minute_max);
        RateLimiter {
            capacity,
            tokens_per_sec: capacity / 60.0,
            addresses_max,
            buckets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Takes one token for `addr` at `now`.
    ///
    /// # Errors
    /// The seconds to wait until a token is available, when none is left.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&addr) && buckets.len() >= self.addresses_max {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(addr).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.tokens_per_sec;
            Err(wait.ceil().max(1.0) as u64)
        }
    }

    #[cfg(test)]
    pub fn tracked_addresses(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.tokens_per_sec).min(self.capacity)
    }

    /// Makes room for one more address.
    fn evict(&self, buckets: &mut BTreeMap<IpAddr, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| self.refilled(bucket, now) < self.capacity);
        if buckets.len() < self.addresses_max {
            return;
        }
        let oldest = buckets
            .iter()
            .min_by_key(|(_, bucket)| bucket.updated)
            .map(|(addr, _)| *addr);
        if let Some(addr) = oldest {
            buckets.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::{Clock, TokioClock};
    use std::time::Duration;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn bucket_empties_then_refills_at_the_minute_rate() {
        let limiter = RateLimiter::new(3, 10);
        let t0 = Clock::now(&TokioClock);
        for _ in 0..3 {
            assert_eq!(limiter.check(ip(1), t0), Ok(()));
        }
        assert_eq!(limiter.check(ip(1), t0), Err(20), "one token per 20 s");
        assert_eq!(limiter.check(ip(2), t0), Ok(()), "addresses are separate");
        let later = t0 + Duration::from_secs(20);
        assert_eq!(limiter.check(ip(1), later), Ok(()));
        assert!(limiter.check(ip(1), later).is_err());
    }

    #[test]
    fn table_stays_bounded_evicting_full_then_oldest() {
        let limiter = RateLimiter::new(2, 4);
        let t0 = Clock::now(&TokioClock);
        for n in 0..100 {
            let now = t0 + Duration::from_millis(n);
            let _ = limiter.check(ip(n as u32), now);
            let _ = limiter.check(ip(n as u32), now);
            assert!(limiter.tracked_addresses() <= 4);
        }
        // The newest address's empty bucket survived eviction.
        assert!(
            limiter
                .check(ip(99), t0 + Duration::from_millis(99))
                .is_err()
        );
    }
}
