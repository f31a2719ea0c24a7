//! A hostile peer: something that handshakes with capability `relay` (no mesh token is
//! configured) and then sends what no honest relay sends. Throughout, a bystander
//! wallet's pings and `GET /health` must each be answered within a second, and the relay
//! must keep serving honest clients.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::http_client;
use crate::support::{Client, TestRelay, WAIT, fast_config};

/// The requirement: every probe answered within this.
const RESPONSIVE: Duration = Duration::from_secs(1);

/// Resident and peak memory of this process (the relay runs in it), in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A bystander wallet pinging and `GET /health` polled, each timed, until stopped. They
/// run on a thread and runtime of their own: a relay that blocks its runtime's workers
/// cannot also stop the clock that measures it.
struct Probes {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, Duration, usize)>,
}

impl Probes {
    async fn start(relay: &TestRelay) -> Probes {
        let (ws, http) = (relay.ws_addr, relay.http_addr);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let (ready, started) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("probe runtime");
            runtime.block_on(async move {
                let (mut wallet, _) = Client::handshaken(ws, &[]).await;
                let _ = ready.send(());
                let (mut ping_max, mut health_max, mut rounds) =
                    (Duration::ZERO, Duration::ZERO, 0);
                let mut pinging = true;
                while !stopping.load(Ordering::Relaxed) {
                    if pinging {
                        let took = ping(&mut wallet).await;
                        ping_max = ping_max.max(took);
                        // Unanswered: the connection's state is unknown; stop pinging.
                        pinging = took < PING_GIVE_UP;
                    }
                    health_max = health_max.max(health(http).await);
                    rounds += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (ping_max, health_max, rounds)
            })
        });
        started.await.expect("the bystander connected");
        Probes { stop, thread }
    }

    /// Stops probing; asserts every probe was answered within `RESPONSIVE`.
    async fn finish(self, what: &str) {
        // Probe a little longer than the attack took, so it shows if it lasts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread;
        let (ping_max, health_max, rounds) = tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("joined")
            .expect("probes ran");
        let (rss, hwm) = memory_kib();
        eprintln!(
            "[{what}] slowest ping {ping_max:?}, slowest GET /health {health_max:?} over \
             {rounds} rounds; VmRSS {rss} KiB, VmHWM {hwm} KiB"
        );
        assert!(rounds > 0, "[{what}] probed at least once");
        assert!(ping_max < RESPONSIVE, "[{what}] ping took {ping_max:?}");
        assert!(
            health_max < RESPONSIVE,
            "[{what}] GET /health took {health_max:?}"
        );
    }
}

/// A ping unanswered this long is reported as taking this long (the client's own reads
/// give up at `WAIT`).
const PING_GIVE_UP: Duration = Duration::from_secs(9);

/// How long a ping took to be answered (`PING_GIVE_UP` if it was not).
async fn ping(wallet: &mut Client) -> Duration {
    let start = Instant::now();
    let answered = tokio::time::timeout(PING_GIVE_UP, async {
        wallet.send_json(&json!({"type":"ping"})).await;
        wallet.recv_type("pong").await
    })
    .await;
    if answered.is_err() {
        return PING_GIVE_UP;
    }
    start.elapsed()
}

/// How long `GET /health` took to be answered, however long that is (up to a minute).
async fn health(http: SocketAddr) -> Duration {
    let start = Instant::now();
    let request = async {
        let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
        let head = format!("GET /health HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read");
        http_client::parse(&raw)
    };
    let reply = tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .expect("GET /health answered within a minute");
    assert!(
        reply.status == 200 || reply.status == 503,
        "{}",
        reply.status
    );
    start.elapsed()
}

/// A fake relay, linked to the relay under test.
async fn hostile_peer(relay: &TestRelay, relay_id: &str) -> Client {
    let mut peer = Client::connect(relay.ws_addr)
        .await
        .expect("upgrade accepted");
    peer.send_json(&json!({
        "type": "handshake", "client_id": relay_id, "version": sdk_relay::protocol::VERSION,
        "capabilities": ["relay"], "relay_id": relay_id, "address": "127.0.0.1:9",
    }))
    .await;
    let response = peer.recv_type("handshake_response").await;
    assert_eq!(response["status"], "accepted", "{response}");
    peer
}

fn notification(id: &str, data: Value) -> Value {
    json!({
        "type": "notification", "message_id": id, "relay_id": "evil",
        "notification_type": "t", "data": data, "timestamp": 1,
    })
}

fn state_sync(message_id: &str, log: Value) -> Value {
    json!({
        "type": "sync", "sync_type": "StateSync", "relay_id": "evil",
        "message_id": message_id, "payload": {"log": log}, "timestamp": 1,
    })
}

/// Reads what the relay sends the peer until it closes the link or `until` holds;
/// returns the messages and the close code.
async fn read_until(
    peer: &mut Client,
    for_at_most: Duration,
    until: impl Fn(&[Value]) -> bool,
) -> (Vec<Value>, Option<u16>) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + for_at_most;
    while Instant::now() < deadline {
        match peer.recv().await {
            Ok(message) => {
                seen.push(message);
                if until(&seen) {
                    return (seen, None);
                }
            }
            Err(code) => return (seen, code),
        }
    }
    (seen, None)
}

/// The last `/sync/status` errors, as text.
async fn sync_errors(relay: &TestRelay) -> String {
    http_client::get(relay.http_addr, "/sync/status")
        .await
        .json()["errors"]
        .to_string()
}

/// A StateSync whose summary repeats, thousands of times, a range of ids the relay has
/// seen: before summaries were validated, each repeat cost ten thousand lookups under
/// the mesh mutex. The link is cut (1008) and the reason recorded; nobody waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_summary_repeating_a_range_is_refused_without_stalling_the_relay() {
    let relay = TestRelay::start(fast_config()).await;
    let probes = Probes::start(&relay).await;
    let mut peer = hostile_peer(&relay, "evil").await;
    const SEEN: u64 = 10_000;
    for seq in 1..=SEEN {
        peer.send_json(&notification(&format!("evil-1-{seq}"), json!({})))
            .await;
    }
    let ranges: Vec<(u64, u64)> = vec![(1, SEEN); 5_000];
    peer.send_json(&state_sync(
        "evil-s1",
        json!([{"stream": "evil-1", "ranges": ranges}]),
    ))
    .await;
    let (_, code) = read_until(&mut peer, WAIT, |_| false).await;
    probes.finish("repeated ranges").await;
    assert_eq!(code, Some(1008), "the link is cut as a policy violation");
    let errors = sync_errors(&relay).await;
    assert!(errors.contains("log summary"), "{errors}");
    // Honest clients are still served.
    let (mut wallet, _) = Client::handshaken(relay.ws_addr, &[]).await;
    wallet.send_json(&json!({"type":"ping"})).await;
    wallet.recv_type("pong").await;
    relay.shutdown().await;
}

/// Every malformed summary is refused with 1008 and a recorded reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_summaries_cut_the_link_and_say_why() {
    let relay = TestRelay::start(fast_config()).await;
    let long = "x".repeat(300);
    let too_many: Vec<(u64, u64)> = (0..2_000u64).map(|i| (2 * i, 2 * i)).collect();
    let streams: Vec<Value> = (0..2_000)
        .map(|i| json!({"stream": format!("s{i}-1"), "ranges": [[1, 1]]}))
        .collect();
    let cases = [
        (
            "unsorted",
            json!([{"stream": "a-1", "ranges": [[5, 6], [1, 2]]}]),
        ),
        (
            "overlapping",
            json!([{"stream": "a-1", "ranges": [[1, 5], [5, 6]]}]),
        ),
        ("lo > hi", json!([{"stream": "a-1", "ranges": [[7, 6]]}])),
        (
            "too many ranges",
            json!([{"stream": "a-1", "ranges": too_many}]),
        ),
        ("too many streams", Value::Array(streams)),
        ("long stream", json!([{"stream": long, "ranges": [[1, 1]]}])),
        (
            "repeated stream",
            json!([{"stream": "a-1", "ranges": [[1, 1]]}, {"stream": "a-1", "ranges": [[3, 3]]}]),
        ),
    ];
    for (i, (what, log)) in cases.into_iter().enumerate() {
        let mut peer = hostile_peer(&relay, &format!("evil{i}")).await;
        peer.send_json(&state_sync(&format!("evil-s{i}"), log))
            .await;
        let (_, code) = read_until(&mut peer, WAIT, |_| false).await;
        assert_eq!(code, Some(1008), "{what}: the link is cut");
    }
    let errors = sync_errors(&relay).await;
    assert!(errors.contains("log summary"), "{errors}");
    relay.shutdown().await;
}

/// A valid summary naming a range of a trillion ids costs what its ranges cost, not
/// what its ids would: the relay asks for at most 512 distinct ids and stays responsive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_valid_range_is_fetched_in_bounded_steps() {
    let relay = TestRelay::start(fast_config()).await;
    let probes = Probes::start(&relay).await;
    let mut peer = hostile_peer(&relay, "evil").await;
    let ranges: Vec<(u64, u64)> = (0..1024u64)
        .map(|i| (i * 1_000_000_000_000 + 1, (i + 1) * 1_000_000_000_000 - 1))
        .collect();
    peer.send_json(&state_sync(
        "evil-s1",
        json!([{"stream": "evil-1", "ranges": ranges}]),
    ))
    .await;
    let (seen, code) = read_until(&mut peer, WAIT, |seen| {
        seen.last().is_some_and(|m| m["type"] == "fetch")
    })
    .await;
    probes.finish("huge valid range").await;
    assert_eq!(code, None, "a valid summary keeps the link");
    let fetch = seen.last().expect("a fetch");
    let ids = fetch["message_ids"].as_array().expect("ids");
    let distinct: std::collections::HashSet<_> = ids.iter().collect();
    assert!(!ids.is_empty() && ids.len() <= 512, "{}", ids.len());
    assert_eq!(distinct.len(), ids.len(), "no id asked twice");
    relay.shutdown().await;
}

/// One small fetch naming a large notification 512 times is answered once; a fetch of
/// many large notifications is answered up to the byte budget. The hostile peer never
/// reads, so whatever the relay queues for it stays in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_is_answered_once_per_id_and_within_a_byte_budget() {
    let relay = TestRelay::start(fast_config()).await;
    let probes = Probes::start(&relay).await;
    let mut peer = hostile_peer(&relay, "evil").await;
    let big = "x".repeat(1_000_000);
    for seq in 1..=8 {
        peer.send_json(&notification(&format!("evil-1-{seq}"), json!(big)))
            .await;
    }
    let (rss_before, _) = memory_kib();
    let repeated = vec!["evil-1-1"; 512];
    peer.send_json(&json!({"type": "fetch", "message_ids": repeated}))
        .await;
    let all: Vec<String> = (1..=8).map(|s| format!("evil-1-{s}")).collect();
    peer.send_json(&json!({"type": "fetch", "message_ids": all}))
        .await;
    // Let the relay handle both, then measure before reading anything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rss_after, _) = memory_kib();
    eprintln!(
        "[fetch] VmRSS before the fetches {rss_before} KiB, after {rss_after} KiB \
         (+{} KiB)",
        rss_after.saturating_sub(rss_before)
    );
    // The relay's own syncs and pings keep arriving, so reading never waits long.
    let (seen, _) = read_until(&mut peer, Duration::from_secs(3), |_| false).await;
    probes.finish("fetch").await;
    let answered: Vec<&str> = seen
        .iter()
        .filter(|m| m["type"] == "notification")
        .filter_map(|m| m["message_id"].as_str())
        .collect();
    let first = answered.iter().take_while(|id| **id == "evil-1-1").count();
    assert!(first <= 2, "evil-1-1 answered {first} times to one fetch");
    let budget = sdk_relay::mesh::FETCH_ANSWER_BYTES_MAX;
    let rest = answered.len() - first;
    assert!(
        rest >= 1 && rest * 1_000_000 <= budget,
        "{rest} notifications of 1 MB answered to one fetch (budget {budget} bytes)"
    );
    relay.shutdown().await;
}

/// A peer sending sync requests far faster than honest relays do gets the excess
/// unanswered and, persisting, is cut with 1008.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_flood_is_answered_up_to_the_rate_then_cut() {
    let relay = TestRelay::start(fast_config()).await;
    let probes = Probes::start(&relay).await;
    let mut peer = hostile_peer(&relay, "evil").await;
    const SENT: usize = 200;
    for i in 0..SENT {
        peer.send_json(&json!({
            "type": "sync", "sync_type": "HealthSync", "relay_id": "evil",
            "message_id": format!("evil-h{i}"), "payload": {}, "timestamp": 1,
        }))
        .await;
    }
    let (seen, code) = read_until(&mut peer, WAIT, |seen| {
        seen.iter().filter(|m| m["type"] == "sync_response").count() == SENT
    })
    .await;
    probes.finish("sync flood").await;
    let answered = seen.iter().filter(|m| m["type"] == "sync_response").count();
    let max = sdk_relay::mesh::SYNC_REQUESTS_PER_INTERVAL_MAX;
    assert!(answered <= max, "{answered} of {SENT} answered");
    assert_eq!(code, Some(1008), "a persistent flood is cut");
    let errors = sync_errors(&relay).await;
    assert!(errors.contains("sync requests"), "{errors}");
    relay.shutdown().await;
}

/// A peer forwarding 200 distinct notifications of ~1 MB each (the most a frame carries)
/// to a relay whose notification log may hold 16 MiB: the log keeps only the newest that
/// fit (before the byte budget it kept all 200, ~200 MB, as its count bound allows
/// 10,000), memory stays near that, the relay stays responsive, and an honest subscriber
/// still receives every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_notifications_stay_within_the_log_byte_budget() {
    const SENT: u64 = 200;
    const DATA_BYTES: usize = 1_000_000;
    const LOG_BYTES_MAX: usize = 16 << 20;
    let mut config = fast_config();
    config.limits.notification_log_bytes_max = LOG_BYTES_MAX;
    let relay = TestRelay::start(config).await;
    let (mut subscriber, _) = Client::handshaken(relay.ws_addr, &["notifications"]).await;
    let probes = Probes::start(&relay).await;
    let mut peer = hostile_peer(&relay, "evil").await;
    let (rss_before, _) = memory_kib();
    let received =
        tokio::spawn(async move { subscriber.recv_notification_ids(SENT as usize).await });
    let big = "x".repeat(DATA_BYTES);
    for seq in 1..=SENT {
        peer.send_json(&notification(&format!("evil-1-{seq}"), json!(big)))
            .await;
    }
    let ids = tokio::time::timeout(Duration::from_secs(120), received)
        .await
        .expect("the subscriber received them in time")
        .expect("the subscriber's task");
    let expected: Vec<String> = (1..=SENT).map(|s| format!("evil-1-{s}")).collect();
    assert_eq!(
        ids, expected,
        "the subscriber got every notification, in order"
    );
    let (rss_after, hwm) = memory_kib();
    // What the log holds, from the first summary the relay sends its peer naming the
    // newest notification.
    let newest = format!(",{SENT}]");
    let (seen, _) = read_until(&mut peer, WAIT, |seen| {
        seen.last().is_some_and(|m| {
            m["sync_type"] == "StateSync" && m["payload"]["log"].to_string().contains(&newest)
        })
    })
    .await;
    probes.finish("large notifications").await;
    let log = &seen.last().expect("a StateSync")["payload"]["log"];
    let logged: u64 = log
        .as_array()
        .expect("a log summary")
        .iter()
        .filter(|s| s["stream"] == "evil-1")
        .flat_map(|s| s["ranges"].as_array().cloned().unwrap_or_default())
        .map(|r| r[1].as_u64().unwrap() - r[0].as_u64().unwrap() + 1)
        .sum();
    eprintln!(
        "[log bytes] {logged} of {SENT} notifications of {DATA_BYTES} bytes logged; VmRSS \
         before {rss_before} KiB, after {rss_after} KiB (+{} KiB), VmHWM {hwm} KiB",
        rss_after.saturating_sub(rss_before)
    );
    assert!(logged >= 1, "the newest notification is logged: {log}");
    assert!(
        logged as usize * DATA_BYTES <= LOG_BYTES_MAX,
        "{logged} notifications of {DATA_BYTES} bytes logged (budget {LOG_BYTES_MAX} bytes)"
    );
    // Generous: the 16 MiB log, frames in flight and allocator slack, far below the
    // ~200 MB an unbounded log holds.
    let growth_kib = rss_after.saturating_sub(rss_before);
    assert!(
        growth_kib < 120 * 1024,
        "VmRSS grew by {growth_kib} KiB for a 16 MiB log"
    );
    relay.shutdown().await;
}
