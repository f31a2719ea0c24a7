//! proptest draws random fault schedules (partitions of random relay sets, one-way cuts,
//! held links, latency, crashes) over a 3-relay mesh with a publisher and a subscriber
//! on every relay; whatever the schedule, once everything heals the mesh must pass every
//! check. A failing case shrinks, then prints the seed and schedule to replay.

use std::time::Duration;

use proptest::prelude::*;
use sim::fault::{Fault, Schedule};
use sim::scenario::{Options, plan, with_schedule};

const RELAYS: usize = 3;
/// Faults happen in [FIRST, HEAL) ms; everything is healed at HEAL.
const FIRST_MS: u64 = 1000;
const HEAL_MS: u64 = 7000;

fn relay() -> impl Strategy<Value = usize> {
    1..=RELAYS
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (proptest::sample::subsequence((1..=RELAYS).collect::<Vec<_>>(), 1..RELAYS)).prop_map(
            |a| {
                let b = (1..=RELAYS).filter(|i| !a.contains(i)).collect();
                Fault::Partition { a, b }
            }
        ),
        (relay(), relay())
            .prop_filter("two relays", |(a, b)| a != b)
            .prop_map(|(a, b)| Fault::Repair {
                a: vec![a],
                b: vec![b]
            }),
        (relay(), relay())
            .prop_filter("two relays", |(a, b)| a != b)
            .prop_map(|(from, to)| Fault::PartitionOneway { from, to }),
        (relay(), relay())
            .prop_filter("two relays", |(a, b)| a != b)
            .prop_map(|(a, b)| Fault::Hold { a, b }),
        (relay(), relay(), 1u64..300, 0u64..300)
            .prop_filter("two relays", |(a, b, _, _)| a != b)
            .prop_map(|(a, b, min_ms, jitter)| Fault::Latency {
                a,
                b,
                min_ms,
                max_ms: min_ms + jitter
            }),
        // relay-1 hosts the publisher: an acknowledged notification only relay-1 held
        // is lost if relay-1 dies, which no relay promises against.
        (2..=RELAYS).prop_map(Fault::Crash),
        (2..=RELAYS).prop_map(Fault::Restart),
    ]
}

fn schedule() -> impl Strategy<Value = Schedule> {
    proptest::collection::vec((FIRST_MS..HEAL_MS, fault()), 0..6).prop_map(|faults| {
        Schedule(
            faults
                .into_iter()
                .map(|(at, f)| (Duration::from_millis(at), f))
                .collect(),
        )
        .sorted()
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        // SIM_PROPTEST_CASES=200 for a longer hunt (release build recommended).
        cases: std::env::var("SIM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6),
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_healed_fault_schedule_passes(seed in 0u64..1_000_000, schedule in schedule()) {
        let base = plan("steady", Options::new(RELAYS, seed)).expect("steady exists");
        let plan = with_schedule(base, schedule, Duration::from_millis(HEAL_MS));
        let outcome = sim::harness::run(&plan);
        prop_assert!(
            outcome.passed(),
            "{}\nseed {seed}, schedule:\n{}replay: save the schedule lines to FILE, then\n  cargo run --release -p sim -- run --scenario steady --relays {RELAYS} --seed {seed} --schedule FILE",
            outcome.verdict(),
            plan.schedule
        );
    }
}
