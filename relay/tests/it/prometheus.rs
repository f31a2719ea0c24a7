//! A real Prometheus server scraping a three-relay mesh: every relay is `up`, and the
//! connection gauge it stores equals the WebSocket clients the test opened. The JSON
//! `/metrics` and the Prometheus exposition report what the test did (connections,
//! notifications, forced syncs) and the process figures the kernel counts.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::process::Stdio;
use std::time::Duration;

use crate::support::Client;
use crate::support::cluster::{RelayProcess, eventually, free_port, http_get};
use std::collections::BTreeMap;

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

/// `field` of every peer of `relay` in `/sync/status`, by relay id.
async fn per_peer(relay: &RelayProcess, field: &str) -> BTreeMap<String, u64> {
    relay.get("/sync/status").await["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["relay_id"].as_str().unwrap().to_string(),
                p[field].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The sync counters of both views: (JSON requests, exposition requests, JSON responses,
/// exposition responses).
async fn sync_counts(relay: &RelayProcess) -> [u64; 4] {
    let json = relay.get("/metrics").await;
    let text = relay.get_text("/metrics/prometheus").await;
    [
        json["sync_metrics"]["sync_requests"].as_u64().unwrap(),
        exposition_value(&text, "sdk_relay_sync_requests_total") as u64,
        json["sync_metrics"]["sync_responses"].as_u64().unwrap(),
        exposition_value(&text, "sdk_relay_sync_responses_total") as u64,
    ]
}

/// The exposition's `sdk_relay_sync_requests_total{sync_type="StateSync"}`.
async fn state_sync_requests(relay: &RelayProcess) -> u64 {
    relay
        .get_text("/metrics/prometheus")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("sdk_relay_sync_requests_total{sync_type=\"StateSync\"} "))
        .expect("the StateSync series")
        .parse()
        .unwrap()
}

/// Proves the JSON view and the exposition both report what the test itself did, not
/// merely the same number: N WebSocket clients open (then one fewer), M notifications
/// published (the notifications counter, dedup misses on every relay, deliveries the
/// clients counted) and K forced syncs (requests and answers, per peer and in total).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_prometheus_count_what_the_test_did() {
    // Syncs only at link-up and when forced: nothing else moves the sync counters.
    let slow = "[sync]\ninterval = 600\nhealth_interval = 1200\n";
    let c = RelayProcess::start("relay-3", "", slow).await;
    let b = RelayProcess::start(
        "relay-2",
        "",
        &format!("{slow}[mesh]\npeers = [\"{}\"]\n", c.ws_addr),
    )
    .await;
    let a = RelayProcess::start(
        "relay-1",
        "",
        &format!(
            "{slow}[mesh]\npeers = [\"{}\", \"{}\"]\n",
            b.ws_addr, c.ws_addr
        ),
    )
    .await;
    let relays = [a, b, c];
    let relay = &relays[0];
    // Fully linked, and every link-up sync answered: the counters are at rest.
    for r in &relays {
        eventually(
            Duration::from_secs(20),
            &format!("{} linked to both peers", r.id),
            || async {
                (r.get("/metrics").await["sync_metrics"]["mesh_connections"] == 2).then_some(())
            },
        )
        .await;
    }
    let snapshot = || async {
        (
            per_peer(relay, "sync_requests").await,
            per_peer(relay, "sync_responses").await,
            sync_counts(relay).await,
        )
    };
    let before = eventually(
        Duration::from_secs(20),
        "link-up syncs answered, counters at rest",
        || async {
            let first = snapshot().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (requests, responses, counts) = snapshot().await;
            let settled = first == (requests.clone(), responses.clone(), counts)
                && requests.len() == 2
                && requests.values().all(|n| *n > 0)
                && requests == responses
                && counts[0] == counts[1]
                && counts[0] == counts[2]
                && counts[2] == counts[3];
            settled.then_some((requests, counts))
        },
    )
    .await;

    // N clients: one publisher, the others subscribed to every notification.
    const N: usize = 3;
    let mut clients = vec![Client::handshaken(relay.ws_addr, &["publish"]).await.0];
    for _ in 1..N {
        clients.push(
            Client::handshaken(relay.ws_addr, &["notifications"])
                .await
                .0,
        );
    }
    let connections = |n: usize| async move {
        let json = relay.get("/metrics").await;
        let text = relay.get_text("/metrics/prometheus").await;
        let figures = (
            json["system_metrics"]["active_connections"]
                .as_u64()
                .unwrap(),
            exposition_value(&text, "sdk_relay_ws_connections") as u64,
        );
        (figures == (n as u64, n as u64)).then_some(())
    };
    eventually(
        Duration::from_secs(5),
        &format!("{N} connections in both views"),
        || connections(N),
    )
    .await;

    // M notifications; every subscriber receives each once.
    const M: usize = 7;
    let mut published = Vec::new();
    for i in 0..M {
        published.push(
            clients[0]
                .publish("payment_detected", serde_json::json!({"i": i}))
                .await,
        );
    }
    for client in &mut clients[1..] {
        assert_eq!(client.recv_notification_ids(M).await, published);
    }
    let text = relay.get_text("/metrics/prometheus").await;
    assert_eq!(
        exposition_value(&text, "sdk_relay_notifications_published_total"),
        M as f64
    );
    assert_eq!(
        exposition_value(&text, "sdk_relay_notifications_delivered_total"),
        ((N - 1) * M) as f64,
        "each of the {} subscribers received each of the {M} notifications",
        N - 1
    );
    for r in &relays {
        eventually(
            Duration::from_secs(10),
            &format!("{}: {M} dedup misses in both views", r.id),
            || async {
                let json = r.get("/metrics").await;
                let text = r.get_text("/metrics/prometheus").await;
                let figures = (
                    json["sync_metrics"]["cache_misses"].as_u64().unwrap(),
                    exposition_value(&text, "sdk_relay_dedup_misses_total") as u64,
                );
                (figures == (M as u64, M as u64)).then_some(())
            },
        )
        .await;
    }

    // K forced StateSyncs, one at a time (forcing twice before the mesh acts sends once).
    const K: u64 = 4;
    let (peer_before, counts_before) = before;
    let state_syncs_before = state_sync_requests(relay).await;
    for k in 1..=K {
        let answer = relay
            .post("/sync/force", r#"{"sync_types":["StateSync"]}"#)
            .await;
        assert_eq!(answer["peers"], 2, "{answer}");
        eventually(
            Duration::from_secs(5),
            &format!("forced sync {k} sent to both peers"),
            || async {
                let counts = sync_counts(relay).await;
                (counts[0] >= counts_before[0] + 2 * k).then_some(())
            },
        )
        .await;
    }
    let counts = eventually(
        Duration::from_secs(10),
        "every forced sync answered",
        || async {
            let counts = sync_counts(relay).await;
            (counts[2] == counts_before[2] + 2 * K && counts[3] == counts_before[3] + 2 * K)
                .then_some(counts)
        },
    )
    .await;
    let sent = [counts[0] - counts_before[0], counts[1] - counts_before[1]];
    assert_eq!(
        sent,
        [2 * K, 2 * K],
        "JSON and exposition: {K} syncs to 2 peers"
    );
    assert_eq!(
        state_sync_requests(relay).await,
        state_syncs_before + 2 * K,
        "the exposition counts them as StateSync"
    );
    let peer_after = per_peer(relay, "sync_requests").await;
    for (peer, n) in &peer_after {
        assert_eq!(
            *n,
            peer_before[peer] + K,
            "{peer}: one request per forced sync"
        );
    }
    let json = relay.get("/metrics").await;
    let text = relay.get_text("/metrics/prometheus").await;
    assert_eq!(
        json["sync_metrics"]["error_count"].as_f64().unwrap(),
        exposition_value(&text, "sdk_relay_sync_errors_total")
    );

    // One client leaves: both views follow.
    drop(clients.pop());
    eventually(
        Duration::from_secs(5),
        &format!("{} connections in both views", N - 1),
        || connections(N - 1),
    )
    .await;
}

/// Proves the process figures both views report are the relay process's own as the
/// kernel counts them (`/proc/<pid>`, read by the test): resident memory within 5% (or
/// 1 MiB) of `VmRSS`, CPU percent over a window of pings within a few points of the test's
/// own utime+stime measure, and CPU seconds between the kernel's before and after the
/// scrape. The relay first burns over a second of CPU, so a constant 0 fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_figures_match_what_the_kernel_counts() {
    use crate::support::cluster::procfs;
    // No heartbeat, no sync, no peers: only the test's own requests sample the figures.
    // The pings below come as fast as they are answered: no message rate limit.
    let relay = RelayProcess::start(
        "relay-1",
        "",
        "[sync]\ninterval = 600\nhealth_interval = 1200\n\
         [limits]\nheartbeat_interval_secs = 300\nconnection_timeout_secs = 600\n\
         ws_messages_per_second_max = 1000000\nws_messages_burst_max = 1000000\n",
    )
    .await;
    let pid = relay.pid();
    let (mut client, _) = Client::handshaken(relay.ws_addr, &[]).await;
    // The handshake's health message sampled the figures; let that window close so the
    // next /metrics starts a fresh one.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    relay.get("/metrics").await;
    let started = tokio::time::Instant::now();
    let ticks_start = procfs::cpu_ticks(pid);
    // Pings, 100 in flight, until the kernel has charged the relay 1.5 s of CPU in all
    // and the window is over a second long.
    let burn = async {
        let mut pings = 0u64;
        loop {
            for _ in 0..100 {
                client
                    .send_json(&serde_json::json!({"type":"ping","id":pings}))
                    .await;
                pings += 1;
            }
            for _ in 0..100 {
                client.recv_type("pong").await;
            }
            if procfs::cpu_ticks(pid) >= 150 && started.elapsed() > Duration::from_millis(1200) {
                return pings;
            }
        }
    };
    let pings = tokio::time::timeout(Duration::from_secs(120), burn)
        .await
        .expect("the relay burns 1.5 s of CPU answering pings");
    let ticks_end = procfs::cpu_ticks(pid);
    let window = started.elapsed().as_secs_f64();
    let measured_percent = (ticks_end - ticks_start) as f64 / 100.0 / window * 100.0;
    assert!(
        measured_percent > 5.0,
        "{pings} pings kept the relay busy: {measured_percent:.1}%"
    );

    let rss_before = procfs::resident_bytes(pid);
    let json = relay.get("/metrics").await;
    let rss_after = procfs::resident_bytes(pid);
    let system = &json["system_metrics"];
    let reported_percent = system["cpu_percent"].as_f64().unwrap();
    assert!(
        (reported_percent - measured_percent).abs() <= 5.0 + 0.1 * measured_percent,
        "/metrics cpu_percent {reported_percent:.1} vs {measured_percent:.1} from /proc/{pid}/stat \
         over {window:.2} s"
    );
    let memory = system["memory_bytes"].as_u64().unwrap();
    assert_near_rss(memory, rss_before, rss_after, "/metrics memory_bytes");
    assert_eq!(
        system["memory_usage"],
        format!("{}MB", (memory + (1 << 19)) >> 20)
    );

    let ticks_before = procfs::cpu_ticks(pid);
    let rss_before = procfs::resident_bytes(pid);
    let text = relay.get_text("/metrics/prometheus").await;
    let ticks_after = procfs::cpu_ticks(pid);
    let rss_after = procfs::resident_bytes(pid);
    let cpu_seconds = exposition_value(&text, "sdk_relay_process_cpu_seconds_total");
    // The counter holds whole seconds.
    let (low, high) = ((ticks_before / 100) as f64, (ticks_after / 100) as f64);
    assert!(
        (low..=high).contains(&cpu_seconds) && cpu_seconds >= 1.0,
        "exposition CPU {cpu_seconds} s, /proc/{pid}/stat says {ticks_before}..{ticks_after} ticks"
    );
    let resident = exposition_value(&text, "sdk_relay_process_resident_memory_bytes") as u64;
    assert_near_rss(
        resident,
        rss_before,
        rss_after,
        "exposition resident memory",
    );
}

/// `reported` is within 5% or 1 MiB of the `VmRSS` the test read around the request.
fn assert_near_rss(reported: u64, rss_before: u64, rss_after: u64, what: &str) {
    let (low, high) = (rss_before.min(rss_after), rss_before.max(rss_after));
    let slack = (high / 20).max(1 << 20);
    assert!(
        reported + slack >= low && reported <= high + slack,
        "{what} {reported} vs VmRSS {rss_before}..{rss_after}"
    );
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
    let text = relays[0].get_text("/metrics/prometheus").await;
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
