//! NATS mode with real `nats-server` processes: a three-server JetStream cluster on
//! loopback and three relays, each on a different server. Notifications reach every
//! subscriber on every relay exactly once, through the loss of a NATS server and the
//! restart of a relay; with its server gone a relay is degraded, and what wallets published
//! meanwhile is delivered once the server is back.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::time::Duration;

use sdk_relay::identity::Identity;
use sdk_relay::protocol::Notification;
use sdk_relay::protocol::signed::sign_notification;
use serde_json::json;

use crate::support::Client;
use crate::support::cluster::{RelayProcess, eventually};
use crate::support::nats::NatsCluster;

/// Membership renewed every second; records live three.
pub(crate) const FAST: &str = "[sync]\ninterval = 1\nhealth_interval = 2\n";

pub(crate) fn backbone(urls: &[String], replicas: usize) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[backbone]\nkind = \"nats\"\nurls = [{}]\nreplicas = {replicas}\npublish_timeout_secs = 3\n",
        list.join(", ")
    )
}

/// Relay `r<i+1>` on server `i` of the cluster (given only that server's URL: it finds
/// the others through the cluster).
pub(crate) async fn relays_on(cluster: &NatsCluster, replicas: usize) -> Vec<RelayProcess> {
    let mut relays = Vec::new();
    for (i, server) in cluster.servers.iter().enumerate() {
        let extra = format!("{FAST}{}", backbone(&[server.url()], replicas));
        relays.push(RelayProcess::start(&format!("r{}", i + 1), "", &extra).await);
    }
    relays
}

/// Every relay healthy (its backbone up) and listing every relay.
pub(crate) async fn all_up(relays: &[RelayProcess], cluster: &NatsCluster) {
    let expected: BTreeSet<String> = relays.iter().map(|r| r.id.clone()).collect();
    for relay in relays {
        let ready = async {
            loop {
                let health = relay.get("/health").await;
                let listed: BTreeSet<String> = relay.relay_health().await.keys().cloned().collect();
                if health["status"] == "healthy" && listed == expected {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .is_err()
        {
            panic!(
                "{} never healthy with every relay listed: {}\nrelay log:\n{}\nservers:\n{}",
                relay.id,
                relay.get("/health").await,
                relay.log(),
                cluster.logs()
            );
        }
    }
}

/// Reads notifications until `expected` were all seen, then a while longer: fails on a
/// repeat, an id never published, or one missing.
pub(crate) async fn receives_exactly(
    subscriber: &mut Client,
    expected: &BTreeSet<String>,
    who: &str,
) {
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // After the last expected id, a second more catches a late duplicate.
    let mut quiet_until = None;
    loop {
        let now = tokio::time::Instant::now();
        if quiet_until.is_some_and(|t| now >= t) {
            break;
        }
        assert!(
            now < deadline,
            "{who}: {} of {} within 60 s",
            seen.len(),
            expected.len()
        );
        let wait = quiet_until.map_or(Duration::from_secs(1), |t: tokio::time::Instant| t - now);
        let Ok(message) = tokio::time::timeout(wait, subscriber.recv()).await else {
            continue;
        };
        let message = message.unwrap_or_else(|code| panic!("{who}: closed with {code:?}"));
        if message["type"] != "notification" {
            continue;
        }
        let id = message["message_id"].as_str().unwrap().to_string();
        assert!(expected.contains(&id), "{who}: unexpected {id}");
        assert!(seen.insert(id.clone()), "{who}: {id} delivered twice");
        if seen.len() == expected.len() {
            quiet_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
        }
    }
    assert_eq!(&seen, expected, "{who}");
}

pub(crate) async fn subscribers(relays: &[RelayProcess]) -> Vec<Client> {
    let mut subscribers = Vec::new();
    for relay in relays {
        subscribers.push(
            Client::handshaken(relay.ws_addr, &["notifications"])
                .await
                .0,
        );
    }
    subscribers
}

pub(crate) fn counter(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Three servers, three relays: exactly once everywhere; then with one server killed
/// mid-stream; then with a relay restarted mid-stream, which catches up from its durable
/// consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_delivers_exactly_once_through_failures() {
    let mut cluster = NatsCluster::start(3).await;
    let mut relays = relays_on(&cluster, 3).await;
    all_up(&relays, &cluster).await;

    // 1. Published on r1, received once on every relay.
    let mut subs = subscribers(&relays).await;
    let (mut publisher, _) = Client::handshaken(relays[0].ws_addr, &["publish"]).await;
    let mut published = BTreeSet::new();
    for i in 0..50 {
        published.insert(publisher.publish("payment", json!({"n": i})).await);
    }
    for (sub, relay) in subs.iter_mut().zip(&relays) {
        receives_exactly(sub, &published, &relay.id).await;
    }

    // 2. Publishing on r1 and r2 while r2's server dies after a third of the stream.
    let (mut publisher2, _) = Client::handshaken(relays[1].ws_addr, &["publish"]).await;
    let mut published = BTreeSet::new();
    for i in 0..90 {
        if i == 30 {
            cluster.servers[1].kill().await;
        }
        let client = if i % 2 == 0 {
            &mut publisher
        } else {
            &mut publisher2
        };
        published.insert(client.publish("payment", json!({"k": i})).await);
    }
    for (sub, relay) in subs.iter_mut().zip(&relays) {
        receives_exactly(sub, &published, &relay.id).await;
    }

    // 3. r3 killed mid-stream, restarted: its durable consumer hands it what it missed.
    let before = counter(
        &relays[2].get_text("/metrics/prometheus").await,
        "sdk_relay_dedup_misses_total",
    );
    assert!(before >= 140.0, "r3 delivered {before} before its restart");
    let mut published = BTreeSet::new();
    for i in 0..40 {
        if i == 10 {
            relays[2].kill().await;
        }
        published.insert(publisher.publish("payment", json!({"r": i})).await);
    }
    relays[2].restart().await;
    // The 30 published while it was down (and any of the first 10 it had not
    // acknowledged) reach it after the restart, each once.
    consumes_at_least(&relays[2], 30.0).await;
    let (mut late, _) = Client::handshaken(relays[2].ws_addr, &["notifications"]).await;
    let mut after = BTreeSet::new();
    for i in 0..20 {
        after.insert(publisher.publish("payment", json!({"a": i})).await);
    }
    receives_exactly(&mut late, &after, "r3 after restart").await;
    let both: BTreeSet<String> = published.union(&after).cloned().collect();
    receives_exactly(&mut subs[0], &both, "r1").await;
    receives_exactly(&mut subs[1], &both, "r2").await;
}

/// One server, two relays: the server down makes both degraded and not ready, wallets'
/// publications wait unacknowledged; the server back, every one is stored, acknowledged
/// and delivered once on both relays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_degrades_and_recovery_delivers_the_buffer() {
    let mut cluster = NatsCluster::start(1).await;
    let url = cluster.servers[0].url();
    let mut relays = Vec::new();
    for id in ["r1", "r2"] {
        let extra = format!("{FAST}{}", backbone(std::slice::from_ref(&url), 1));
        relays.push(RelayProcess::start(id, "", &extra).await);
    }
    all_up(&relays, &cluster).await;
    let mut subs = subscribers(&relays).await;
    let (mut publisher, _) = Client::handshaken(relays[0].ws_addr, &["publish"]).await;
    let warmup: BTreeSet<String> = [publisher.publish("block", json!({"h": 1})).await].into();
    for (sub, relay) in subs.iter_mut().zip(&relays) {
        receives_exactly(sub, &warmup, &relay.id).await;
    }

    cluster.servers[0].kill().await;
    for relay in &relays {
        eventually(
            Duration::from_secs(20),
            &format!("{} degraded", relay.id),
            || async { (relay.get("/health").await["status"] == "degraded").then_some(()) },
        )
        .await;
        let ready = relay.get("/health/ready").await;
        assert_eq!(ready["status"], "not_ready", "{ready}");
        let exposition = relay.get_text("/metrics/prometheus").await;
        assert_eq!(
            counter(&exposition, "sdk_relay_backbone_connected"),
            0.0,
            "{exposition}"
        );
    }
    for i in 0..10 {
        publisher
            .send_json(&json!({"type":"notification","notification_type":"block","data":{"i": i}}))
            .await;
    }
    // Nothing can be stored while the only server is down: no acknowledgement comes.
    let early = tokio::time::timeout(Duration::from_secs(2), publisher.recv()).await;
    if let Ok(Ok(message)) = &early {
        assert_ne!(
            message["type"], "notification_ack",
            "acknowledged with no server: {message}"
        );
    }

    cluster.servers[0].start().await;
    let mut buffered = BTreeSet::new();
    while buffered.len() < 10 {
        let ack = publisher.recv_type("notification_ack").await;
        buffered.insert(ack["message_id"].as_str().unwrap().to_string());
    }
    for (sub, relay) in subs.iter_mut().zip(&relays) {
        receives_exactly(sub, &buffered, &relay.id).await;
    }
    for relay in &relays {
        eventually(
            Duration::from_secs(20),
            &format!("{} healthy again", relay.id),
            || async { (relay.get("/health").await["status"] == "healthy").then_some(()) },
        )
        .await;
    }

    // The stream holding a notification twice (stored under two `Nats-Msg-Id`s, as a
    // redelivery would hand it over again) still reaches each wallet once; and one
    // already delivered, stored again, reaches nobody. Both are signed with r1's key, as
    // r1 would.
    let r1_key = relay_identity(&relays[0]);
    let twice = signed_notification(&r1_key, "r1-00000000-900001", "block", json!({"x": 1}));
    let already = json!({"type":"notification","notification_type":"block","data":{"h":1},
        "timestamp":1,"message_id":warmup.iter().next().unwrap(),"relay_id":"r1"});
    let js = jetstream(&url).await;
    for (msg_id, payload) in [("a", &twice), ("b", &twice), ("c", &already)] {
        store(&js, msg_id, payload).await;
    }
    let once: BTreeSet<String> = ["r1-00000000-900001".to_string()].into();
    for (sub, relay) in subs.iter_mut().zip(&relays) {
        receives_exactly(sub, &once, &relay.id).await;
    }
}

/// The relay's key, read from its key file (tests sign as a relay would).
pub(crate) fn relay_identity(relay: &RelayProcess) -> Identity {
    let path = relay.data_dir().join(sdk_relay::identity::KEY_FILE_NAME);
    Identity::load_or_create(&path, || unreachable!("the relay created its key"))
        .expect("the relay's key file")
}

/// A notification as `identity`'s relay would store it in the stream.
pub(crate) fn signed_notification(
    identity: &Identity,
    message_id: &str,
    notification_type: &str,
    data: serde_json::Value,
) -> serde_json::Value {
    let relay_id = sdk_relay::protocol::signed::message_id_origin(message_id)
        .expect("a relay's message id")
        .to_string();
    let mut notification = Notification {
        message_id: message_id.to_string(),
        relay_id,
        notification_type: notification_type.to_string(),
        data: serde_json::value::to_raw_value(&data).unwrap(),
        timestamp: 1,
        topic: String::new(),
        signature: String::new(),
    };
    sign_notification(identity, &mut notification);
    serde_json::from_slice(&notification.encode()).unwrap()
}

pub(crate) async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let nats = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(url))
        .await
        .expect("test connects to NATS in time")
        .expect("test connects to NATS");
    async_nats::jetstream::new(nats)
}

/// Stores `payload` in the relays' stream directly, under `Nats-Msg-Id` `msg_id`.
pub(crate) async fn store(
    js: &async_nats::jetstream::Context,
    msg_id: &str,
    payload: &serde_json::Value,
) {
    let publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(serde_json::to_vec(payload).unwrap().into())
        .message_id(msg_id);
    let stored = async {
        js.send_publish("SDK_RELAY.n.block", publish).await?.await?;
        Ok::<_, async_nats::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(10), stored)
        .await
        .expect("stored in time")
        .expect("stored");
}

/// Notifications written to the stream by anyone but their origin relay are never
/// delivered: one signed by another key under r1's name, one from a relay with no record
/// in the bucket, one unsigned. Each is counted by reason; the genuine one stored after
/// them is delivered, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_forged_notifications_are_dropped_and_counted() {
    let cluster = NatsCluster::start(1).await;
    let url = cluster.servers[0].url();
    let mut relays = Vec::new();
    for id in ["r1", "r2"] {
        let extra = format!("{FAST}{}", backbone(std::slice::from_ref(&url), 1));
        relays.push(RelayProcess::start(id, "", &extra).await);
    }
    all_up(&relays, &cluster).await;
    let mut subs = subscribers(&relays).await;
    let stranger = Identity::from_seed(&[0x5a; 32]);
    let forged = signed_notification(&stranger, "r1-00000000-700001", "block", json!({"f": 1}));
    let unknown = signed_notification(&stranger, "ghost-00000000-1", "block", json!({"f": 2}));
    let mut unsigned =
        signed_notification(&stranger, "r1-00000000-700002", "block", json!({"f": 3}));
    unsigned.as_object_mut().unwrap().remove("signature");
    let genuine = signed_notification(
        &relay_identity(&relays[0]),
        "r1-00000000-700003",
        "block",
        json!({"g": 1}),
    );
    let js = jetstream(&url).await;
    for (msg_id, payload) in [
        ("f1", &forged),
        ("f2", &unknown),
        ("f3", &unsigned),
        ("g1", &genuine),
    ] {
        store(&js, msg_id, payload).await;
    }
    let only_genuine: BTreeSet<String> = ["r1-00000000-700003".to_string()].into();
    for (sub, relay) in subs.iter_mut().zip(&relays) {
        receives_exactly(sub, &only_genuine, &relay.id).await;
        let exposition = relay.get_text("/metrics/prometheus").await;
        let failed = |reason: &str| {
            counter(
                &exposition,
                &format!("sdk_relay_mesh_signatures_failed_total{{reason=\"{reason}\"}}"),
            )
        };
        assert_eq!(failed("bad_signature"), 2.0, "{}: {exposition}", relay.id);
        assert_eq!(failed("unknown_origin"), 1.0, "{}: {exposition}", relay.id);
    }
}

/// A relay restarted while another relay's record has lapsed from the bucket (that relay
/// stopped; its notifications are still in the stream) verifies them with the key it
/// bound before the restart: delivered, none dropped as from an unknown origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_restarted_relay_keeps_the_keys_it_knew() {
    let cluster = NatsCluster::start(1).await;
    let url = cluster.servers[0].url();
    let mut relays = Vec::new();
    for id in ["r1", "r2"] {
        let extra = format!("{FAST}{}", backbone(std::slice::from_ref(&url), 1));
        relays.push(RelayProcess::start(id, "", &extra).await);
    }
    all_up(&relays, &cluster).await;
    let (mut publisher, _) = Client::handshaken(relays[0].ws_addr, &["publish"]).await;
    let mut subs = subscribers(&relays).await;
    let warm: BTreeSet<String> = [publisher.publish("payment", json!({"w": 1})).await].into();
    receives_exactly(&mut subs[1], &warm, "r2").await;

    relays[1].kill().await;
    for i in 0..5 {
        publisher.publish("payment", json!({"while_down": i})).await;
    }
    drop(publisher);
    relays[0].kill().await;
    let bucket = jetstream(&url)
        .await
        .get_key_value("SDK_RELAY_relays")
        .await
        .expect("the relays' bucket");
    let lapsed = async {
        while bucket.get("r1").await.ok().flatten().is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), lapsed)
        .await
        .expect("r1's record lapses once r1 is gone");

    relays[1].restart().await;
    consumes_at_least(&relays[1], 5.0).await;
    let exposition = relays[1].get_text("/metrics/prometheus").await;
    let unknown = counter(
        &exposition,
        "sdk_relay_mesh_signatures_failed_total{reason=\"unknown_origin\"}",
    );
    assert_eq!(
        unknown,
        0.0,
        "r2 dropped r1's notifications: {}",
        relays[1].log()
    );
}

/// Waits (60 s at most) until `relay` has delivered at least `n` notifications it had not
/// seen (its dedup misses); panics with its log otherwise.
async fn consumes_at_least(relay: &RelayProcess, n: f64) {
    let caught_up = async {
        loop {
            let exposition = relay.get_text("/metrics/prometheus").await;
            if counter(&exposition, "sdk_relay_dedup_misses_total") >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), caught_up)
        .await
        .is_err()
    {
        panic!(
            "{} never consumed what it missed; its log:\n{}",
            relay.id,
            relay.log()
        );
    }
}
