//! Mesh trust, attacked from outside: real relay processes on loopback, and a hostile
//! relay played by the test (`support::peer`) that completes the handshake with a key of
//! its own and then forges, replays, pre-claims, impersonates and gossips.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cluster::{RelayProcess, eventually};
use crate::support::peer::{self, Claim};
use crate::support::{Client, WAIT};

/// Fast syncs; a generous silence timeout, so the test's clients (which answer pings only
/// while reading) are not cut while the test waits elsewhere on a loaded machine.
const FAST: &str = "[sync]\ninterval = 1\nhealth_interval = 2\n[limits]\nheartbeat_interval_secs = 1\nconnection_timeout_secs = 30\n";

fn mesh_table(peers: &[String], extra: &str) -> String {
    let list: Vec<String> = peers.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[mesh]\npeers = [{}]\n{extra}", list.join(", "))
}

/// The sum of a Prometheus series on `relay`, over the label sets containing `labels`.
async fn metric(relay: &RelayProcess, name: &str, labels: &str) -> f64 {
    relay
        .get_text("/metrics/prometheus")
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn linked(relay: &RelayProcess, relay_id: &str) -> bool {
    relay.get("/relays").await["relays"]
        .as_array()
        .is_some_and(|list| {
            list.iter()
                .any(|r| r["relay_id"] == relay_id && r["connected"] == true)
        })
}

/// Waits until `a` lists `b_id` as a connected peer.
async fn wait_linked(a: &RelayProcess, b_id: &str) {
    eventually(WAIT * 2, &format!("{} links to {b_id}", a.id), || async {
        linked(a, b_id).await.then_some(())
    })
    .await;
}

/// Reads notifications for `for_at_most`; returns their ids (nothing else is expected).
async fn notifications_within(client: &mut Client, for_at_most: Duration) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + for_at_most;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return got;
        }
        match tokio::time::timeout(left, client.recv()).await {
            Ok(Ok(m)) if m["type"] == "notification" => got.push(m),
            Ok(Ok(_)) => {}
            Ok(Err(code)) => panic!("subscriber closed with {code:?}"),
            Err(_) => return got,
        }
    }
}

/// The stream prefix (`<relay_id>-<boot nonce>`) of a message id.
fn stream_of(message_id: &str) -> String {
    message_id.rsplit_once('-').unwrap().0.to_string()
}

/// Forged notifications (another relay's id and stream under the forger's key, an id of
/// another stream signed by the forger, no signature, an unknown origin) are dropped and
/// counted; replays of a genuine notification (as is, or with its data changed) are not
/// delivered again. The forger's own signed notification is delivered: the pipe works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_replayed_notifications_are_not_delivered() {
    let b = RelayProcess::start("relay-b", "", FAST).await;
    let r = RelayProcess::start(
        "relay-r",
        "",
        &format!("{FAST}{}", mesh_table(&[b.ws_addr.to_string()], "")),
    )
    .await;
    wait_linked(&r, "relay-b").await;
    let evil_key = peer::identity_of("evil");
    let (mut subscriber, _) = Client::handshaken(r.ws_addr, &["notifications"]).await;
    let (mut publisher, _) = Client::handshaken(b.ws_addr, &["publish"]).await;
    // A genuine notification from relay-b, delivered once; the forger receives it too.
    let genuine_id = publisher
        .publish("payment_detected", json!({"amount": 1}))
        .await;
    let delivered = notifications_within(&mut subscriber, Duration::from_secs(3)).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    // What the forger replays: the genuine frame, signature included (wallets get it
    // as peers do).
    let genuine = delivered[0].clone();
    assert_eq!(genuine["message_id"], genuine_id.as_str());
    // Joined only now, just before it acts.
    let mut evil = peer::join(r.ws_addr, &Claim::honest("evil", &evil_key))
        .await
        .expect("the open mesh admits the forger");
    let stream = stream_of(&genuine_id);
    let mut forgeries = Vec::new();
    // relay-b's next id, signed with the forger's key.
    forgeries.push(peer::signed_notification(
        &evil_key,
        "relay-b",
        &format!("{stream}-999"),
        json!({"amount": 1_000_000}),
    ));
    // The forger's own relay id on relay-b's stream.
    let mut foreign =
        peer::signed_notification(&evil_key, "evil", &format!("{stream}-998"), json!({}));
    foreign["relay_id"] = json!("evil");
    forgeries.push(foreign);
    // Unsigned.
    let mut unsigned = peer::signed_notification(&evil_key, "evil", "evil-00000001-1", json!({}));
    unsigned.as_object_mut().unwrap().remove("signature");
    forgeries.push(unsigned);
    // An origin nobody knows.
    forgeries.push(peer::signed_notification(
        &evil_key,
        "ghost",
        "ghost-00000001-1",
        json!({}),
    ));
    // Replays: as is, and with its data changed under the same signature.
    forgeries.push(genuine.clone());
    let mut changed = genuine.clone();
    changed["data"] = json!({"amount": 1_000_000});
    forgeries.push(changed);
    for forged in &forgeries {
        evil.send_json(forged).await;
    }
    // What proves the pipe works: the forger's own, properly signed, is delivered.
    let own = peer::signed_notification(&evil_key, "evil", "evil-00000001-2", json!({"own": true}));
    evil.send_json(&own).await;
    let delivered = notifications_within(&mut subscriber, Duration::from_secs(3)).await;
    let ids: Vec<&str> = delivered
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["evil-00000001-2"],
        "only the forger's own notification: {delivered:?}"
    );
    let failed = metric(&r, "sdk_relay_mesh_signatures_failed_total", "").await;
    eprintln!("[forgeries] signature failures counted: {failed}");
    // The four forgeries; both replays carry an id already admitted, so they are
    // dropped as repeats before any signature check.
    assert!(failed >= 4.0, "{failed}");
    assert!(
        metric(
            &r,
            "sdk_relay_mesh_signatures_failed_total",
            "reason=\"foreign_id\""
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &r,
            "sdk_relay_mesh_signatures_failed_total",
            "reason=\"unknown_origin\""
        )
        .await
            >= 1.0
    );
}

/// A peer that sees one of relay-a's notifications sends the next twenty ids of its stream
/// first (signed with its own key). Every genuine notification relay-a then publishes is
/// still delivered, once, to a subscriber on the other relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genuine_notifications_after_a_pre_claim_are_all_delivered() {
    const COUNT: usize = 20;
    let a = RelayProcess::start("relay-a", "", FAST).await;
    let r = RelayProcess::start(
        "relay-r",
        "",
        &format!("{FAST}{}", mesh_table(&[a.ws_addr.to_string()], "")),
    )
    .await;
    wait_linked(&r, "relay-a").await;
    let evil_key = peer::identity_of("evil");
    let (mut subscriber, _) = Client::handshaken(r.ws_addr, &["notifications"]).await;
    let (mut publisher, _) = Client::handshaken(a.ws_addr, &["publish"]).await;
    let first = publisher.publish("payment_detected", json!({"n": 0})).await;
    assert_eq!(
        notifications_within(&mut subscriber, Duration::from_secs(3))
            .await
            .len(),
        1
    );
    // The id format is public: the next ids of relay-a's stream follow from the first.
    let (stream, seq) = first.rsplit_once('-').unwrap();
    // Joined only now, just before it acts.
    let mut evil = peer::join(r.ws_addr, &Claim::honest("evil", &evil_key))
        .await
        .expect("joined");
    let seq: u64 = seq.parse().unwrap();
    for next in seq + 1..=seq + COUNT as u64 {
        let claim = peer::signed_notification(
            &evil_key,
            "relay-a",
            &format!("{stream}-{next}"),
            json!({"fake": next}),
        );
        evil.send_json(&claim).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut published = Vec::new();
    for n in 1..=COUNT {
        published.push(publisher.publish("payment_detected", json!({"n": n})).await);
    }
    let mut delivered = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while delivered.len() < COUNT && tokio::time::Instant::now() < deadline {
        delivered.extend(notifications_within(&mut subscriber, Duration::from_secs(1)).await);
    }
    let ids: Vec<&str> = delivered
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, published, "every genuine notification, once, in order");
    assert!(delivered.iter().all(|m| m["data"].get("fake").is_none()));
    assert!(
        metric(
            &r,
            "sdk_relay_mesh_signatures_failed_total",
            "reason=\"bad_signature\""
        )
        .await
            >= COUNT as f64
    );
}

/// A peer claiming a linked relay's id with another key is refused (and counted), whether
/// it names its own key or the genuine relay's (which it cannot prove); the genuine link
/// stays. With `trusted_keys`, an unlisted key is refused; with a mesh token, a dialer that
/// lacks it is refused, and the token itself never crosses the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_key_for_a_known_relay_id_is_refused() {
    let b = RelayProcess::start("relay-b", "", FAST).await;
    let r = RelayProcess::start(
        "relay-r",
        "",
        &format!("{FAST}{}", mesh_table(&[b.ws_addr.to_string()], "")),
    )
    .await;
    wait_linked(&r, "relay-b").await;
    let genuine_key = r.get("/relays").await["relays"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["relay_id"] == "relay-b")
        .and_then(|x| x["public_key"].as_str().map(str::to_string));
    let evil_key = peer::identity_of("evil");
    let takeover = peer::join(r.ws_addr, &Claim::honest("relay-b", &evil_key)).await;
    let refusal = takeover.err().expect("a second key for relay-b is refused");
    assert!(refusal.contains("key_mismatch"), "{refusal}");
    if let Some(key) = genuine_key {
        let named = sdk_relay::identity::PublicKey::parse(&key).unwrap();
        let claim = Claim {
            named_key: Some(named),
            ..Claim::honest("relay-b", &evil_key)
        };
        let refusal = peer::join(r.ws_addr, &claim)
            .await
            .err()
            .expect("unproven key refused");
        assert!(refusal.contains("bad_signature"), "{refusal}");
    }
    assert!(
        metric(
            &r,
            "sdk_relay_mesh_handshakes_refused_total",
            "reason=\"key_mismatch\""
        )
        .await
            >= 1.0
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(linked(&r, "relay-b").await, "the genuine link stays");
}

/// `trusted_keys` admits only listed keys; a mesh token is proven by MAC: a dialer
/// without it (or with another) is refused, one with it is accepted, and the token
/// itself is never in what the relay sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_keys_and_the_mesh_token_gate_the_handshake() {
    const TOKEN: &str = "3f1d0c9a7b5e4d2c1b0a99887766554433221100ffeeddccbbaa998877665544";
    let friend = peer::identity_of("friend");
    let keys = format!("trusted_keys = [\"{}\"]\n", friend.public().to_hex());
    let r = RelayProcess::start(
        "relay-r",
        "",
        &format!(
            "{FAST}{}[auth]\nmesh_token = \"{TOKEN}\"\n",
            mesh_table(&[], &keys)
        ),
    )
    .await;
    let stranger = peer::identity_of("stranger");
    let with_token = |id, identity| Claim {
        token: Some(TOKEN),
        ..Claim::honest(id, identity)
    };
    let refusal = peer::join(r.ws_addr, &with_token("stranger", &stranger))
        .await
        .err()
        .expect("unlisted key");
    assert!(refusal.contains("untrusted_key"), "{refusal}");
    let refusal = peer::join(r.ws_addr, &Claim::honest("friend", &friend))
        .await
        .err()
        .expect("no token");
    assert!(refusal.contains("bad_token"), "{refusal}");
    let wrong = Claim {
        token: Some("not-the-token"),
        ..Claim::honest("friend", &friend)
    };
    assert!(peer::join(r.ws_addr, &wrong).await.is_err(), "wrong token");
    // The acceptor's challenge carries a MAC, never the token.
    let mut raw = Client::connect(r.ws_addr).await.unwrap();
    raw.send_json(&json!({
        "type": "handshake", "client_id": "friend", "version": "1", "capabilities": ["relay"],
        "relay_id": "friend", "address": "127.0.0.1:9",
        "public_key": friend.public().to_hex(), "nonce": "00".repeat(32),
    }))
    .await;
    let challenge = raw.recv().await.unwrap();
    assert_eq!(challenge["type"], "handshake_challenge");
    assert!(challenge["mac"].is_string());
    assert!(!challenge.to_string().contains(TOKEN), "{challenge}");
    peer::join(r.ws_addr, &with_token("friend", &friend))
        .await
        .expect("a listed key with the token");
    let refused = metric(&r, "sdk_relay_mesh_handshakes_refused_total", "").await;
    assert!(refused >= 3.0, "{refused}");
}

/// Counts TCP connections accepted on a loopback listener.
async fn counting_listener() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (address, count, task)
}

/// Addresses only gossip named (the unsigned `relays` list, a record signed by another
/// key than its subject's, a record from the future, a record a member signed for a
/// relay id of its invention) are never dialed: no connection,
/// so no handshake, reaches them. A validly signed record's address is dialed (the test
/// can see a dial).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_handshake_reaches_an_address_only_gossip_named() {
    let r = RelayProcess::start("relay-r", "", FAST).await;
    let evil_key = peer::identity_of("evil");
    let mut evil = peer::join(r.ws_addr, &Claim::honest("evil", &evil_key))
        .await
        .expect("joined");
    let (unsigned, unsigned_hits, t1) = counting_listener().await;
    let (forged, forged_hits, t2) = counting_listener().await;
    let (future, future_hits, t3) = counting_listener().await;
    let (signed, signed_hits, t4) = counting_listener().await;
    let (minted, minted_hits, t5) = counting_listener().await;
    let now = peer::unix_ms();
    let victim = peer::identity_of("victim");
    let records = vec![
        // Signed by evil, claiming to be "victim": the signature does not verify.
        {
            let mut r = peer::record(&victim, "victim", &forged, now);
            r["public_key"] = json!(evil_key.public().to_hex());
            r
        },
        peer::record(
            &peer::identity_of("later"),
            "later",
            &future,
            now + 3_600_000,
        ),
        // Validly signed, but by the key already bound to "evil": a member minting a relay.
        peer::record(&evil_key, "ghost", &minted, now),
        peer::record(&peer::identity_of("honest"), "honest", &signed, now),
    ];
    let mut sync = peer::state_sync_with_records("evil", "evil-00000001-s1", records);
    sync["payload"]["relays"] = json!([{
        "relay_id": "unsigned", "address": unsigned, "last_seen": now / 1000, "health": "healthy",
    }]);
    evil.send_json(&sync).await;
    eventually(WAIT, "the signed record's address is dialed", || async {
        (signed_hits.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    // Several sync intervals more for any other dial to happen.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let hits = [&unsigned_hits, &forged_hits, &future_hits, &minted_hits]
        .map(|h| h.load(Ordering::SeqCst));
    assert_eq!(
        hits,
        [0, 0, 0, 0],
        "unsigned, forged, future, minted: no dial"
    );
    let relays = r.relay_health().await;
    assert!(
        !relays.contains_key("unsigned")
            && !relays.contains_key("victim")
            && !relays.contains_key("later")
            && !relays.contains_key("ghost"),
        "{relays:?}"
    );
    assert!(
        metric(
            &r,
            "sdk_relay_mesh_records_rejected_total",
            "reason=\"bad_signature\""
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &r,
            "sdk_relay_mesh_records_rejected_total",
            "reason=\"future_timestamp\""
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &r,
            "sdk_relay_mesh_records_rejected_total",
            "reason=\"key_in_use\""
        )
        .await
            >= 1.0
    );
    for task in [t1, t2, t3, t4, t5] {
        task.abort();
    }
}

/// Membership records refresh only forward in time and expire: an older record does not
/// replace a newer one's address, a relay whose record is not refreshed within the TTL
/// (10 sync intervals, 10 s here) is forgotten, and a fresh record brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_records_refresh_forward_and_expire() {
    let r = RelayProcess::start("relay-r", "", FAST).await;
    let evil_key = peer::identity_of("evil");
    let mut evil = peer::join(r.ws_addr, &Claim::honest("evil", &evil_key))
        .await
        .expect("joined");
    let subject = peer::identity_of("subject");
    let now = peer::unix_ms();
    let records = vec![
        peer::record(&subject, "subject", "127.0.0.1:9", now - 5_000),
        peer::record(&subject, "subject", "127.0.0.1:7", now - 6_000),
    ];
    evil.send_json(&peer::state_sync_with_records(
        "evil",
        "evil-00000001-s1",
        records,
    ))
    .await;
    let address = |relays: Value| {
        relays["relays"].as_array().and_then(|list| {
            list.iter()
                .find(|x| x["relay_id"] == "subject")
                .map(|x| x["address"].as_str().unwrap().to_string())
        })
    };
    let held = eventually(WAIT, "the record is held", || async {
        address(r.get("/relays").await)
    })
    .await;
    assert_eq!(
        held, "127.0.0.1:9",
        "the older record did not replace the newer"
    );
    eventually(WAIT, "the stale record expires", || async {
        address(r.get("/relays").await).is_none().then_some(())
    })
    .await;
    // The link to the test peer may have been cut for silence meanwhile: a new one.
    let mut evil = peer::join(r.ws_addr, &Claim::honest("evil", &evil_key))
        .await
        .expect("joined again");
    let fresh = vec![peer::record(
        &subject,
        "subject",
        "127.0.0.1:7",
        peer::unix_ms(),
    )];
    evil.send_json(&peer::state_sync_with_records(
        "evil",
        "evil-00000001-s2",
        fresh,
    ))
    .await;
    let back = eventually(WAIT, "a fresh record brings it back", || async {
        address(r.get("/relays").await)
    })
    .await;
    assert_eq!(back, "127.0.0.1:7");
}

/// `ws_tokens` with an open mesh: `check-config` and the relay itself exit 2 naming the
/// keys to set; with a mesh token added, `check-config` accepts it.
#[test]
fn ws_tokens_with_an_open_mesh_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("sdk_relay_trust_cfg_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("relay.toml");
    let open = format!(
        "data_dir = \"{}\"\nws_url = \"127.0.0.1:0\"\nhttp_url = \"127.0.0.1:0\"\n[auth]\nws_tokens = [\"wallet-secret\"]\n",
        dir.join("data").display()
    );
    std::fs::write(&config, &open).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sdk_relay"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("the binary runs")
    };
    for args in [&["check-config"][..], &[][..]] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("auth.ws_tokens")
                && stderr.contains("mesh.trusted_keys")
                && stderr.contains("auth.mesh_token"),
            "{args:?}: {stderr}"
        );
    }
    std::fs::write(
        &config,
        format!("{open}mesh_token = \"0123456789abcdef0123456789abcdef\"\n"),
    )
    .unwrap();
    let out = run(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A peer flooding notifications (forgeries here: each would cost a signature check) has
/// at most `mesh_notifications_per_second_max` of them checked in a second, the same
/// number again dropped unchecked (anti-entropy fetches a genuine one later), and is cut
/// (1008) past twice the bound. The relay's own wallets are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_notifications_is_bounded_then_cut() {
    const MAX: u64 = 20;
    let r = RelayProcess::start(
        "relay-r",
        "",
        &format!("{FAST}mesh_notifications_per_second_max = {MAX}\n"),
    )
    .await;
    let (mut subscriber, _) = Client::handshaken(r.ws_addr, &["notifications"]).await;
    let (mut publisher, _) = Client::handshaken(r.ws_addr, &["publish"]).await;
    let evil_key = peer::identity_of("evil");
    let other_key = peer::identity_of("other");
    let mut evil = peer::join(r.ws_addr, &Claim::honest("evil", &evil_key))
        .await
        .expect("the open mesh admits the flooder");
    // Ids of the flooder's own stream, signed with a key that is not the one bound to it.
    for n in 1..=5 * MAX {
        let forged = peer::signed_notification(
            &other_key,
            "evil",
            &format!("evil-00000001-{n}"),
            json!({"n": n}),
        );
        evil.send_json(&forged).await;
    }
    // The relay keeps talking to a peer it does not cut (syncs, pings): bounded wait.
    let deadline = tokio::time::Instant::now() + WAIT;
    let closed = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flooder is still linked"
        );
        if let Err(code) = evil.recv().await {
            break code;
        }
    };
    assert_eq!(
        closed,
        Some(1008),
        "the flooder is cut as a policy violation"
    );
    let checked = metric(&r, "sdk_relay_mesh_signatures_failed_total", "").await;
    assert!(
        checked <= MAX as f64,
        "{checked} signature checks for one second's flood (bound {MAX})"
    );
    assert!(
        metric(&r, "sdk_relay_mesh_rejected_total", "").await >= MAX as f64,
        "the excess is counted"
    );
    let id = publisher
        .publish("payment_detected", json!({"after": true}))
        .await;
    let delivered = notifications_within(&mut subscriber, Duration::from_secs(3)).await;
    let ids: Vec<&str> = delivered
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "the relay's own wallets are served");
}

/// What a relay fetched is not held to the peer's notification rate: a relay catching up
/// on more than twice `mesh_notifications_per_second_max` notifications at once (one
/// fetch's answer) gets them all, drops none and keeps its link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_over_the_notification_rate_is_not_cut() {
    const MAX: u64 = 5;
    const MISSED: u64 = 6 * MAX;
    let b = RelayProcess::start("relay-b", "", FAST).await;
    let (mut publisher, _) = Client::handshaken(b.ws_addr, &["publish"]).await;
    for n in 0..MISSED {
        publisher.publish("payment_detected", json!({"n": n})).await;
    }
    // Started only now: everything relay-b published comes by anti-entropy.
    let r = RelayProcess::start(
        "relay-r",
        "",
        &format!(
            "{FAST}mesh_notifications_per_second_max = {MAX}\n{}",
            mesh_table(&[b.ws_addr.to_string()], "")
        ),
    )
    .await;
    eventually(WAIT * 2, "relay-r repaired all it missed", || async {
        let repaired = metric(&r, "sdk_relay_anti_entropy_repairs_total", "").await;
        (repaired >= MISSED as f64).then_some(())
    })
    .await;
    assert_eq!(
        metric(&r, "sdk_relay_mesh_rejected_total", "").await,
        0.0,
        "nothing fetched was dropped"
    );
    assert!(linked(&r, "relay-b").await, "the link was kept");
}
