//! Leaving on purpose and going missing, on real processes: SIGTERM with linked peers
//! ends without waiting for the drain, and its peers mark it `left` with no error; lame
//! duck (`POST /admin/drain`, SIGUSR2) sends wallets (Python `websockets`, Node `ws`) a
//! `reconnect` naming the other relays, then 1001; a configured peer that vanishes is an
//! error, degrades `/health` and `/health/ready`, and recovery clears both; a Core
//! lagging past `[watcher] lag_blocks_max` makes `/health/ready` 503, and back.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::http_client::{get, send};
use crate::support::chain_fakes as fakes;
use crate::support::cluster::{RelayProcess, eventually};
use crate::support::{TestRelay, fast_config};
use sdk_relay::config::{BitcoinCoreConfig, BlindbitConfig};

pub const FAST: &str = "[sync]\ninterval = 1\nhealth_interval = 2\n";
/// Long enough that waiting for it would show: a drain must not wait for peer links.
const LONG_DRAIN_SECS: u64 = 60;
const GENEROUS: Duration = Duration::from_secs(30);

pub fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn peers_toml(addrs: &[&RelayProcess]) -> String {
    let list: Vec<String> = addrs.iter().map(|r| format!("\"{}\"", r.ws_addr)).collect();
    format!("[mesh]\npeers = [{}]\n", list.join(", "))
}

/// `relay`'s view of `other` in `/relays`: (health, connected).
pub async fn seen_as(relay: &RelayProcess, other: &str) -> Option<(String, bool)> {
    let relays = relay.get("/relays").await;
    relays["relays"].as_array()?.iter().find_map(|r| {
        (r["relay_id"] == other).then(|| {
            (
                r["health"].as_str().unwrap_or_default().to_string(),
                r["connected"].as_bool().unwrap_or(false),
            )
        })
    })
}

pub async fn wait_linked_healthy(relay: &RelayProcess, others: &[&RelayProcess]) {
    for other in others {
        let what = format!("{} sees {} healthy and linked", relay.id, other.id);
        eventually(GENEROUS, &what, || async {
            (seen_as(relay, &other.id).await? == ("healthy".to_string(), true)).then_some(())
        })
        .await;
    }
}

/// `/sync/status` errors and `sync_metrics.error_count` of a relay.
pub async fn recorded_errors(relay: &RelayProcess) -> (Vec<Value>, u64) {
    let errors = relay.get("/sync/status").await["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let count = relay.get("/metrics").await["sync_metrics"]["error_count"]
        .as_u64()
        .expect("error_count is an integer");
    (errors, count)
}

fn exposition_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// SIGTERM on a relay with a linked peer and no wallet: it exits 0 long before its
/// drain time (60 s; peer links never hold the drain), and the peer marks it `left`,
/// logs a clean departure, counts no error, stays healthy while its dials to the gone
/// relay fail, and sees it healthy again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_linked_peer_exits_at_once_and_the_peer_sees_it_left() {
    let drain = format!("[limits]\nshutdown_drain_secs = {LONG_DRAIN_SECS}\n");
    let mut a = RelayProcess::start("relay-a", "", &format!("{FAST}{drain}")).await;
    let b = RelayProcess::start("relay-b", "", &format!("{FAST}{}", peers_toml(&[&a]))).await;
    wait_linked_healthy(&b, &[&a]).await;
    wait_linked_healthy(&a, &[&b]).await;

    a.signal("TERM");
    let (status, took) = a.wait_exit(Duration::from_secs(LONG_DRAIN_SECS * 2)).await;
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        a.log()
    );
    eprintln!("[sigterm with a linked peer] exited {took:?} after the signal");
    assert!(
        took < Duration::from_secs(LONG_DRAIN_SECS / 2),
        "exited after {took:?}: it waited for its peer link (drain is {LONG_DRAIN_SECS} s)"
    );

    eventually(GENEROUS, "relay-b marks relay-a left", || async {
        (seen_as(&b, "relay-a").await?.0 == "left").then_some(())
    })
    .await;
    // relay-b keeps dialing its configured peer and fails (it is gone): at least
    // `CONFIGURED_PEER_FAILED_DIALS` times in 3 s of backoff from 200 ms.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen_as(&b, "relay-a").await.unwrap().0, "left");
    let (errors, count) = recorded_errors(&b).await;
    assert!(
        errors.is_empty(),
        "a planned departure is no error: {errors:?}"
    );
    assert_eq!(count, 0);
    let health = b.get("/health").await;
    assert_eq!(health["status"], "healthy", "{health}");
    let scrape = b.get_text("/metrics/prometheus").await;
    assert_eq!(
        exposition_value(&scrape, "sdk_relay_mesh_peers{health=\"left\"}"),
        Some(1.0)
    );
    assert_eq!(
        exposition_value(&scrape, "sdk_relay_mesh_configured_peers_unreachable"),
        Some(0.0)
    );
    let log = b.log();
    assert!(log.contains("peer is leaving"), "{log}");
    assert!(log.contains("peer left: a planned departure"), "{log}");
    assert!(
        log.contains("peer dial failed"),
        "relay-b did redial: {log}"
    );

    a.start_again().await;
    wait_linked_healthy(&b, &[&a]).await;
    assert_eq!(recorded_errors(&b).await.1, 0);
}

/// A configured peer killed (SIGKILL: no `leaving`, no close frame) is an outage: the
/// lost link and the failed dials are sync errors, `/health` is degraded naming the
/// peer, `/health/ready` is 503 below `ready_peers_min`; once it is back, both recover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_configured_peer_is_an_error_until_it_is_back() {
    let mut a = RelayProcess::start("relay-a", "", FAST).await;
    let extra = format!("{FAST}{}ready_peers_min = 1\n", peers_toml(&[&a]));
    let b = RelayProcess::start("relay-b", "", &extra).await;
    let ready = |relay: &RelayProcess| {
        let addr = relay.http_addr;
        async move { get(addr, "/health/ready").await }
    };
    eventually(GENEROUS, "relay-b ready with its peer", || async {
        (ready(&b).await.status == 200).then_some(())
    })
    .await;
    assert_eq!(recorded_errors(&b).await.1, 0);

    a.kill().await;
    let not_ready = eventually(GENEROUS, "relay-b not ready without its peer", || async {
        let reply = ready(&b).await;
        (reply.status == 503).then(|| reply.json())
    })
    .await;
    let reasons = not_ready["reasons"].to_string();
    assert!(reasons.contains("peers: 0 linked"), "{not_ready}");
    let unreachable = format!("configured peer {} is unreachable", a.ws_addr);
    let health = eventually(GENEROUS, "relay-b degraded naming its peer", || async {
        let health = b.get("/health").await;
        (health["status"] == "degraded").then_some(health)
    })
    .await;
    assert!(
        health["reasons"].to_string().contains(&unreachable),
        "{health}"
    );
    let (errors, count) = recorded_errors(&b).await;
    assert!(count >= 1, "the outage is counted");
    // The link lost without a close frame (named by relay id), and each failed dial to
    // the configured address.
    let lost = errors
        .iter()
        .any(|e| e["peer"] == "relay-a" && e["message"].as_str().unwrap().starts_with("link lost"));
    let dials = errors.iter().any(|e| {
        e["peer"] == a.ws_addr.to_string() && e["message"].as_str().unwrap().contains("unreachable")
    });
    assert!(lost && dials, "{errors:?}");
    let scrape = b.get_text("/metrics/prometheus").await;
    assert_eq!(
        exposition_value(&scrape, "sdk_relay_mesh_configured_peers_unreachable"),
        Some(1.0)
    );

    a.start_again().await;
    eventually(GENEROUS, "relay-b ready again", || async {
        (ready(&b).await.status == 200).then_some(())
    })
    .await;
    eventually(GENEROUS, "relay-b healthy again", || async {
        (b.get("/health").await["status"] == "healthy").then_some(())
    })
    .await;
}

/// A peer that stops answering with its socket still open (SIGSTOP) is cut when the
/// link times out, and that is a sync error naming it; once it runs again (SIGCONT) the
/// link comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_peer_times_out_as_an_error() {
    let limits = "[limits]\nheartbeat_interval_secs = 1\nconnection_timeout_secs = 3\n";
    let b = RelayProcess::start("relay-b", "", &format!("{FAST}{limits}")).await;
    // relay-b is not configured with relay-a: only the link's own timeout can count.
    let a = RelayProcess::start("relay-a", "", &format!("{FAST}{}", peers_toml(&[&b]))).await;
    wait_linked_healthy(&b, &[&a]).await;
    assert_eq!(recorded_errors(&b).await.1, 0);

    a.signal("STOP");
    let errors = eventually(GENEROUS, "relay-b times the link out", || async {
        let (errors, _) = recorded_errors(&b).await;
        errors
            .iter()
            .any(|e| {
                e["peer"] == "relay-a"
                    && e["message"].as_str().unwrap().starts_with("link timed out")
            })
            .then_some(errors)
    })
    .await;
    assert!(recorded_errors(&b).await.1 >= 1, "{errors:?}");
    a.signal("CONT");
    wait_linked_healthy(&b, &[&a]).await;
}

/// A SIGTERM the moment the relay logs "relay started" is handled (clean drain, exit
/// 0), never fatal: the handlers are installed before the relay announces itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_relay_started_is_a_clean_shutdown() {
    use crate::support::cluster::free_port;
    let dir = std::env::temp_dir().join(format!("sdk_relay_early_term_{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("relay.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sdk_relay"))
        .arg("--ws-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + GENEROUS;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("relay started")
    {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(GENEROUS, child.wait())
        .await
        .expect("exits")
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}: {text}");
    assert!(text.contains("SIGTERM received"), "{text}");
    assert!(text.contains("relay stopped"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// What a lame duck sees during its window is remembered: a notification it received
/// from a peer while draining is not delivered again by the restarted relay (which
/// otherwise finds it in the peer's log summary and fetches it as missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_seen_while_draining_are_not_delivered_again_after_restart() {
    use crate::support::Client;
    let b = RelayProcess::start("relay-b", "", FAST).await;
    let extra = format!("{FAST}{}[limits]\nlame_duck_secs = 5\n", peers_toml(&[&b]));
    let mut a = RelayProcess::start("relay-a", "", &extra).await;
    wait_linked_healthy(&b, &[&a]).await;
    wait_linked_healthy(&a, &[&b]).await;
    // Two wallets keep relay-a draining for a while (the second closes ~2 s in).
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(Client::handshaken(a.ws_addr, &["notifications"]).await.0);
    }
    let accepted = a.post("/admin/drain", "").await;
    assert_eq!(accepted["status"], "draining", "{accepted}");
    let (mut publisher, _) = Client::handshaken(b.ws_addr, &["publish"]).await;
    let id = publisher
        .publish("drain_window", serde_json::json!({"n": 1}))
        .await;
    eventually(GENEROUS, "relay-a admitted it while draining", || async {
        let scrape = a.get_text("/metrics/prometheus").await;
        (exposition_value(&scrape, "sdk_relay_dedup_misses_total")? >= 1.0).then_some(())
    })
    .await;
    let (status, _) = a.wait_exit(GENEROUS).await;
    assert!(status.success(), "{status:?}");
    drop(held);

    a.start_again().await;
    let (mut wallet, _) = Client::handshaken(a.ws_addr, &["notifications"]).await;
    wait_linked_healthy(&a, &[&b]).await;
    // Several StateSync rounds (1 s each) in which anti-entropy would fetch it.
    let quiet = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match wallet.recv().await {
                Ok(message) if message["message_id"] == id.as_str() => return Some(message),
                Ok(_) => {}
                Err(code) => panic!("the wallet was closed ({code:?})"),
            }
        }
    })
    .await;
    assert!(quiet.is_err(), "delivered again after restart: {quiet:?}");
}

/// What a wallet script printed: one JSON value a line.
pub fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Starts `roaming_wallet.py` on `url` for `seconds`, printing to `out`.
pub fn roaming_wallet(url: &str, seconds: u64, publish: bool, out: &Path) -> tokio::process::Child {
    let mut command = tokio::process::Command::new("python3");
    command
        .arg(clients_dir().join("roaming_wallet.py"))
        .arg(url)
        .arg(seconds.to_string());
    if publish {
        command.arg("--publish");
    }
    command
        .stdout(Stdio::from(std::fs::File::create(out).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::create(out.with_extension("err")).unwrap(),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with `websockets` (scripts/test-deps.sh installs it)")
}

async fn wallets_on(relay: &RelayProcess) -> u64 {
    relay.get("/health").await["checks"]["ws_connections"]
        .as_u64()
        .unwrap_or(0)
}

/// Lame duck over the HTTP API (basic auth on): unauthenticated it is refused (401);
/// authenticated it answers 202, both Python wallets receive `reconnect` naming exactly
/// the two other relays (`resume_token` null), are closed with 1001 and move to one of
/// them by themselves; the relay exits 0; its peers mark it `left` with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lame_duck_over_http_moves_python_wallets_to_the_other_relays() {
    let c = RelayProcess::start("relay-c", "", FAST).await;
    let b = RelayProcess::start("relay-b", "", &format!("{FAST}{}", peers_toml(&[&c]))).await;
    let auth = "[auth]\nhttp_basic_user = \"admin\"\nhttp_basic_password = \"secret\"\n";
    let extra = format!(
        "{FAST}{}[limits]\nlame_duck_secs = 3\n{auth}",
        peers_toml(&[&b])
    );
    let mut a = RelayProcess::start("relay-a", "", &extra).await;
    // relay-a's API wants credentials but for the probes: watch it through /health.
    eventually(GENEROUS, "relay-a linked to both others", || async {
        (a.get("/health").await["checks"]["connected_peers"] == 2).then_some(())
    })
    .await;
    wait_linked_healthy(&b, &[&a]).await;
    wait_linked_healthy(&c, &[&a]).await;

    let dir = std::env::temp_dir().join(format!("sdk_relay_lame_duck_{}", a.ws_addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    let outs: Vec<PathBuf> = (0..2)
        .map(|i| dir.join(format!("wallet-{i}.jsonl")))
        .collect();
    let _wallets: Vec<_> = outs
        .iter()
        .map(|out| roaming_wallet(&a.ws_url(), 40, false, out))
        .collect();
    eventually(GENEROUS, "both wallets on relay-a", || async {
        (wallets_on(&a).await == 2).then_some(())
    })
    .await;

    let refused = send(a.http_addr, "POST", "/admin/drain", &[], b"").await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    // admin:secret
    let basic = [("Authorization", "Basic YWRtaW46c2VjcmV0")];
    let accepted = send(a.http_addr, "POST", "/admin/drain", &basic, b"").await;
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let body = accepted.json();
    assert_eq!(body["status"], "draining");
    assert_eq!(body["lame_duck_secs"], 3);
    assert_eq!(body["wallets"], 2);
    let (status, _) = a.wait_exit(GENEROUS).await;
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        a.log()
    );

    let others: BTreeSet<String> = [b.ws_url(), c.ws_url()].into();
    for out in &outs {
        let what = format!("{} moved to another relay", out.display());
        let events = eventually(GENEROUS, &what, || async {
            let events = events(out);
            (events.iter().filter(|e| e["event"] == "connected").count() >= 2).then_some(events)
        })
        .await;
        assert_moved_as_told(&events, &a.ws_url(), &others);
    }
    for peer in [&b, &c] {
        eventually(GENEROUS, "relay-a marked left", || async {
            (seen_as(peer, "relay-a").await?.0 == "left").then_some(())
        })
        .await;
        let (errors, count) = recorded_errors(peer).await;
        assert!(errors.is_empty() && count == 0, "{}: {errors:?}", peer.id);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A wallet's events: on `from`, a `reconnect` listing exactly `others` (resume token
/// null), then a 1001 close, then a connection to one of `others`.
fn assert_moved_as_told(events: &[Value], from: &str, others: &BTreeSet<String>) {
    let position = |f: &dyn Fn(&Value) -> bool| events.iter().position(f);
    let reconnect = position(&|e| e["event"] == "reconnect" && e["url"] == from)
        .unwrap_or_else(|| panic!("no reconnect from {from}: {events:?}"));
    let listed: BTreeSet<String> = events[reconnect]["relays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(&listed, others, "{events:?}");
    assert_eq!(events[reconnect]["resume_token"], Value::Null);
    let closed = position(&|e| e["event"] == "closed" && e["url"] == from).unwrap();
    assert!(closed > reconnect, "{events:?}");
    assert_eq!(events[closed]["code"], 1001, "{events:?}");
    let next = &events[closed + 1];
    assert_eq!(next["event"], "connected", "{events:?}");
    assert!(
        others.contains(next["url"].as_str().unwrap()),
        "moved to {next}, not a relay it was told"
    );
}

/// SIGUSR2 puts the relay in lame duck: a Node `ws` wallet receives `reconnect` naming
/// the other relay, then a 1001 close; the relay exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_sends_a_node_wallet_a_reconnect_then_1001() {
    assert!(
        clients_dir().join("node_modules/ws").exists(),
        "run `npm ci --prefix relay/tests/clients` first (the README's test command does)"
    );
    let b = RelayProcess::start("relay-b", "", FAST).await;
    let extra = format!("{FAST}{}[limits]\nlame_duck_secs = 2\n", peers_toml(&[&b]));
    let mut a = RelayProcess::start("relay-a", "", &extra).await;
    wait_linked_healthy(&a, &[&b]).await;
    let wallet = tokio::process::Command::new("node")
        .arg(clients_dir().join("reconnect_client.js"))
        .arg(a.ws_url())
        .current_dir(clients_dir())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node (scripts/test-deps.sh installs it)");
    eventually(GENEROUS, "the Node wallet on relay-a", || async {
        (wallets_on(&a).await == 1).then_some(())
    })
    .await;
    a.signal("USR2");
    let output = tokio::time::timeout(GENEROUS, wallet.wait_with_output())
        .await
        .expect("the Node wallet ends")
        .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let reconnect = lines
        .iter()
        .position(|m| m["type"] == "reconnect")
        .unwrap_or_else(|| panic!("no reconnect: {lines:?}"));
    assert_eq!(lines[reconnect]["relays"], serde_json::json!([b.ws_url()]));
    assert_eq!(lines[reconnect]["reason"], "lame_duck");
    assert_eq!(lines[reconnect]["resume_token"], Value::Null);
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "closed", "{lines:?}");
    assert_eq!(last["code"], 1001, "{lines:?}");
    let (status, _) = a.wait_exit(GENEROUS).await;
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        a.log()
    );
    assert!(a.log().contains("SIGUSR2 received"));
}

/// `/health/ready` answers 503 naming the chain while Core is more than
/// `[watcher] lag_blocks_max` blocks behind Blindbit, and 200 once Core catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_while_core_lags_past_its_bound_and_200_again() {
    let chain = fakes::chain(200000, 200006);
    chain.lock().unwrap().core_height = Some(200003);
    let fakes = fakes::start(chain.clone()).await;
    let mut config = fast_config();
    config.bitcoin_core = Some(BitcoinCoreConfig {
        url: fakes.core_url.clone(),
        wallet: None,
        rpc_user: None,
        rpc_password: None,
        cookie_file: None,
        ca_file: None,
    });
    config.blindbit = Some(BlindbitConfig {
        url: fakes.blindbit_url.clone(),
        ca_file: None,
    });
    config.watcher.poll_interval_secs = 1;
    config.watcher.lag_blocks_max = 2;
    let relay = TestRelay::start(config).await;
    let addr = relay.http_addr;
    let not_ready = eventually(GENEROUS, "not ready while Core lags 3 blocks", || async {
        let reply = get(addr, "/health/ready").await;
        (reply.status == 503).then(|| reply.json())
    })
    .await;
    let reasons = not_ready["reasons"].to_string();
    assert!(
        reasons.contains("bitcoin_core behind blindbit by 3 blocks"),
        "{not_ready}"
    );
    assert_eq!(not_ready["checks"]["chain_degraded"], true);
    // Within the bound: ready.
    chain.lock().unwrap().core_height = Some(200004);
    eventually(GENEROUS, "ready with Core 2 blocks behind", || async {
        (get(addr, "/health/ready").await.status == 200).then_some(())
    })
    .await;
    chain.lock().unwrap().core_height = None;
    eventually(GENEROUS, "ready once Core caught up", || async {
        let reply = get(addr, "/health/ready").await;
        (reply.status == 200).then(|| reply.json())
    })
    .await;
    relay.shutdown().await;
}
