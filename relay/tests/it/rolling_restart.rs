//! A three-relay mesh rolled one relay at a time with lame duck (`POST /admin/drain` or
//! SIGUSR2, then a restart) while a publisher publishes continuously and a real
//! Prometheus scrapes the mesh and evaluates docker/prometheus/alerts.yml every second:
//! every wallet (Python `websockets`) moves by itself to a relay from its `reconnect`
//! list, no relay records a sync error, and no alert fires (none but `RelayDown` even
//! becomes pending: a restart's scrape gap is what its `for: 1m` absorbs).

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::http_client::get;
use crate::lame_duck::{FAST, events, recorded_errors, roaming_wallet};
use crate::support::cluster::{RelayProcess, eventually, free_port};

const GENEROUS: Duration = Duration::from_secs(30);
const WALLETS_PER_RELAY: usize = 2;
/// Wallet scripts run at most this long (the test kills them once it is done).
const WALLET_SECONDS: u64 = 240;

fn relay_extra(peers: &[&RelayProcess]) -> String {
    let list: Vec<String> = peers.iter().map(|r| format!("\"{}\"", r.ws_addr)).collect();
    format!(
        "{FAST}[limits]\nlame_duck_secs = 2\n[mesh]\nready_peers_min = 2\npeers = [{}]\n",
        list.join(", ")
    )
}

/// Percent-encodes a PromQL query for a URL.
fn encoded(query: &str) -> String {
    query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET path` from Prometheus as JSON, over HTTP/1.0 so a long answer is not chunked.
async fn prometheus_get(prometheus: SocketAddr, path: &str) -> Option<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(prometheus).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {prometheus}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).to_string();
        serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
    };
    tokio::time::timeout(GENEROUS, exchange)
        .await
        .ok()
        .flatten()
}

async fn query(prometheus: SocketAddr, promql: &str) -> Option<Vec<Value>> {
    let path = format!("/api/v1/query?query={}", encoded(promql));
    let answer = prometheus_get(prometheus, &path).await?;
    (answer["status"] == "success").then(|| answer["data"]["result"].as_array().cloned())?
}

fn start_prometheus(dir: &Path, relays: &[RelayProcess], port: u16) -> tokio::process::Child {
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docker/prometheus/alerts.yml");
    let targets: Vec<String> = relays
        .iter()
        .map(|r| format!("'{}'", r.http_addr))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{}'\n\
         scrape_configs:\n  - job_name: sdk_relay\n    metrics_path: /metrics/prometheus\n    \
         static_configs:\n      - targets: [{}]\n",
        rules.display(),
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join("prometheus.log")).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .expect("the `prometheus` binary (Debian package `prometheus`; scripts/test-deps.sh installs it)")
}

async fn wallets_on(relays: &[RelayProcess]) -> u64 {
    let mut total = 0;
    for relay in relays {
        total += relay.get("/health").await["checks"]["ws_connections"]
            .as_u64()
            .unwrap_or(0);
    }
    total
}

async fn all_ready(relays: &[RelayProcess]) {
    for relay in relays {
        let what = format!("{} ready (linked to both others)", relay.id);
        eventually(GENEROUS, &what, || async {
            (get(relay.http_addr, "/health/ready").await.status == 200).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_with_lame_duck_moves_every_wallet_and_fires_no_alert() {
    let r3 = RelayProcess::start("relay-3", "", &relay_extra(&[])).await;
    let r2 = RelayProcess::start("relay-2", "", &relay_extra(&[&r3])).await;
    let r1 = RelayProcess::start("relay-1", "", &relay_extra(&[&r2])).await;
    let mut relays = vec![r1, r2, r3];
    all_ready(&relays).await;
    let urls: BTreeSet<String> = relays.iter().map(RelayProcess::ws_url).collect();

    let dir = std::env::temp_dir().join(format!(
        "sdk_relay_rolling_{}_{}",
        std::process::id(),
        relays[0].ws_addr.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mut prometheus = start_prometheus(&dir, &relays, port);
    let prometheus_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually(GENEROUS, "Prometheus scrapes all three", || async {
        let up = query(prometheus_addr, "up").await?;
        (up.len() == 3 && up.iter().all(|s| s["value"][1] == "1")).then_some(())
    })
    .await;

    let mut outs = Vec::new();
    let mut scripts = Vec::new();
    for relay in &relays {
        for i in 0..WALLETS_PER_RELAY {
            let out = dir.join(format!("{}-wallet-{i}.jsonl", relay.id));
            scripts.push(roaming_wallet(&relay.ws_url(), WALLET_SECONDS, false, &out));
            outs.push(out);
        }
    }
    let publisher_out = dir.join("publisher.jsonl");
    scripts.push(roaming_wallet(
        &relays[0].ws_url(),
        WALLET_SECONDS,
        true,
        &publisher_out,
    ));
    let expected = (relays.len() * WALLETS_PER_RELAY + 1) as u64;
    eventually(
        GENEROUS,
        "every wallet and the publisher connected",
        || async { (wallets_on(&relays).await == expected).then_some(()) },
    )
    .await;

    for (index, relay) in relays.iter_mut().enumerate() {
        // Both ways into lame duck: the API, then the signal, then the API.
        if index == 1 {
            relay.signal("USR2");
        } else {
            let accepted = relay.post("/admin/drain", "").await;
            assert_eq!(accepted["status"], "draining", "{accepted}");
        }
        let (status, _) = relay.wait_exit(GENEROUS).await;
        assert!(status.success(), "{} exited {status:?}", relay.id);
        relay.start_again().await;
        let restarted = &*relay;
        eventually(GENEROUS, "the restarted relay ready", || async {
            (get(restarted.http_addr, "/health/ready").await.status == 200).then_some(())
        })
        .await;
    }
    all_ready(&relays).await;
    eventually(GENEROUS, "every wallet back on a relay", || async {
        (wallets_on(&relays).await == expected).then_some(())
    })
    .await;
    // Notifications published after the last move reach every wallet where it is now.
    let settled = events(&publisher_out)
        .iter()
        .filter(|e| e["event"] == "ack")
        .count();
    eventually(GENEROUS, "the publisher publishes on", || async {
        let acks = events(&publisher_out)
            .iter()
            .filter(|e| e["event"] == "ack")
            .count();
        (acks >= settled + 20).then_some(())
    })
    .await;
    for mut script in scripts {
        script.kill().await.ok();
    }

    for out in outs.iter().chain([&publisher_out]) {
        assert_every_move_as_told(&events(out), &urls, out);
    }
    for relay in &relays {
        let (errors, count) = recorded_errors(relay).await;
        assert!(
            errors.is_empty() && count == 0,
            "{} recorded errors for a planned restart: {errors:?}",
            relay.id
        );
    }
    // Over the whole run, as Prometheus scraped it every second.
    let errors = query(
        prometheus_addr,
        "max_over_time(sdk_relay_sync_errors_total[10m]) > 0",
    )
    .await
    .expect("Prometheus answers");
    assert!(errors.is_empty(), "sync errors scraped: {errors:?}");
    let unreachable = query(
        prometheus_addr,
        "max_over_time(sdk_relay_mesh_configured_peers_unreachable[10m]) > 0",
    )
    .await
    .unwrap();
    assert!(unreachable.is_empty(), "{unreachable:?}");
    assert_rules_evaluated_and_quiet(prometheus_addr).await;
    prometheus.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();
}

/// Every 1001 close follows a `reconnect` on that connection, and the next connection
/// goes to a relay it listed (never the one leaving); nothing else closed it; it moved
/// at least once; and it received notifications after its last move.
fn assert_every_move_as_told(events: &[Value], urls: &BTreeSet<String>, out: &Path) {
    let who = out.display();
    let mut told: Option<BTreeSet<String>> = None;
    let mut moves = 0;
    let mut closed_by: Option<String> = None;
    let mut since_last_connect = 0;
    for event in events {
        let url = event["url"].as_str().unwrap_or_default().to_string();
        match event["event"].as_str().unwrap_or_default() {
            "reconnect" => {
                let relays: BTreeSet<String> = event["relays"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect();
                assert!(!relays.is_empty(), "{who}: an empty reconnect list");
                assert!(!relays.contains(&url), "{who}: told to come back: {event}");
                assert!(relays.is_subset(urls), "{who}: {event}");
                assert_eq!(event["resume_token"], Value::Null, "{who}");
                told = Some(relays);
            }
            "closed" => {
                assert_eq!(event["code"], 1001, "{who}: closed otherwise: {events:?}");
                assert!(
                    told.is_some(),
                    "{who}: closed without a reconnect: {events:?}"
                );
                closed_by = Some(url);
            }
            "connected" => {
                if let Some(from) = closed_by.take() {
                    let listed = told.take().unwrap();
                    assert!(
                        listed.contains(&url) && url != from,
                        "{who}: moved to {url}, told {listed:?}"
                    );
                    moves += 1;
                }
                since_last_connect = 0;
            }
            "notification" => since_last_connect += 1,
            "ack" => {}
            other => panic!("{who}: unexpected {other}: {event}"),
        }
    }
    assert!(moves >= 1, "{who} never moved: {events:?}");
    assert!(
        since_last_connect > 0,
        "{who}: no notification after its last move"
    );
}

/// The rules of docker/prometheus/alerts.yml were loaded and evaluated without error,
/// and over the run no alert fired and none but `RelayDown` was even pending.
async fn assert_rules_evaluated_and_quiet(prometheus: SocketAddr) {
    let rules = prometheus_get(prometheus, "/api/v1/rules").await.unwrap();
    let names: Vec<String> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| {
            assert_eq!(r["health"], "ok", "{r}");
            r["name"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(
        names.iter().any(|n| n == "RelayConfiguredPeerUnreachable")
            && names.iter().any(|n| n == "RelayHighSyncErrorRate"),
        "{names:?}"
    );
    let firing = query(
        prometheus,
        "count_over_time(ALERTS{alertstate=\"firing\"}[10m])",
    )
    .await
    .unwrap();
    assert!(firing.is_empty(), "alerts fired: {firing:?}");
    let pending = query(
        prometheus,
        "count_over_time(ALERTS{alertname!=\"RelayDown\"}[10m])",
    )
    .await
    .unwrap();
    assert!(pending.is_empty(), "alerts pending: {pending:?}");
}
