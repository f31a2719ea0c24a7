//! Connection limits: 1000 held, the next upgrade refused with 503 + Retry-After, and a
//! freed slot usable again; connections that never send their upgrade request bounded
//! at `ws_connections_max` + 1024; and a process out of file descriptors backing off
//! its accepts without exiting.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use crate::http_client::get;
use crate::support::cluster::{RelayProcess, eventually, procfs};
use crate::support::{Client, TestRelay, WAIT, fast_config, raise_fd_limit, raw_upgrade, tcp_from};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_the_1001st_with_503() {
    raise_fd_limit();
    let mut config = fast_config();
    config.limits.heartbeat_interval_secs = 30;
    config.limits.connection_timeout_secs = 60;
    // All from 127.0.0.1: no per-address cap here.
    config.limits.ws_connections_per_address_max = usize::MAX;
    assert_eq!(
        config.limits.ws_connections_max, 1000,
        "the specification's default"
    );
    let relay = TestRelay::start(config).await;
    let mut held = Vec::with_capacity(1000);
    for _ in 0..1000 {
        held.push(Client::handshaken(relay.ws_addr, &[]).await.0);
    }
    let (status, head) = raw_upgrade(relay.ws_addr).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");

    // Close one; its slot frees once the relay has seen the close.
    let mut one = held.pop().unwrap();
    one.send_json(&serde_json::json!({"type":"ping"})).await;
    one.recv_type("pong").await;
    drop(one);
    let mut accepted = None;
    for _ in 0..100 {
        match Client::connect(relay.ws_addr).await {
            Ok(client) => {
                accepted = Some(client);
                break;
            }
            Err(refused) => {
                assert_eq!(refused.status, 503);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    assert!(
        accepted.is_some(),
        "a new connection is accepted after one closed"
    );
    drop(held);
    relay.shutdown().await;
}

/// What the relay's WebSocket port allows beyond `ws_connections_max` in the exchange
/// before the upgrade (`PENDING_UPGRADES_SLACK` in `ws/mod.rs`).
const PENDING_UPGRADES_SLACK: usize = 1024;

/// Reads until the relay answers or closes; `None` when it closed without a byte.
async fn first_bytes(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1024];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => None,
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        Err(_) => Some(Vec::new()),
    }
}

/// Proves connections still in the exchange before the upgrade are bounded: with
/// `ws_connections_max` = 1, 1025 idle TCP connections that never send a request are
/// held, the next is closed at once and counted as refused `pending_upgrades`, and once
/// one of them leaves a new client is upgraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_before_the_upgrade_are_capped() {
    use tokio::io::AsyncWriteExt;
    raise_fd_limit();
    let mut config = fast_config();
    config.limits.ws_connections_max = 1;
    config.limits.heartbeat_interval_secs = 30;
    config.limits.connection_timeout_secs = 60;
    config.limits.upgrade_timeout_secs = 60;
    // All from 127.0.0.1: no per-address cap here.
    config.limits.ws_connections_per_address_max = usize::MAX;
    let cap = config.limits.ws_connections_max + PENDING_UPGRADES_SLACK;
    let relay = TestRelay::start(config).await;
    let mut held = Vec::with_capacity(cap);
    for _ in 0..cap {
        held.push(tokio::net::TcpStream::connect(relay.ws_addr).await.unwrap());
    }
    // Accepted in order: this one finds every pending slot taken.
    let mut over = tokio::net::TcpStream::connect(relay.ws_addr).await.unwrap();
    assert_eq!(
        first_bytes(&mut over, WAIT).await,
        None,
        "connection {} is closed without an answer",
        cap + 1
    );
    let refused = |text: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(
                    "sdk_relay_ws_connections_refused_total{reason=\"pending_upgrades\"} ",
                )
            })
            .map(|v| v.parse::<u64>().unwrap())
    };
    let exposition = get(relay.http_addr, "/metrics/prometheus").await.text();
    assert_eq!(refused(&exposition), Some(1), "{exposition}");
    // The ones under the cap are still open (and unanswered: they sent nothing).
    let last = held.len() - 1;
    for i in [0, last] {
        let stream = &mut held[i];
        assert_eq!(
            first_bytes(stream, Duration::from_millis(200)).await,
            Some(Vec::new()),
            "held connections stay open"
        );
    }
    // One leaves: its pending slot is free again, and a real client gets through.
    drop(held.pop());
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        relay.ws_addr
    );
    let upgraded = tokio::time::timeout(WAIT, async {
        loop {
            let mut stream = tokio::net::TcpStream::connect(relay.ws_addr).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            match first_bytes(&mut stream, WAIT).await {
                Some(head) if !head.is_empty() => {
                    return String::from_utf8_lossy(&head).into_owned();
                }
                // Accepted before the relay saw the other one leave: refused; again.
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("a pending slot frees when a connection leaves");
    assert!(upgraded.starts_with("HTTP/1.1 101"), "{upgraded}");
    drop(held);
    relay.shutdown().await;
}

/// The `backoff_ms` values of the relay's "WebSocket accept failed" warnings, in order.
fn logged_backoffs(log: &str) -> Vec<u64> {
    let plain = strip_ansi(log);
    plain
        .lines()
        .filter(|l| l.contains("WebSocket accept failed; backing off"))
        .map(|l| {
            let value = l.split("backoff_ms=").nth(1).expect("backoff_ms logged");
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().unwrap()
        })
        .collect()
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Proves a relay out of file descriptors keeps running: its accepts fail (EMFILE), it
/// backs off (5 ms doubling, up to 1 s: a handful of failures a second, not a busy
/// loop), counts each as refused `accept_error`, and serves again once descriptors are
/// free. The relay runs as its own process, its open-file limit lowered from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loop_backs_off_and_recovers() {
    let mut relay = RelayProcess::start(
        "relay-1",
        "",
        "[sync]\ninterval = 600\nhealth_interval = 1200\n\
         [limits]\nheartbeat_interval_secs = 300\nconnection_timeout_secs = 600\n",
    )
    .await;
    let pid = relay.pid();
    let mut limits = (0u64, 0u64);
    rlimit::prlimit(
        pid as i32,
        rlimit::Resource::NOFILE,
        None,
        Some((&mut limits.0, &mut limits.1)),
    )
    .unwrap();
    // Room for a few more descriptors, then accept fails.
    let room = 8;
    let soft = procfs::open_fds(pid) as u64 + room;
    rlimit::prlimit(
        pid as i32,
        rlimit::Resource::NOFILE,
        Some((soft, limits.1)),
        None,
    )
    .unwrap();
    let started = tokio::time::Instant::now();
    let mut idle = Vec::new();
    for _ in 0..room * 3 {
        // The kernel completes the TCP handshake whether or not the relay can accept.
        let stream = tokio::net::TcpStream::connect(relay.ws_addr).await;
        idle.push(stream.expect("the WebSocket port still listens"));
    }
    eventually(
        Duration::from_secs(10),
        "accept failures logged",
        || async { (logged_backoffs(&relay.log()).len() >= 8).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(relay.is_running(), "the relay survives failing accepts");
    // Free the descriptors: the relay accepts again.
    rlimit::prlimit(pid as i32, rlimit::Resource::NOFILE, Some(limits), None).unwrap();
    drop(idle);
    let stalled = started.elapsed();
    let (mut client, _) = Client::handshaken(relay.ws_addr, &[]).await;
    client
        .send_json(&serde_json::json!({"type":"ping","id":1}))
        .await;
    assert_eq!(client.recv_type("pong").await["id"], 1);

    let backoffs = logged_backoffs(&relay.log());
    assert_eq!(
        backoffs[..8],
        [5, 10, 20, 40, 80, 160, 320, 640],
        "the wait doubles from 5 ms"
    );
    assert!(
        backoffs
            .windows(2)
            .all(|w| w[1] == (w[0] * 2).min(1000) || w[1] == 5),
        "doubling up to 1 s (5 ms again after an accept): {backoffs:?}"
    );
    let text = relay.get_text("/metrics/prometheus").await;
    let errors = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("sdk_relay_ws_connections_refused_total{reason=\"accept_error\"} ")
        })
        .map(|v| v.parse::<u64>().unwrap())
        .expect("the accept_error series");
    assert_eq!(errors, backoffs.len() as u64, "each failure counted once");
    // 1.3 s for the first 8 failures, then at most one a second.
    let paced = 9 + stalled.as_secs() + 2;
    assert!(
        errors >= 8 && errors <= paced,
        "{errors} accept failures in {stalled:?}: backing off, not spinning"
    );
}

/// The relay's count of WebSocket connections refused for `reason`.
async fn refused_for(relay: &TestRelay, reason: &str) -> u64 {
    let exposition = get(relay.http_addr, "/metrics/prometheus").await.text();
    let prefix = format!("sdk_relay_ws_connections_refused_total{{reason=\"{reason}\"}} ");
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.parse().unwrap())
}

/// Proves `ws_connections_per_address_max` keeps one address from taking every
/// connection slot: with 50 slots and a cap of 40, 127.0.0.1 holds 40 handshaken
/// connections, its 41st upgrade is refused 503 + `Retry-After` (counted as refused
/// `per_address`), a wallet from 127.0.0.2 still connects and handshakes, and a closed
/// connection gives its address's slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection_slot() {
    let mut config = fast_config();
    config.limits.ws_connections_max = 50;
    config.limits.ws_connections_per_address_max = 40;
    let relay = TestRelay::start(config).await;
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(Client::handshaken(relay.ws_addr, &[]).await.0);
    }
    for _ in 0..20 {
        let (status, head) = raw_upgrade(relay.ws_addr).await;
        assert_eq!(status, 503, "{head}");
        assert!(
            head.to_ascii_lowercase().contains("retry-after: 5"),
            "{head}"
        );
    }
    assert_eq!(refused_for(&relay, "per_address").await, 20);
    assert_eq!(refused_for(&relay, "limit").await, 0, "slots were left");
    let (mut wallet, _) = Client::handshaken_from([127, 0, 0, 2], relay.ws_addr).await;
    wallet
        .send_json(&serde_json::json!({"type":"ping","id":7}))
        .await;
    assert_eq!(wallet.recv_type("pong").await["id"], 7);
    // A closed connection gives its address's slot back (once the relay saw the close).
    drop(held.pop());
    tokio::time::timeout(WAIT, async {
        while Client::connect(relay.ws_addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("127.0.0.1 connects again after closing one");
    drop(held);
    relay.shutdown().await;
}

/// Proves idle sockets from one address cannot fill the pre-upgrade pool (the
/// measured lock-out: ~2,000 idle sockets kept every wallet off the port): with
/// `ws_connections_max` = 1 the pool holds 1025, yet after 1,100 idle sockets from
/// 127.0.0.1 a wallet from 127.0.0.2 connects and handshakes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_one_address_do_not_lock_wallets_out() {
    raise_fd_limit();
    let mut config = fast_config();
    config.limits.ws_connections_max = 1;
    config.limits.heartbeat_interval_secs = 30;
    config.limits.connection_timeout_secs = 60;
    config.limits.upgrade_timeout_secs = 60;
    config.limits.ws_connections_per_address_max = 50;
    let relay = TestRelay::start(config).await;
    let mut idle = Vec::with_capacity(1100);
    for _ in 0..1100 {
        idle.push(tcp_from([127, 0, 0, 1], relay.ws_addr).await);
    }
    // Accepted in order: by the time this one is served, all of the idle ones were.
    let (mut wallet, _) = tokio::time::timeout(
        Duration::from_secs(2),
        Client::handshaken_from([127, 0, 0, 2], relay.ws_addr),
    )
    .await
    .expect("the wallet is served at once");
    wallet
        .send_json(&serde_json::json!({"type":"ping","id":1}))
        .await;
    assert_eq!(wallet.recv_type("pong").await["id"], 1);
    assert_eq!(refused_for(&relay, "per_address").await, 1050);
    assert_eq!(refused_for(&relay, "pending_upgrades").await, 0);
    drop(idle);
    relay.shutdown().await;
}

/// Reads until the relay closes the connection; how long that took from `started`.
async fn closed_after(
    stream: &mut tokio::net::TcpStream,
    started: tokio::time::Instant,
) -> Duration {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
    .expect("closed in time");
    started.elapsed()
}

/// Proves a connection that never sends its upgrade request is cut after
/// `upgrade_timeout_secs`, well before the connection timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_before_the_upgrade_is_cut_after_the_upgrade_timeout() {
    let mut config = fast_config();
    config.limits.connection_timeout_secs = 10;
    config.limits.upgrade_timeout_secs = 1;
    let timeout = Duration::from_secs(config.limits.upgrade_timeout_secs);
    let relay = TestRelay::start(config).await;
    // Started before the connection exists, so never after the relay's own deadline.
    let started = tokio::time::Instant::now();
    let mut idle = tcp_from([127, 0, 0, 1], relay.ws_addr).await;
    let elapsed = closed_after(&mut idle, started).await;
    assert!(
        (timeout - Duration::from_millis(250)..=timeout + Duration::from_millis(1500))
            .contains(&elapsed),
        "closed after {elapsed:?}; upgrade_timeout_secs is {timeout:?}"
    );
    relay.shutdown().await;
}
