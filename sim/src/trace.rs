//! The run's trace: one line per event, stamped with simulated time, in the order the
//! harness and its workloads saw them. Nothing non-deterministic goes in.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// A shared, append-only event log (the simulation is single-threaded).
#[derive(Clone, Default)]
pub struct Trace(Rc<RefCell<Vec<String>>>);

impl Trace {
    /// Appends `what` by `host` at simulated time `at`.
    pub fn event(&self, at: Duration, host: &str, what: impl AsRef<str>) {
        let line = format!(
            "{:>6}.{:03}s {host:<10} {}",
            at.as_secs(),
            at.subsec_millis(),
            what.as_ref()
        );
        self.0.borrow_mut().push(line);
    }

    /// An event from inside a simulated host, at the current simulated time.
    pub fn here(&self, host: &str, what: impl AsRef<str>) {
        self.event(now(), host, what);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    pub fn len(&self) -> usize {
        self.0.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.borrow().is_empty()
    }
}

/// Simulated time since the start of the run, from inside a host.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}
