//! Named scenarios: each builds a `Plan` (workloads and fault schedule) from the number
//! of relays and the seed. Fault timing, cut points, latencies and churn come from the
//! seed, so different seeds exercise different schedules.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::fault::{Fault, Schedule};
use crate::harness::{Plan, Timing, Topology};
use crate::hostile::{Attack, Hostile};
use crate::rt::splitmix64;
use crate::workload::{Publisher, Subscriber};

/// Name and one-line description of every scenario.
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "steady",
        "no faults: publishers on relay-1, a subscriber on every relay",
    ),
    (
        "partition-heal",
        "the mesh splits in two at a seeded cut, notifications flow, it heals",
    ),
    (
        "crash-restart",
        "a seeded relay crashes (losing its state) and restarts",
    ),
    (
        "latency",
        "every relay link gets seeded latency and jitter (20-400 ms)",
    ),
    (
        "flapping",
        "a seeded relay's links go down and up at seeded intervals",
    ),
    (
        "churn",
        "subscribers join and leave at seeded times while publishers publish",
    ),
    (
        "dns-change",
        "no configured peers: DNS first answers nothing, then two relays, then all of them",
    ),
    (
        "roaming",
        "wallets drop and resume on seeded relays through a partition and a crash-restart",
    ),
    (
        "roaming-short-retention",
        "negative control: roaming with a 1 s log retention; resumes must say recovered:false",
    ),
    (
        "partition-permanent",
        "negative control: the last relay is cut off and never healed (must fail)",
    ),
    (
        "byzantine-forger",
        "a hostile relay forges, replays and pre-claims notifications, claims relays' ids",
    ),
    (
        "byzantine-gossip",
        "a hostile relay gossips invented, oversized and far-future records, non-relay hosts",
    ),
    (
        "byzantine-flood",
        "a hostile relay floods huge and repeated sync summaries and fetches",
    ),
];

/// What the hostile host of each byzantine scenario does.
pub const BYZANTINE: &[(&str, &[Attack])] = &[
    (
        "byzantine-forger",
        &[
            Attack::Forge,
            Attack::PreClaim,
            Attack::Replay,
            Attack::ClaimId,
        ],
    ),
    (
        "byzantine-gossip",
        &[
            Attack::FabricatedRecords,
            Attack::OversizedRecords,
            Attack::FarFuture,
        ],
    ),
    (
        "byzantine-flood",
        &[
            Attack::HugeSummary,
            Attack::RepeatedSyncs,
            Attack::FetchFlood,
            Attack::NotificationFlood,
        ],
    ),
];

/// `mesh_notifications_per_second_max` of the relays a notification flood is aimed at:
/// far above what the scenario publishes, low enough that a flood stays cheap to simulate.
pub const FLOOD_BOUND: u32 = 100;

/// Time after the last fault or publication for the mesh to repair itself: several sync
/// intervals, the dial backoff cap and a client's silence limit.
pub const SETTLE: Duration = Duration::from_secs(8);

const PUBLISH_EVERY: Duration = Duration::from_millis(250);
const START: Duration = Duration::from_secs(2);

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Options a run may override.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub relays: usize,
    pub seed: u64,
    /// Stretch `steady` to this long (the 50-relay figure); other scenarios ignore it.
    pub duration: Option<Duration>,
    pub tick: Duration,
}

impl Options {
    pub fn new(relays: usize, seed: u64) -> Options {
        Options {
            relays,
            seed,
            duration: None,
            tick: ms(10),
        }
    }
}

/// The plan of scenario `name`, or `None` if there is no such scenario.
pub fn plan(name: &str, options: Options) -> Option<Plan> {
    let relays = options.relays.max(2);
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(options.seed ^ 0x5ce7_a210));
    let mut plan = Plan {
        scenario: name.to_string(),
        seed: options.seed,
        relays,
        topology: if rng.random_bool(0.5) {
            Topology::Chain
        } else {
            Topology::Ring
        },
        timing: Timing::FAST,
        latency_ms: (1, rng.random_range(5..30)),
        tick: options.tick,
        publishers: Vec::new(),
        subscribers: Vec::new(),
        roamers: Vec::new(),
        retention_secs: None,
        notifications_per_second_max: None,
        schedule: Schedule::default(),
        end: Duration::ZERO,
        mutation: None,
        hostiles: Vec::new(),
    };
    let rng = &mut rng;
    plan.end = match name {
        "steady" => steady(&mut plan, rng, options.duration),
        "partition-heal" => partition(&mut plan, rng, true),
        "partition-permanent" => partition(&mut plan, rng, false),
        "crash-restart" => crash_restart(&mut plan, rng),
        "latency" => latency(&mut plan, rng),
        "flapping" => flapping(&mut plan, rng),
        "churn" => churn(&mut plan, rng),
        "dns-change" => dns_change(&mut plan, rng),
        "roaming" => roaming(&mut plan, rng, false),
        "roaming-short-retention" => roaming(&mut plan, rng, true),
        name => {
            let (_, attacks) = BYZANTINE.iter().find(|(n, _)| *n == name)?;
            byzantine(&mut plan, rng, attacks)
        }
    };
    Some(plan)
}

/// A subscriber on every relay, from the start to the end.
fn subscribers_everywhere(plan: &mut Plan) {
    for i in 1..=plan.relays {
        plan.subscribers.push(Subscriber {
            silence_max: Duration::ZERO,
            name: format!("sub-{i}"),
            relay: crate::fault::host(i),
            start: Duration::ZERO,
            leave: None,
        });
    }
}

/// `pub-1` publishes `count` notifications on relay-1; returns when it is done at latest.
fn publish(plan: &mut Plan, count: usize, rng: &mut ChaCha8Rng) -> Duration {
    plan.publishers.push(Publisher {
        silence_max: Duration::ZERO,
        name: "pub-1".into(),
        relay: crate::fault::host(1),
        start: START + ms(rng.random_range(0..500)),
        count,
        every: PUBLISH_EVERY,
    });
    START + ms(500) + PUBLISH_EVERY * count as u32
}

fn steady(plan: &mut Plan, rng: &mut ChaCha8Rng, duration: Option<Duration>) -> Duration {
    subscribers_everywhere(plan);
    let count = match duration {
        // One a second over a long run.
        Some(d) => (d.saturating_sub(START + SETTLE).as_millis() / 1000).max(1) as usize,
        None => 20,
    };
    let last = publish(plan, count, rng);
    if let Some(p) = plan.publishers.last_mut().filter(|_| duration.is_some()) {
        p.every = Duration::from_secs(1);
    }
    duration.unwrap_or(last + SETTLE).max(last + SETTLE)
}

/// The relays split in two at a seeded cut (the last relay alone when the partition is
/// permanent); healed after a seeded time unless permanent.
fn partition(plan: &mut Plan, rng: &mut ChaCha8Rng, heals: bool) -> Duration {
    let relays = plan.relays;
    subscribers_everywhere(plan);
    let cut = if heals {
        rng.random_range(1..relays)
    } else {
        relays - 1
    };
    let (a, b): (Vec<usize>, Vec<usize>) = ((1..=cut).collect(), (cut + 1..=relays).collect());
    let down = ms(rng.random_range(3000..4000));
    plan.schedule.at(
        down,
        Fault::Partition {
            a: a.clone(),
            b: b.clone(),
        },
    );
    let last = publish(plan, 24, rng).max(down + ms(3000));
    if heals {
        let up = down + ms(rng.random_range(4000..7000));
        plan.schedule.at(up, Fault::Repair { a, b });
        last.max(up) + SETTLE
    } else {
        last + SETTLE
    }
}

/// Three roaming wallets hop between seeded relays (3 hops each) while a publisher
/// publishes for 12 s, through a partition of one relay, a crash-restart of another and a
/// lame-duck drain of a third (its wallets move with the `reconnect` token; the relay
/// starts again later). With `short_retention` the log keeps 1 s and wallets stay away
/// 2.5-4 s.
fn roaming(plan: &mut Plan, rng: &mut ChaCha8Rng, short_retention: bool) -> Duration {
    use crate::roam::{Hop, Roamer};
    let relays = plan.relays;
    if short_retention {
        plan.retention_secs = Some(1);
    }
    let last = publish(plan, 48, rng);
    for w in 1..=3 {
        let mut at = START + ms(rng.random_range(1500..2500));
        let mut hops = Vec::new();
        for _ in 0..3 {
            let offline = if short_retention {
                ms(rng.random_range(2500..4000))
            } else {
                ms(rng.random_range(200..2000))
            };
            hops.push(Hop {
                at,
                offline,
                to: rng.random_range(1..=relays),
            });
            at += offline + ms(rng.random_range(1000..2500));
        }
        plan.roamers.push(Roamer {
            name: format!("roam-{w}"),
            silence_max: Duration::ZERO,
            relays,
            first: rng.random_range(1..=relays),
            start: START,
            hops,
        });
    }
    let cut = rng.random_range(1..=relays);
    let others: Vec<usize> = (1..=relays).filter(|i| *i != cut).collect();
    let down = ms(rng.random_range(3000..5000));
    plan.schedule.at(
        down,
        Fault::Partition {
            a: vec![cut],
            b: others.clone(),
        },
    );
    let up = down + ms(rng.random_range(1000..3000));
    plan.schedule.at(
        up,
        Fault::Repair {
            a: vec![cut],
            b: others,
        },
    );
    let victim = rng.random_range(2..=relays);
    let crash = ms(rng.random_range(6000..8000));
    let back = crash + ms(rng.random_range(1000..3000));
    plan.schedule.at(crash, Fault::Crash(victim));
    plan.schedule.at(back, Fault::Restart(victim));
    let (drained, drain) = drain_under_a_roamer(&plan.roamers, victim, rng).unwrap_or_else(|| {
        (
            drain_victim(relays, victim, rng),
            ms(rng.random_range(8500..10500)),
        )
    });
    let again = drain
        + Duration::from_secs(crate::harness::LAME_DUCK_SECS)
        + ms(rng.random_range(1000..2500));
    plan.schedule.at(drain, Fault::Drain(drained));
    plan.schedule.at(again, Fault::Restart(drained));
    last.max(back).max(again) + SETTLE
}

/// A relay and a time at which a roaming wallet is planned to be connected there (not the
/// crash `victim`), so the drain's `reconnect` moves a resuming wallet: seeded among every
/// such stay of at least a second.
fn drain_under_a_roamer(
    roamers: &[crate::roam::Roamer],
    victim: usize,
    rng: &mut ChaCha8Rng,
) -> Option<(usize, Duration)> {
    let settled = ms(400);
    let mut stays = Vec::new();
    for roamer in roamers {
        let mut on = (roamer.first, roamer.start + settled);
        for hop in &roamer.hops {
            stays.push((on.0, on.1, hop.at));
            on = (hop.to, hop.at + hop.offline + settled);
        }
    }
    stays.retain(|(relay, from, to)| *relay != victim && *to > *from + ms(1000));
    if stays.is_empty() {
        return None;
    }
    let (relay, from, to) = stays[rng.random_range(0..stays.len())];
    let at = from + ms(rng.random_range(0..(to - from - ms(600)).as_millis() as u64));
    Some((relay, at))
}

/// A relay other than the crash `victim` (the first relay when there are only two, so
/// the crashed one is never also the drained one).
fn drain_victim(relays: usize, victim: usize, rng: &mut ChaCha8Rng) -> usize {
    let others: Vec<usize> = (1..=relays).filter(|i| *i != victim).collect();
    others[rng.random_range(0..others.len())]
}

fn crash_restart(plan: &mut Plan, rng: &mut ChaCha8Rng) -> Duration {
    subscribers_everywhere(plan);
    let victim = rng.random_range(2..=plan.relays);
    let down = ms(rng.random_range(3000..5000));
    let up = down + ms(rng.random_range(1000..4000));
    plan.schedule.at(down, Fault::Crash(victim));
    plan.schedule.at(up, Fault::Restart(victim));
    publish(plan, 24, rng).max(up) + SETTLE
}

fn latency(plan: &mut Plan, rng: &mut ChaCha8Rng) -> Duration {
    subscribers_everywhere(plan);
    for a in 1..=plan.relays {
        for b in a + 1..=plan.relays {
            let min_ms = rng.random_range(20..200);
            let max_ms = min_ms + rng.random_range(0..200);
            plan.schedule.at(
                Duration::ZERO,
                Fault::Latency {
                    a,
                    b,
                    min_ms,
                    max_ms,
                },
            );
        }
    }
    publish(plan, 24, rng) + SETTLE
}

fn flapping(plan: &mut Plan, rng: &mut ChaCha8Rng) -> Duration {
    subscribers_everywhere(plan);
    let victim = rng.random_range(1..=plan.relays);
    let others: Vec<usize> = (1..=plan.relays).filter(|i| *i != victim).collect();
    let mut at = ms(rng.random_range(2000..3000));
    for _ in 0..rng.random_range(3..7) {
        let (a, b) = (vec![victim], others.clone());
        plan.schedule.at(at, Fault::Partition { a, b });
        at += ms(rng.random_range(300..2000));
        let (a, b) = (vec![victim], others.clone());
        plan.schedule.at(at, Fault::Repair { a, b });
        at += ms(rng.random_range(300..2000));
    }
    publish(plan, 24, rng).max(at) + SETTLE
}

/// The mesh forms from DNS alone and follows its answer: nothing at first (no relay
/// can link), then relays 1 and 2 (every relay dials them; gossip may do the rest),
/// then every relay, at seeded times while relay-1 publishes.
fn dns_change(plan: &mut Plan, rng: &mut ChaCha8Rng) -> Duration {
    plan.topology = Topology::Dns;
    subscribers_everywhere(plan);
    plan.schedule.at(Duration::ZERO, Fault::Dns(Vec::new()));
    let first = ms(rng.random_range(1000..3000));
    plan.schedule.at(first, Fault::Dns(vec![1, 2]));
    let all = first + ms(rng.random_range(1000..4000));
    plan.schedule
        .at(all, Fault::Dns((1..=plan.relays).collect()));
    publish(plan, 24, rng).max(all) + SETTLE
}

fn churn(plan: &mut Plan, rng: &mut ChaCha8Rng) -> Duration {
    let last = publish(plan, 30, rng);
    for i in 1..=plan.relays * 2 {
        let start = ms(rng.random_range(0..last.as_millis() as u64));
        let leave = rng
            .random_bool(0.5)
            .then(|| start + ms(rng.random_range(500..4000)));
        plan.subscribers.push(Subscriber {
            silence_max: Duration::ZERO,
            name: format!("sub-{i}"),
            relay: crate::fault::host(rng.random_range(1..=plan.relays)),
            start,
            leave,
        });
    }
    last + SETTLE
}

/// A subscriber on every relay, publishers on the first and the last relay, and a
/// hostile relay host `byz-1` linked to every relay, attacking from before the first
/// publication until a second after the last.
fn byzantine(plan: &mut Plan, rng: &mut ChaCha8Rng, attacks: &[Attack]) -> Duration {
    subscribers_everywhere(plan);
    let last = publish(plan, 24, rng);
    plan.publishers.push(Publisher {
        silence_max: Duration::ZERO,
        name: "pub-2".into(),
        relay: crate::fault::host(plan.relays),
        start: START + ms(rng.random_range(0..500)),
        count: 24,
        every: PUBLISH_EVERY,
    });
    let stop = last + ms(1000);
    if attacks.contains(&Attack::NotificationFlood) {
        plan.notifications_per_second_max = Some(FLOOD_BOUND);
    }
    plan.hostiles.push(Hostile {
        name: "byz-1".into(),
        targets: (1..=plan.relays).map(crate::fault::host).collect(),
        attacks: attacks.to_vec(),
        start: ms(rng.random_range(500..1500)),
        stop,
        seed: rng.random(),
    });
    stop + SETTLE
}

/// A random fault schedule's building blocks, for the property test: faults between
/// relays 2..=N (relay-1 hosts the publisher and is never crashed), all healed by
/// `heal_at`.
pub fn with_schedule(mut plan: Plan, schedule: Schedule, heal_at: Duration) -> Plan {
    let mut healed = schedule.clone();
    healed.0.extend(crate::fault::heal_all(&schedule, heal_at));
    plan.end = plan.end.max(heal_at + SETTLE);
    plan.schedule = healed;
    plan
}
