//! Every scenario passes its whole-mesh checks for a few seeds (the byzantine ones too:
//! a hostile relay host inside the mesh), and the negative control (a partition that
//! never heals) fails, naming the relay cut off.

use std::process::Command;

use sim::scenario::{Options, plan};

const SCENARIOS: &[&str] = &[
    "steady",
    "partition-heal",
    "crash-restart",
    "latency",
    "flapping",
    "churn",
    "dns-change",
    "roaming",
    "roaming-short-retention",
];

/// The matrix: scenario x seed, 4 relays; any failure prints the replay command.
#[test]
fn every_scenario_passes_for_several_seeds() {
    let mut failures = Vec::new();
    for scenario in SCENARIOS {
        for seed in [1, 2, 3] {
            let outcome = sim::harness::run(&plan(scenario, Options::new(4, seed)).unwrap());
            if !outcome.passed() {
                failures.push(format!(
                    "{}\n  replay: cargo run --release -p sim -- run --scenario {scenario} --relays 4 --seed {seed}",
                    outcome.verdict()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A hostile relay inside a trusted mesh (it holds an admitted key): every byzantine
/// scenario, seeds 1-3 on 4 relays, leaves the honest relays' invariants intact.
#[test]
fn every_byzantine_scenario_passes_for_several_seeds() {
    let mut failures = Vec::new();
    for scenario in ["byzantine-forger", "byzantine-gossip", "byzantine-flood"] {
        for seed in [1, 2, 3] {
            let outcome = sim::harness::run(&plan(scenario, Options::new(4, seed)).unwrap());
            if !outcome.passed() {
                failures.push(format!(
                    "{}\n  replay: cargo run --release -p sim -- run --scenario {scenario} --relays 4 --seed {seed}",
                    outcome.verdict()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The negative control must fail, and say which relay did not converge and which
/// relay's subscriber missed notifications; the runner exits 1.
#[test]
fn permanent_partition_fails_naming_the_relays() {
    let outcome = sim::harness::run(&plan("partition-permanent", Options::new(4, 3)).unwrap());
    let verdict = outcome.verdict();
    assert!(verdict.starts_with("verdict: fail: "), "{verdict}");
    assert!(
        verdict.contains("membership not converged on relay-4 ("),
        "{verdict}"
    );
    assert!(
        verdict.contains("notifications missed on relay-4 ("),
        "{verdict}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args([
            "run",
            "--scenario",
            "partition-permanent",
            "--relays",
            "3",
            "--seed",
            "1",
            "--quiet",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("verdict: fail: membership not converged on relay-3"),
        "{stdout}"
    );
}

/// The DNS scenario's control: with a DNS answer that never names a relay, no relay has a
/// peer to dial, the mesh never forms and the run fails; so in `dns-change` the mesh
/// comes from DNS alone.
#[test]
fn a_mesh_without_a_dns_answer_never_forms() {
    let mut plan = plan("dns-change", Options::new(4, 1)).unwrap();
    plan.schedule = sim::fault::Schedule::default();
    plan.schedule.at(
        std::time::Duration::ZERO,
        sim::fault::Fault::Dns(Vec::new()),
    );
    let outcome = sim::harness::run(&plan);
    assert!(!outcome.passed(), "{}", outcome.report());
}

/// Roaming wallets whose gaps outlive a 1 s log retention are told so: some `resumed`
/// says `recovered: false` (the check fails naming what was lost when a gap is silent).
#[test]
fn roaming_past_retention_is_reported_never_silent() {
    let outcome = sim::harness::run(&plan("roaming-short-retention", Options::new(4, 2)).unwrap());
    assert!(outcome.passed(), "{}", outcome.verdict());
    assert!(
        outcome.trace.iter().any(|line| line.contains("false/")),
        "no resume reported recovered:false"
    );
}
