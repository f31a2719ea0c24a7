//! Counters that every worker thread bumps for every wallet message (messages and bytes
//! received and sent): one registry counter per series would be one cache line that the
//! worker threads take from each other on every increment. Each thread adds to its own
//! stripe instead; `Metrics::render` moves what the stripes hold into the registry first,
//! so every exposition counts every increment made before it began.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use metrics::Counter;

use crate::protocol::LabelValue;

/// Stripes per counter set: threads beyond this share stripes (still exact, just slower).
const STRIPES: usize = 8;
/// Series per counter set at most.
const SLOTS: usize = 16;

/// One thread's share of a counter set, on cache lines of its own (128 bytes: the
/// adjacent-line prefetcher pulls lines in pairs).
#[repr(align(128))]
struct Stripe([AtomicU64; SLOTS]);

/// The stripe of the calling thread: threads take the next one the first time they count.
fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|index| *index)
}

/// Registry counters (at most `SLOTS`) with per-thread stripes in front of them.
struct Striped {
    registered: Vec<Counter>,
    stripes: Box<[Stripe]>,
}

impl Striped {
    fn new(registered: Vec<Counter>) -> Self {
        assert!(registered.len() <= SLOTS, "at most {SLOTS} series");
        let stripes = (0..STRIPES)
            .map(|_| Stripe(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Striped {
            registered,
            stripes,
        }
    }

    fn add(&self, slot: usize, n: u64) {
        self.stripes[stripe_index()].0[slot].fetch_add(n, Ordering::Relaxed);
    }

    /// Moves what every stripe holds into the registry. Each amount is taken by one swap,
    /// so concurrent increments and flushes lose nothing and count nothing twice.
    fn flush(&self) {
        for stripe in self.stripes.iter() {
            for (held, counter) in stripe.0.iter().zip(&self.registered) {
                let n = held.swap(0, Ordering::AcqRel);
                if n > 0 {
                    counter.increment(n);
                }
            }
        }
    }
}

/// One striped counter per value of a label enum (see `LabeledBy`).
pub struct StripedBy<E: LabelValue> {
    striped: Striped,
    _kind: std::marker::PhantomData<E>,
}

impl<E: LabelValue> StripedBy<E> {
    pub(super) fn new(name: &'static str, label: &'static str) -> Self {
        // The same series `LabeledBy` registers, in `E::ALL`'s order (the slots).
        let labeled = super::LabeledBy::<E>::new(name, label);
        let registered = labeled.counters.into_iter().map(|(_, c)| c).collect();
        StripedBy {
            striped: Striped::new(registered),
            _kind: std::marker::PhantomData,
        }
    }

    pub fn get(&self, value: E) -> Slot<'_> {
        let slot = E::ALL
            .iter()
            .position(|v| *v == value)
            .expect("every value of the enum is registered");
        Slot {
            striped: &self.striped,
            slot,
        }
    }

    pub(super) fn flush(&self) {
        self.striped.flush();
    }
}

/// One striped counter without labels.
pub struct StripedCounter(Striped);

impl StripedCounter {
    pub(super) fn new(name: &'static str) -> Self {
        StripedCounter(Striped::new(vec![metrics::counter!(name)]))
    }

    pub fn increment(&self, n: u64) {
        self.0.add(0, n);
    }

    pub(super) fn flush(&self) {
        self.0.flush();
    }
}

/// One series of a `StripedBy`.
pub struct Slot<'a> {
    striped: &'a Striped,
    slot: usize,
}

impl Slot<'_> {
    pub fn increment(&self, n: u64) {
        self.striped.add(self.slot, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::metrics::names::WS_RECEIVED_BYTES_TOTAL;

    /// Increments from many threads (more than there are stripes), read while they run
    /// and after: never more than was added, exactly all of it once they are done.
    #[test]
    fn every_increment_from_every_thread_is_rendered_once() {
        let m = Metrics::new();
        let threads = STRIPES + 3;
        let per_thread = 10_000;
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..per_thread {
                        m.ws_received_bytes.increment(1);
                    }
                });
            }
            for _ in 0..5 {
                assert!(m.sum(WS_RECEIVED_BYTES_TOTAL) <= (threads * per_thread) as f64);
            }
        });
        assert_eq!(
            m.sum(WS_RECEIVED_BYTES_TOTAL),
            (threads * per_thread) as f64
        );
        // Rendering again adds nothing.
        assert_eq!(
            m.sum(WS_RECEIVED_BYTES_TOTAL),
            (threads * per_thread) as f64
        );
    }
}
