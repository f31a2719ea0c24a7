//! The whole-mesh checks every run ends with.
//!
//! - no panic anywhere (a panic hook records them, even those tokio catches in spawned
//!   tasks);
//! - membership converged: every relay's `GET /relays` lists every relay as healthy;
//! - delivery: every acknowledged notification reached, exactly once, every subscriber
//!   session that was connected when it was published and stayed connected to the end
//!   (a partitioned relay's subscribers get it through anti-entropy);
//! - no duplicate delivery to any session, even those that ended early;
//! - no subscriber was cut off by its relay (a close code other than 1001 would be the
//!   slow-consumer or another limit firing on a well-behaved client);
//! - fully linked: every relay holds a live link to every other one (the design's steady
//!   state, one link per pair; the simulation sets `peers_max` to N-1, exactly enough);
//! - bounds: every publisher got all its notifications acknowledged; no relay knows
//!   more relays than exist. (Queue bounds themselves are bounded channels in the relay;
//!   what the sim can see of them is that no client or link had to be cut as slow.)

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Once;
use std::time::Duration;

use crate::fault::host;
use crate::harness::Plan;
use crate::trace::Trace;
use crate::workload::Observations;

thread_local! {
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

static HOOK: Once = Once::new();

/// Starts recording panics on this thread (the simulation runs on one thread).
pub fn reset_panics() {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let text = format!("{}{location}", panic_text(info.payload()));
            PANICS.with(|p| p.borrow_mut().push(text));
            default(info);
        }));
    });
    PANICS.with(|p| p.borrow_mut().clear());
}

pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".to_string())
}

/// Items shown in a failure message before "and N more".
const SHOWN_MAX: usize = 6;

fn listed(items: &[String]) -> String {
    let mut out = items
        .iter()
        .take(SHOWN_MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN_MAX {
        out.push_str(&format!(" and {} more", items.len() - SHOWN_MAX));
    }
    out
}

/// Runs every check; returns the failures (and writes one trace line per check).
pub fn all(plan: &Plan, obs: &Observations, trace: &Trace, at: Duration) -> Vec<String> {
    let mut failures = Vec::new();
    let panics = PANICS.with(|p| p.borrow().clone());
    if !panics.is_empty() {
        failures.push(format!("{} panic(s): {}", panics.len(), listed(&panics)));
    }
    failures.extend(membership(plan, obs));
    failures.extend(delivery(obs));
    failures.extend(publishers(plan, obs));
    failures.extend(bounds(plan, obs));
    failures.extend(links(plan, obs));
    let status = if failures.is_empty() {
        "all checks passed"
    } else {
        "checks failed"
    };
    trace.event(
        at,
        "checker",
        format!(
            "{status}: {} published, {} sessions, {} deliveries",
            obs.published.len(),
            obs.sessions.len(),
            obs.sessions.iter().map(|s| s.received.len()).sum::<usize>()
        ),
    );
    let replayed = replayed_across_sessions(obs);
    if replayed > 0 {
        // Not a failure (each session is a new connection), but worth seeing: a relay that
        // restarts re-fetches its peers' logs and delivers them to its new sessions.
        trace.event(
            at,
            "checker",
            format!("note: {replayed} notifications reached a subscriber again in a later session"),
        );
    }
    for failure in &failures {
        trace.event(at, "checker", format!("FAIL {failure}"));
    }
    failures
}

/// Every relay lists every relay, healthy. Names the relays that did not converge:
/// those most of the others see as missing or unhealthy, or that see most of the others
/// so (all relays with a wrong view when no relay stands out, as in a split in two).
fn membership(plan: &Plan, obs: &Observations) -> Option<String> {
    let all: Vec<String> = (1..=plan.relays).map(host).collect();
    let mut wrong_in_view: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen_wrong_by: BTreeMap<&str, usize> = BTreeMap::new();
    let mut details = Vec::new();
    for relay in &all {
        let list = match obs.views.get(relay).map(|v| &v.relays) {
            Some(Ok(list)) => list,
            Some(Err(e)) => {
                wrong_in_view.insert(relay, all.len() - 1);
                details.push(format!("{relay} /relays: {e}"));
                continue;
            }
            None => {
                wrong_in_view.insert(relay, all.len() - 1);
                details.push(format!("{relay} not read"));
                continue;
            }
        };
        let mut wrong = Vec::new();
        for other in &all {
            let health = list.get(other).map_or("missing", String::as_str);
            if health != "healthy" {
                wrong.push(format!("{other} {health}"));
                *seen_wrong_by.entry(other).or_default() += 1;
            }
        }
        if !wrong.is_empty() {
            wrong_in_view.insert(relay, wrong.len());
            details.push(format!("{relay} sees {}", listed(&wrong)));
        }
    }
    if details.is_empty() {
        return None;
    }
    let others = all.len().saturating_sub(1).max(1);
    let majority = |count: Option<&usize>| count.is_some_and(|c| 2 * c > others);
    let mut named: Vec<String> = all
        .iter()
        .filter(|r| {
            majority(wrong_in_view.get(r.as_str())) || majority(seen_wrong_by.get(r.as_str()))
        })
        .cloned()
        .collect();
    if named.is_empty() {
        named = all
            .iter()
            .filter(|r| {
                wrong_in_view.contains_key(r.as_str()) || seen_wrong_by.contains_key(r.as_str())
            })
            .cloned()
            .collect();
    }
    Some(format!(
        "membership not converged on {} ({})",
        listed(&named),
        listed(&details)
    ))
}

/// Exactly-once delivery to every session connected from publication to the end.
fn delivery(obs: &Observations) -> Vec<String> {
    let mut failures = Vec::new();
    let mut missed_by_relay: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for session in &obs.sessions {
        let mut seen = BTreeSet::new();
        let duplicates: Vec<String> = session
            .received
            .iter()
            .filter(|id| !seen.insert(id.as_str()))
            .cloned()
            .collect();
        if !duplicates.is_empty() {
            failures.push(format!(
                "{} on {} received duplicates: {}",
                session.subscriber,
                session.relay,
                listed(&duplicates)
            ));
        }
        if let Some(code) = session.close_code.filter(|c| *c != 1001) {
            failures.push(format!(
                "{} on {} was closed by its relay with code {code}",
                session.subscriber, session.relay
            ));
        }
        if session.ended_at.is_some() {
            continue;
        }
        let missed: Vec<String> = obs
            .published
            .iter()
            .filter(|p| p.sent_at >= session.started_at && !seen.contains(p.message_id.as_str()))
            .map(|p| p.message_id.clone())
            .collect();
        if !missed.is_empty() {
            let expected = obs
                .published
                .iter()
                .filter(|p| p.sent_at >= session.started_at)
                .count();
            missed_by_relay
                .entry(session.relay.clone())
                .or_default()
                .push(format!(
                    "{} missed {} of {expected} ({})",
                    session.subscriber,
                    missed.len(),
                    listed(&missed[..missed.len().min(2)])
                ));
        }
    }
    if !missed_by_relay.is_empty() {
        let relays: Vec<String> = missed_by_relay.keys().cloned().collect();
        let details: Vec<String> = missed_by_relay.into_values().flatten().collect();
        failures.push(format!(
            "notifications missed on {} ({})",
            listed(&relays),
            listed(&details)
        ));
    }
    failures
}

fn publishers(plan: &Plan, obs: &Observations) -> Vec<String> {
    plan.publishers
        .iter()
        .filter_map(|p| {
            let acked = obs
                .published
                .iter()
                .filter(|n| n.publisher == p.name)
                .count();
            (acked < p.count).then(|| format!("{} got {acked} of {} acks", p.name, p.count))
        })
        .collect()
}

fn bounds(plan: &Plan, obs: &Observations) -> Vec<String> {
    obs.views
        .iter()
        .filter_map(|(relay, view)| {
            let known = view.metrics.as_ref()?["sync_metrics"]["known_relays"].as_u64()?;
            (known > plan.relays as u64).then(|| {
                format!(
                    "{relay} knows {known} relays, more than the {} that exist",
                    plan.relays
                )
            })
        })
        .collect()
}

/// One live link per pair once the mesh settled: every relay is linked to all others.
fn links(plan: &Plan, obs: &Observations) -> Option<String> {
    let want = plan.relays as u64 - 1;
    let short: Vec<String> = obs
        .views
        .iter()
        .filter_map(|(relay, view)| {
            let links = view.metrics.as_ref()?["sync_metrics"]["mesh_connections"].as_u64()?;
            (links != want).then(|| format!("{relay} has {links}"))
        })
        .collect();
    (!short.is_empty()).then(|| {
        format!(
            "mesh not fully linked ({want} links each): {}",
            listed(&short)
        )
    })
}

/// Notifications a subscriber received in more than one of its sessions.
fn replayed_across_sessions(obs: &Observations) -> usize {
    let mut by_subscriber: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for session in &obs.sessions {
        let ids: BTreeSet<&str> = session.received.iter().map(String::as_str).collect();
        let counts = by_subscriber.entry(&session.subscriber).or_default();
        for id in ids {
            *counts.entry(id).or_default() += 1;
        }
    }
    by_subscriber
        .values()
        .flat_map(|counts| counts.values())
        .filter(|n| **n > 1)
        .count()
}
