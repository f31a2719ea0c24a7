//! The connection limit: 1000 held, the next upgrade refused with 503 + Retry-After, and
//! a freed slot is usable again.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use crate::support::{Client, TestRelay, fast_config, raise_fd_limit, raw_upgrade};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_refuses_the_1001st_with_503() {
    raise_fd_limit();
    let mut config = fast_config();
    config.limits.heartbeat_interval_secs = 30;
    config.limits.connection_timeout_secs = 60;
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
