//! The harness: owns the turmoil simulation, N relay hosts running the production entry
//! point (`sdk_relay::run`), the client hosts of the workloads, and the fault schedule it
//! applies between `sim.step()` calls. Ends every run with the whole-mesh checks.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use sdk_relay::config::Config;
use sdk_relay::identity::Identity;
use sdk_relay::logs::LogRing;
use sdk_relay::rt::Net as _;

use crate::check;
use crate::fault::{Fault, Schedule, host};
use crate::hostile::Hostile;
use crate::rt::{self, DialLog, SIM_EPOCH_UNIX_SECS, TurmoilNet};
use crate::trace::Trace;
use crate::workload::{self, HTTP_PORT, Observations, Publisher, Shared, Subscriber, WS_PORT};

/// How relays find each other at start: each one is configured with its predecessor
/// (chain), and the first with the last too (ring), or none is configured and every
/// relay resolves the DNS name `fault::DNS_NAME` (dns). Gossip does the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Chain,
    Ring,
    Dns,
}

/// The relay timing the simulation uses (seconds, as the config takes them).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub sync_secs: u64,
    pub health_secs: u64,
    pub heartbeat_secs: u64,
    pub timeout_secs: u64,
}

impl Timing {
    /// Short intervals, so a partition is noticed and healed within seconds.
    pub const FAST: Timing = Timing::every(1);

    /// Sync and heartbeat every `secs`, health every 2x, connection timeout 3x.
    pub const fn every(secs: u64) -> Timing {
        Timing {
            sync_secs: secs,
            health_secs: 2 * secs,
            heartbeat_secs: secs,
            timeout_secs: 3 * secs,
        }
    }
}

/// Everything one run does.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: String,
    pub seed: u64,
    pub relays: usize,
    pub topology: Topology,
    pub timing: Timing,
    /// Links between all hosts get a latency in this range (ms) unless a fault says else.
    pub latency_ms: (u64, u64),
    pub tick: Duration,
    pub publishers: Vec<Publisher>,
    pub subscribers: Vec<Subscriber>,
    /// Wallets that drop and resume on other relays (`roam`).
    pub roamers: Vec<crate::roam::Roamer>,
    /// `[limits] notification_log_retention_secs` of every relay, when not the default.
    pub retention_secs: Option<u64>,
    /// `[limits] mesh_notifications_per_second_max` of every relay, when not the default.
    pub notifications_per_second_max: Option<u32>,
    pub schedule: Schedule,
    /// When the workloads stop and the checker reads the relays.
    pub end: Duration,
    /// A deliberate fault in one relay (its index, a `sdk_relay::mutation` name), for the
    /// checks' negative controls; needs the `mutations` feature.
    pub mutation: Option<(usize, String)>,
    /// Hostile relay hosts (the byzantine scenarios); none in the others.
    pub hostiles: Vec<Hostile>,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub trace: Vec<String>,
    /// Empty when every check passed.
    pub failures: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// `verdict: pass` or `verdict: fail: <what failed>`.
    pub fn verdict(&self) -> String {
        if self.passed() {
            "verdict: pass".to_string()
        } else {
            format!("verdict: fail: {}", self.failures.join("; "))
        }
    }

    /// The trace, then the verdict line, as the runner prints them.
    pub fn report(&self) -> String {
        let mut out = self.trace.join("\n");
        out.push('\n');
        out.push_str(&self.verdict());
        out.push('\n');
        out
    }
}

/// A drained relay closes its wallets over this window (`limits.lame_duck_secs`).
pub const LAME_DUCK_SECS: u64 = 2;

/// The checker gets this long to read every relay.
const CHECK_TIME_MAX: Duration = Duration::from_secs(30);

/// A fresh directory for one run's relay data (the relays persist the notification ids
/// they saw there, so a restarted relay remembers them). Unique per run even when runs
/// share a process and a seed; never part of the trace.
fn run_data_root() -> std::path::PathBuf {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let root = std::env::temp_dir().join(format!("sdk_relay_sim_{}_{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    root
}

/// The configuration of relay `index` in a mesh of `relays`, keeping its data under
/// `data_root`.
pub fn relay_config(plan: &Plan, index: usize, data_root: &std::path::Path) -> Config {
    let mut config = Config {
        relay_id: host(index),
        ws_url: format!("0.0.0.0:{WS_PORT}"),
        http_url: format!("0.0.0.0:{HTTP_PORT}"),
        advertise_addr: Some(format!("{}:{WS_PORT}", host(index))),
        data_dir: data_root.join(host(index)),
        ..Config::default()
    };
    config.sync.interval = plan.timing.sync_secs;
    config.sync.health_interval = plan.timing.health_secs;
    config.limits.heartbeat_interval_secs = plan.timing.heartbeat_secs;
    config.limits.connection_timeout_secs = plan.timing.timeout_secs;
    config.limits.shutdown_drain_secs = 1;
    config.limits.lame_duck_secs = LAME_DUCK_SECS;
    if let Some(secs) = plan.retention_secs {
        config.limits.notification_log_retention_secs = secs;
    }
    if let Some(max) = plan.notifications_per_second_max {
        config.limits.mesh_notifications_per_second_max = max;
    }
    // Exactly enough for a full mesh (and a link to each hostile host, a member like
    // any other): the tightest bound the design allows.
    config.mesh.peers_max = (plan.relays - 1 + plan.hostiles.len()).max(1);
    let mut peers = Vec::new();
    if index > 1 {
        peers.push(format!("{}:{WS_PORT}", host(index - 1)));
    }
    if plan.topology == Topology::Ring && index == 1 && plan.relays > 2 {
        peers.push(format!("{}:{WS_PORT}", host(plan.relays)));
    }
    if plan.topology == Topology::Dns {
        peers.clear();
        config.mesh.peers_dns = vec![format!("{}:{WS_PORT}", crate::fault::DNS_NAME)];
        config.mesh.peers_dns_interval_secs = 1;
    }
    config.mesh.peers = peers;
    if !plan.hostiles.is_empty() {
        // A trusted mesh: the hostile hosts' keys are admitted (insiders), so they attack
        // from inside; everyone else's are refused.
        config.mesh.key_file = Some(key_file(data_root, index));
        config.mesh.trusted_keys = trusted_keys(plan);
    }
    if let Some((mutant, name)) = &plan.mutation
        && *mutant == index
    {
        mutate(&mut config, name);
    }
    config
        .validate()
        .expect("the simulation's relay config is valid");
    config
}

/// Where relay `index` keeps its secret key in a byzantine run (outside its data
/// directory, so the harness can write it before the relay first starts).
fn key_file(data_root: &std::path::Path, index: usize) -> std::path::PathBuf {
    data_root.join("keys").join(format!("{}.key", host(index)))
}

/// The public keys a byzantine run's relays admit: every relay's and every hostile
/// host's.
pub fn trusted_keys(plan: &Plan) -> Vec<String> {
    (1..=plan.relays)
        .map(|i| rt::relay_key_seed(plan.seed, i))
        .chain(plan.hostiles.iter().map(Hostile::key_seed))
        .map(|seed| Identity::from_seed(&seed).public().to_hex())
        .collect()
}

/// Writes every relay's key file (mode 0600, as the relay requires) before it starts.
fn write_relay_keys(plan: &Plan, data_root: &std::path::Path) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    for index in 1..=plan.relays {
        let path = key_file(data_root, index);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the run's key directory");
        }
        let seed = rt::relay_key_seed(plan.seed, index);
        let text: String = seed.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{text}"))
            .expect("the relay's key file");
    }
}

#[cfg(feature = "mutations")]
fn mutate(config: &mut Config, name: &str) {
    config.mutation = Some(
        sdk_relay::mutation::Mutation::parse(name)
            .unwrap_or_else(|| panic!("unknown mutation `{name}`")),
    );
}

#[cfg(not(feature = "mutations"))]
fn mutate(_: &mut Config, name: &str) {
    panic!("mutation `{name}` needs the simulator built with `--features mutations`");
}

/// Runs `plan` and checks the mesh at its end.
pub fn run(plan: &Plan) -> Outcome {
    check::reset_panics();
    rt::reset_dns();
    let trace = Trace::default();
    let obs: Shared = Rc::new(RefCell::new(Observations::default()));
    trace.event(
        Duration::ZERO,
        "harness",
        format!(
            "scenario {} seed {} relays {} topology {:?} end {} ms",
            plan.scenario,
            plan.seed,
            plan.relays,
            plan.topology,
            plan.end.as_millis()
        ),
    );
    let mut sim = turmoil::Builder::new()
        .rng_seed(plan.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(SIM_EPOCH_UNIX_SECS))
        .simulation_duration(plan.end + CHECK_TIME_MAX + Duration::from_secs(60))
        .tick_duration(plan.tick)
        .min_message_latency(Duration::from_millis(plan.latency_ms.0))
        .max_message_latency(Duration::from_millis(plan.latency_ms.1))
        .tcp_capacity(1024)
        .build();
    let data_root = run_data_root();
    let dials = DialLog::default();
    // The relays run in this one process: each record signature is verified once for
    // all of them (see `sdk_relay::identity::VerifiedMemo`).
    let verified = std::sync::Arc::new(sdk_relay::identity::VerifiedMemo::new());
    if !plan.hostiles.is_empty() {
        write_relay_keys(plan, &data_root);
    }
    for index in 1..=plan.relays {
        add_relay(&mut sim, plan, index, &trace, &data_root, &dials, &verified);
    }
    for hostile in &plan.hostiles {
        let (h, o, t) = (hostile.clone(), obs.clone(), trace.clone());
        sim.client(hostile.name.as_str(), h.run(o, t));
    }
    let silence_max =
        Duration::from_secs(plan.timing.timeout_secs) + workload::CLIENT_SILENCE_SLACK;
    let mut wallets: Vec<Workload> = Vec::new();
    for publisher in &plan.publishers {
        let (mut p, o, t) = (publisher.clone(), obs.clone(), trace.clone());
        p.silence_max = silence_max;
        wallets.push(Box::pin(p.run(o, t)));
    }
    for subscriber in &plan.subscribers {
        let (mut s, o, t) = (subscriber.clone(), obs.clone(), trace.clone());
        s.silence_max = silence_max;
        wallets.push(Box::pin(s.run(o, t, plan.end)));
    }
    for roamer in &plan.roamers {
        let (mut r, o, t) = (roamer.clone(), obs.clone(), trace.clone());
        r.silence_max = silence_max;
        wallets.push(Box::pin(r.run(o, t, plan.end)));
    }
    if !wallets.is_empty() {
        sim.client(WALLETS_HOST, run_together(wallets));
    }
    let mut failures = Vec::new();
    let mut faults = plan.schedule.clone().sorted().0.into_iter().peekable();
    while sim.elapsed() < plan.end && failures.is_empty() {
        while let Some((_, fault)) = faults.next_if(|(at, _)| *at <= sim.elapsed()) {
            trace.event(sim.elapsed(), "harness", fault.to_string());
            apply(&mut sim, &fault, &trace);
        }
        if let Err(failure) = step(&mut sim) {
            trace.event(sim.elapsed(), "harness", &failure);
            failures.push(failure);
        }
    }
    if failures.is_empty() {
        trace.event(
            sim.elapsed(),
            "harness",
            "workloads over; checking the mesh",
        );
        let relays = (1..=plan.relays).map(host).collect();
        sim.client(
            "checker",
            workload::checker(relays, obs.clone(), trace.clone()),
        );
        let deadline = sim.elapsed() + CHECK_TIME_MAX;
        while !obs.borrow().checker_done && sim.elapsed() < deadline && failures.is_empty() {
            if let Err(failure) = step(&mut sim) {
                failures.push(failure);
            }
        }
    }
    obs.borrow_mut().dials = dials.dials();
    failures.extend(check::all(plan, &obs.borrow(), &trace, sim.elapsed()));
    drop(sim);
    let _ = std::fs::remove_dir_all(&data_root);
    Outcome {
        trace: trace.lines(),
        failures,
    }
}

/// The one client host every publisher, subscriber and roamer runs on, each as a task.
///
/// Faults only ever cut links between relays, so the wallets lose nothing by sharing a
/// machine; and turmoil 0.7 walks every link of the simulation for every host at every
/// step (links are all host pairs), so each host more costs the whole run: with 50 relays
/// and a wallet host each, that walk was a third of a 50-relay run's time.
pub const WALLETS_HOST: &str = "wallets";

type Workload = std::pin::Pin<Box<dyn std::future::Future<Output = turmoil::Result>>>;

/// Runs the workloads side by side and ends with the first error, or a panic of any of
/// them carried on as this host's own (the harness turns either into a failure).
async fn run_together(workloads: Vec<Workload>) -> turmoil::Result {
    let mut running = tokio::task::JoinSet::new();
    for workload in workloads {
        running.spawn_local(workload);
    }
    while let Some(ended) = running.join_next().await {
        match ended {
            Ok(result) => result?,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

fn add_relay(
    sim: &mut turmoil::Sim<'_>,
    plan: &Plan,
    index: usize,
    trace: &Trace,
    data_root: &std::path::Path,
    dials: &DialLog,
    verified: &std::sync::Arc<sdk_relay::identity::VerifiedMemo>,
) {
    let config = relay_config(plan, index, data_root);
    let boots = Rc::new(Cell::new(0u64));
    // The relay's disk: it outlives every crash and restart of the relay's software.
    let disk = sdk_relay::logstore::MemoryStore::new();
    let (seed, trace, dials, verified) =
        (plan.seed, trace.clone(), dials.clone(), verified.clone());
    sim.host(host(index).as_str(), move || {
        let boot = boots.get();
        boots.set(boot + 1);
        let (config, trace, dials, verified) = (
            config.clone(),
            trace.clone(),
            dials.clone(),
            verified.clone(),
        );
        let disk: std::sync::Arc<dyn sdk_relay::logstore::LogStore> =
            std::sync::Arc::new(disk.clone());
        async move {
            trace.here(&config.relay_id, format!("boot {boot}"));
            let net = TurmoilNet;
            let ws = net.bind(&config.ws_url).await?;
            let http = net.bind(&config.http_url).await?;
            let listeners = sdk_relay::Listeners {
                ws,
                http,
                tls: None,
            };
            let env = rt::env(seed, index, boot, dials, verified);
            sdk_relay::run_with_log_store(
                config,
                env,
                listeners,
                LogRing::new(256),
                Some(disk),
                std::future::pending(),
            )
            .await;
            Ok(())
        }
    });
}

/// Asks relay `index` to drain, as an operator would: `POST /admin/drain` from a client
/// host of its own (one per drain, named by the time it starts).
fn drain(sim: &mut turmoil::Sim<'_>, index: usize, trace: &Trace) {
    let name = format!("drain-{index}-{}", sim.elapsed().as_millis());
    let (addr, trace, who) = (
        format!("{}:{HTTP_PORT}", host(index)),
        trace.clone(),
        name.clone(),
    );
    sim.client(name.as_str(), async move {
        let answer = crate::client::http_post(&addr, "/admin/drain").await;
        let said = match answer {
            Ok(body) => format!("drain asked: {}", body["status"].as_str().unwrap_or("?")),
            Err(e) => format!("drain request failed: {e}"),
        };
        trace.here(&who, said);
        Ok(())
    });
}

/// One step; a host error or a panic that escaped a host becomes a failure.
fn step(sim: &mut turmoil::Sim<'_>) -> Result<(), String> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| sim.step())) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("host error: {error}")),
        Err(panic) => Err(format!(
            "panic escaped a host: {}",
            check::panic_text(&*panic)
        )),
    }
}

fn apply(sim: &mut turmoil::Sim<'_>, fault: &Fault, trace: &Trace) {
    let pairs = |a: &[usize], b: &[usize]| {
        let mut out = Vec::new();
        for x in a {
            for y in b {
                if x != y {
                    out.push((host(*x), host(*y)));
                }
            }
        }
        out
    };
    match fault {
        Fault::Partition { a, b } => {
            for (x, y) in pairs(a, b) {
                sim.partition(x.as_str(), y.as_str());
            }
        }
        Fault::Repair { a, b } => {
            for (x, y) in pairs(a, b) {
                sim.repair(x.as_str(), y.as_str());
            }
        }
        Fault::PartitionOneway { from, to } => {
            sim.partition_oneway(host(*from).as_str(), host(*to).as_str());
        }
        Fault::RepairOneway { from, to } => {
            sim.repair_oneway(host(*from).as_str(), host(*to).as_str());
        }
        Fault::Hold { a, b } => sim.hold(host(*a).as_str(), host(*b).as_str()),
        Fault::Release { a, b } => sim.release(host(*a).as_str(), host(*b).as_str()),
        Fault::Latency {
            a,
            b,
            min_ms,
            max_ms,
        } => {
            let (a, b) = (host(*a), host(*b));
            sim.set_link_latency(a.as_str(), b.as_str(), Duration::from_millis(*min_ms));
            sim.set_link_max_message_latency(
                a.as_str(),
                b.as_str(),
                Duration::from_millis((*max_ms).max(*min_ms)),
            );
        }
        Fault::Crash(i) => sim.crash(host(*i).as_str()),
        Fault::Restart(i) => sim.bounce(host(*i).as_str()),
        Fault::Drain(i) => drain(sim, *i, trace),
        Fault::Dns(list) => rt::set_dns(
            crate::fault::DNS_NAME,
            list.iter().map(|i| host(*i)).collect(),
        ),
    }
}
