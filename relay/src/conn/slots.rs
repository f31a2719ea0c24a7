//! Connection slots: a bound on how many connections of one kind are open at once, and
//! the permit that holds one slot for as long as its connection lives; and the same
//! bound per client address ([`AddressSlots`]), so one address cannot take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// At most `max` permits per client address at once. The table holds only addresses
/// with a permit out (an entry goes at zero), so it never has more entries than there
/// are connections, which the listeners' caps bound.
pub struct AddressSlots {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl AddressSlots {
    pub fn new(max: usize) -> Arc<AddressSlots> {
        Arc::new(AddressSlots {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for `address` if it holds fewer than `max`. An IPv4 address seen
    /// through an IPv6 socket (`::ffff:a.b.c.d`) counts as the IPv4 address.
    pub fn try_acquire(self: &Arc<Self>, address: IpAddr) -> Option<AddressPermit> {
        let address = address.to_canonical();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(address).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressPermit {
            slots: self.clone(),
            address,
        })
    }

    /// Permits out for `address`.
    pub fn held(&self, address: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&address.to_canonical()).copied().unwrap_or(0)
    }

    /// Addresses with at least one permit out (the table's size).
    pub fn addresses(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// One address's slot, given back when dropped.
pub struct AddressPermit {
    slots: Arc<AddressSlots>,
    address: IpAddr,
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_permits_are_bounded_per_address_and_the_table_empties() {
        let slots = AddressSlots::new(2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let a1 = slots.try_acquire(a).unwrap();
        let a2 = slots.try_acquire(mapped).unwrap();
        assert!(
            slots.try_acquire(a).is_none(),
            "the IPv4-mapped one counted"
        );
        let b1 = slots.try_acquire(b).unwrap();
        assert_eq!((slots.held(a), slots.held(b), slots.addresses()), (2, 1, 2));
        drop(a1);
        assert!(slots.try_acquire(a).is_some(), "freed, then given back");
        drop((a2, b1));
        assert_eq!(slots.addresses(), 0, "entries go at zero");
    }

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
