//! The checks cannot pass vacuously: a run in which nothing happens, or a planned
//! subscriber never connects, fails and says so. (Faults in the relay itself are the
//! negative controls of `tests/mutations.rs`.)

use std::time::Duration;

use sim::harness;
use sim::scenario::{self, Options};

#[test]
fn a_run_where_nothing_is_published_fails_for_lack_of_activity() {
    let mut plan = scenario::plan("steady", Options::new(3, 5)).unwrap();
    for publisher in &mut plan.publishers {
        publisher.start = plan.end + Duration::from_secs(60);
    }
    let verdict = harness::run(&plan).verdict();
    assert!(
        verdict.contains("no activity: nothing was published"),
        "{verdict}"
    );
}

#[test]
fn a_subscriber_that_never_connects_fails_the_run() {
    let mut plan = scenario::plan("steady", Options::new(3, 5)).unwrap();
    plan.subscribers[1].start = plan.end + Duration::from_secs(60);
    let verdict = harness::run(&plan).verdict();
    assert!(
        verdict.contains("sub-2 never held a session on relay-2"),
        "{verdict}"
    );
}
