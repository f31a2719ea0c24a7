//! Negative controls of the whole-mesh checks: a relay broken on purpose (feature
//! `mutations`, see `sdk_relay::mutation`), one thing at a time, and the verdict must
//! name what broke. Run with `cargo test -p sim --features mutations --test mutations`
//! (scripts/test.sh does).
#![cfg(feature = "mutations")]

use sim::harness::{self, Plan};
use sim::scenario::{self, Options};

/// A plan for `scenario` with `mutation` in a relay that hosts a subscriber from the
/// start (so a delivery fault has someone to hurt).
fn mutated(scenario: &str, relays: usize, seed: u64, mutation: &str) -> Plan {
    let mut plan = scenario::plan(scenario, Options::new(relays, seed)).expect("a scenario");
    let target = plan
        .subscribers
        .iter()
        .min_by_key(|s| s.start)
        .map(|s| {
            s.relay
                .trim_start_matches("relay-")
                .parse()
                .expect("relay-N")
        })
        .expect("a subscriber");
    plan.mutation = Some((target, mutation.to_string()));
    plan
}

/// Runs the plan; the verdict must fail and name `expected`.
fn assert_caught(plan: &Plan, expected: &str) {
    let outcome = harness::run(plan);
    let verdict = outcome.verdict();
    assert!(
        !outcome.passed() && verdict.contains(expected),
        "{} seed {} with {:?}: expected a failure naming `{expected}`, got: {verdict}",
        plan.scenario,
        plan.seed,
        plan.mutation
    );
}

#[test]
fn the_unmutated_mesh_passes() {
    let plan = scenario::plan("steady", Options::new(4, 3)).unwrap();
    let outcome = harness::run(&plan);
    assert!(outcome.passed(), "{}", outcome.verdict());
}

#[test]
fn a_dropped_delivery_is_a_miss() {
    assert_caught(
        &mutated("steady", 4, 3, "drop-delivery"),
        "notifications missed",
    );
}

#[test]
fn a_duplicate_delivery_is_named() {
    assert_caught(
        &mutated("steady", 4, 3, "duplicate-delivery"),
        "received duplicates",
    );
}

#[test]
fn a_silently_reset_subscriber_loses_notifications_that_count() {
    assert_caught(
        &mutated("steady", 4, 3, "reset-subscriber"),
        "session reset without a close frame",
    );
}

#[test]
fn an_invented_notification_is_named() {
    assert_caught(
        &mutated("steady", 4, 3, "invent-notification"),
        "nobody published",
    );
}

#[test]
fn a_refused_link_leaves_the_mesh_not_fully_linked() {
    let mut plan = scenario::plan("steady", Options::new(4, 3)).unwrap();
    plan.mutation = Some((2, "refuse-link".into()));
    assert_caught(&plan, "mesh not fully linked");
}

#[test]
fn phantom_relays_break_the_bound_on_known_relays() {
    let mut plan = scenario::plan("steady", Options::new(4, 3)).unwrap();
    plan.mutation = Some((3, "phantom-members".into()));
    assert_caught(&plan, "more than the 4 that exist");
}

/// A relay that closes a subscriber with 1001 ("going away") on its own and drops what
/// it owed it: caught in every scenario where it went unnoticed before.
#[test]
fn closing_a_subscriber_with_going_away_is_no_excuse() {
    for scenario in ["steady", "partition-heal", "crash-restart", "churn"] {
        assert_caught(
            &mutated(scenario, 5, 11, "close-going-away"),
            "closed by its relay with code 1001",
        );
    }
}

/// The byzantine negative control: the same hostile host, against a mesh where relay-2
/// takes what peers send without checking a signature. Its subscriber gets forgeries;
/// the relays that verify deliver none.
#[test]
fn a_relay_that_skips_verification_delivers_forgeries() {
    let mut plan = scenario::plan("byzantine-forger", Options::new(4, 3)).unwrap();
    plan.mutation = Some((2, "skip-verification".into()));
    assert_caught(&plan, "forged notification(s) delivered on relay-2 (");
}

/// A relay that takes a peer's notifications at any rate never cuts the flood.
#[test]
fn a_relay_without_a_notification_rate_keeps_a_flooding_link() {
    let mut plan = scenario::plan("byzantine-flood", Options::new(4, 3)).unwrap();
    plan.mutation = Some((2, "unbounded-notifications".into()));
    assert_caught(&plan, "notification floods not cut by: relay-2");
}

/// The same for gossip: the relay that does not verify records lists invented relays.
#[test]
fn a_relay_that_skips_verification_lists_invented_relays() {
    let mut plan = scenario::plan("byzantine-gossip", Options::new(4, 3)).unwrap();
    plan.mutation = Some((2, "skip-verification".into()));
    assert_caught(&plan, "members that are not relays: relay-2 lists ");
}
