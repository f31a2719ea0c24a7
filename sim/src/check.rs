//! The whole-mesh checks every run ends with. None of them can pass vacuously: missing
//! data is a failure, and a run with no activity fails the activity check.
//!
//! - no panic anywhere (a panic hook records them, even those tokio catches in spawned
//!   tasks);
//! - membership converged: every relay's `GET /relays` lists every relay as healthy;
//! - activity: something was published and acknowledged, and the subscribers of every
//!   relay that ran the whole time received something;
//! - live subscribers: every planned subscriber that does not leave on schedule holds a
//!   live session at the end;
//! - delivery: every acknowledged notification reached, exactly once, every subscriber
//!   session that was connected when it was published (a partitioned relay's
//!   subscribers get it through anti-entropy). A session that ended loses what was
//!   published until its subscriber's next session: that is a miss, unless the end is
//!   explained by a fault the scenario injected (its relay crashed) or by the subscriber
//!   leaving on schedule;
//! - no duplicate delivery to any session, and no notification delivered again in a
//!   later session of the same subscriber unless its relay crashed in between (a
//!   restarted relay may repeat what it saw since its last save);
//! - nothing invented: every notification received was published (at most as many
//!   unknown ids as publications whose acknowledgement was lost);
//! - no subscriber was closed by its relay, with any code: the relays are never shut
//!   down gracefully in a scenario, so even 1001 ("going away") is a finding;
//! - fully linked: every relay holds a live link to every other one (the design's steady
//!   state, one link per pair; the simulation sets `peers_max` to N-1, exactly enough);
//! - bounds: every publisher got all its notifications acknowledged; no relay knows
//!   more relays than exist. (Queue bounds themselves are bounded channels in the relay;
//!   what the sim can see of them is that no client or link had to be cut as slow.)
//! - nothing forged delivered: no wallet received a notification a hostile host made
//!   (each carries a mark), not even under a genuine id;
//! - members are real: every relay lists only real relays (and hostile hosts under their
//!   own names, members like any other);
//! - dials are to relays: no relay dialed an address other than a real relay's or a
//!   hostile host's own (`rt::DialLog` records every dial, answered or not);
//! - no imposture: no relay accepted a link from a host claiming another relay's id;
//! - floods cut: every notification flood (more than twice a relay's
//!   `mesh_notifications_per_second_max` at once) was cut, each its link.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Once;
use std::time::Duration;

use crate::fault::{Fault, host};
use crate::harness::Plan;
use crate::trace::Trace;
use crate::workload::{Observations, Session, SessionEnd};

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
    failures.extend(activity(plan, obs));
    failures.extend(live_subscribers(plan, obs));
    failures.extend(delivery(plan, obs));
    failures.extend(redelivery(plan, obs));
    failures.extend(invented(obs));
    failures.extend(publishers(plan, obs));
    failures.extend(bounds(plan, obs));
    failures.extend(links(plan, obs));
    failures.extend(forged_delivered(obs));
    failures.extend(foreign_members(plan, obs));
    failures.extend(foreign_dials(plan, obs));
    failures.extend(impostures(obs));
    failures.extend(floods_kept(obs));
    if !plan.roamers.is_empty() {
        failures.extend(crate::roam::roaming(obs, plan.retention_secs.is_some()));
    }
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
    for log in &obs.roams {
        let told: Vec<String> = log
            .resumes
            .iter()
            .map(|r| format!("{}/{}", r.1, r.3))
            .collect();
        trace.event(
            at,
            "checker",
            format!(
                "{}: {} received, resumes (recovered/replayed) [{}], {} reconnect token(s), {} error(s)",
                log.roamer,
                log.received.len(),
                told.join(" "),
                log.reconnect_tokens,
                log.errors.len()
            ),
        );
    }
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

/// A notification published this long before a session ended may still have been on
/// its way: a subscriber that leaves on schedule is not owed it.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(3);

/// When each relay's software stopped (`relay-N` -> times): a crash, a drain (its
/// wallets closed over the lame-duck window), or a restart, which stops a running relay
/// before booting it again.
fn crashes(plan: &Plan) -> BTreeMap<String, Vec<Duration>> {
    let mut crashes: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    for (at, fault) in &plan.schedule.0 {
        if let Fault::Crash(i) | Fault::Restart(i) | Fault::Drain(i) = fault {
            crashes.entry(host(*i)).or_default().push(*at);
        }
    }
    crashes
}

/// How long after its relay's crash a session may end and still be explained by it: the
/// subscriber notices a crashed relay by its silence.
fn crash_notice(plan: &Plan) -> Duration {
    Duration::from_secs(plan.timing.timeout_secs)
        + crate::workload::CLIENT_SILENCE_SLACK
        + Duration::from_secs(1)
}

/// The crash that explains a session's end, if one does.
fn explaining_crash(
    plan: &Plan,
    crashes: &BTreeMap<String, Vec<Duration>>,
    session: &Session,
) -> Option<Duration> {
    let ended = session.ended_at?;
    crashes
        .get(&session.relay)?
        .iter()
        .copied()
        .find(|crash| *crash <= ended && ended <= *crash + crash_notice(plan))
}

/// Something happened: notifications were published and acknowledged, and every relay
/// that ran the whole time (no crash, no restart: a restarted relay may rightly owe its
/// new sessions nothing) with a subscriber planned to be there while notifications are
/// published (from before the first publication to the end) delivered some.
fn activity(plan: &Plan, obs: &Observations) -> Vec<String> {
    let mut failures = Vec::new();
    let planned: usize = plan.publishers.iter().map(|p| p.count).sum();
    if planned == 0 {
        return failures;
    }
    if obs.published.is_empty() {
        failures.push("no activity: nothing was published and acknowledged".to_string());
    }
    let first_publication = plan
        .publishers
        .iter()
        .map(|p| p.start)
        .min()
        .unwrap_or_default();
    let stopped = crashes(plan);
    let relays: BTreeSet<&str> = plan
        .subscribers
        .iter()
        .filter(|s| s.start <= first_publication && s.leave.is_none_or(|l| l >= plan.end))
        .filter(|s| !stopped.contains_key(&s.relay))
        .map(|s| s.relay.as_str())
        .collect();
    let silent: Vec<String> = relays
        .into_iter()
        .filter(|relay| {
            !obs.sessions
                .iter()
                .any(|s| s.relay == *relay && !s.received.is_empty())
        })
        .map(str::to_string)
        .collect();
    if !silent.is_empty() {
        failures.push(format!(
            "no activity: no subscriber of {} received anything",
            listed(&silent)
        ));
    }
    failures
}

/// Every planned subscriber that does not leave holds a live session at the end.
fn live_subscribers(plan: &Plan, obs: &Observations) -> Vec<String> {
    plan.subscribers
        .iter()
        .filter(|s| s.leave.is_none_or(|leave| leave >= plan.end))
        .filter_map(|planned| {
            let mine: Vec<&Session> = obs
                .sessions
                .iter()
                .filter(|s| s.subscriber == planned.name)
                .collect();
            match mine.last() {
                Some(last) if last.ended_at.is_none() => None,
                Some(last) => Some(format!(
                    "{} holds no live session on {} at the end (its last session {})",
                    planned.name,
                    planned.relay,
                    last.end.map_or("ended".to_string(), |e| e.to_string())
                )),
                None => Some(format!(
                    "{} never held a session on {}",
                    planned.name, planned.relay
                )),
            }
        })
        .collect()
}

/// Exactly-once delivery: to every session, of what was published while it was
/// connected; across a session's end, of what was published until the next session,
/// unless the end is explained.
fn delivery(plan: &Plan, obs: &Observations) -> Vec<String> {
    let mut failures = Vec::new();
    let crashes = crashes(plan);
    let mut missed_by_relay: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (index, session) in obs.sessions.iter().enumerate() {
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
        if let Some(SessionEnd::ClosedByRelay(code)) = session.end {
            failures.push(format!(
                "{} on {} was closed by its relay with code {code}",
                session.subscriber, session.relay
            ));
        }
        // What this subscriber was owed through this session: from its start to the
        // start of its next session (or the end of the run).
        let next_start = obs.sessions[index + 1..]
            .iter()
            .find(|s| s.subscriber == session.subscriber)
            .map(|s| s.started_at);
        let owed_until = match (session.end, session.ended_at) {
            (None, _) | (_, None) => None,
            (Some(SessionEnd::Left), Some(ended)) => Some(ended.saturating_sub(IN_FLIGHT_GRACE)),
            (Some(_), Some(_)) => match explaining_crash(plan, &crashes, session) {
                // A crashed relay loses what it had not delivered yet, whatever held it
                // back (latency, a cut, a path through another crashed relay), and the
                // gap until the next session: all excused.
                Some(_) => Some(session.started_at),
                None => Some(next_start.unwrap_or(Duration::MAX)),
            },
        };
        let missed: Vec<String> = obs
            .published
            .iter()
            .filter(|p| p.sent_at >= session.started_at)
            .filter(|p| owed_until.is_none_or(|until| p.sent_at < until))
            .filter(|p| !seen.contains(p.message_id.as_str()))
            .map(|p| p.message_id.clone())
            .collect();
        if !missed.is_empty() {
            let why = match session.end {
                Some(end) if end != SessionEnd::Left => format!(", session {end}"),
                _ => String::new(),
            };
            missed_by_relay
                .entry(session.relay.clone())
                .or_default()
                .push(format!(
                    "{} missed {}{why} ({})",
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

/// No notification reaches a subscriber again in a later session, unless its relay
/// crashed between the two (a restarted relay may repeat what it saw since its last
/// save of the ids it had seen).
fn redelivery(plan: &Plan, obs: &Observations) -> Vec<String> {
    let crashes = crashes(plan);
    let mut failures = Vec::new();
    let mut by_subscriber: BTreeMap<&str, Vec<&Session>> = BTreeMap::new();
    for session in &obs.sessions {
        by_subscriber
            .entry(&session.subscriber)
            .or_default()
            .push(session);
    }
    for (subscriber, sessions) in by_subscriber {
        let mut repeated = Vec::new();
        for (later_index, later) in sessions.iter().enumerate() {
            for earlier in &sessions[..later_index] {
                let crashed_between = crashes.get(&later.relay).is_some_and(|times| {
                    times
                        .iter()
                        .any(|t| *t >= earlier.started_at && *t <= later.started_at)
                });
                if crashed_between {
                    continue;
                }
                let before: BTreeSet<&str> = earlier.received.iter().map(String::as_str).collect();
                repeated.extend(
                    later
                        .received
                        .iter()
                        .filter(|id| before.contains(id.as_str()))
                        .cloned(),
                );
            }
        }
        if !repeated.is_empty() {
            failures.push(format!(
                "{subscriber} received again in a later session, with no crash to explain it: {}",
                listed(&repeated)
            ));
        }
    }
    failures
}

/// Every notification received was published: at most as many unknown ids as
/// publications whose acknowledgement was lost, each from a publishing relay.
fn invented(obs: &Observations) -> Option<String> {
    let published: BTreeSet<&str> = obs
        .published
        .iter()
        .map(|p| p.message_id.as_str())
        .collect();
    let origins: BTreeSet<String> = obs
        .published
        .iter()
        .map(|p| format!("{}-", p.relay))
        .collect();
    let unknown: BTreeSet<&str> = obs
        .sessions
        .iter()
        .flat_map(|s| s.received.iter())
        .map(String::as_str)
        .filter(|id| !published.contains(id))
        .collect();
    let unexplained: Vec<String> = unknown
        .iter()
        .filter(|id| !origins.iter().any(|o| id.starts_with(o.as_str())))
        .map(|id| id.to_string())
        .collect();
    if !unexplained.is_empty() || unknown.len() > obs.unacked {
        let all: Vec<String> = unknown.iter().map(|id| id.to_string()).collect();
        return Some(format!(
            "received {} notification(s) nobody published ({} publications unacknowledged): {}",
            unknown.len(),
            obs.unacked,
            listed(if unexplained.is_empty() {
                &all
            } else {
                &unexplained
            })
        ));
    }
    None
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

/// A figure from a relay's `GET /metrics`, or why it could not be read.
fn sync_figure(obs: &Observations, relay: &str, field: &str) -> Result<u64, String> {
    let view = obs
        .views
        .get(relay)
        .ok_or_else(|| format!("{relay} was not read"))?;
    let metrics = view
        .metrics
        .as_ref()
        .ok_or_else(|| format!("{relay} /metrics unreadable"))?;
    metrics["sync_metrics"][field]
        .as_u64()
        .ok_or_else(|| format!("{relay} /metrics has no sync_metrics.{field}"))
}

fn bounds(plan: &Plan, obs: &Observations) -> Vec<String> {
    (1..=plan.relays)
        .map(host)
        .filter_map(|relay| match sync_figure(obs, &relay, "known_relays") {
            Err(missing) => Some(format!("bounds unchecked: {missing}")),
            Ok(known) if known > (plan.relays + plan.hostiles.len()) as u64 => Some(format!(
                "{relay} knows {known} relays, more than the {} that exist",
                plan.relays + plan.hostiles.len()
            )),
            Ok(_) => None,
        })
        .collect()
}

/// One live link per pair once the mesh settled: every relay is linked to all others.
/// With hostile hosts (whose links come and go) the links to the real relays are
/// counted, as `GET /relays` marks them.
fn links(plan: &Plan, obs: &Observations) -> Option<String> {
    if !plan.hostiles.is_empty() {
        return links_among_relays(plan, obs);
    }
    let want = plan.relays as u64 - 1;
    let short: Vec<String> = (1..=plan.relays)
        .map(host)
        .filter_map(|relay| match sync_figure(obs, &relay, "mesh_connections") {
            Err(missing) => Some(missing),
            Ok(links) => (links != want).then(|| format!("{relay} has {links}")),
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

/// Every relay holds a live link to every other real relay.
fn links_among_relays(plan: &Plan, obs: &Observations) -> Option<String> {
    let all: Vec<String> = (1..=plan.relays).map(host).collect();
    let short: Vec<String> = all
        .iter()
        .filter_map(|relay| {
            let Some(view) = obs.views.get(relay) else {
                return Some(format!("{relay} not read"));
            };
            let missing: Vec<String> = all
                .iter()
                .filter(|other| *other != relay && !view.connected.contains(*other))
                .cloned()
                .collect();
            (!missing.is_empty()).then(|| format!("{relay} lacks {}", listed(&missing)))
        })
        .collect();
    (!short.is_empty()).then(|| {
        format!(
            "mesh not fully linked ({} links each among relays): {}",
            plan.relays - 1,
            listed(&short)
        )
    })
}

/// No wallet received a notification a hostile host made, under any id.
fn forged_delivered(obs: &Observations) -> Option<String> {
    let mut by_relay: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for session in obs.sessions.iter().filter(|s| !s.forged.is_empty()) {
        by_relay.entry(&session.relay).or_default().extend(
            session
                .forged
                .iter()
                .map(|f| format!("{} got {f}", session.subscriber)),
        );
    }
    if by_relay.is_empty() {
        return None;
    }
    let count: usize = by_relay.values().map(Vec::len).sum();
    let relays: Vec<String> = by_relay.keys().map(|r| r.to_string()).collect();
    let details: Vec<String> = by_relay.into_values().flatten().collect();
    Some(format!(
        "{count} forged notification(s) delivered on {} ({})",
        listed(&relays),
        listed(&details)
    ))
}

/// The relay ids that exist: the real relays and the hostile hosts' own names.
fn real_members(plan: &Plan) -> BTreeSet<String> {
    (1..=plan.relays)
        .map(host)
        .chain(plan.hostiles.iter().map(|h| h.name.clone()))
        .collect()
}

/// Every relay lists only relays that exist.
fn foreign_members(plan: &Plan, obs: &Observations) -> Option<String> {
    let real = real_members(plan);
    let details: Vec<String> = obs
        .views
        .iter()
        .filter_map(|(relay, view)| {
            let listed_ids = view.relays.as_ref().ok()?;
            let foreign: Vec<String> = listed_ids
                .keys()
                .filter(|id| !real.contains(*id))
                .map(|id| id.chars().take(40).collect())
                .collect();
            (!foreign.is_empty()).then(|| {
                format!(
                    "{relay} lists {} that do not exist: {}",
                    foreign.len(),
                    listed(&foreign)
                )
            })
        })
        .collect();
    (!details.is_empty()).then(|| format!("members that are not relays: {}", listed(&details)))
}

/// No relay dialed an address other than a real relay's or a hostile host's own.
fn foreign_dials(plan: &Plan, obs: &Observations) -> Option<String> {
    let allowed: BTreeSet<String> = (1..=plan.relays)
        .map(|i| format!("{}:{}", host(i), crate::workload::WS_PORT))
        .chain(plan.hostiles.iter().map(|h| h.address()))
        .collect();
    let foreign: Vec<String> = obs
        .dials
        .iter()
        .filter(|((_, address), _)| !allowed.contains(address))
        .map(|((relay, address), count)| {
            let address: String = address.chars().take(40).collect();
            format!("{relay} -> {address} x{count}")
        })
        .collect();
    (!foreign.is_empty()).then(|| {
        format!(
            "{} dial(s) to addresses that are not relays: {}",
            foreign.len(),
            listed(&foreign)
        )
    })
}

/// Every notification flood was cut: a relay sent one ends the link it came on, so each
/// flood a relay was sent is one cut.
fn floods_kept(obs: &Observations) -> Option<String> {
    let log = &obs.hostile;
    let kept: Vec<String> = log
        .flooded
        .iter()
        .filter_map(|(relay, &sent)| {
            let cut = log.flood_cuts.get(relay).copied().unwrap_or(0);
            (cut < sent).then(|| format!("{relay} ({cut} of {sent} cut)"))
        })
        .collect();
    (!kept.is_empty()).then(|| format!("notification floods not cut by: {}", listed(&kept)))
}

/// No relay accepted a link from a host claiming another relay's id.
fn impostures(obs: &Observations) -> Option<String> {
    let accepted: Vec<String> = obs.hostile.impostures.iter().cloned().collect();
    (!accepted.is_empty()).then(|| format!("impostor links accepted: {}", listed(&accepted)))
}
