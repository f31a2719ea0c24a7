//! The scenario runner: `sim list`, `sim run --scenario NAME --relays N --seed S
//! [--trace FILE]`, `sim soak --seeds N`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use sim::scenario::{self, Options, SCENARIOS};

/// The simulated relays allocate and free on every message (frames, turmoil's segments,
/// parsed payloads); mimalloc spends ~15 % less CPU than the system allocator on the
/// 50-relay run. Only this binary: the relay's own binary keeps the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Deterministic turmoil simulations of an sdk_relay mesh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists the scenarios.
    List,
    /// Runs one scenario, prints its trace and ends with `verdict: pass|fail: ...`.
    Run {
        #[arg(long)]
        scenario: String,
        #[arg(long, default_value_t = 5)]
        relays: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the trace (and verdict) to this file.
        #[arg(long)]
        trace: Option<std::path::PathBuf>,
        /// Simulated seconds (stretches `steady`; other scenarios have their own length).
        #[arg(long)]
        duration_secs: Option<u64>,
        /// Relay sync interval in seconds (health 2x, heartbeat 1x, connection timeout
        /// 3x); 1 by default. Longer intervals make long, large runs cheaper.
        #[arg(long)]
        sync_secs: Option<u64>,
        /// Simulation step in milliseconds.
        #[arg(long, default_value_t = 10)]
        tick_ms: u64,
        /// Print only the verdict, not the trace.
        #[arg(long)]
        quiet: bool,
        /// Replace the scenario's faults with this schedule (`at <ms> ms: <fault>` per
        /// line, as a failing property test prints it); the run ends a settle period after
        /// its last fault.
        #[arg(long)]
        schedule: Option<std::path::PathBuf>,
        /// Negative control: break one thing in one relay, `N:NAME` (e.g.
        /// `2:drop-delivery`), to see the checks name it. Needs a simulator built with
        /// `--features mutations`; the names are drop-delivery, duplicate-delivery,
        /// reset-subscriber, close-going-away, invent-notification, refuse-link,
        /// phantom-members, skip-verification, unbounded-notifications.
        #[arg(long, value_name = "N:NAME")]
        mutate: Option<String>,
    },
    /// Runs every non-negative scenario (or those named) for seeds 1..=N; prints a line
    /// per failing run.
    Soak {
        #[arg(long)]
        seeds: u64,
        #[arg(long, default_value_t = 4)]
        relays: usize,
        /// First seed (so soaks can be split or resumed).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only this scenario (repeatable); every non-negative one by default.
        #[arg(long)]
        scenario: Vec<String>,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    // The relays' own logs, on stderr, when asked for (e.g. SIM_LOG=sdk_relay=debug);
    // they are not part of the trace.
    if let Ok(filter) = std::env::var("SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    match Cli::parse().command {
        Command::List => {
            for (name, about) in SCENARIOS {
                println!("{name:<20} {about}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            scenario,
            relays,
            seed,
            trace,
            duration_secs,
            tick_ms,
            sync_secs,
            quiet,
            schedule,
            mutate,
        } => {
            let mut options = Options::new(relays, seed);
            options.duration = duration_secs.map(Duration::from_secs);
            options.tick = Duration::from_millis(tick_ms.max(1));
            let Some(mut plan) = scenario::plan(&scenario, options) else {
                bail!("no scenario `{scenario}`; `sim list` lists them");
            };
            if let Some(secs) = sync_secs.filter(|s| *s > 0) {
                plan.timing = sim::harness::Timing::every(secs);
            }
            if let Some(path) = &schedule {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let faults: sim::fault::Schedule = text
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                plan.end = plan.end.max(faults.last() + scenario::SETTLE);
                plan.schedule = faults;
            }
            if let Some(spec) = &mutate {
                if !cfg!(feature = "mutations") {
                    bail!("--mutate needs the simulator built with `--features mutations`");
                }
                let (relay, name) = spec
                    .split_once(':')
                    .and_then(|(n, name)| Some((n.parse::<usize>().ok()?, name.to_string())))
                    .filter(|(n, _)| (1..=plan.relays).contains(n))
                    .with_context(|| format!("--mutate {spec}: expected N:NAME with N a relay"))?;
                plan.mutation = Some((relay, name));
            }
            let outcome = sim::harness::run(&plan);
            let report = outcome.report();
            if let Some(path) = trace {
                std::fs::write(&path, &report)
                    .with_context(|| format!("writing the trace to {}", path.display()))?;
            }
            let mut out = std::io::stdout().lock();
            if quiet {
                writeln!(out, "{}", outcome.verdict())?;
            } else {
                out.write_all(report.as_bytes())?;
            }
            if !outcome.passed() {
                writeln!(
                    out,
                    "replay: cargo run --release -p sim -- run --scenario {scenario} --relays {relays} --seed {seed}"
                )?;
            }
            Ok(if outcome.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Soak {
            seeds,
            relays,
            from,
            scenario,
        } => {
            if let Some(unknown) = scenario
                .iter()
                .find(|s| !SCENARIOS.iter().any(|(n, _)| n == s))
            {
                bail!("no scenario `{unknown}`; `sim list` lists them");
            }
            let mut failed = 0;
            for seed in from..from + seeds {
                for (name, _) in SCENARIOS.iter().filter(|(n, _)| {
                    if scenario.is_empty() {
                        *n != "partition-permanent"
                    } else {
                        scenario.iter().any(|s| s == n)
                    }
                }) {
                    let plan = scenario::plan(name, Options::new(relays, seed))
                        .expect("listed scenarios exist");
                    let outcome = sim::harness::run(&plan);
                    if !outcome.passed() {
                        failed += 1;
                        println!(
                            "{name} seed {seed}: {}\n  replay: cargo run --release -p sim -- run --scenario {name} --relays {relays} --seed {seed}",
                            outcome.verdict()
                        );
                    }
                }
                println!("seed {seed} done");
            }
            println!("soak: {failed} failing run(s)");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
