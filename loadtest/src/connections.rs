//! `loadtest connections`: ramps to N idle handshaken connections, holds them, and
//! reports the relay's resident memory per connection (from /proc with `--relay-pid`,
//! else from the relay's `GET /metrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::cli::ConnectionsArgs;
use crate::client::{ErrorCounts, Opener, Role, ramp};
use crate::run::{Next, next};
use crate::spread::Sources;
use crate::target::{HttpTarget, WsTarget};
use crate::ws::{OpCode, WsConn};

/// Time for the relay to settle (allocations, queued writes) before memory is read.
const SETTLE: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize)]
pub struct ConnectionsReport {
    pub target: &'static str,
    pub ws_url: String,
    pub connections_requested: usize,
    pub connections_open: usize,
    /// Connections the server closed while they were held.
    pub closed_while_held: u64,
    pub source_addresses: usize,
    pub ramp_secs: f64,
    pub connections_per_sec: f64,
    pub memory_source: String,
    pub rss_before_bytes: u64,
    pub rss_after_bytes: u64,
    pub rss_per_connection_bytes: f64,
    pub errors_total: u64,
    pub errors: ErrorCounts,
    /// The machine's 1-minute load average at the end (competing work skews figures).
    pub load_average_1m: Option<f64>,
}

impl std::fmt::Display for ConnectionsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} {}: {}/{} idle connections from {} source address(es), opened in {:.2} s ({:.0}/s)",
            self.target,
            self.ws_url,
            self.connections_open,
            self.connections_requested,
            self.source_addresses,
            self.ramp_secs,
            self.connections_per_sec
        )?;
        writeln!(
            f,
            "  relay RSS {:.1} MiB -> {:.1} MiB: {:.0} B per connection ({})",
            self.rss_before_bytes as f64 / 1048576.0,
            self.rss_after_bytes as f64 / 1048576.0,
            self.rss_per_connection_bytes,
            self.memory_source
        )?;
        if let Some(load) = self.load_average_1m {
            writeln!(f, "  load average (1 min) {load:.2}")?;
        }
        write!(
            f,
            "  closed by the server while held {}; errors {}",
            self.closed_while_held, self.errors_total
        )?;
        for (kind, n) in &self.errors.0 {
            write!(f, "\n    {n} × {kind}")?;
        }
        Ok(())
    }
}

/// Where the relay's resident memory is read.
enum Memory {
    Proc(u32),
    Metrics(HttpTarget),
}

impl Memory {
    fn describe(&self) -> String {
        match self {
            Memory::Proc(pid) => format!("/proc/{pid}/status VmRSS"),
            Memory::Metrics(t) => format!("GET http://{}/metrics memory_usage", t.host_header),
        }
    }

    async fn read(&self, timeout: Duration) -> anyhow::Result<u64> {
        match self {
            Memory::Proc(pid) => read_proc_rss(*pid),
            Memory::Metrics(target) => {
                let body = crate::http::get_body(target, "/metrics", timeout).await?;
                let value: serde_json::Value =
                    serde_json::from_slice(&body).context("/metrics is not JSON")?;
                let text = value["system_metrics"]["memory_usage"]
                    .as_str()
                    .context("/metrics has no system_metrics.memory_usage")?;
                parse_memory(text)
            }
        }
    }
}

/// Resident memory of process `pid`, in bytes.
///
/// # Errors
/// The process does not exist or its status has no VmRSS.
pub fn read_proc_rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_rss(&status).context("no VmRSS line")
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `"128MB"`, `"512KB"`, `"1.5GB"` (binary multiples) in bytes.
fn parse_memory(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("bad memory figure `{text}`"))?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" | "KIB" => 1024.0,
        "MB" | "MIB" => 1048576.0,
        "GB" | "GIB" => 1073741824.0,
        other => bail!("unknown memory unit `{other}`"),
    };
    Ok((number * scale) as u64)
}

/// Opens, holds and measures; see the module doc.
///
/// # Errors
/// Bad target, unreadable memory, or no connection opened.
pub async fn connections(args: &ConnectionsArgs) -> anyhow::Result<ConnectionsReport> {
    let ca_file = args.common.ca_file.as_deref();
    let target = WsTarget::resolve(&args.common.ws_url, ca_file).await?;
    let memory = match (args.relay_pid, &args.http_url) {
        (Some(pid), _) => Memory::Proc(pid),
        (None, Some(url)) => Memory::Metrics(HttpTarget::resolve(url, ca_file).await?),
        (None, None) => {
            bail!("give --relay-pid (preferred) or --http-url to read the relay's memory")
        }
    };
    let sources = Sources::plan(target.addr.ip(), args.connections, args.ports_per_source)?;
    let timeout = args.common.timeout();
    let rss_before = memory.read(timeout).await?;
    let opener = Arc::new(Opener {
        target,
        baseline: args.baseline,
        token: args.common.token.clone(),
        timeout,
    });
    let started = Instant::now();
    let (clients, errors) = ramp(args.connections, args.ramp_per_sec, |index| {
        let opener = opener.clone();
        let source = sources.of(index);
        async move { opener.open(index, source, Role::Subscriber).await }
    })
    .await;
    let ramp_secs = started.elapsed().as_secs_f64();
    let open = clients.len();
    anyhow::ensure!(open > 0, "no connection opened: {:?}", errors.0);

    let closed = Arc::new(AtomicU64::new(0));
    let hold_until = Instant::now() + Duration::from_secs(args.hold_secs) + SETTLE;
    let holders: Vec<_> = clients
        .into_iter()
        .map(|(_, conn)| tokio::spawn(hold(conn, hold_until, closed.clone())))
        .collect();
    tokio::time::sleep_until((hold_until - SETTLE / 2).into()).await;
    let rss_after = memory.read(timeout).await?;
    for holder in holders {
        let _ = holder.await;
    }
    Ok(ConnectionsReport {
        target: if args.baseline { "baseline" } else { "relay" },
        ws_url: args.common.ws_url.clone(),
        connections_requested: args.connections,
        connections_open: open,
        closed_while_held: closed.load(Ordering::Relaxed),
        source_addresses: sources.len(),
        ramp_secs,
        connections_per_sec: open as f64 / ramp_secs,
        memory_source: memory.describe(),
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        rss_per_connection_bytes: (rss_after as f64 - rss_before as f64) / open as f64,
        errors_total: errors.total(),
        errors,
        load_average_1m: crate::stats::load_average_1m(),
    })
}

/// Keeps one connection open and answering heartbeats until `until`.
async fn hold(conn: WsConn, until: Instant, closed: Arc<AtomicU64>) {
    let WsConn {
        mut reader,
        mut writer,
    } = conn;
    let stop = tokio::time::sleep_until(until.into());
    tokio::pin!(stop);
    loop {
        match next(&mut reader, stop.as_mut()).await {
            Next::Message(m) if m.opcode == OpCode::Ping => {
                let _ = writer.send_pong(&m.payload).await;
            }
            Next::Message(m) if m.opcode == OpCode::Close => {
                closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Next::Message(_) => {}
            Next::Stop => break,
            Next::Ended(_) => {
                closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(100), writer.close(1000)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory figures from /proc and from /metrics convert to bytes.
    #[test]
    fn memory_figures_parse() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t   12345 kB\nVmData: 1 kB\n"),
            Some(12345 * 1024)
        );
        assert_eq!(parse_memory("128MB").unwrap(), 128 << 20);
        assert_eq!(parse_memory("1.5GB").unwrap(), 3 << 29);
        assert_eq!(parse_memory("512 KB").unwrap(), 512 << 10);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("12XB").is_err());
    }

    /// This process's own RSS is readable and plausible.
    #[test]
    fn own_rss_is_readable() {
        let rss = read_proc_rss(std::process::id()).unwrap();
        assert!(rss > 100 * 1024, "{rss}");
    }
}
