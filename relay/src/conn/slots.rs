//! Connection slots: a bound on how many connections of one kind are open at once, and
//! the permit that holds one slot for as long as its connection lives.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use metrics::Gauge;

/// At most `max` permits are out at once. Each permit also counts in `gauge` while it
/// is "counted" (a peer link holds a WebSocket slot but is not a client).
pub struct Slots {
    max: usize,
    taken: AtomicUsize,
    uncounted: AtomicUsize,
    gauge: Option<Gauge>,
}

impl Slots {
    pub fn new(max: usize) -> Arc<Slots> {
        Slots::build(max, None)
    }

    /// Slots whose counted permits are shown in `gauge`.
    pub fn with_gauge(max: usize, gauge: Gauge) -> Arc<Slots> {
        Slots::build(max, Some(gauge))
    }

    fn build(max: usize, gauge: Option<Gauge>) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            taken: AtomicUsize::new(0),
            uncounted: AtomicUsize::new(0),
            gauge,
        })
    }

    /// Takes a slot if fewer than `max` are taken.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.count(true);
        Some(Permit {
            slots: self.clone(),
            counted: true,
        })
    }

    /// Permits out.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    /// Permits out that count (those not set aside with `Permit::set_counted(false)`).
    pub fn counted(&self) -> usize {
        self.taken()
            .saturating_sub(self.uncounted.load(Ordering::Acquire))
    }

    pub fn max(&self) -> usize {
        self.max
    }

    fn count(&self, up: bool) {
        match &self.gauge {
            Some(gauge) if up => gauge.increment(1.0),
            Some(gauge) => gauge.decrement(1.0),
            None => {}
        }
    }
}

/// One taken slot, given back when dropped.
pub struct Permit {
    slots: Arc<Slots>,
    counted: bool,
}

impl Permit {
    /// Whether this connection counts (in `Slots::counted` and the gauge).
    pub fn set_counted(&mut self, counted: bool) {
        if counted == self.counted {
            return;
        }
        self.counted = counted;
        if counted {
            self.slots.uncounted.fetch_sub(1, Ordering::AcqRel);
            self.slots.count(true);
        } else {
            self.slots.uncounted.fetch_add(1, Ordering::AcqRel);
            self.slots.count(false);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.set_counted(true);
        self.slots.count(false);
        self.slots.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_bounded_and_given_back() {
        let slots = Slots::new(2);
        let a = slots.try_acquire().unwrap();
        let mut b = slots.try_acquire().unwrap();
        assert!(slots.try_acquire().is_none());
        b.set_counted(false);
        assert_eq!((slots.taken(), slots.counted()), (2, 1));
        drop(a);
        assert_eq!((slots.taken(), slots.counted()), (1, 0));
        drop(b);
        assert_eq!((slots.taken(), slots.counted()), (0, 0));
        assert!(slots.try_acquire().is_some());
    }
}
