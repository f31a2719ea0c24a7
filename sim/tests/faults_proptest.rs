//! proptest draws random fault schedules (partitions of random relay sets, one-way cuts,
//! held links, latency, crashes; at least one fault each) over a 3-relay mesh with a
//! publisher and a subscriber on every relay; whatever the schedule, once everything
//! heals the mesh must pass every check. A failing case shrinks, then prints the seed and
//! schedule to replay.
//!
//! The run is repeatable: the cases come from a fixed base seed (`SIM_PROPTEST_SEED`
//! overrides it, `random` draws one), printed at the start with the case count
//! (`SIM_PROPTEST_CASES`). A failing case is appended to
//! `sim/proptest-regressions/faults_proptest.txt`; commit that line and every later run
//! replays the case before drawing new ones.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed, TestRunner};
use sim::fault::{Fault, Schedule};
use sim::scenario::{Options, plan, with_schedule};

const RELAYS: usize = 3;
/// Faults happen in [FIRST, HEAL) ms; everything is healed at HEAL.
const FIRST_MS: u64 = 1000;
const HEAL_MS: u64 = 7000;

/// The base seed of a CI run: every run draws the same cases.
const DEFAULT_SEED: u64 = 20_260_101;
/// About 2-3 minutes of `cargo test` (debug build) on the 2-core CI machine.
const DEFAULT_CASES: u32 = 500;
/// Failing cases, appended by proptest and replayed first by every later run.
const REGRESSIONS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proptest-regressions/faults_proptest.txt"
);

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
    proptest::collection::vec((FIRST_MS..HEAL_MS, fault()), 1..=6).prop_map(|faults| {
        Schedule(
            faults
                .into_iter()
                .map(|(at, f)| (Duration::from_millis(at), f))
                .collect(),
        )
        .sorted()
    })
}

/// `SIM_PROPTEST_SEED`: a number, or `random` (a fresh seed, printed); default fixed.
fn base_seed() -> u64 {
    match std::env::var("SIM_PROPTEST_SEED") {
        Err(_) => DEFAULT_SEED,
        Ok(v) if v == "random" => RandomState::new().hash_one("sim proptest seed"),
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("SIM_PROPTEST_SEED={v}: expected a u64 or `random`")),
    }
}

fn cases() -> u32 {
    match std::env::var("SIM_PROPTEST_CASES") {
        Err(_) => DEFAULT_CASES,
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("SIM_PROPTEST_CASES={v}: expected a number of cases")),
    }
}

#[test]
fn any_healed_fault_schedule_passes() {
    let seed = base_seed();
    let cases = cases();
    let repeat = format!(
        "SIM_PROPTEST_SEED={seed} SIM_PROPTEST_CASES={cases} cargo test -p sim --test faults_proptest"
    );
    eprintln!(
        "faults_proptest: base seed {seed}, {cases} cases (repeat: {repeat}); \
         persisted failures in {REGRESSIONS} run first"
    );
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        // Each shrinking step is one simulation; only the schedule shrinks (a smaller
        // simulation seed is no simpler a case).
        max_shrink_iters: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        source_file: Some(file!()),
        ..ProptestConfig::default()
    });
    let strategy = ((0u64..1_000_000).no_shrink(), schedule());
    let result = runner.run(&strategy, |(sim_seed, schedule)| {
        let base = plan("steady", Options::new(RELAYS, sim_seed)).expect("steady exists");
        let plan = with_schedule(base, schedule, Duration::from_millis(HEAL_MS));
        let outcome = sim::harness::run(&plan);
        prop_assert!(
            outcome.passed(),
            "{}\nseed {sim_seed}, schedule:\n{}replay: save the schedule lines to FILE, then\n  cargo run --release -p sim -- run --scenario steady --relays {RELAYS} --seed {sim_seed} --schedule FILE",
            outcome.verdict(),
            plan.schedule
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\nbase seed {seed}, {cases} cases; repeat the whole run: {repeat}");
    }
}
