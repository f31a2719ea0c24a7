//! `loadtest run`: N connections doing ping round trips (echo on the baseline) or
//! publish/subscribe fan-out for a fixed window, with latency from an HDR histogram.
//!
//! Every connection is opened (ramped) before traffic starts; all tasks share one
//! timeline (start, end of warm-up, stop), so the run ends by itself.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::ensure;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Sleep;

use crate::cli::{Mode, RunArgs};
use crate::client::{ErrorCounts, Opener, Role, ramp};
use crate::cpu::{CpuUse, CpuWindow};
use crate::spread::Sources;
use crate::stats::{Latency, LatencySummary};
use crate::target::WsTarget;
use crate::workload;
use crate::ws::{FrameReader, Message, OpCode};

mod tasks;

/// Ephemeral ports used per loopback source address before spreading to the next.
pub const PORTS_PER_SOURCE: usize = 25_000;
/// Delay between the end of the ramp and the start of traffic, so every task waits.
const START_DELAY: Duration = Duration::from_millis(100);
/// A publisher waiting this long for outstanding deliveries records a stall and goes on.
const STALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the close frame sent at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);

/// When traffic starts, when it starts counting, and when it stops.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// Origin of the send times carried in publications.
    pub epoch: Instant,
    pub go: Instant,
    pub measure_from: Instant,
    pub stop: Instant,
}

impl Timeline {
    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Counters the progress line reads while the run goes on.
#[derive(Default)]
struct Live {
    messages: AtomicU64,
    deliveries: AtomicU64,
    errors: AtomicU64,
}

/// What one connection's task measured inside the window.
#[derive(Default)]
struct TaskStats {
    messages: u64,
    deliveries: u64,
    bytes: u64,
    latency: Latency,
    errors: ErrorCounts,
}

/// Fan-out flow control: publishers keep at most `in_flight` whole fan-outs undelivered.
struct Window {
    expected: AtomicU64,
    delivered: AtomicU64,
    progress: Notify,
    subscribers: u64,
    deliveries_max: u64,
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub target: &'static str,
    pub ws_url: String,
    pub mode: Mode,
    pub connections_requested: usize,
    pub connections_open: usize,
    pub publishers: usize,
    pub size_bytes: usize,
    pub in_flight: usize,
    pub duration_secs: f64,
    /// Round trips (ping) or publications (fan-out).
    pub messages: u64,
    pub messages_per_sec: f64,
    /// Messages received: answers (ping) or deliveries to subscribers (fan-out).
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    /// Received payload, in 10^6 bytes per second.
    pub megabytes_per_sec: f64,
    pub latency: LatencySummary,
    pub errors_total: u64,
    pub errors: ErrorCounts,
    /// CPU the server under test used in the measured window (with `--relay-pid`).
    pub server_cpu: Option<CpuUse>,
    /// CPU this load generator used in the measured window.
    pub client_cpu: Option<CpuUse>,
    /// The machine's 1-minute load average at the end (competing work skews figures).
    pub load_average_1m: Option<f64>,
}

impl std::fmt::Display for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} {:?} {}: {}/{} connections, {} B messages, {} in flight, {:.1} s",
            self.target,
            self.mode,
            self.ws_url,
            self.connections_open,
            self.connections_requested,
            self.size_bytes,
            self.in_flight,
            self.duration_secs
        )?;
        writeln!(
            f,
            "  messages/s {:.0}  deliveries/s {:.0}  MB/s {:.1}",
            self.messages_per_sec, self.deliveries_per_sec, self.megabytes_per_sec
        )?;
        writeln!(f, "  latency {}", self.latency)?;
        if let Some(cpu) = &self.server_cpu {
            writeln!(f, "  server {cpu}")?;
        }
        if let Some(cpu) = &self.client_cpu {
            writeln!(f, "  load generator {cpu}")?;
        }
        if let Some(load) = self.load_average_1m {
            writeln!(f, "  load average (1 min) {load:.2}")?;
        }
        write!(f, "  errors {}", self.errors_total)?;
        for (kind, n) in &self.errors.0 {
            write!(f, "\n    {n} × {kind}")?;
        }
        Ok(())
    }
}

/// Runs the workload of `args` and reports what it measured.
///
/// # Errors
/// Bad target, no connection opened, or (fan-out) no publisher or subscriber opened.
pub async fn run(args: &RunArgs) -> anyhow::Result<RunReport> {
    if let Some(pid) = args.relay_pid {
        crate::cpu::cpu_secs(pid)?; // A wrong pid fails now, not after the run.
    }
    let target = WsTarget::resolve(&args.common.ws_url, args.common.ca_file.as_deref()).await?;
    let sources = Sources::plan(target.addr.ip(), args.connections, PORTS_PER_SOURCE)?;
    let opener = Arc::new(Opener {
        target,
        baseline: args.baseline,
        token: args.common.token.clone(),
        timeout: args.common.timeout(),
    });
    let publishers = match args.mode {
        Mode::Ping => 0,
        Mode::Fanout => args.publishers,
    };
    // Publishers come last, so every subscriber is registered before anything is published.
    let first_publisher = args.connections - publishers;
    let (clients, mut errors) = ramp(args.connections, args.ramp_per_sec, |index| {
        let opener = opener.clone();
        let source = sources.of(index);
        let role = if index >= first_publisher {
            Role::Publisher
        } else {
            Role::Subscriber
        };
        async move { opener.open(index, source, role).await }
    })
    .await;
    let open_publishers = clients
        .iter()
        .filter(|(i, _)| *i >= first_publisher)
        .count();
    let open = clients.len();
    ensure!(open > 0, "no connection opened: {:?}", errors.0);
    if args.mode == Mode::Fanout {
        ensure!(
            open_publishers > 0 && open > open_publishers,
            "fan-out needs a publisher and a subscriber; opened {open_publishers} publishers of {open}: {:?}",
            errors.0
        );
    }

    let now = Instant::now();
    let go = now + START_DELAY;
    let measure_from = go + Duration::from_secs(args.warmup_secs);
    let timeline = Timeline {
        epoch: now,
        go,
        measure_from,
        stop: measure_from + Duration::from_secs(args.duration_secs),
    };
    let live = Arc::new(Live::default());
    let window = Arc::new(Window {
        expected: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        progress: Notify::new(),
        subscribers: (open - open_publishers) as u64,
        deliveries_max: (open - open_publishers) as u64 * args.in_flight as u64,
    });
    let mut running = JoinSet::new();
    let ping = Arc::new(crate::ws::encode_frame(
        OpCode::Text,
        &workload::ping_message(args.size),
    ));
    for (index, conn) in clients {
        let (live, window) = (live.clone(), window.clone());
        let baseline = args.baseline;
        match args.mode {
            Mode::Ping => {
                let frame = ping.clone();
                let in_flight = args.in_flight;
                running.spawn(tasks::pinger(
                    conn, frame, in_flight, baseline, timeline, live,
                ));
            }
            Mode::Fanout if index >= first_publisher => {
                let size = args.size;
                running.spawn(tasks::publisher(
                    conn, size, baseline, timeline, live, window,
                ));
            }
            Mode::Fanout => {
                running.spawn(tasks::subscriber(conn, baseline, timeline, live, window));
            }
        }
    }
    let progress = {
        let live = live.clone();
        crate::progress::Progress::start(move || {
            let secs = Instant::now()
                .saturating_duration_since(timeline.measure_from)
                .as_secs();
            format!(
                "run: {secs}/{} s  messages {}  deliveries {}  errors {}",
                args_duration(timeline),
                live.messages.load(Ordering::Relaxed),
                live.deliveries.load(Ordering::Relaxed),
                live.errors.load(Ordering::Relaxed)
            )
        })
    };
    let cpu = tokio::spawn(cpu_in_window(timeline, args.relay_pid));
    let mut total = TaskStats::default();
    while let Some(joined) = running.join_next().await {
        let stats = joined.expect("load tasks do not panic");
        total.messages += stats.messages;
        total.deliveries += stats.deliveries;
        total.bytes += stats.bytes;
        total.latency.merge(&stats.latency);
        total.errors.merge(&stats.errors);
    }
    drop(progress);
    errors.merge(&total.errors);
    let (server_secs, client_secs) = cpu.await.expect("the CPU reader does not panic")?;
    let secs = timeline
        .stop
        .duration_since(timeline.measure_from)
        .as_secs_f64();
    Ok(RunReport {
        target: if args.baseline { "baseline" } else { "relay" },
        ws_url: args.common.ws_url.clone(),
        mode: args.mode,
        connections_requested: args.connections,
        connections_open: open,
        publishers: open_publishers,
        size_bytes: args.size,
        in_flight: args.in_flight,
        duration_secs: secs,
        messages: total.messages,
        messages_per_sec: total.messages as f64 / secs,
        deliveries: total.deliveries,
        deliveries_per_sec: total.deliveries as f64 / secs,
        megabytes_per_sec: total.bytes as f64 / secs / 1e6,
        latency: total.latency.summary(),
        errors_total: errors.total(),
        errors,
        server_cpu: server_secs
            .map(|(pid, secs)| CpuUse::of(pid, secs, total.messages, total.deliveries)),
        client_cpu: client_secs
            .map(|(pid, secs)| CpuUse::of(pid, secs, total.messages, total.deliveries)),
        load_average_1m: crate::stats::load_average_1m(),
    })
}

/// (pid, CPU seconds) of a process over a window.
type CpuSpent = Option<(u32, f64)>;

/// CPU seconds the server `pid` and this process used between the start of the
/// measured window and its stop (the server's: `None` without a pid; this process's:
/// `None` if /proc is unreadable).
///
/// # Errors
/// The server's /proc/<pid>/stat cannot be read (a wrong pid, or the server died).
async fn cpu_in_window(
    timeline: Timeline,
    pid: Option<u32>,
) -> anyhow::Result<(CpuSpent, CpuSpent)> {
    tokio::time::sleep_until(timeline.measure_from.into()).await;
    let server = pid.map(CpuWindow::start).transpose()?;
    let client = CpuWindow::start(std::process::id()).ok();
    tokio::time::sleep_until(timeline.stop.into()).await;
    let server = match server {
        Some(window) => Some((window.pid(), window.used_secs()?)),
        None => None,
    };
    let client = client.and_then(|w| Some((w.pid(), w.used_secs().ok()?)));
    Ok((server, client))
}

fn args_duration(timeline: Timeline) -> u64 {
    timeline
        .stop
        .duration_since(timeline.measure_from)
        .as_secs()
}

/// What the next message brought, for the loops below.
pub enum Next {
    Message(Message),
    Stop,
    Ended(anyhow::Error),
}

/// The next message, or `Stop` at the stop time. `stop` is one timer per task (a new
/// timer per message would cost more than the message).
pub async fn next(
    reader: &mut FrameReader<crate::target::ReadHalf>,
    stop: Pin<&mut Sleep>,
) -> Next {
    tokio::select! {
        biased;
        message = reader.next() => match message {
            Ok(Some(message)) => Next::Message(message),
            Ok(None) => Next::Ended(anyhow::anyhow!("closed by the server")),
            Err(e) => Next::Ended(e),
        },
        () = stop => Next::Stop,
    }
}
