//! A real Prometheus server scraping a three-relay mesh: every relay is `up`, and the
//! connection gauge it stores equals the WebSocket clients the test opened. And the JSON
//! `/metrics` agrees with the Prometheus exposition.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::process::Stdio;
use std::time::Duration;

use crate::support::Client;
use crate::support::cluster::{RelayProcess, eventually, free_port, http_get};
use serde_json::Value;

const FAST: &str = "[sync]\ninterval = 1\nhealth_interval = 2\n";

async fn mesh_of_three(sync: &str) -> Vec<RelayProcess> {
    let c = RelayProcess::start("relay-3", "", sync).await;
    let b = RelayProcess::start(
        "relay-2",
        "",
        &format!("{sync}[mesh]\npeers = [\"{}\"]\n", c.ws_addr),
    )
    .await;
    let a = RelayProcess::start(
        "relay-1",
        "",
        &format!("{sync}[mesh]\npeers = [\"{}\"]\n", b.ws_addr),
    )
    .await;
    vec![a, b, c]
}

async fn prometheus_text(relay: &RelayProcess) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(relay.http_addr)
        .await
        .unwrap();
    let request = format!(
        "GET /metrics/prometheus HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        relay.http_addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .expect("a body")
        .1
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_mesh() {
    let relays = mesh_of_three(FAST).await;
    let dir = std::env::temp_dir().join(format!("sdk_relay_prometheus_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let targets: Vec<String> = relays
        .iter()
        .map(|r| format!("'{}'", r.http_addr))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sdk_relay\n    metrics_path: /metrics/prometheus\n    \
         static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("prometheus.log")).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .expect("the `prometheus` binary (Debian package `prometheus`; scripts/test-deps.sh installs it)");

    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            Client::handshaken(relays[0].ws_addr, &["notifications"])
                .await
                .0,
        );
    }
    let prometheus_addr = format!("127.0.0.1:{port}").parse().unwrap();
    let query = |q: &'static str| async move {
        let path = format!("/api/v1/query?query={q}");
        let answer = http_get(prometheus_addr, &path).await?;
        answer["data"]["result"].as_array().cloned()
    };
    eventually(
        Duration::from_secs(30),
        "every relay up in Prometheus",
        || async {
            let up = query("up").await?;
            (up.len() == 3 && up.iter().all(|s| s["value"][1] == "1")).then_some(())
        },
    )
    .await;
    let instance = relays[0].http_addr.to_string();
    eventually(
        Duration::from_secs(30),
        "relay-1's connection gauge equals the clients opened",
        || async {
            let series = query("sdk_relay_ws_connections").await?;
            let mine = series
                .iter()
                .find(|s| s["metric"]["instance"] == instance.as_str())?;
            (mine["value"][1] == "4").then_some(())
        },
    )
    .await;
    prometheus.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();
    drop(clients);
}

fn exposition_value(text: &str, name: &str) -> f64 {
    sdk_relay::metrics::sum_series(text, name)
}

/// The JSON view and the exposition are computed from the same registry: they agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_prometheus_agree() {
    // Long intervals: after the link-up syncs, no counter moves unless the test acts.
    let relays = mesh_of_three("[sync]\ninterval = 30\nhealth_interval = 60\n").await;
    let mut clients = Vec::new();
    for relay in &relays {
        clients.push(
            Client::handshaken(relay.ws_addr, &["notifications", "publish"])
                .await
                .0,
        );
    }
    for i in 0..5 {
        clients[0]
            .send_json(
                &serde_json::json!({"type":"notification","notification_type":"t","data":{"i":i}}),
            )
            .await;
    }
    let relay = &relays[0];
    eventually(
        Duration::from_secs(20),
        "JSON and exposition agree",
        || async {
            let json: Value = relay.get("/metrics").await;
            let text = prometheus_text(relay).await;
            let sync = &json["sync_metrics"];
            let system = &json["system_metrics"];
            let pairs = [
                (
                    sync["cache_hits"].as_f64()?,
                    exposition_value(&text, "sdk_relay_dedup_hits_total"),
                ),
                (
                    sync["cache_misses"].as_f64()?,
                    exposition_value(&text, "sdk_relay_dedup_misses_total"),
                ),
                (
                    sync["sync_requests"].as_f64()?,
                    exposition_value(&text, "sdk_relay_sync_requests_total"),
                ),
                (
                    sync["sync_responses"].as_f64()?,
                    exposition_value(&text, "sdk_relay_sync_responses_total"),
                ),
                (
                    sync["error_count"].as_f64()?,
                    exposition_value(&text, "sdk_relay_sync_errors_total"),
                ),
                (
                    system["active_connections"].as_f64()?,
                    exposition_value(&text, "sdk_relay_ws_connections"),
                ),
            ];
            (pairs.iter().all(|(a, b)| a == b) && pairs[1].0 >= 5.0 && pairs[2].0 > 0.0)
                .then_some(())
        },
    )
    .await;
}

/// `promtool check metrics` accepts the exposition (names, types, units, help texts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    use tokio::io::AsyncWriteExt;
    let relays = mesh_of_three(FAST).await;
    let (mut client, _) = Client::handshaken(relays[0].ws_addr, &["publish"]).await;
    client
        .send_json(&serde_json::json!({"type":"notification","notification_type":"t","data":{}}))
        .await;
    client.recv_type("notification_ack").await;
    let text = prometheus_text(&relays[0]).await;
    for name in [
        "sdk_relay_ws_connections",
        "sdk_relay_process_resident_memory_bytes",
        "sdk_relay_sync_round_trip_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} exported");
    }
    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`promtool` (Debian package `prometheus`; scripts/test-deps.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .await
        .unwrap();
    let output = promtool.wait_with_output().await.unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}
