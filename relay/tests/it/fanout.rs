//! Local fan-out: every subscriber exactly once, nobody else; a stalled subscriber is cut
//! off without costing the others anything.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use crate::support::{Client, TestRelay, fast_config};
use serde_json::json;

/// A notification reaches every subscriber (by `*` or by its type) exactly once and no
/// client that did not subscribe to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_each_subscriber_exactly_once() {
    let relay = TestRelay::start(fast_config()).await;
    let (mut publisher, _) = Client::handshaken(relay.ws_addr, &["publish"]).await;
    let (mut all, _) = Client::handshaken(relay.ws_addr, &["notifications"]).await;
    let (mut typed, _) = Client::handshaken(relay.ws_addr, &[]).await;
    let (mut other_type, _) = Client::handshaken(relay.ws_addr, &[]).await;
    let (mut unsubscribed, _) = Client::handshaken(relay.ws_addr, &["notifications"]).await;
    typed
        .send_json(&json!({"type":"subscribe","notification_types":["payment_detected","*"]}))
        .await;
    assert_eq!(
        typed.recv_type("subscriptions").await["notification_types"],
        json!(["*", "payment_detected"])
    );
    typed
        .send_json(&json!({"type":"unsubscribe","notification_types":["*"]}))
        .await;
    typed.recv_type("subscriptions").await;
    other_type
        .send_json(&json!({"type":"subscribe","notification_types":["block_mined"]}))
        .await;
    other_type.recv_type("subscriptions").await;
    unsubscribed
        .send_json(&json!({"type":"unsubscribe","notification_types":["*"]}))
        .await;
    assert_eq!(
        unsubscribed.recv_type("subscriptions").await["notification_types"],
        json!([])
    );

    let mut published = Vec::new();
    for i in 0..50 {
        published.push(publisher.publish("payment_detected", json!({"i":i})).await);
    }
    // A marker of another type tells each non-subscriber that the stream is over.
    publisher.publish("block_mined", json!({})).await;

    assert_eq!(all.recv_notification_ids(50).await, published);
    assert_eq!(typed.recv_notification_ids(50).await, published);
    let first_other = other_type.recv_type("notification").await;
    assert_eq!(
        first_other["notification_type"], "block_mined",
        "no payment_detected reached it"
    );
    assert_eq!(
        all.recv_type("notification").await["notification_type"],
        "block_mined"
    );
    // `typed` and `unsubscribed` get nothing more: a ping answered next proves it.
    for client in [&mut typed, &mut unsubscribed] {
        client.send_json(&json!({"type":"ping","id":"end"})).await;
        let next = client.recv_type("pong").await;
        assert_eq!(next["id"], "end");
    }
    relay.shutdown().await;
}

/// A subscriber that never reads is cut off as a slow consumer once its queue fills
/// (close 1013, counted as a slow-consumer disconnect); the subscribers that read
/// receive every notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_is_disconnected_and_others_get_everything() {
    let mut config = fast_config();
    config.limits.ws_outbound_queue_max = 16;
    a_stalled_subscriber_is_cut(config, 300).await;
}

/// The queue's byte bound cuts a stalled subscriber whose frame bound is far away: 600
/// notifications of 64 KiB (38 MB, more than the sockets' buffers hold) against a queue
/// of 100,000 frames but 2 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_cut_by_the_bytes_it_holds_not_only_its_frames() {
    let mut config = fast_config();
    config.limits.ws_outbound_queue_max = 100_000;
    config.limits.ws_outbound_queue_bytes_max = 2 << 20;
    a_stalled_subscriber_is_cut(config, 600).await;
}

async fn a_stalled_subscriber_is_cut(mut config: sdk_relay::config::Config, count: usize) {
    // Heartbeats would otherwise close the stalled client as silent before it fills up.
    config.limits.heartbeat_interval_secs = 30;
    config.limits.connection_timeout_secs = 60;
    // The publisher publishes 300 as fast as it is acked: not what the rate limit is about.
    config.limits.ws_messages_per_second_max = 100_000;
    config.limits.ws_messages_burst_max = 100_000;
    let relay = TestRelay::start(config).await;
    let (mut publisher, _) = Client::handshaken(relay.ws_addr, &["publish"]).await;
    let (mut stalled, _) = Client::handshaken(relay.ws_addr, &["notifications"]).await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(
            Client::handshaken(relay.ws_addr, &["notifications"])
                .await
                .0,
        );
    }
    let readers = readers
        .into_iter()
        .map(|mut reader| tokio::spawn(async move { reader.recv_notification_ids(count).await }))
        .collect::<Vec<_>>();
    let payload = "p".repeat(64 * 1024);
    let mut published = Vec::new();
    for _ in 0..count {
        published.push(publisher.publish("bulk", json!(payload)).await);
    }
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            published,
            "a reading subscriber lost or reordered nothing"
        );
    }
    // The stalled client finally reads: some notifications, then the slow-consumer close.
    // The close frame itself may not make it (its socket buffers were full, so the relay
    // may give up writing it and drop the socket): the relay's own count of slow-consumer
    // cuts, and of 1013 closes, must then say what happened.
    let mut received = 0;
    let code = loop {
        match stalled.recv().await {
            Ok(_) => received += 1,
            Err(code) => break code,
        }
    };
    assert!(
        received < count,
        "the stalled client was cut off before the end"
    );
    assert!(matches!(code, Some(1013) | None), "closed with {code:?}");
    // The relay counts the close once the connection's task has ended, just after.
    let (cuts, slow_closes) = crate::support::cluster::eventually(
        std::time::Duration::from_secs(10),
        "a close with 1013 counted",
        || async {
            let exposition = crate::http_client::get(relay.http_addr, "/metrics/prometheus")
                .await
                .text();
            let slow_closes = exposition
                .lines()
                .find_map(|l| l.strip_prefix("sdk_relay_ws_closes_total{code=\"1013\"} "))
                .map(|v| v.parse::<f64>().unwrap())
                .unwrap_or(0.0);
            let cuts = sdk_relay::metrics::sum_series(
                &exposition,
                "sdk_relay_ws_slow_consumer_disconnects_total",
            );
            (slow_closes >= 1.0).then_some((cuts, slow_closes))
        },
    )
    .await;
    assert_eq!(
        (cuts, slow_closes),
        (1.0, 1.0),
        "exactly the stalled client was cut as a slow consumer and closed with 1013 (what \
         it read: {code:?})"
    );
    relay.shutdown().await;
}
