//! `loadtest mesh`: publishes on the first relay at a fixed rate and measures, at
//! subscribers on every relay, the delivery latency, the deliveries missing, and the
//! duplicates (a wallet must receive each notification once wherever it is connected).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::MeshArgs;
use crate::client::{ErrorCounts, Opener, Role, ramp};
use crate::cpu::{CpuUse, CpuWindow};
use crate::run::{Next, next};
use crate::stats::{Latency, LatencySummary};
use crate::target::WsTarget;
use crate::workload::{self, Publication};
use crate::ws::{OpCode, WsConn};

/// Subscribers opened per second.
const RAMP_PER_SEC: u64 = 2000;
/// Pause after the subscribers are open, so the relays have registered them.
const START_DELAY: Duration = Duration::from_millis(200);

#[derive(Debug, Serialize)]
pub struct RelayResult {
    pub ws_url: String,
    pub origin: bool,
    pub subscribers: usize,
    pub deliveries_expected: u64,
    pub deliveries: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub latency: LatencySummary,
    /// This relay's CPU from the first publication to the end of the drain (with
    /// `--relay-pid`): per notification published, and per notification delivered to
    /// its own subscribers.
    pub cpu: Option<CpuUse>,
}

#[derive(Debug, Serialize)]
pub struct MeshReport {
    pub messages: usize,
    pub published: u64,
    pub rate_per_sec: u64,
    pub size_bytes: usize,
    pub relays: Vec<RelayResult>,
    /// All relays' CPU (with `--relay-pid`): per notification published, and per
    /// notification delivered to any subscriber.
    pub cpu_total: Option<CpuUse>,
    /// This load generator's CPU over the same window (when it nears its threads' worth
    /// of cores, the subscribers, not the relays, set the latency).
    pub client_cpu: Option<CpuUse>,
    pub errors_total: u64,
    pub errors: ErrorCounts,
}

impl std::fmt::Display for MeshReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "mesh: {}/{} notifications of {} B at {}/s",
            self.published, self.messages, self.size_bytes, self.rate_per_sec
        )?;
        for relay in &self.relays {
            writeln!(
                f,
                "  {}{}: {} subscribers, {}/{} delivered, {} missing, {} duplicates\n    latency {}",
                relay.ws_url,
                if relay.origin { " (origin)" } else { "" },
                relay.subscribers,
                relay.deliveries,
                relay.deliveries_expected,
                relay.missing,
                relay.duplicates,
                relay.latency
            )?;
            if let Some(cpu) = &relay.cpu {
                writeln!(f, "    {cpu}")?;
            }
        }
        if let Some(cpu) = &self.cpu_total {
            writeln!(f, "  all relays: {cpu}")?;
        }
        if let Some(cpu) = &self.client_cpu {
            writeln!(f, "  load generator: {cpu}")?;
        }
        write!(f, "  errors {}", self.errors_total)?;
        for (kind, n) in &self.errors.0 {
            write!(f, "\n    {n} × {kind}")?;
        }
        Ok(())
    }
}

struct Received {
    relay: usize,
    unique: u64,
    duplicates: u64,
    latency: Latency,
    errors: ErrorCounts,
}

/// Runs the mesh measurement; see the module doc.
///
/// # Errors
/// A bad relay address, or the publisher cannot connect.
pub async fn mesh(args: &MeshArgs) -> anyhow::Result<MeshReport> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut openers = Vec::new();
    for url in &args.relays {
        openers.push(Arc::new(Opener {
            target: WsTarget::resolve(url, args.ca_file.as_deref()).await?,
            baseline: false,
            token: args.token.clone(),
            timeout,
        }));
    }
    let per_relay = args.subscribers_per_relay;
    let (subscribers, mut errors) = ramp(openers.len() * per_relay, RAMP_PER_SEC, |index| {
        let opener = openers[index / per_relay].clone();
        async move { opener.open(index, None, Role::Subscriber).await }
    })
    .await;
    let publisher = openers[0].open(usize::MAX, None, Role::Publisher).await?;

    let epoch = Instant::now();
    let start = epoch + START_DELAY;
    let publish_secs = args.messages as f64 / args.rate as f64;
    let deadline =
        start + Duration::from_secs_f64(publish_secs) + Duration::from_secs(args.drain_secs);
    let mut open_per_relay = vec![0_usize; openers.len()];
    let tasks: Vec<_> = subscribers
        .into_iter()
        .map(|(index, conn)| {
            let relay = index / per_relay;
            open_per_relay[relay] += 1;
            tokio::spawn(receive(conn, relay, args.messages, epoch, deadline))
        })
        .collect();
    let cpu_windows = args
        .relay_pids
        .iter()
        .map(|pid| CpuWindow::start(*pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client_window = CpuWindow::start(std::process::id()).ok();
    let published = publish(publisher, args, epoch, start, deadline, &mut errors).await;
    // `publish` returns at the deadline: the window is publication plus drain.
    let cpu_secs = cpu_windows
        .iter()
        .map(|w| Ok((w.pid(), w.used_secs()?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client_secs = client_window.and_then(|w| w.used_secs().ok());

    let mut per_relay_stats: Vec<(u64, u64, Latency)> = (0..openers.len())
        .map(|_| (0, 0, Latency::default()))
        .collect();
    for task in tasks {
        let received = task.await.expect("subscriber tasks do not panic");
        let entry = &mut per_relay_stats[received.relay];
        entry.0 += received.unique;
        entry.1 += received.duplicates;
        entry.2.merge(&received.latency);
        errors.merge(&received.errors);
    }
    let relays: Vec<RelayResult> = per_relay_stats
        .into_iter()
        .enumerate()
        .map(|(i, (unique, duplicates, latency))| {
            let expected = published * open_per_relay[i] as u64;
            let cpu = cpu_secs
                .get(i)
                .map(|&(pid, secs)| CpuUse::of(pid, secs, published, unique));
            RelayResult {
                ws_url: args.relays[i].clone(),
                origin: i == 0,
                subscribers: open_per_relay[i],
                deliveries_expected: expected,
                deliveries: unique,
                missing: expected.saturating_sub(unique),
                duplicates,
                latency: latency.summary(),
                cpu,
            }
        })
        .collect();
    let delivered: u64 = relays.iter().map(|r| r.deliveries).sum();
    let cpu_total = (!cpu_secs.is_empty()).then(|| {
        let secs = cpu_secs.iter().map(|(_, s)| s).sum();
        CpuUse::of(0, secs, published, delivered)
    });
    Ok(MeshReport {
        messages: args.messages,
        published,
        rate_per_sec: args.rate,
        size_bytes: args.size,
        relays,
        cpu_total,
        client_cpu: client_secs
            .map(|secs| CpuUse::of(std::process::id(), secs, published, delivered)),
        errors_total: errors.total(),
        errors,
    })
}

/// Publishes `args.messages` at `args.rate` from `start`; returns how many were sent.
async fn publish(
    conn: WsConn,
    args: &MeshArgs,
    epoch: Instant,
    start: Instant,
    deadline: Instant,
    errors: &mut ErrorCounts,
) -> u64 {
    let WsConn { reader, mut writer } = conn;
    // Acks are read and dropped so the relay never blocks on this connection.
    let replies = tokio::spawn(async move {
        let mut reader = reader;
        let stop = tokio::time::sleep_until(deadline.into());
        tokio::pin!(stop);
        while let Next::Message(_) = next(&mut reader, stop.as_mut()).await {}
    });
    let mut publication = Publication::new(args.size);
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let mut published = 0;
    for seq in 0..args.messages {
        tokio::time::sleep_until((start + interval * seq as u32).into()).await;
        let now_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let Err(e) = writer
            .write_encoded(publication.frame(now_ns, seq as u64))
            .await
        {
            errors.add(&e.into());
            break;
        }
        published += 1;
    }
    tokio::time::sleep_until(deadline.into()).await;
    let _ = tokio::time::timeout(Duration::from_millis(200), writer.close(1000)).await;
    replies.abort();
    published
}

/// Receives until every message arrived or the deadline.
async fn receive(
    conn: WsConn,
    relay: usize,
    messages: usize,
    epoch: Instant,
    deadline: Instant,
) -> Received {
    let WsConn {
        mut reader,
        mut writer,
    } = conn;
    let mut seen = vec![false; messages];
    let mut received = Received {
        relay,
        unique: 0,
        duplicates: 0,
        latency: Latency::default(),
        errors: ErrorCounts::default(),
    };
    let stop = tokio::time::sleep_until(deadline.into());
    tokio::pin!(stop);
    while received.unique < messages as u64 {
        let message = match next(&mut reader, stop.as_mut()).await {
            Next::Message(message) => message,
            Next::Stop => break,
            Next::Ended(e) => {
                received.errors.add(&e);
                break;
            }
        };
        match message.opcode {
            OpCode::Text if workload::is_notification(&message.payload) => {
                let now_ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let Some((sent_ns, seq)) = workload::read_publication(&message.payload) else {
                    continue;
                };
                match seen.get_mut(seq as usize) {
                    Some(slot) if !*slot => {
                        *slot = true;
                        received.unique += 1;
                        received.latency.record_ns(now_ns.saturating_sub(sent_ns));
                    }
                    Some(_) => received.duplicates += 1,
                    None => received
                        .errors
                        .add_kind("delivery with an unknown sequence number"),
                }
            }
            OpCode::Ping => {
                let _ = writer.send_pong(&message.payload).await;
            }
            OpCode::Close => {
                received.errors.add_kind(&format!(
                    "subscriber closed by the relay (code {:?})",
                    message.close_code()
                ));
                break;
            }
            _ => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), writer.close(1000)).await;
    received
}
