//! `loadtest limits` against an in-process relay on loopback: every check passes when
//! the relay enforces the limits it is told, and the message-size check fails, named,
//! against a relay that accepts 2 MiB. The relay's limits are set small (20
//! connections, 60 requests/min, 4 KiB bodies) and passed to loadtest, so the run stays
//! short; no wall-clock figure is asserted.

// Tests bind real loopback sockets: outside the relay's seam.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::process::Command;

use sdk_relay::config::Config;
use sdk_relay::logs::LogRing;
use sdk_relay::rt::{Env, Listener as _, Net as _, TokioNet};

/// Starts a relay with `config` on a thread of its own; it lives as long as the test
/// process. Returns its WebSocket and HTTP addresses.
fn start_relay(mut config: Config, name: &str) -> (SocketAddr, SocketAddr) {
    config.data_dir =
        std::env::temp_dir().join(format!("loadtest-limits-{}-{name}", std::process::id()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let ws = TokioNet.bind("127.0.0.1:0").await.expect("bind ws");
            let http = TokioNet.bind("127.0.0.1:0").await.expect("bind http");
            let addrs = (ws.local_addr().unwrap(), http.local_addr().unwrap());
            config.ws_url = addrs.0.to_string();
            config.http_url = addrs.1.to_string();
            config.validate().expect("test config is valid");
            tx.send(addrs).expect("test waits");
            sdk_relay::run(
                config,
                Env::tokio(7),
                sdk_relay::Listeners { ws, http },
                LogRing::new(100),
                std::future::pending(),
            )
            .await;
        });
    });
    rx.recv().expect("relay started")
}

fn small_limits() -> Config {
    let mut config = Config::default();
    config.limits.ws_connections_max = 20;
    config.limits.http_requests_per_minute_max = 60;
    config.limits.http_body_bytes_max = 4096;
    config
}

fn limits(addrs: (SocketAddr, SocketAddr), extra: &[&str]) -> (bool, serde_json::Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--json", "--threads", "1", "limits"])
        .args(["--ws-url", &format!("ws://{}/", addrs.0)])
        .args(["--http-url", &format!("http://{}", addrs.1)])
        .args([
            "--ws-connections-max",
            "20",
            "--http-requests-per-minute-max",
            "60",
        ])
        .args(["--http-body-bytes-max", "4096", "--timeout-secs", "10"])
        .args(extra)
        .output()
        .expect("loadtest runs");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}

#[test]
fn every_limit_check_passes_against_a_relay_enforcing_them() {
    let addrs = start_relay(small_limits(), "enforcing");
    let (success, report) = limits(addrs, &[]);
    assert!(success, "{report:#}");
    assert_eq!(report["checks"].as_array().unwrap().len(), 5, "{report:#}");
}

#[test]
fn the_message_size_check_fails_against_a_relay_accepting_2_mib() {
    let mut config = small_limits();
    config.limits.ws_message_bytes_max = 2 << 20;
    let addrs = start_relay(config, "2mib");
    let (success, report) = limits(addrs, &["--checks", "message-size"]);
    assert!(!success, "{report:#}");
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        failed,
        ["ws_message_bytes_max + 1 closed with 1009"],
        "{report:#}"
    );
}
