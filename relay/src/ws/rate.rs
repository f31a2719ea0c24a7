//! The message rate of one wallet connection: a token bucket, held inline in the
//! session (two integers, no allocation), driven by the relay's clock in milliseconds.
//!
//! Every text message of a handshaken wallet takes a token from its `allowance`
//! (`ws_messages_burst_max` tokens, refilled at `ws_messages_per_second_max` a second).
//! A message finding it empty is refused with `rate_limited` and takes a token from a
//! second bucket of the same size and rate, the client's `patience`: a client keeps
//! being answered `rate_limited` while it sends up to about twice its rate, and is
//! closed (1008) once its refused messages exceed a whole burst beyond that.

use crate::config::Limits;

/// Thousandths of a token, so that a rate of 1/s refills a little every millisecond.
const MILLI: u64 = 1000;

/// A token bucket of `capacity` tokens, refilled at `per_sec` tokens a second.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    /// In thousandths of a token.
    level: u64,
    last_ms: u64,
}

impl Bucket {
    /// A full bucket at `now_ms`.
    pub fn full(capacity: u32, now_ms: u64) -> Self {
        Bucket {
            level: u64::from(capacity) * MILLI,
            last_ms: now_ms,
        }
    }

    /// Refills for the time since the last call, then takes one token if there is one.
    pub fn take(&mut self, capacity: u32, per_sec: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        // `per_sec` tokens a second are `per_sec` thousandths a millisecond.
        let refill = elapsed.saturating_mul(u64::from(per_sec));
        self.level = self
            .level
            .saturating_add(refill)
            .min(u64::from(capacity) * MILLI);
        if self.level >= MILLI {
            self.level -= MILLI;
            true
        } else {
            false
        }
    }
}

/// What the rate limit says of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: process it.
    Allowed,
    /// Over the rate: answer `rate_limited`, do not process it.
    Refused,
    /// Over the rate, and the client has ignored `rate_limited` for a whole burst: close.
    Close,
}

/// The rate limit of one connection.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    allowance: Bucket,
    patience: Bucket,
}

impl RateLimit {
    /// Both buckets full at `now_ms` (the handshake).
    pub fn new(limits: &Limits, now_ms: u64) -> Self {
        RateLimit {
            allowance: Bucket::full(limits.ws_messages_burst_max, now_ms),
            patience: Bucket::full(limits.ws_messages_burst_max, now_ms),
        }
    }

    /// Judges one message received at `now_ms`.
    pub fn check(&mut self, limits: &Limits, now_ms: u64) -> Verdict {
        let (burst, rate) = (
            limits.ws_messages_burst_max,
            limits.ws_messages_per_second_max,
        );
        if self.allowance.take(burst, rate, now_ms) {
            Verdict::Allowed
        } else if self.patience.take(burst, rate, now_ms) {
            Verdict::Refused
        } else {
            Verdict::Close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_sec: u32, burst: u32) -> Limits {
        Limits {
            ws_messages_per_second_max: per_sec,
            ws_messages_burst_max: burst,
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_is_allowed_the_next_message_is_refused() {
        let l = limits(100, 200);
        let mut rate = RateLimit::new(&l, 5_000);
        for i in 0..200 {
            assert_eq!(rate.check(&l, 5_000), Verdict::Allowed, "message {i}");
        }
        assert_eq!(rate.check(&l, 5_000), Verdict::Refused);
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_no_further() {
        let l = limits(100, 200);
        let mut rate = RateLimit::new(&l, 0);
        for _ in 0..200 {
            assert_eq!(rate.check(&l, 0), Verdict::Allowed);
        }
        // 10 ms at 100/s is one token; 9 ms is not.
        assert_eq!(rate.check(&l, 9), Verdict::Refused);
        assert_eq!(rate.check(&l, 10), Verdict::Allowed);
        assert_eq!(rate.check(&l, 10), Verdict::Refused);
        // An hour idle refills the burst, not more.
        let later = 3_600_000;
        for _ in 0..200 {
            assert_eq!(rate.check(&l, later), Verdict::Allowed);
        }
        assert_eq!(rate.check(&l, later), Verdict::Refused);
    }

    #[test]
    fn exactly_the_rate_is_never_refused() {
        // 1/s with a burst of 1: one message every 1000 ms, for an hour.
        let l = limits(1, 1);
        let mut rate = RateLimit::new(&l, 0);
        for second in 0..3600 {
            assert_eq!(rate.check(&l, second * 1000), Verdict::Allowed);
        }
        // 100/s with a burst of 200: a message every 10 ms, after using the burst.
        let l = limits(100, 200);
        let mut rate = RateLimit::new(&l, 0);
        for _ in 0..200 {
            assert_eq!(rate.check(&l, 0), Verdict::Allowed);
        }
        for step in 1..=60_000u64 {
            assert_eq!(
                rate.check(&l, step * 10),
                Verdict::Allowed,
                "at {} ms",
                step * 10
            );
        }
    }

    #[test]
    fn a_flood_is_refused_for_a_burst_then_closed() {
        let l = limits(100, 200);
        let mut rate = RateLimit::new(&l, 0);
        let verdicts: Vec<Verdict> = (0..401).map(|_| rate.check(&l, 0)).collect();
        assert!(verdicts[..200].iter().all(|v| *v == Verdict::Allowed));
        assert!(verdicts[200..400].iter().all(|v| *v == Verdict::Refused));
        assert_eq!(verdicts[400], Verdict::Close);
    }

    #[test]
    fn twice_the_rate_is_refused_half_the_time_never_closed() {
        let l = limits(100, 200);
        let mut rate = RateLimit::new(&l, 0);
        // 200/s (one message every 5 ms) for a minute.
        let (mut allowed, mut refused) = (0, 0);
        for i in 0..12_000u64 {
            match rate.check(&l, i * 5) {
                Verdict::Allowed => allowed += 1,
                Verdict::Refused => refused += 1,
                Verdict::Close => panic!("closed at message {i}"),
            }
        }
        // The burst, then 100/s for the 60 s.
        assert!((6_000..=6_200).contains(&allowed), "{allowed}");
        assert_eq!(allowed + refused, 12_000);
    }

    #[test]
    fn a_clock_going_backwards_refills_nothing() {
        let l = limits(100, 1);
        let mut rate = RateLimit::new(&l, 1_000);
        assert_eq!(rate.check(&l, 1_000), Verdict::Allowed);
        // (A burst of 1 gives patience for one refusal: the second one closes.)
        assert_eq!(rate.check(&l, 500), Verdict::Refused);
        assert_eq!(rate.check(&l, 1_009), Verdict::Close);
        assert_eq!(rate.check(&l, 1_010), Verdict::Allowed);
    }
}
