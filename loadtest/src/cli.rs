//! Command line: every subcommand's flags, their defaults (the specification's limits)
//! and the bounds that keep a run finite.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Most connections one load-test process opens (this machine's open-file ceiling per
/// process is 20,000, and the process needs a few descriptors of its own).
pub const CONNECTIONS_MAX: usize = 19_900;
/// Longest measured window of a `run`.
pub const DURATION_SECS_MAX: u64 = 600;
/// Largest message a `run` or `mesh` sends.
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;
/// Most messages one connection keeps in flight.
pub const IN_FLIGHT_MAX: usize = 1024;
/// Most relays a `mesh` run addresses.
pub const MESH_RELAYS_MAX: usize = 32;
/// Most messages one `mesh` run publishes.
pub const MESH_MESSAGES_MAX: usize = 1_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "Load-tests an sdk_relay (or the baseline server) and checks its limits"
)]
pub struct Cli {
    /// Print the report as one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Tokio worker threads of the load generator.
    #[arg(long, global = true, default_value_t = 2)]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check the limits the relay must enforce; exits non-zero naming any failing check.
    Limits(LimitsArgs),
    /// Drive N connections with ping round trips or publish/subscribe fan-out.
    Run(RunArgs),
    /// Ramp to N idle handshaken connections and report the relay's memory per connection.
    Connections(ConnectionsArgs),
    /// Publish on one relay and measure delivery at subscribers on the others.
    Mesh(MeshArgs),
    /// Medians of repeated `run --json` or `connections --json` reports per target, and
    /// relay/baseline ratios.
    Summarize(SummarizeArgs),
}

#[derive(Args, Debug)]
pub struct SummarizeArgs {
    /// Files of `run --json` or `connections --json` reports, one per line (`-` for stdin).
    #[arg(required = true)]
    pub files: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// WebSocket address of the relay (or baseline server): ws://, or wss:// for TLS.
    #[arg(long, default_value = "ws://127.0.0.1:8090/")]
    pub ws_url: String,
    /// PEM CA certificates a wss:// or https:// server's certificate must chain to (a
    /// private CA); default: the bundled web roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Handshake token, when the relay requires one.
    #[arg(long)]
    pub token: Option<String>,
    /// Bound on each connect, upgrade, handshake and expected answer.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
}

impl Common {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=300).contains(&self.timeout_secs),
            "--timeout-secs must be 1 to 300"
        );
        Ok(())
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Check {
    Connections,
    MessageSize,
    RateLimit,
    BodySize,
}

#[derive(Args, Debug)]
pub struct LimitsArgs {
    #[command(flatten)]
    pub common: Common,
    /// HTTP API address of the relay: http://, or https:// for TLS.
    #[arg(long, default_value = "http://127.0.0.1:8091")]
    pub http_url: String,
    /// Connections the relay must hold; the next one must be refused with 503.
    #[arg(long, default_value_t = 1000)]
    pub ws_connections_max: usize,
    /// Largest message the relay must accept; one byte more must close with 1009.
    #[arg(long, default_value_t = 1_048_576)]
    pub ws_message_bytes_max: usize,
    /// HTTP requests per minute per client address before 429.
    #[arg(long, default_value_t = 1000)]
    pub http_requests_per_minute_max: usize,
    /// Largest HTTP body accepted; one byte more must answer 413.
    #[arg(long, default_value_t = 10_485_760)]
    pub http_body_bytes_max: usize,
    /// Path that receives the oversized body.
    #[arg(long, default_value = "/sync/force")]
    pub body_path: String,
    /// Path requested repeatedly to reach the rate limit.
    #[arg(long, default_value = "/health")]
    pub rate_path: String,
    /// Checks to run (default: all).
    #[arg(long, value_delimiter = ',')]
    pub checks: Vec<Check>,
}

impl LimitsArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.common.validate()?;
        ensure!(
            (1..CONNECTIONS_MAX).contains(&self.ws_connections_max),
            "--ws-connections-max must be 1 to {}",
            CONNECTIONS_MAX - 1
        );
        ensure!(
            (64..=MESSAGE_BYTES_MAX).contains(&self.ws_message_bytes_max),
            "--ws-message-bytes-max must be 64 to {MESSAGE_BYTES_MAX}"
        );
        ensure!(
            (1..=100_000).contains(&self.http_requests_per_minute_max),
            "--http-requests-per-minute-max must be 1 to 100000"
        );
        ensure!(
            (1..=(256 << 20)).contains(&self.http_body_bytes_max),
            "--http-body-bytes-max must be 1 to 268435456"
        );
        Ok(())
    }

    pub fn enabled(&self, check: Check) -> bool {
        self.checks.is_empty() || self.checks.contains(&check)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each connection sends pings (echo, on the baseline) and waits for the answers.
    Ping,
    /// Publishers publish; every other connection is a subscriber to all types.
    Fanout,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    /// Target is the baseline server (`bench --bin baseline`): no JSON handshake; in
    /// fan-out the publisher first sends the text frame `pub`.
    #[arg(long)]
    pub baseline: bool,
    #[arg(long, value_enum, default_value = "ping")]
    pub mode: Mode,
    /// Connections in all, publishers included.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Publishing connections (fan-out only).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Bytes of each sent message (the WebSocket payload).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages each connection (ping) or publisher (fan-out, counted in whole
    /// fan-outs not yet delivered) keeps in flight.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Measured window.
    #[arg(long, default_value_t = 5)]
    pub duration_secs: u64,
    /// Traffic before the measured window, not counted.
    #[arg(long, default_value_t = 1)]
    pub warmup_secs: u64,
    /// Connections opened per second while ramping up (0: as fast as possible).
    #[arg(long, default_value_t = 5000)]
    pub ramp_per_sec: u64,
    /// Process id of the server under test (relay or baseline): its CPU seconds over the
    /// measured window are read from /proc/<pid>/stat and divided by the work done.
    #[arg(long)]
    pub relay_pid: Option<u32>,
}

/// The smallest message each mode can send (its fixed JSON).
pub fn size_min(mode: Mode) -> usize {
    match mode {
        Mode::Ping => crate::workload::ping_message(0).len(),
        Mode::Fanout => crate::workload::Publication::payload_bytes_min(),
    }
}

impl RunArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.common.validate()?;
        ensure!(
            (1..=CONNECTIONS_MAX).contains(&self.connections),
            "--connections must be 1 to {CONNECTIONS_MAX}"
        );
        if self.mode == Mode::Fanout {
            ensure!(
                self.publishers >= 1 && self.publishers < self.connections,
                "--publishers must be at least 1 and leave at least one subscriber"
            );
        }
        let min = size_min(self.mode);
        ensure!(
            (min..=MESSAGE_BYTES_MAX).contains(&self.size),
            "--size must be {min} to {MESSAGE_BYTES_MAX} bytes in {:?} mode",
            self.mode
        );
        ensure!(
            (1..=IN_FLIGHT_MAX).contains(&self.in_flight),
            "--in-flight must be 1 to {IN_FLIGHT_MAX}"
        );
        ensure!(
            (1..=DURATION_SECS_MAX).contains(&self.duration_secs),
            "--duration-secs must be 1 to {DURATION_SECS_MAX}"
        );
        ensure!(self.warmup_secs <= 60, "--warmup-secs must be at most 60");
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Target is the baseline server: no JSON handshake.
    #[arg(long)]
    pub baseline: bool,
    /// Idle handshaken connections to hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections opened per second while ramping up (0: as fast as possible).
    #[arg(long, default_value_t = 5000)]
    pub ramp_per_sec: u64,
    /// Seconds the connections are held once all are open; memory is read at the end.
    #[arg(long, default_value_t = 2)]
    pub hold_secs: u64,
    /// Relay process id: its resident memory is read from /proc (preferred).
    #[arg(long)]
    pub relay_pid: Option<u32>,
    /// Without --relay-pid, the relay's memory comes from GET /metrics here.
    #[arg(long)]
    pub http_url: Option<String>,
    /// Connections per loopback source address; more are spread over 127.0.0.2, .3...
    #[arg(long, default_value_t = 25_000)]
    pub ports_per_source: usize,
}

impl ConnectionsArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.common.validate()?;
        ensure!(
            (1..=CONNECTIONS_MAX).contains(&self.connections),
            "--connections must be 1 to {CONNECTIONS_MAX}"
        );
        ensure!(self.hold_secs <= 300, "--hold-secs must be at most 300");
        ensure!(
            (1..=28_000).contains(&self.ports_per_source),
            "--ports-per-source must be 1 to 28000"
        );
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct MeshArgs {
    /// Relays' WebSocket addresses (ws:// or wss://); the first is where notifications
    /// are published.
    #[arg(long = "relay", required = true)]
    pub relays: Vec<String>,
    /// PEM CA certificates the relays' certificates must chain to (wss://); default:
    /// the bundled web roots.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Handshake token, when the relays require one.
    #[arg(long)]
    pub token: Option<String>,
    /// Subscribers on each relay (the publishing one included).
    #[arg(long, default_value_t = 10)]
    pub subscribers_per_relay: usize,
    /// Notifications to publish.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Notifications published per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Bytes of each published message.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// After the last publication, how long to wait for late deliveries.
    #[arg(long, default_value_t = 5)]
    pub drain_secs: u64,
    /// Bound on each connect, upgrade and handshake.
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// Process ids of the relays, in the order of `--relay` (all or none): each one's CPU
    /// seconds from the first publication to the end of the drain, from /proc.
    #[arg(long = "relay-pid")]
    pub relay_pids: Vec<u32>,
}

impl MeshArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=MESH_RELAYS_MAX).contains(&self.relays.len()),
            "--relay must be given 1 to {MESH_RELAYS_MAX} times"
        );
        ensure!(
            (1..=1000).contains(&self.subscribers_per_relay),
            "--subscribers-per-relay must be 1 to 1000"
        );
        ensure!(
            self.relays.len() * self.subscribers_per_relay < CONNECTIONS_MAX,
            "too many subscribers in all (at most {CONNECTIONS_MAX})"
        );
        ensure!(
            (1..=MESH_MESSAGES_MAX).contains(&self.messages),
            "--messages must be 1 to {MESH_MESSAGES_MAX}"
        );
        ensure!(
            (1..=100_000).contains(&self.rate),
            "--rate must be 1 to 100000"
        );
        ensure!(
            self.messages as u64 / self.rate <= DURATION_SECS_MAX,
            "--messages / --rate must be at most {DURATION_SECS_MAX} seconds"
        );
        let min = crate::workload::Publication::payload_bytes_min();
        ensure!(
            (min..=MESSAGE_BYTES_MAX).contains(&self.size),
            "--size must be {min} to {MESSAGE_BYTES_MAX}"
        );
        ensure!(self.drain_secs <= 60, "--drain-secs must be at most 60");
        ensure!(
            self.relay_pids.is_empty() || self.relay_pids.len() == self.relays.len(),
            "--relay-pid must be given once per --relay, in the same order, or not at all"
        );
        ensure!(
            (1..=300).contains(&self.timeout_secs),
            "--timeout-secs must be 1 to 300"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("loadtest").chain(args.iter().copied()))
            .expect("flags parse")
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(&[&["run"], args].concat()).command {
            Command::Run(run) => run,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// Defaults are valid; each bound refuses the value just past it, naming the flag.
    #[test]
    fn run_arguments_are_bounded() {
        run_args(&[]).validate().unwrap();
        run_args(&["--mode", "fanout", "--connections", "1001", "--size", "128"])
            .validate()
            .unwrap();
        let refused = [
            (&["--connections", "0"][..], "--connections"),
            (&["--connections", "19901"][..], "--connections"),
            (&["--size", "10"][..], "--size"),
            (&["--size", "16777217"][..], "--size"),
            (&["--in-flight", "0"][..], "--in-flight"),
            (&["--duration-secs", "601"][..], "--duration-secs"),
            (
                &["--mode", "fanout", "--connections", "1"][..],
                "--publishers",
            ),
            (
                &[
                    "--mode",
                    "fanout",
                    "--connections",
                    "3",
                    "--publishers",
                    "3",
                ][..],
                "--publishers",
            ),
        ];
        for (args, flag) in refused {
            let error = run_args(args).validate().unwrap_err().to_string();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }

    /// The limit checks default to the specification's limits and can be narrowed.
    #[test]
    fn limits_default_to_the_specification() {
        let Command::Limits(limits) = parse(&["limits", "--checks", "message-size"]).command else {
            panic!("not limits");
        };
        limits.validate().unwrap();
        assert_eq!(limits.ws_connections_max, 1000);
        assert_eq!(limits.ws_message_bytes_max, 1 << 20);
        assert_eq!(limits.http_body_bytes_max, 10 << 20);
        assert!(limits.enabled(Check::MessageSize));
        assert!(!limits.enabled(Check::Connections));
    }

    /// A mesh run needs at least one relay and finite work.
    #[test]
    fn mesh_arguments_are_bounded() {
        assert!(Cli::try_parse_from(["loadtest", "mesh"]).is_err());
        let Command::Mesh(mesh) = parse(&["mesh", "--relay", "ws://127.0.0.1:1/"]).command else {
            panic!("not mesh");
        };
        mesh.validate().unwrap();
        let Command::Mesh(mesh) = parse(&[
            "mesh",
            "--relay",
            "ws://127.0.0.1:1/",
            "--messages",
            "1000000",
            "--rate",
            "1",
        ])
        .command
        else {
            panic!("not mesh");
        };
        assert!(mesh.validate().is_err());
    }
}
