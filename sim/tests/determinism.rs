//! Same scenario and seed give a byte-identical trace, in one process and across
//! processes; different seeds give different schedules and traces.

use std::process::Command;

use sim::scenario::{Options, plan};

fn report(scenario: &str, relays: usize, seed: u64) -> String {
    let plan = plan(scenario, Options::new(relays, seed)).expect("scenario exists");
    sim::harness::run(&plan).report()
}

fn runner(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(args)
        .output()
        .expect("the runner starts");
    (
        output.status.success(),
        String::from_utf8(output.stdout).expect("the trace is UTF-8"),
    )
}

/// Runs one faulty scenario twice in this process and compares the traces byte for byte.
#[test]
fn same_seed_same_trace_in_process() {
    let first = report("partition-heal", 3, 11);
    let second = report("partition-heal", 3, 11);
    assert!(first.ends_with("verdict: pass\n"), "{first}");
    assert_eq!(first, second);
}

/// The hostile host (its own tasks, randomness and key) replays too.
#[test]
fn a_byzantine_run_replays_byte_for_byte() {
    let first = report("byzantine-forger", 3, 7);
    let second = report("byzantine-forger", 3, 7);
    assert!(first.ends_with("verdict: pass\n"), "{first}");
    assert!(first.contains("byz-1      linked to relay-1"), "{first}");
    assert_eq!(first, second);
}

/// Runs the runner binary twice (two processes, two tokio/turmoil instances) and
/// compares stdout byte for byte.
#[test]
fn same_seed_same_trace_across_processes() {
    let args = ["run", "--scenario", "churn", "--relays", "3", "--seed", "5"];
    let (ok_a, a) = runner(&args);
    let (ok_b, b) = runner(&args);
    assert!(ok_a && ok_b, "{a}");
    assert!(a.lines().count() > 20, "a real trace: {a}");
    assert_eq!(a, b);
}

/// Two seeds: different fault schedules, hence different traces.
#[test]
fn different_seeds_different_traces() {
    let a = report("flapping", 3, 1);
    let b = report("flapping", 3, 2);
    assert_ne!(a, b);
    let plan_a = plan("flapping", Options::new(3, 1)).unwrap();
    let plan_b = plan("flapping", Options::new(3, 2)).unwrap();
    assert_ne!(
        plan_a.schedule, plan_b.schedule,
        "the seed drives the faults"
    );
}

/// `sim list` names every scenario the issue asks for.
#[test]
fn list_names_the_scenarios() {
    let (ok, out) = runner(&["list"]);
    assert!(ok);
    for name in [
        "steady",
        "partition-heal",
        "crash-restart",
        "latency",
        "flapping",
        "churn",
        "partition-permanent",
        "byzantine-forger",
        "byzantine-gossip",
        "byzantine-flood",
    ] {
        assert!(out.lines().any(|l| l.starts_with(name)), "{name} in {out}");
    }
}
