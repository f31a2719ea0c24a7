//! `loadtest run` drives the baseline server on loopback, in both modes, and reports
//! traffic without errors. Bounded: one-second windows, a handful of connections; no
//! wall-clock figure is asserted.

// Tests bind real loopback sockets: outside the relay's seam.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::process::Command;

use bench::baseline::{self, Mode};

/// Starts the baseline server in `mode` on a thread of its own; it lives as long as the
/// test process.
fn start_baseline(mode: Mode) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            tx.send(listener.local_addr().expect("local addr"))
                .expect("test waits");
            baseline::serve(listener, mode, std::future::pending())
                .await
                .expect("serve");
        });
    });
    rx.recv().expect("baseline started")
}

fn run(addr: SocketAddr, extra: &[&str]) -> serde_json::Value {
    let url = format!("ws://{addr}/");
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "--json",
            "--threads",
            "1",
            "run",
            "--baseline",
            "--ws-url",
            &url,
        ])
        .args([
            "--duration-secs",
            "1",
            "--warmup-secs",
            "0",
            "--timeout-secs",
            "5",
        ])
        .args(extra)
        .output()
        .expect("loadtest runs");
    assert!(
        output.status.success(),
        "loadtest failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON report")
}

#[test]
fn ping_round_trips_against_the_baseline_echo() {
    let addr = start_baseline(Mode::Echo);
    // The server runs in this test process: its pid is the server's.
    let pid = std::process::id().to_string();
    let report = run(
        addr,
        &[
            "--mode",
            "ping",
            "--connections",
            "4",
            "--in-flight",
            "2",
            "--relay-pid",
            &pid,
        ],
    );
    assert_eq!(report["target"], "baseline");
    assert_eq!(report["connections_open"], 4);
    let messages = report["messages"].as_u64().unwrap();
    assert!(messages > 0, "{report}");
    assert_eq!(report["errors_total"], 0, "{report}");
    let latency = &report["latency"];
    let at = |key: &str| latency[key].as_f64().unwrap();
    assert!(at("p99_us") > 0.0, "{report}");
    assert!(
        at("p99_us") <= at("p99_9_us") && at("p99_9_us") <= at("max_us"),
        "{report}"
    );
    // The server's CPU over the window, and that per round trip.
    let cpu = &report["server_cpu"];
    assert_eq!(cpu["pid"].as_u64().unwrap().to_string(), pid, "{report}");
    let secs = cpu["cpu_secs"].as_f64().unwrap();
    assert!(secs >= 0.0, "{report}");
    let per_message = cpu["cpu_us_per_message"].as_f64().unwrap();
    assert!(
        (per_message - secs * 1e6 / messages as f64).abs() < 1e-6,
        "{report}"
    );
    assert!(
        report["client_cpu"]["cpu_secs"].as_f64().is_some(),
        "{report}"
    );
}

/// A pid that is no process is refused before the run, naming what it could not read.
#[test]
fn a_wrong_server_pid_is_refused() {
    let addr = start_baseline(Mode::Echo);
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["run", "--baseline", "--ws-url", &format!("ws://{addr}/")])
        .args(["--connections", "1", "--duration-secs", "1"])
        .args(["--relay-pid", "4000000000"])
        .output()
        .expect("loadtest runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/proc/4000000000/stat"), "{stderr}");
}

#[test]
fn fan_out_against_the_baseline_broadcast() {
    let addr = start_baseline(Mode::Broadcast);
    let report = run(
        addr,
        &["--mode", "fanout", "--connections", "6", "--size", "256"],
    );
    assert_eq!(report["publishers"], 1);
    let messages = report["messages"].as_u64().unwrap();
    let deliveries = report["deliveries"].as_u64().unwrap();
    assert!(messages > 0, "{report}");
    // Five subscribers receive each publication (give or take the window's edges).
    assert!(deliveries + 5 >= messages * 5 - 5, "{report}");
    assert_eq!(report["errors_total"], 0, "{report}");
}

/// The publisher convention loadtest speaks is the one the baseline implements.
#[test]
fn publisher_hello_matches_the_baseline() {
    assert_eq!(baseline::PUBLISHER_HELLO, b"pub");
}
