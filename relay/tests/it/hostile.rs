//! A hostile peer: a relay that completes the handshake with a key of its own (the mesh
//! is open: no trusted keys, no mesh token) and then sends what no honest relay sends. Throughout, a bystander
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
use crate::support::cluster::RelayProcess;
use crate::support::{Client, TestRelay, WAIT, fast_config, peer};

/// The requirement: every probe answered within this. A stalled relay leaves a probe
/// unanswered for the whole attack (or `PING_GIVE_UP`); the bound is loose enough that a
/// busy shared machine does not pass for a stall.
const RESPONSIVE: Duration = Duration::from_secs(3);

/// `fast_config()` for a relay process of its own (what the memory tests start, so the
/// memory they read is the relay's alone); ends inside `[limits]`.
const FAST_TOML: &str = "[sync]\ninterval = 1\nhealth_interval = 2\n\
    [limits]\nheartbeat_interval_secs = 1\nconnection_timeout_secs = 3\n";

/// Resident and peak memory of process `pid` (this one, for a relay that runs in it), in
/// KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
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
    /// The relay's process, whose memory the report shows.
    pid: u32,
}

impl Probes {
    /// Probes a relay running in this process.
    async fn start(relay: &TestRelay) -> Probes {
        Probes::at(relay.ws_addr, relay.http_addr, std::process::id()).await
    }

    async fn at(ws: SocketAddr, http: SocketAddr, pid: u32) -> Probes {
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
        Probes { stop, thread, pid }
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
        let (rss, hwm) = memory_kib(self.pid);
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

/// A fake relay, linked to the relay under test (its key derived from its id).
async fn hostile_peer(relay: &TestRelay, relay_id: &str) -> Client {
    let identity = peer::identity_of(relay_id);
    peer::join(relay.ws_addr, &peer::Claim::honest(relay_id, &identity))
        .await
        .expect("the handshake is accepted")
}

/// A notification of the fake relay `evil`'s stream, signed with its key.
fn notification(id: &str, data: Value) -> Value {
    peer::signed_notification(&peer::identity_of("evil"), "evil", id, data)
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
        peer.send_json(&notification(&format!("evil-00000001-{seq}"), json!({})))
            .await;
    }
    let ranges: Vec<(u64, u64)> = vec![(1, SEEN); 5_000];
    peer.send_json(&state_sync(
        "evil-s1",
        json!([{"stream": "evil-00000001", "ranges": ranges}]),
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
        json!([{"stream": "evil-00000001", "ranges": ranges}]),
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
        peer.send_json(&notification(&format!("evil-00000001-{seq}"), json!(big)))
            .await;
    }
    let (rss_before, _) = memory_kib(std::process::id());
    let repeated = vec!["evil-00000001-1"; 512];
    peer.send_json(&json!({"type": "fetch", "message_ids": repeated}))
        .await;
    let all: Vec<String> = (1..=8).map(|s| format!("evil-00000001-{s}")).collect();
    peer.send_json(&json!({"type": "fetch", "message_ids": all}))
        .await;
    // Let the relay handle both, then measure before reading anything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (rss_after, _) = memory_kib(std::process::id());
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
    let first = answered
        .iter()
        .take_while(|id| **id == "evil-00000001-1")
        .count();
    assert!(
        first <= 2,
        "evil-00000001-1 answered {first} times to one fetch"
    );
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
/// still receives every one. The relay runs as a process of its own: the memory measured
/// is its alone, not that of the other tests running beside this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_notifications_stay_within_the_log_byte_budget() {
    const SENT: u64 = 200;
    const DATA_BYTES: usize = 1_000_000;
    const LOG_BYTES_MAX: usize = 16 << 20;
    let relay = RelayProcess::start(
        "relay-log",
        "",
        &format!("{FAST_TOML}notification_log_bytes_max = {LOG_BYTES_MAX}\n"),
    )
    .await;
    let (mut subscriber, _) = Client::handshaken(relay.ws_addr, &["notifications"]).await;
    let probes = Probes::at(relay.ws_addr, relay.http_addr, relay.pid()).await;
    let evil = peer::identity_of("evil");
    let mut peer = peer::join(relay.ws_addr, &peer::Claim::honest("evil", &evil))
        .await
        .expect("the handshake is accepted");
    let (rss_before, _) = memory_kib(relay.pid());
    let received =
        tokio::spawn(async move { subscriber.recv_notification_ids(SENT as usize).await });
    let big = "x".repeat(DATA_BYTES);
    for seq in 1..=SENT {
        peer.send_json(&notification(&format!("evil-00000001-{seq}"), json!(big)))
            .await;
    }
    let ids = tokio::time::timeout(Duration::from_secs(120), received)
        .await
        .expect("the subscriber received them in time")
        .expect("the subscriber's task");
    let expected: Vec<String> = (1..=SENT).map(|s| format!("evil-00000001-{s}")).collect();
    assert_eq!(
        ids, expected,
        "the subscriber got every notification, in order"
    );
    let (rss_after, hwm) = memory_kib(relay.pid());
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
        .filter(|s| s["stream"] == "evil-00000001")
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
}
/// A hostile peer with its own relay id and advertised address in the handshake.
async fn handshake_as(ws: SocketAddr, relay_id: &str, address: &str) -> (Client, Value) {
    let identity = peer::identity_of(relay_id);
    let claim = peer::Claim {
        address,
        ..peer::Claim::honest(relay_id, &identity)
    };
    let client = peer::join(ws, &claim)
        .await
        .expect("the handshake is accepted");
    (client, Value::Null)
}

/// A StateSync gossiping membership `records`, sent as an unsolicited response (the
/// relay answers nothing, so a peer that never reads does not pile answers up in
/// memory).
fn gossip_message(n: usize, records: &[Value]) -> Value {
    json!({
        "type": "sync_response", "sync_type": "StateSync", "relay_id": "evil",
        "request_id": format!("evil-g{n}"), "payload": {"records": records}, "timestamp": 1,
    })
}

/// A membership record of `relay_id` at `address`, signed now by its own (test) key.
fn gossip_record(relay_id: &str, address: &str) -> Value {
    peer::record(
        &peer::identity_of(relay_id),
        relay_id,
        address,
        peer::unix_ms(),
    )
}

/// A gauge or counter from the Prometheus exposition (summed over its labels).
async fn metric(http: SocketAddr, name: &str) -> Option<f64> {
    let text = http_client::get(http, "/metrics/prometheus").await.text();
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Whether `/relays` on `relay` shows `relay_id` connected.
async fn connected_to(relay: &TestRelay, relay_id: &str) -> bool {
    let relays = http_client::get(relay.http_addr, "/relays").await.json();
    relays
        .as_array()
        .or_else(|| relays["relays"].as_array())
        .is_some_and(|list| {
            list.iter()
                .any(|r| r["relay_id"] == relay_id && r["connected"] == true)
        })
}

/// A handshake naming an over-long relay id or address is refused (the wallet server's
/// handshake parser bounds both, and the mesh checks again); the longest bounded ones
/// (a 128-byte id, a 255-byte host name and a port) are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_with_an_over_long_id_or_address_is_refused() {
    let relay = TestRelay::start(fast_config()).await;
    let accepted = |relay_id: String, address: String| {
        let ws = relay.ws_addr;
        async move {
            let identity = peer::identity_of("evil");
            let claim = peer::Claim {
                address: &address,
                ..peer::Claim::honest(&relay_id, &identity)
            };
            let outcome = peer::join(ws, &claim).await;
            eprintln!("[handshake] {:?}", outcome.as_ref().err());
            outcome.is_ok()
        }
    };
    let long_id = "r".repeat(sdk_relay::protocol::NAME_BYTES_MAX + 1);
    assert!(!accepted(long_id, "127.0.0.1:9".into()).await, "long id");
    let long_address = format!("{}:65535", "a".repeat(256));
    assert!(!accepted("evil".into(), long_address).await, "long address");
    let id = "r".repeat(sdk_relay::protocol::NAME_BYTES_MAX);
    // A 255-byte host name and a port: the longest address allowed.
    let address = format!("{}:65535", "a".repeat(255));
    assert!(accepted(id, address).await, "bounded id and address");
    relay.shutdown().await;
}

/// A hostile peer gossips relays with 60 KB addresses, then fills the member table with
/// records as long as the bounds allow. The relay drops (and counts) the first, and its
/// own StateSync, to an honest peer or answering a 100-byte request, stays within what
/// its peers accept: the honest link keeps carrying notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_gossip_is_dropped_and_state_sync_fits_the_peers_limit() {
    const MESSAGE_MAX: usize = 64 * 1024;
    let limit = MESSAGE_MAX + sdk_relay::mesh::PEER_ENVELOPE_SLACK_BYTES;
    let mut config = fast_config();
    config.relay_id = "relay-a".into();
    config.limits.ws_message_bytes_max = MESSAGE_MAX;
    let relay = TestRelay::start(config).await;
    let mut config = fast_config();
    config.relay_id = "relay-b".into();
    config.limits.ws_message_bytes_max = MESSAGE_MAX;
    config.mesh.peers = vec![relay.ws_addr.to_string()];
    let honest = TestRelay::start(config).await;
    let probes = Probes::start(&relay).await;
    let started = Instant::now();
    while !connected_to(&relay, "relay-b").await {
        assert!(started.elapsed() < WAIT, "the honest relay links");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut peer, _) = handshake_as(relay.ws_addr, "evil", "127.0.0.1:9").await;
    let (rss_before, _) = memory_kib(std::process::id());
    // Twenty relays with 60 KB addresses, two per message.
    for n in 0..10 {
        let relays: Vec<Value> = (0..2)
            .map(|i| {
                let address = format!("{}:1", "h".repeat(60_000));
                gossip_record(&format!("fat-{n}-{i}"), &address)
            })
            .collect();
        peer.send_json(&gossip_message(n, &relays)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A full table of the longest records the bounds allow (an over-long DNS label, so
    // nothing resolves them), 150 a message (each ~700 bytes, signed).
    let id_max = sdk_relay::protocol::NAME_BYTES_MAX;
    for n in 0..7 {
        let relays: Vec<Value> = (0..150)
            .map(|i| {
                let id = format!("{n:03}-{i:03}-{}", "i".repeat(id_max - 8));
                let address = format!("{}-{n:03}-{i:03}:65535", "a".repeat(255 - 8));
                gossip_record(&id, &address)
            })
            .collect();
        peer.send_json(&gossip_message(10 + n, &relays)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A small request: its answer is bounded, whatever the table holds.
    let request = json!({
        "type": "sync", "sync_type": "StateSync", "relay_id": "evil",
        "message_id": "evil-small", "payload": {}, "timestamp": 1,
    });
    let request_bytes = request.to_string().len();
    peer.send_json(&request).await;
    let (seen, _) = read_until(&mut peer, WAIT, |seen| {
        seen.last().is_some_and(|m| m["request_id"] == "evil-small")
    })
    .await;
    let answer = seen.last().expect("answered");
    assert_eq!(answer["request_id"], "evil-small", "answered");
    let answer_bytes = answer.to_string().len();
    let relays = answer["payload"]["relays"].as_array().expect("gossip");
    let (rss_after, _) = memory_kib(std::process::id());
    eprintln!(
        "[oversized gossip] a {request_bytes}-byte request answered with {answer_bytes} bytes \
         ({} relays, x{}); peer limit {limit}; VmRSS {rss_before} -> {rss_after} KiB",
        relays.len(),
        answer_bytes / request_bytes
    );
    assert!(answer_bytes <= limit, "{answer_bytes} > {limit}");
    assert!(relays.len() <= sdk_relay::mesh::GOSSIP_RELAYS_MAX);
    assert!(
        relays
            .iter()
            .all(|r| r["address"].as_str().unwrap().len() <= 261),
        "no over-long address gossiped"
    );
    // The honest link still carries notifications (both ways of StateSync fit).
    let (mut subscriber, _) = Client::handshaken(honest.ws_addr, &["notifications"]).await;
    let (mut publisher, _) = Client::handshaken(relay.ws_addr, &["publish"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let id = publisher.publish("payment_detected", json!({"x": 1})).await;
    let ids = tokio::time::timeout(WAIT, subscriber.recv_notification_ids(1))
        .await
        .expect("the notification crossed the honest link");
    assert_eq!(ids, [id]);
    assert!(
        connected_to(&relay, "relay-b").await,
        "the honest link is up"
    );
    probes.finish("oversized gossip").await;
    let errors = sync_errors(&relay).await;
    assert!(
        errors.contains("refused (bounds, signature, key)"),
        "{errors}"
    );
    let rejected = metric(relay.http_addr, "sdk_relay_mesh_rejected_total").await;
    assert!(rejected.unwrap_or(0.0) >= 20.0, "{rejected:?}");
    honest.shutdown().await;
    relay.shutdown().await;
}

/// A peer gossips fresh fake relays for 15 s (20,000 of them, at closed ports): the
/// member table stays bounded, and so does the dial table (pruned to addresses still
/// known), so memory is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_gossip_keeps_the_dial_table_bounded() {
    let relay = RelayProcess::start("relay-gossip", "", FAST_TOML).await;
    let probes = Probes::at(relay.ws_addr, relay.http_addr, relay.pid()).await;
    let (mut peer, _) = handshake_as(relay.ws_addr, "evil", "127.0.0.1:9").await;
    let (rss_before, _) = memory_kib(relay.pid());
    let mut dial_max = 0.0f64;
    let mut sent = 0usize;
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(15) {
        let relays: Vec<Value> = (0..200)
            .map(|_| {
                sent += 1;
                let address = format!(
                    "127.{}.{}.{}:1",
                    sent >> 16 & 255,
                    sent >> 8 & 255,
                    sent & 255
                );
                gossip_record(&format!("fake-{sent}"), &address)
            })
            .collect();
        peer.send_json(&gossip_message(n, &relays)).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(150)).await;
        if n % 10 == 0 {
            dial_max = dial_max.max(
                metric(relay.http_addr, "sdk_relay_mesh_dial_addresses")
                    .await
                    .unwrap_or(f64::MAX),
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dials = metric(relay.http_addr, "sdk_relay_mesh_dial_addresses").await;
    let known = metric(relay.http_addr, "sdk_relay_mesh_known_relays").await;
    let (rss_after, hwm) = memory_kib(relay.pid());
    eprintln!(
        "[rotating gossip] {sent} fake relays gossiped; dial table {dials:?} (max seen \
         {dial_max}), known relays {known:?}; VmRSS {rss_before} -> {rss_after} KiB \
         (VmHWM {hwm} KiB)"
    );
    probes.finish("rotating gossip").await;
    let bound = (sdk_relay::mesh::KNOWN_RELAYS_MAX + 32) as f64;
    let dials = dials.expect("the dial table is exposed");
    assert!(
        dials <= bound && dial_max <= bound,
        "{dials} / {dial_max} > {bound}"
    );
    assert!(known.unwrap() <= (sdk_relay::mesh::KNOWN_RELAYS_MAX + 1) as f64);
    assert!(
        rss_after.saturating_sub(rss_before) < 200 * 1024,
        "VmRSS grew by {} KiB",
        rss_after - rss_before
    );
}

/// Listeners that accept and never answer: a dial to them holds its slot until it times
/// out. Returns 1024 addresses that sort before any `127.0.0.1:PORT`.
async fn tarpits() -> (Vec<String>, Vec<tokio::task::JoinHandle<()>>) {
    let mut ports = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
            .await
            .expect("bind");
        ports.push(listener.local_addr().unwrap().port());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        }));
    }
    let ips = (10..=19).chain(100..=199);
    let addresses = ips
        .flat_map(|ip| ports.iter().map(move |port| format!("127.0.0.{ip}:{port}")))
        .take(1024)
        .collect();
    (addresses, tasks)
}

/// 1024 gossiped tarpit addresses that sort before a genuine peer must not hold every
/// dial slot: when the genuine peer's link is cut, it is redialed within a few sync
/// intervals. (The genuine peer cannot dial back: the relay advertises an address
/// nobody listens on.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarpit_addresses_do_not_keep_a_genuine_peer_from_being_redialed() {
    let mut config = fast_config();
    config.relay_id = "relay-b".into();
    // A key the test knows, so it can gossip relay-b's record at the proxy's address
    // (relays learn addresses only from records their subject signed).
    config.mesh.key_file = Some(peer::write_key_file(&config.data_dir, "relay-b"));
    let genuine = TestRelay::start(config).await;
    let proxy = crate::support::cluster::Proxy::start(genuine.ws_addr).await;
    let mut config = fast_config();
    config.relay_id = "relay-z".into();
    config.advertise_addr = Some("127.0.0.1:9".into());
    let relay = TestRelay::start(config).await;
    let probes = Probes::start(&relay).await;
    let (mut peer, _) = handshake_as(relay.ws_addr, "evil", "127.0.0.1:9").await;
    peer.send_json(&gossip_message(
        0,
        &[gossip_record("relay-b", &proxy.addr.to_string())],
    ))
    .await;
    let started = Instant::now();
    while !connected_to(&relay, "relay-b").await {
        assert!(started.elapsed() < WAIT, "the genuine peer is dialed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (addresses, tasks) = tarpits().await;
    let relays: Vec<Value> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| gossip_record(&format!("tarpit-{i:04}"), a))
        .collect();
    peer.send_json(&gossip_message(1, &relays)).await;
    // Let the tarpits take the dial slots, then cut the genuine link.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.cut();
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut relinked = None;
    while cut.elapsed() < Duration::from_secs(15) {
        if connected_to(&relay, "relay-b").await {
            relinked = Some(cut.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dials = metric(relay.http_addr, "sdk_relay_mesh_dial_addresses").await;
    eprintln!("[tarpits] genuine peer relinked after {relinked:?}; dial table {dials:?}");
    probes.finish("tarpits").await;
    let relinked = relinked.expect("the genuine peer is redialed within 15 s");
    assert!(
        relinked < Duration::from_secs(5),
        "relinked after {relinked:?}, more than a few sync intervals"
    );
    for task in tasks {
        task.abort();
    }
    relay.shutdown().await;
    genuine.shutdown().await;
}

/// A 100-byte sync request is answered within the gossip byte budget even with a full
/// member table of the longest records allowed (default limits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_sync_request_gets_a_bounded_answer_from_a_full_table() {
    let relay = TestRelay::start(fast_config()).await;
    let probes = Probes::start(&relay).await;
    let (mut peer, _) = handshake_as(relay.ws_addr, "evil", "127.0.0.1:9").await;
    let id_max = sdk_relay::protocol::NAME_BYTES_MAX;
    for n in 0..5 {
        let relays: Vec<Value> = (0..220)
            .map(|i| {
                let id = format!("{n:03}-{i:03}-{}", "i".repeat(id_max - 8));
                let address = format!("{}-{n:03}-{i:03}:65535", "a".repeat(255 - 8));
                gossip_record(&id, &address)
            })
            .collect();
        peer.send_json(&gossip_message(n, &relays)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let request = json!({
        "type": "sync", "sync_type": "StateSync", "relay_id": "evil",
        "message_id": "evil-small", "payload": {}, "timestamp": 1,
    });
    let request_bytes = request.to_string().len();
    peer.send_json(&request).await;
    let (seen, _) = read_until(&mut peer, WAIT, |seen| {
        seen.last().is_some_and(|m| m["request_id"] == "evil-small")
    })
    .await;
    probes.finish("full table").await;
    let answer = seen.last().expect("answered");
    assert_eq!(answer["request_id"], "evil-small");
    let relays = answer["payload"]["relays"].as_array().expect("gossip");
    let gossip_bytes = answer["payload"]["relays"].to_string().len();
    let answer_bytes = answer.to_string().len();
    eprintln!(
        "[full table] {request_bytes}-byte request: {answer_bytes}-byte answer, {} relays in \
         {gossip_bytes} bytes (x{})",
        relays.len(),
        answer_bytes / request_bytes
    );
    assert!(relays.len() <= sdk_relay::mesh::GOSSIP_RELAYS_MAX);
    assert!(
        gossip_bytes <= sdk_relay::mesh::GOSSIP_BYTES_MAX,
        "{gossip_bytes}"
    );
    relay.shutdown().await;
}

/// Forwarded notifications naming an over-long message id or type, fetch ids and sync
/// request ids over their bound are dropped and counted; what is bounded still flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_notification_and_fetch_ids_are_dropped() {
    let relay = TestRelay::start(fast_config()).await;
    let probes = Probes::start(&relay).await;
    let (mut subscriber, _) = Client::handshaken(relay.ws_addr, &["notifications"]).await;
    let mut peer = hostile_peer(&relay, "evil").await;
    let long_id = format!("evil-00000001-{}", "9".repeat(300));
    peer.send_json(&notification(&long_id, json!({}))).await;
    let mut long_type = notification("evil-00000001-2", json!({}));
    long_type["notification_type"] = json!("t".repeat(200));
    peer.send_json(&long_type).await;
    peer.send_json(&notification("evil-00000001-3", json!({})))
        .await;
    let ids = tokio::time::timeout(WAIT, subscriber.recv_notification_ids(1))
        .await
        .expect("the bounded notification is delivered");
    assert_eq!(ids, ["evil-00000001-3"], "only the bounded notification");
    peer.send_json(&json!({"type": "fetch", "message_ids": [long_id, "evil-00000001-3"]}))
        .await;
    peer.send_json(&json!({
        "type": "sync", "sync_type": "HealthSync", "relay_id": "evil",
        "message_id": "m".repeat(300), "payload": {}, "timestamp": 1,
    }))
    .await;
    let (seen, _) = read_until(&mut peer, Duration::from_secs(2), |_| false).await;
    probes.finish("long ids").await;
    let fetched: Vec<&Value> = seen
        .iter()
        .filter(|m| m["type"] == "notification")
        .collect();
    assert_eq!(fetched.len(), 1, "only the bounded id is answered");
    assert!(
        !seen
            .iter()
            .any(|m| m["request_id"].as_str().is_some_and(|r| r.len() > 256)),
        "a sync request with an over-long id is left unanswered"
    );
    let rejected = metric(relay.http_addr, "sdk_relay_mesh_rejected_total").await;
    assert!(rejected.unwrap_or(0.0) >= 4.0, "{rejected:?}");
    relay.shutdown().await;
}
