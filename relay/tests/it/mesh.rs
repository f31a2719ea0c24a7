//! The mesh with relays as separate processes on loopback: discovery from seeds, flooding
//! exactly once, health of a killed relay, repair after a partition, forced sync.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::Client;
use crate::support::cluster::{Proxy, RelayProcess, eventually};
use serde_json::json;

/// Short intervals: sync every second, so health thresholds are 2 s and 3 s.
const FAST: &str = "[sync]\ninterval = 1\nhealth_interval = 2\n[limits]\nheartbeat_interval_secs = 1\nconnection_timeout_secs = 3\n";

fn peers(addrs: &[String]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[mesh]\npeers = [{}]\n", list.join(", "))
}

/// Starts relays r1..rN configured as a chain: each knows only the next.
async fn chain(n: usize, extra: &str) -> Vec<RelayProcess> {
    let mut relays: Vec<RelayProcess> = Vec::new();
    // Start from the tail so each relay's seed is already listening.
    for i in (1..=n).rev() {
        let seed = relays
            .last()
            .map(|next| vec![next.ws_addr.to_string()])
            .unwrap_or_default();
        let relay = RelayProcess::start(
            &format!("r{i}"),
            "",
            &format!("{FAST}{extra}{}", peers(&seed)),
        )
        .await;
        relays.push(relay);
    }
    relays.reverse();
    relays
}

async fn all_know_all(relays: &[RelayProcess]) {
    let expected: BTreeSet<String> = relays.iter().map(|r| r.id.clone()).collect();
    for relay in relays {
        eventually(
            Duration::from_secs(20),
            &format!("{} lists every relay, all healthy", relay.id),
            || async {
                let health = relay.relay_health().await;
                let ids: BTreeSet<String> = health.keys().cloned().collect();
                (ids == expected && health.values().all(|h| h == "healthy")).then_some(())
            },
        )
        .await;
    }
}

async fn fully_linked(relays: &[RelayProcess]) {
    let want = relays.len() as u64 - 1;
    for relay in relays {
        eventually(
            Duration::from_secs(20),
            &format!("{} linked to every peer", relay.id),
            || async {
                (relay.get("/metrics").await["sync_metrics"]["mesh_connections"] == json!(want))
                    .then_some(())
            },
        )
        .await;
    }
}

/// Relays configured as a chain (each knows only the next) all list all relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_of_five_discovers_everyone() {
    let relays = chain(5, "").await;
    all_know_all(&relays).await;
    let listed = relays[0].get("/relays").await;
    let me = listed["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["self"] == json!(true))
        .unwrap()
        .clone();
    assert_eq!(me["relay_id"], "r1");
    for field in [
        "relay_id",
        "address",
        "version",
        "uptime",
        "health",
        "last_seen",
    ] {
        assert!(!me[field].is_null(), "{field} present");
    }
}

/// 100 notifications published on r1 reach subscribers on every relay exactly once, and
/// the dedup counters move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_every_relay_exactly_once() {
    let relays = chain(3, "").await;
    fully_linked(&relays).await;
    let mut subscribers = Vec::new();
    for relay in &relays {
        subscribers.push(
            Client::handshaken(relay.ws_addr, &["notifications"])
                .await
                .0,
        );
    }
    let (mut publisher, _) = Client::handshaken(relays[0].ws_addr, &["publish"]).await;
    let mut published = Vec::new();
    for i in 0..100 {
        published.push(publisher.publish("payment_detected", json!({"i":i})).await);
    }
    // A last marker: once it arrives everywhere, any duplicate would have arrived before it.
    publisher
        .send_json(&json!({"type":"notification","notification_type":"end","data":{}}))
        .await;
    for subscriber in &mut subscribers {
        let mut ids = subscriber.recv_notification_ids(101).await;
        assert_eq!(ids.pop().unwrap().rsplit_once('-').unwrap().1, "101");
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), 100, "no duplicates");
        assert_eq!(unique, published.iter().collect(), "every notification");
    }
    let mut misses = 0;
    let mut hits = 0;
    for relay in &relays {
        let metrics = relay.get("/metrics").await;
        misses += metrics["sync_metrics"]["cache_misses"].as_u64().unwrap();
        hits += metrics["sync_metrics"]["cache_hits"].as_u64().unwrap();
    }
    assert_eq!(
        misses,
        3 * 101,
        "each relay saw each notification first once"
    );
    assert!(
        hits > 0,
        "in a triangle, copies arrive twice and are dropped"
    );
}

/// A killed relay turns degraded, then unreachable, on the others; restarted, it is
/// healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_relay_degrades_then_rejoins() {
    let mut relays = chain(3, "").await;
    all_know_all(&relays).await;
    fully_linked(&relays).await;
    // Ten notifications reach r3's subscriber before r3 dies.
    let (mut publisher, _) = Client::handshaken(relays[0].ws_addr, &["publish"]).await;
    let (mut before, _) = Client::handshaken(relays[2].ws_addr, &["notifications"]).await;
    for i in 0..10 {
        publisher
            .send_json(&json!({"type":"notification","notification_type":"t","data":{"i":i}}))
            .await;
    }
    assert_eq!(before.recv_notification_ids(10).await.len(), 10);
    // r3 saves what it saw every sync interval (1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut r3 = relays.pop().unwrap();
    r3.kill().await;
    let observer = &relays[0];
    let health_of_r3 = || async { observer.relay_health().await.get("r3").cloned() };
    eventually(Duration::from_secs(6), "r3 degraded on r1", || async {
        (health_of_r3().await.as_deref() == Some("degraded")).then_some(())
    })
    .await;
    eventually(Duration::from_secs(6), "r3 unreachable on r1", || async {
        (health_of_r3().await.as_deref() == Some("unreachable")).then_some(())
    })
    .await;
    r3.restart().await;
    eventually(
        Duration::from_secs(15),
        "r3 healthy again on r1",
        || async { (health_of_r3().await.as_deref() == Some("healthy")).then_some(()) },
    )
    .await;
    // The restarted r3 remembers the ten: anti-entropy does not fetch them again (a
    // reconnecting wallet would otherwise receive them twice); only the next one is new.
    let (mut after, _) = Client::handshaken(r3.ws_addr, &["notifications"]).await;
    // The first publisher read nothing meanwhile, so r1 closed it as silent: a new one.
    let (mut publisher, _) = Client::handshaken(relays[0].ws_addr, &["publish"]).await;
    publisher
        .send_json(&json!({"type":"notification","notification_type":"t","data":{"i":"next"}}))
        .await;
    let first = after.recv_type("notification").await;
    assert_eq!(
        first["data"]["i"], "next",
        "no old notification delivered again"
    );
    let misses = r3.get("/metrics").await["sync_metrics"]["cache_misses"].clone();
    assert_eq!(
        misses,
        json!(1),
        "only the new notification was new to the restarted r3"
    );
}

/// A relay cut off from every peer while notifications flow keeps its clients; once the
/// links heal, its subscriber receives every missed notification exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_relay_catches_up_exactly_once() {
    // Each relay reaches each other only through a proxy per directed pair, so the test
    // can cut exactly the links of one relay. Advertised addresses are never dialed
    // successfully (port 9 refuses), so no link bypasses the proxies.
    let mut relays = Vec::new();
    for i in 1..=3 {
        relays.push(
            RelayProcess::start(&format!("r{i}"), "advertise_addr = \"127.0.0.1:9\"", FAST).await,
        );
    }
    let mut proxies = Vec::new(); // (from, to, proxy)
    for from in 0..3 {
        for (to, target) in relays.iter().enumerate() {
            if from != to {
                proxies.push((from, to, Proxy::start(target.ws_addr).await));
            }
        }
    }
    for (i, relay) in relays.iter_mut().enumerate() {
        let seeds: Vec<String> = proxies
            .iter()
            .filter(|(from, _, _)| *from == i)
            .map(|(_, _, p)| p.addr.to_string())
            .collect();
        relay.set_extra(&format!("{FAST}{}", peers(&seeds)));
        relay.restart().await;
    }
    fully_linked(&relays).await;

    let (mut subscriber, _) = Client::handshaken(relays[1].ws_addr, &["notifications"]).await;
    let (mut publisher, _) = Client::handshaken(relays[0].ws_addr, &["publish"]).await;
    for (from, to, proxy) in &proxies {
        if *from == 1 || *to == 1 {
            proxy.cut();
        }
    }
    eventually(Duration::from_secs(10), "r2 has no live link", || async {
        (relays[1].get("/metrics").await["sync_metrics"]["mesh_connections"] == json!(0))
            .then_some(())
    })
    .await;
    let mut published = Vec::new();
    for i in 0..30 {
        published.push(publisher.publish("payment_detected", json!({"i":i})).await);
    }
    // Cut off, r2's subscriber hears nothing of them (but stays connected).
    subscriber
        .send_json(&json!({"type":"ping","id":"still-here"}))
        .await;
    assert_eq!(subscriber.recv_type("pong").await["id"], "still-here");

    for (_, _, proxy) in &proxies {
        proxy.heal();
    }
    let mut ids = subscriber.recv_notification_ids(30).await;
    ids.sort();
    published.sort();
    assert_eq!(ids, published, "every missed notification, once each");
    // Nothing more arrives (no duplicate): the next thing it hears is its own pong.
    tokio::time::sleep(Duration::from_secs(2)).await;
    subscriber
        .send_json(&json!({"type":"ping","id":"end"}))
        .await;
    assert_eq!(subscriber.recv_type("pong").await["id"], "end");
    let repaired = relays[1].get("/metrics").await;
    assert!(repaired["sync_metrics"]["cache_misses"].as_u64().unwrap() >= 30);
}

/// `POST /sync/force` sends a sync request to every live peer at once (long intervals,
/// so no scheduled sync interferes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_sync_reaches_every_live_peer() {
    let slow = "[sync]\ninterval = 30\nhealth_interval = 60\n";
    let c = RelayProcess::start("r3", "", slow).await;
    let b = RelayProcess::start(
        "r2",
        "",
        &format!("{slow}{}", peers(&[c.ws_addr.to_string()])),
    )
    .await;
    let a = RelayProcess::start(
        "r1",
        "",
        &format!(
            "{slow}{}",
            peers(&[b.ws_addr.to_string(), c.ws_addr.to_string()])
        ),
    )
    .await;
    let relays = [a, b, c];
    fully_linked(&relays).await;
    let responses = |status: serde_json::Value| -> Vec<u64> {
        status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["sync_responses"].as_u64().unwrap())
            .collect()
    };
    // Wait for the link-up syncs to be answered, then force.
    let before = eventually(
        Duration::from_secs(10),
        "initial syncs answered",
        || async {
            let status = relays[0].get("/sync/status").await;
            let counts = responses(status);
            (counts.len() == 2 && counts.iter().all(|c| *c >= 3)).then_some(counts)
        },
    )
    .await;
    let answer = relays[0]
        .post("/sync/force", r#"{"sync_types":["StateSync"]}"#)
        .await;
    assert_eq!(answer["status"], "sync_triggered");
    eventually(
        Duration::from_secs(5),
        "each peer answered the forced sync",
        || async {
            let counts = responses(relays[0].get("/sync/status").await);
            counts
                .iter()
                .zip(&before)
                .all(|(after, before)| after > before)
                .then_some(())
        },
    )
    .await;
}

/// Proves the sync round trip the relays report is the one on the wire: two relays
/// linked only through a proxy that holds every byte 150 ms each way report, in
/// `/sync/status`, in `/metrics` and in the round-trip histogram, round trips of at
/// least the 300 ms the proxy adds, and not wildly more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_sync_round_trip_is_the_delay_on_the_wire() {
    const DELAY: Duration = Duration::from_millis(150);
    // What the relays may add to the proxy's 300 ms on a loaded machine.
    const SLACK_MS: f64 = 700.0;
    let added_ms = 2.0 * DELAY.as_millis() as f64;
    // Advertised addresses refuse (port 9): the only link is the one through the proxy.
    let far = RelayProcess::start("r2", "advertise_addr = \"127.0.0.1:9\"", FAST).await;
    let proxy = Proxy::start_with_delay(far.ws_addr, DELAY).await;
    let near = RelayProcess::start(
        "r1",
        "advertise_addr = \"127.0.0.1:9\"",
        &format!("{FAST}{}", peers(&[proxy.addr.to_string()])),
    )
    .await;
    let relays = [near, far];
    fully_linked(&relays).await;
    for relay in &relays {
        // A few syncs each way (one a second), all through the proxy.
        let peer = eventually(
            Duration::from_secs(20),
            &format!("{}: five syncs answered", relay.id),
            || async {
                let status = relay.get("/sync/status").await;
                let peer = status["peers"].as_array()?.first()?.clone();
                (peer["sync_responses"].as_u64()? >= 5).then_some(peer)
            },
        )
        .await;
        let within = |ms: f64| ms >= added_ms - 2.0 && ms <= added_ms + SLACK_MS;
        let per_peer = peer["avg_latency_ms"].as_f64().unwrap();
        assert!(
            within(per_peer),
            "{}: /sync/status avg_latency_ms {per_peer} with {added_ms} ms added on the wire",
            relay.id
        );
        let metrics = relay.get("/metrics").await;
        let overall = metrics["sync_metrics"]["avg_latency"].as_f64().unwrap();
        assert!(
            within(overall),
            "{}: /metrics avg_latency {overall} with {added_ms} ms added on the wire",
            relay.id
        );
        let text = relay.get_text("/metrics/prometheus").await;
        let sum = |name: &str| sdk_relay::metrics::sum_series(&text, name);
        let count = sum("sdk_relay_sync_round_trip_seconds_count");
        let mean_ms = sum("sdk_relay_sync_round_trip_seconds_sum") / count * 1000.0;
        assert!(count >= 5.0, "{}: {count} round trips recorded", relay.id);
        assert!(
            within(mean_ms),
            "{}: histogram mean {mean_ms} ms with {added_ms} ms added on the wire",
            relay.id
        );
        let fast: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("sdk_relay_sync_round_trip_seconds_bucket")
                    && l.contains("le=\"0.25\"")
            })
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
            .sum();
        assert_eq!(
            fast, 0.0,
            "{}: no round trip under 250 ms through a 300 ms delay",
            relay.id
        );
    }
}
