//! The checks cannot pass vacuously: a run in which nothing happens, or a planned
//! subscriber never connects, fails and says so; each byzantine check fails on the
//! breach it guards. (Faults in the relay itself are the negative controls of
//! `tests/mutations.rs`.)

use std::collections::BTreeMap;
use std::time::Duration;

use sim::harness;
use sim::scenario::{self, Options};
use sim::trace::Trace;
use sim::workload::{Observations, RelayView, Session};

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

/// Observations of a clean 3-relay byzantine run, as the checker would have read them:
/// every relay lists and is linked to the others and `byz-1`.
fn clean_byzantine_observations() -> Observations {
    let relays = ["relay-1", "relay-2", "relay-3"];
    let mut obs = Observations::default();
    for relay in relays {
        let mut listed: BTreeMap<String, String> = relays
            .iter()
            .map(|r| (r.to_string(), "healthy".to_string()))
            .collect();
        listed.insert("byz-1".into(), "healthy".into());
        obs.views.insert(
            relay.into(),
            RelayView {
                relays: Ok(listed),
                connected: relays
                    .iter()
                    .filter(|r| **r != relay)
                    .map(|r| r.to_string())
                    .collect(),
                metrics: Some(serde_json::json!({"sync_metrics": {
                    "known_relays": 4, "mesh_connections": 3
                }})),
            },
        );
        obs.dials.insert((relay.into(), "byz-1:8090".into()), 2);
        obs.sessions.push(Session {
            subscriber: format!("sub-{}", &relay[6..]),
            relay: relay.into(),
            started_at: Duration::ZERO,
            ended_at: None,
            end: None,
            received: Vec::new(),
            forged: Vec::new(),
        });
    }
    obs
}

fn byzantine_failures(obs: &Observations) -> String {
    let plan = scenario::plan("byzantine-forger", Options::new(3, 1)).unwrap();
    sim::check::all(&plan, obs, &Trace::default(), Duration::from_secs(30)).join("; ")
}

/// Each byzantine check is silent on clean observations and names its breach.
#[test]
fn each_byzantine_check_names_its_breach() {
    let clean = byzantine_failures(&clean_byzantine_observations());
    for quiet in [
        "forged notification",
        "not relays",
        "impostor",
        "do not exist",
        "not fully linked",
    ] {
        assert!(!clean.contains(quiet), "clean observations: {clean}");
    }

    let mut obs = clean_byzantine_observations();
    obs.sessions[1]
        .forged
        .push("relay-1-0badc0de-4 (pre-claim)".into());
    let failures = byzantine_failures(&obs);
    assert!(
        failures.contains(
            "1 forged notification(s) delivered on relay-2 (sub-2 got relay-1-0badc0de-4 (pre-claim))"
        ),
        "{failures}"
    );

    let mut obs = clean_byzantine_observations();
    if let Ok(listed) = &mut obs.views.get_mut("relay-3").unwrap().relays {
        listed.insert("ghost-1".into(), "healthy".into());
    }
    let failures = byzantine_failures(&obs);
    assert!(
        failures
            .contains("members that are not relays: relay-3 lists 1 that do not exist: ghost-1"),
        "{failures}"
    );

    let mut obs = clean_byzantine_observations();
    obs.dials
        .insert(("relay-2".into(), "intranet:22".into()), 3);
    let failures = byzantine_failures(&obs);
    assert!(
        failures.contains("1 dial(s) to addresses that are not relays: relay-2 -> intranet:22 x3"),
        "{failures}"
    );

    let mut obs = clean_byzantine_observations();
    obs.hostile
        .impostures
        .insert("relay-1 accepted byz-1 as relay-2".into());
    let failures = byzantine_failures(&obs);
    assert!(
        failures.contains("impostor links accepted: relay-1 accepted byz-1 as relay-2"),
        "{failures}"
    );

    let mut obs = clean_byzantine_observations();
    obs.views
        .get_mut("relay-1")
        .unwrap()
        .connected
        .remove("relay-3");
    let failures = byzantine_failures(&obs);
    assert!(
        failures
            .contains("mesh not fully linked (2 links each among relays): relay-1 lacks relay-3"),
        "{failures}"
    );
}
