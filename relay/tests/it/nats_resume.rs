//! Resume tokens in NATS mode, on real `nats-server` and relay processes. A token names
//! the stream and the sequence of the last notification routed to the wallet; signed by
//! the relay that issued it, it is valid on every relay of the stream (they learn each
//! other's keys from the signed records in the membership bucket). A resume replays what
//! the wallet missed, in stream order, once, then the live flow goes on with nothing lost
//! or repeated; what the stream no longer holds is reported, and a token from another
//! stream is refused.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use serde_json::{Value, json};

use sdk_relay::protocol::Notification;
use sdk_relay::protocol::signed::sign_notification;

use crate::nats::{FAST, all_up, backbone, jetstream, relay_identity, store};
use crate::support::Client;
use crate::support::cluster::RelayProcess;
use crate::support::nats::NatsCluster;

async fn relays(cluster: &NatsCluster, ids: &[&str]) -> Vec<RelayProcess> {
    let url = cluster.servers[0].url();
    let mut relays = Vec::new();
    for id in ids {
        let extra = format!("{FAST}{}", backbone(std::slice::from_ref(&url), 1));
        relays.push(RelayProcess::start(id, "", &extra).await);
    }
    all_up(&relays, cluster).await;
    relays
}

/// A wallet with capability `resume`, subscribed to `types` (a fresh session).
async fn wallet(relay: &RelayProcess, types: &[&str]) -> Client {
    let (mut wallet, _) = Client::handshaken(relay.ws_addr, &["resume"]).await;
    wallet
        .send_json(&json!({"type":"subscribe","notification_types":types}))
        .await;
    wallet.recv_type("subscriptions").await;
    wallet
}

/// A wallet with capability `resume` that resumes from `token`: the notifications
/// replayed (id, token) and the `resumed` message, or the `error` when refused.
async fn resume(relay: &RelayProcess, token: &str) -> (Client, Vec<(String, String)>, Value) {
    let (mut wallet, _) = Client::handshaken(relay.ws_addr, &["resume"]).await;
    wallet
        .send_json(&json!({"type":"resume","token":token}))
        .await;
    let mut replayed = Vec::new();
    loop {
        let message = wallet.recv().await.expect("the relay answers the resume");
        match message["type"].as_str() {
            Some("notification") => replayed.push(id_and_token(&message)),
            Some("resumed") | Some("error") => return (wallet, replayed, message),
            _ => {}
        }
    }
}

fn id_and_token(message: &Value) -> (String, String) {
    (
        message["message_id"].as_str().unwrap().to_string(),
        message["resume_token"]
            .as_str()
            .expect("a resumable wallet's notifications carry a token")
            .to_string(),
    )
}

/// The next notification (skipping periodic messages).
async fn next_notification(wallet: &mut Client) -> (String, String) {
    id_and_token(&wallet.recv_type("notification").await)
}

/// Waits until `watcher` has received every one of `ids` (so its relay routed them).
async fn routed(watcher: &mut Client, ids: &[String]) {
    let got = watcher.recv_notification_ids(ids.len()).await;
    assert_eq!(got, ids, "the watcher's relay routed them in order");
}

/// A wallet takes one `pay` on r1 (its token), leaves; r2 publishes three `pay` and
/// three `other`; it resumes on r2 and gets exactly the three `pay`, in order, then
/// `resumed`; live notifications follow once; the last replayed token, on r1, replays
/// the one live notification; the live one's token replays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_wallet_resumes_on_another_relay_with_exactly_what_it_missed() {
    let cluster = NatsCluster::start(1).await;
    let relays = relays(&cluster, &["r1", "r2"]).await;
    let (r1, r2) = (&relays[0], &relays[1]);
    let (mut publisher, _) = Client::handshaken(r2.ws_addr, &["publish"]).await;
    let mut first = wallet(r1, &["pay"]).await;
    let warm = publisher.publish("pay", json!({"warm": 1})).await;
    let (got, token) = next_notification(&mut first).await;
    assert_eq!(got, warm);
    drop(first);

    let (mut watcher, _) = Client::handshaken(r1.ws_addr, &["notifications"]).await;
    let mut missed = Vec::new();
    let mut all = Vec::new();
    for n in 0..3 {
        let pay = publisher.publish("pay", json!({"n": n})).await;
        missed.push(pay.clone());
        all.push(pay);
        all.push(publisher.publish("other", json!({"n": n})).await);
    }
    routed(&mut watcher, &all).await;

    let (mut resumed_on_r2, replayed, done) = resume(r2, &token).await;
    let ids: Vec<String> = replayed.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, missed, "{done}");
    assert_eq!(done["type"], "resumed", "{done}");
    assert_eq!(done["recovered"], true, "{done}");
    assert_eq!(done["replayed"], 3, "{done}");

    // Live again: the next `pay` comes once, with its own token.
    let (mut publisher_r1, _) = Client::handshaken(r1.ws_addr, &["publish"]).await;
    publisher_r1.publish("other", json!({"live": 0})).await;
    let live = publisher_r1.publish("pay", json!({"live": 1})).await;
    let (got, live_token) = next_notification(&mut resumed_on_r2).await;
    assert_eq!(
        got, live,
        "the live flow resumes after the replay, `other` skipped"
    );

    // r2's token is valid on r1: from the last replayed one, only the live one is missing.
    let last_replayed = &replayed.last().unwrap().1;
    let (_w, again, done) = resume(r1, last_replayed).await;
    let again: Vec<String> = again.into_iter().map(|(id, _)| id).collect();
    assert_eq!(again, vec![live.clone()], "{done}");
    assert_eq!(done["recovered"], true, "{done}");
    let (_w, none, done) = resume(r1, &live_token).await;
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(done["replayed"], 0, "{done}");
    assert_eq!(done["recovered"], true, "{done}");

    // A relay that joins now (its consumer starts at the end of the stream) serves the
    // first token too: everything after it is in the stream.
    let url = cluster.servers[0].url();
    let extra = format!("{FAST}{}", backbone(std::slice::from_ref(&url), 1));
    let r3 = RelayProcess::start("r3", "", &extra).await;
    // Resume as soon as r3 has its consumer (before it routed anything itself).
    let mut tries = 0;
    let (from_start, done) = loop {
        tries += 1;
        assert!(tries < 100, "r3 never took the token:\n{}", r3.log());
        let (_w, replayed, done) = resume(&r3, &token).await;
        let not_yet = done["message"]
            .as_str()
            .is_some_and(|m| m.contains("not reached its NATS stream"));
        if !not_yet {
            break (replayed, done);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let from_start: Vec<String> = from_start.into_iter().map(|(id, _)| id).collect();
    let mut expected = missed.clone();
    expected.push(live);
    assert_eq!(from_start, expected, "{done}");
    assert_eq!(done["recovered"], true, "{done}");
}

/// While a publisher keeps publishing on r2, a wallet that left resumes on r1: it gets
/// every `pay` published after its token's exactly once, in publication order, across
/// the replay and the live flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_resume_during_a_steady_flow_loses_and_repeats_nothing() {
    const TOTAL: usize = 60;
    let cluster = NatsCluster::start(1).await;
    let relays = relays(&cluster, &["r1", "r2"]).await;
    let (r1, r2) = (&relays[0], &relays[1]);
    let mut first = wallet(r2, &["pay"]).await;
    let (mut publisher, _) = Client::handshaken(r2.ws_addr, &["publish"]).await;
    let warm = publisher.publish("pay", json!({"warm": 1})).await;
    let (got, token) = next_notification(&mut first).await;
    assert_eq!(got, warm);
    drop(first);
    let flow = tokio::spawn(async move {
        let mut ids = Vec::new();
        for n in 0..TOTAL {
            ids.push(publisher.publish("pay", json!({"n": n})).await);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        ids
    });
    // Resume once part of the flow went by.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut wallet, replayed, done) = resume(r1, &token).await;
    assert_eq!(done["type"], "resumed", "{done}");
    assert_eq!(done["recovered"], true, "{done}");
    let mut received: Vec<String> = replayed.into_iter().map(|(id, _)| id).collect();
    let published = flow.await.unwrap();
    let last = published.last().unwrap().clone();
    while !received.contains(&last) {
        received.push(next_notification(&mut wallet).await.0);
    }
    // A second more catches a late repeat.
    let quiet = tokio::time::timeout(Duration::from_secs(1), wallet.recv_type("notification"));
    if let Ok(extra) = quiet.await {
        panic!("a notification after the last one: {extra}");
    }
    assert_eq!(
        received, published,
        "every one after the token, once, in order"
    );
}

/// The stream purged past a token's position: the resume replays what is left and says
/// `recovered: false, reason: "evicted"`. The stream deleted and created again (its
/// sequences start over): the old token is refused with `invalid_resume_token`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_resume_past_the_stream_is_reported_and_another_stream_refused() {
    let cluster = NatsCluster::start(1).await;
    let url = cluster.servers[0].url();
    let relays = relays(&cluster, &["r1"]).await;
    let r1 = &relays[0];
    let (mut publisher, _) = Client::handshaken(r1.ws_addr, &["publish"]).await;
    let mut first = wallet(r1, &["pay"]).await;
    publisher.publish("pay", json!({"warm": 1})).await;
    let (_, token) = next_notification(&mut first).await;
    drop(first);
    let (mut watcher, _) = Client::handshaken(r1.ws_addr, &["notifications"]).await;
    let gone = vec![
        publisher.publish("pay", json!({"n": 1})).await,
        publisher.publish("pay", json!({"n": 2})).await,
    ];
    routed(&mut watcher, &gone).await;
    let js = jetstream(&url).await;
    let stream = js
        .get_stream("SDK_RELAY")
        .await
        .expect("the relays' stream");
    tokio::time::timeout(Duration::from_secs(10), stream.purge())
        .await
        .expect("purged in time")
        .expect("purged");
    let late = publisher.publish("pay", json!({"late": 1})).await;
    routed(&mut watcher, std::slice::from_ref(&late)).await;

    let (_w, replayed, done) = resume(r1, &token).await;
    let ids: Vec<String> = replayed.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![late], "{done}");
    assert_eq!(done["recovered"], false, "{done}");
    assert_eq!(done["reason"], "evicted", "{done}");

    tokio::time::timeout(Duration::from_secs(10), js.delete_stream("SDK_RELAY"))
        .await
        .expect("deleted in time")
        .expect("deleted");
    // The relay makes the stream again and goes on: publish until the watcher gets one
    // (what is stored before the relay's new consumer exists is not delivered).
    let mut n = 0;
    loop {
        n += 1;
        assert!(n < 30, "the relay never delivered from the new stream");
        publisher.publish("pay", json!({"after": n})).await;
        let got = tokio::time::timeout(Duration::from_secs(1), watcher.recv_type("notification"));
        if got.await.is_ok() {
            break;
        }
    }
    let (_w, replayed, refused) = resume(r1, &token).await;
    assert!(replayed.is_empty(), "{replayed:?}");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "invalid_resume_token", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("another backbone or stream"),
        "{refused}"
    );
}

/// Lame duck in NATS mode: a resumable wallet on r1 receives `reconnect` naming r2, with
/// a token that is a position in the stream; it moves to r2 and resumes there with
/// exactly what was published after it left, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_lame_duck_hands_wallets_a_token_valid_on_the_other_relays() {
    let cluster = NatsCluster::start(1).await;
    let url = cluster.servers[0].url();
    let mut relays = Vec::new();
    for (id, limits) in [("r1", "[limits]\nlame_duck_secs = 2\n"), ("r2", "")] {
        let extra = format!("{FAST}{}{limits}", backbone(std::slice::from_ref(&url), 1));
        relays.push(RelayProcess::start(id, "", &extra).await);
    }
    all_up(&relays, &cluster).await;
    let (r1, r2) = (&relays[0], &relays[1]);
    let (mut publisher, _) = Client::handshaken(r2.ws_addr, &["publish"]).await;
    let mut leaving = wallet(r1, &["pay"]).await;
    let before = publisher.publish("pay", json!({"before": 1})).await;
    assert_eq!(next_notification(&mut leaving).await.0, before);

    r1.signal("USR2");
    let reconnect = leaving.recv_type("reconnect").await;
    let listed: Vec<&str> = reconnect["relays"]
        .as_array()
        .expect("reconnect names relays")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, vec![r2.ws_url().as_str()], "{reconnect}");
    let token = reconnect["resume_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a resumable wallet's reconnect carries a token: {reconnect}"))
        .to_string();
    drop(leaving);

    let (mut watcher, _) = Client::handshaken(r2.ws_addr, &["notifications"]).await;
    let after = vec![
        publisher.publish("pay", json!({"after": 1})).await,
        publisher.publish("pay", json!({"after": 2})).await,
    ];
    routed(&mut watcher, &after).await;
    let (_w, replayed, done) = resume(r2, &token).await;
    let ids: Vec<String> = replayed.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, after, "{done}");
    assert_eq!(done["recovered"], true, "{done}");
}

/// A wallet's private notification (its `payment_detected` under its wallet topic) stored
/// in the stream is never replayed to another wallet, not even to one subscribed to `*`:
/// the resume replays only the public notification published after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_resume_never_replays_another_wallets_private_notification() {
    let cluster = NatsCluster::start(1).await;
    let url = cluster.servers[0].url();
    let relays = relays(&cluster, &["r1", "r2"]).await;
    let (r1, r2) = (&relays[0], &relays[1]);
    let (mut publisher, _) = Client::handshaken(r2.ws_addr, &["publish"]).await;
    let mut first = wallet(r1, &["*"]).await;
    let warm = publisher.publish("pay", json!({"warm": 1})).await;
    let (got, token) = next_notification(&mut first).await;
    assert_eq!(got, warm);
    drop(first);

    let mut private = Notification {
        message_id: "r2-00000000-800001".into(),
        relay_id: "r2".into(),
        notification_type: "payment_detected".into(),
        data: serde_json::value::to_raw_value(&json!({"amount": 1})).unwrap(),
        timestamp: 1,
        topic: format!("wallet:{}", "ab".repeat(16)),
        signature: String::new(),
    };
    sign_notification(&relay_identity(r2), &mut private);
    let private: Value = serde_json::from_slice(&private.encode()).unwrap();
    store(&jetstream(&url).await, "private-1", &private).await;
    let (mut watcher, _) = Client::handshaken(r1.ws_addr, &["notifications"]).await;
    let public = publisher.publish("pay", json!({"after": 1})).await;
    routed(&mut watcher, std::slice::from_ref(&public)).await;

    let (_w, replayed, done) = resume(r2, &token).await;
    let ids: Vec<String> = replayed.into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec![public], "{done}");
    assert_eq!(done["recovered"], true, "{done}");
}
