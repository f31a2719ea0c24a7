//! The WebSocket interface of one relay, over real loopback sockets.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use crate::support::{Client, TestRelay, fast_config, raw_upgrade};
use serde_json::json;

/// Handshake answers `handshake_response` with the granted capabilities, then `health`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_then_health() {
    let relay = TestRelay::start(fast_config()).await;
    let mut client = Client::connect(relay.ws_addr).await.unwrap();
    client
        .send_json(&json!({"type":"handshake","client_id":"c1","version":"1.0.0","capabilities":["sync","notifications","bogus"]}))
        .await;
    let response = client.recv().await.unwrap();
    assert_eq!(response["type"], "handshake_response");
    assert_eq!(response["status"], "accepted");
    assert_eq!(response["relay_id"], "relay-1");
    assert_eq!(response["capabilities"], json!(["sync", "notifications"]));
    assert_eq!(response["heartbeat_interval"], 1);
    let health = client.recv().await.unwrap();
    assert_eq!(health["type"], "health");
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["metrics"]["connections"], 1);
    assert!(
        health["metrics"]["memory_usage"]
            .as_str()
            .unwrap()
            .ends_with("MB")
    );
    relay.shutdown().await;
}

/// ping -> pong; malformed JSON and unknown types get `error` and the connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_errors_keep_the_connection() {
    let relay = TestRelay::start(fast_config()).await;
    let (mut client, _) = Client::handshaken(relay.ws_addr, &[]).await;
    client.send_json(&json!({"type":"ping","id":"a"})).await;
    let pong = client.recv_type("pong").await;
    assert_eq!(pong["id"], "a");
    client.send_text("{not json").await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "malformed_json");
    client.send_json(&json!({"type":"teleport"})).await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "unknown_type");
    client
        .send_json(&json!({"type":"notification","notification_type":"t","data":{}}))
        .await;
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "forbidden", "publish needs the capability");
    client.send_json(&json!({"type":"ping"})).await;
    client.recv_type("pong").await;
    relay.shutdown().await;
}

fn publish_of_size(total_bytes: usize) -> String {
    let head = r#"{"type":"notification","notification_type":"big","data":""#;
    let tail = r#""}"#;
    let padding = total_bytes - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(padding))
}

/// Exactly 1 MiB is accepted; one byte more closes with 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_limit_is_exact() {
    let relay = TestRelay::start(fast_config()).await;
    let (mut client, _) = Client::handshaken(relay.ws_addr, &["publish"]).await;
    let exact = publish_of_size(1 << 20);
    assert_eq!(exact.len(), 1 << 20);
    client.send_text(&exact).await;
    client.recv_type("notification_ack").await;
    client.send_text(&publish_of_size((1 << 20) + 1)).await;
    assert_eq!(client.recv_close().await, Some(1009));
    relay.shutdown().await;
}

/// A binary frame closes with 1003.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frame_closes_with_1003() {
    let relay = TestRelay::start(fast_config()).await;
    let (mut client, _) = Client::handshaken(relay.ws_addr, &[]).await;
    client.send_binary(&[1, 2, 3]).await;
    assert_eq!(client.recv_close().await, Some(1003));
    relay.shutdown().await;
}

/// Anything but a handshake first closes with 1002, as does a malformed handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_before_handshake_closes_with_1002() {
    let relay = TestRelay::start(fast_config()).await;
    let mut client = Client::connect(relay.ws_addr).await.unwrap();
    client.send_json(&json!({"type":"ping"})).await;
    assert_eq!(client.recv_close().await, Some(1002));
    let mut client = Client::connect(relay.ws_addr).await.unwrap();
    client.send_json(&json!({"type":"handshake"})).await;
    assert_eq!(client.recv_close().await, Some(1002));
    relay.shutdown().await;
}

/// With tokens configured, a wrong or missing token is rejected and closed with 1008; the
/// right one is accepted and grants `publish`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_the_handshake() {
    let mut config = fast_config();
    config.auth.ws_tokens = vec!["s3cret".into()];
    // Wallet tokens need a closed mesh, or relays would bypass them.
    config.auth.mesh_token = Some("mesh-s3cret".into());
    let relay = TestRelay::start(config).await;
    for token in [Some("wrong"), None] {
        let mut client = Client::connect(relay.ws_addr).await.unwrap();
        let mut handshake =
            json!({"type":"handshake","client_id":"c","version":"1","capabilities":["publish"]});
        if let Some(token) = token {
            handshake["token"] = json!(token);
        }
        client.send_json(&handshake).await;
        let response = client.recv().await.unwrap();
        assert_eq!(response["status"], "rejected");
        assert!(response["reason"].is_string());
        assert_eq!(client.recv_close().await, Some(1008));
    }
    let mut client = Client::connect(relay.ws_addr).await.unwrap();
    client
        .send_json(&json!({"type":"handshake","client_id":"c","version":"1","capabilities":["publish"],"token":"s3cret"}))
        .await;
    let response = client.recv().await.unwrap();
    assert_eq!(response["status"], "accepted");
    assert_eq!(response["capabilities"], json!(["publish"]));
    relay.shutdown().await;
}

/// A client that never handshakes is closed with 1002 after `handshake_timeout_secs`:
/// not before (less a little slack for the clocks), not long after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_handshake_times_out() {
    let mut config = fast_config();
    // Well apart, so the close shows which of the two it was.
    config.limits.connection_timeout_secs = 8;
    config.limits.handshake_timeout_secs = 2;
    let timeout = std::time::Duration::from_secs(config.limits.handshake_timeout_secs);
    let relay = TestRelay::start(config).await;
    // Started before the connection exists, so never after the relay's own deadline.
    let started = tokio::time::Instant::now();
    let mut client = Client::connect(relay.ws_addr).await.unwrap();
    assert_eq!(client.recv_close().await, Some(1002));
    let elapsed = started.elapsed();
    let (early, late) = (
        timeout - std::time::Duration::from_millis(250),
        timeout + std::time::Duration::from_secs(2),
    );
    assert!(
        (early..=late).contains(&elapsed),
        "closed after {elapsed:?}; handshake_timeout_secs is {timeout:?}"
    );
    relay.shutdown().await;
}

/// A client that stops answering pings is closed after the connection timeout, while a
/// client that answers them stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_the_timeout() {
    let relay = TestRelay::start(fast_config()).await;
    let (mut silent, _) = Client::handshaken_with(relay.ws_addr, &[], false).await;
    let (mut live, _) = Client::handshaken(relay.ws_addr, &[]).await;
    // The live client keeps reading, so its library answers every ping.
    let live = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            let message =
                tokio::time::timeout(std::time::Duration::from_millis(200), live.recv()).await;
            if let Ok(Err(code)) = message {
                panic!("live client closed with {code:?}");
            }
        }
        live
    });
    let started = tokio::time::Instant::now();
    // The silent client reads everything but never answers a ping: closed with 1000.
    assert_eq!(silent.recv_close().await, Some(1000));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "not before the timeout"
    );
    let mut live = live.await.expect("live client was never closed");
    live.send_json(&json!({"type":"ping"})).await;
    live.recv_type("pong").await;
    relay.shutdown().await;
}

/// Clients asking for `sync` receive the relay's StateSync; others do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_capability_receives_state_sync() {
    let relay = TestRelay::start(fast_config()).await;
    let (mut client, _) = Client::handshaken(relay.ws_addr, &["sync"]).await;
    let sync = loop {
        let message = client.recv().await.unwrap();
        if message["type"] == "sync" {
            break message;
        }
    };
    assert_eq!(sync["sync_type"], "StateSync");
    assert_eq!(sync["relay_id"], "relay-1");
    assert_eq!(sync["payload"]["state"]["network"], "signet");
    assert!(sync["message_id"].is_string());
    relay.shutdown().await;
}

/// A `sync` client receives all three sync types `/sync/status` lists, in the `sync`
/// shape: StateSync and MetricsSync every sync interval (1 s here), HealthSync every
/// health interval (2 s here), the last two with the payloads peers receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_capability_receives_all_three_sync_types() {
    let relay = TestRelay::start(fast_config()).await;
    let (mut client, _) = Client::handshaken(relay.ws_addr, &["sync"]).await;
    let mut seen = std::collections::BTreeMap::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while seen.len() < 3 {
            let message = client.recv().await.unwrap();
            if message["type"] == "sync" {
                let sync_type = message["sync_type"].as_str().unwrap().to_string();
                seen.insert(sync_type, message);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("three sync types within 10 s, saw {:?}", seen.keys()));
    for message in seen.values() {
        assert_eq!(message["relay_id"], "relay-1");
        assert!(message["message_id"].is_string(), "{message}");
        assert!(message["timestamp"].is_u64(), "{message}");
    }
    let health = &seen["HealthSync"]["payload"]["health"];
    assert!(health["status"].is_string(), "{health}");
    assert!(health["uptime"].is_u64(), "{health}");
    assert_eq!(health["connections"], 1, "{health}");
    let metrics = &seen["MetricsSync"]["payload"]["metrics"];
    assert_eq!(metrics["active_connections"], 1, "{metrics}");
    assert_eq!(metrics["mesh_connections"], 0, "{metrics}");
    assert!(metrics["notifications_originated"].is_u64(), "{metrics}");
    assert_eq!(seen["StateSync"]["payload"]["state"]["network"], "signet");
    relay.shutdown().await;
}

/// Plain HTTP on the WebSocket port is told to upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_gets_426() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start(fast_config()).await;
    let mut stream = tokio::net::TcpStream::connect(relay.ws_addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 426"));
    let _ = raw_upgrade; // used by the limits tests
    relay.shutdown().await;
}

/// The sum of every series of `name` in the relay's Prometheus exposition.
async fn metric(relay: &TestRelay, name: &str) -> f64 {
    let exposition = crate::http_client::get(relay.http_addr, "/metrics/prometheus")
        .await
        .text();
    sdk_relay::metrics::sum_series(&exposition, name)
}

/// A client sending exactly `ws_messages_burst_max` messages at once has every one
/// answered; the next one is refused with `rate_limited` (and not processed), and the
/// connection stays usable. The rate is 1/s, so nothing refills while the test sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_burst_is_answered_the_next_message_is_rate_limited() {
    let mut config = fast_config();
    config.limits.ws_messages_per_second_max = 1;
    config.limits.ws_messages_burst_max = 20;
    let relay = TestRelay::start(config).await;
    let (mut client, _) = Client::handshaken(relay.ws_addr, &[]).await;
    // The handshake took no token: 20 pings, then one more, all sent at once.
    for id in 0..=20 {
        client.send_json(&json!({"type":"ping","id":id})).await;
    }
    for id in 0..20 {
        let pong = client.recv_type("pong").await;
        assert_eq!(
            pong["id"], id,
            "every message of the burst is answered, in order"
        );
    }
    let error = client.recv_type("error").await;
    assert_eq!(error["code"], "rate_limited", "{error}");
    assert_eq!(metric(&relay, "sdk_relay_ws_rate_limited_total").await, 1.0);
    // A second later a token has come back: the connection is still served.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    client.send_json(&json!({"type":"ping","id":"later"})).await;
    assert_eq!(client.recv_type("pong").await["id"], "later");
    relay.shutdown().await;
}

/// A client flooding far over its rate gets `rate_limited` errors, then, having ignored
/// them for a whole burst, close 1008; meanwhile a well-behaved client on the same relay
/// (under the rate) has every ping answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_rate_limited_then_closed_others_are_served() {
    let mut config = fast_config();
    config.limits.ws_messages_per_second_max = 50;
    config.limits.ws_messages_burst_max = 50;
    let relay = TestRelay::start(config).await;
    let (mut polite, _) = Client::handshaken(relay.ws_addr, &[]).await;
    let (mut flooder, _) = Client::handshaken(relay.ws_addr, &[]).await;

    // 40 pings, one every 25 ms at most (under 50/s), each answered before the next.
    let polite = tokio::spawn(async move {
        for id in 0..40 {
            polite.send_json(&json!({"type":"ping","id":id})).await;
            assert_eq!(polite.recv_type("pong").await["id"], id);
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    });

    // 150 messages at once: 50 within the burst, the rest over it.
    for id in 0..150 {
        flooder.send_json(&json!({"type":"ping","id":id})).await;
    }
    let (mut pongs, mut refused) = (0, 0);
    // Bounded: heartbeats would keep an unlimited relay's connection talking forever.
    let closed = tokio::time::timeout(crate::support::WAIT, async {
        loop {
            match flooder.recv().await {
                Ok(message) if message["type"] == "pong" => pongs += 1,
                Ok(message) if message["type"] == "error" => {
                    assert_eq!(message["code"], "rate_limited", "{message}");
                    refused += 1;
                }
                Ok(message) => assert!(message["type"] == "health", "{message}"),
                Err(code) => return code,
            }
        }
    })
    .await;
    let close = closed.unwrap_or_else(|_| {
        panic!("the flooder was never closed ({pongs} pongs, {refused} rate_limited)")
    });
    assert_eq!(close, Some(1008), "closed for policy violation");
    assert!(pongs >= 50, "the whole burst was answered ({pongs})");
    assert!(pongs < 60, "the flood was not processed ({pongs} pongs)");
    assert!(refused >= 40, "refusals came before the close ({refused})");
    polite
        .await
        .expect("the well-behaved client had every ping answered");
    assert!(metric(&relay, "sdk_relay_ws_rate_limited_total").await >= 41.0);
    relay.shutdown().await;
}

/// A notification whose `data` nests 100,000 levels deep is refused (`invalid_message`,
/// naming the limit) and reaches no subscriber; a normal publish right after is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_data_is_refused_and_never_delivered() {
    let relay = TestRelay::start(fast_config()).await;
    let (mut subscriber, _) = Client::handshaken(relay.ws_addr, &["notifications"]).await;
    let (mut publisher, _) = Client::handshaken(relay.ws_addr, &["publish"]).await;
    let levels = 100_000;
    let deep = format!(
        r#"{{"type":"notification","notification_type":"deep","data":{}{}}}"#,
        "[".repeat(levels),
        "]".repeat(levels)
    );
    publisher.send_text(&deep).await;
    let error = publisher.recv_type("error").await;
    assert_eq!(error["code"], "invalid_message", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("64 levels"), "{message}");

    let id = publisher.publish("shallow", json!({"ok": 1})).await;
    // The subscriber's next notification is this one: the deep one never came (and would
    // have failed the test client's own JSON parser, which stops at 128 levels).
    let notification = subscriber.recv_type("notification").await;
    assert_eq!(notification["message_id"], id);
    assert_eq!(notification["data"], json!({"ok": 1}));
    assert_eq!(
        metric(&relay, "sdk_relay_notifications_published_total").await,
        1.0
    );
    relay.shutdown().await;
}

/// A client that writes many requests at once before reading any reply (pipelining) gets
/// every reply, in order, and is not cut as a slow consumer: its replies are written as
/// they are made, not all queued first (the queue here holds 32 frames; the client sends
/// 2000 pings in one write, about 70 kB the relay reads in a few reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_within_a_small_queue() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PINGS: usize = 2000;
    let mut config = fast_config();
    config.limits.ws_outbound_queue_max = 32;
    config.limits.ws_messages_per_second_max = 1_000_000;
    config.limits.ws_messages_burst_max = 1_000_000;
    let relay = TestRelay::start(config).await;
    let mut stream = tokio::net::TcpStream::connect(relay.ws_addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        relay.ws_addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(crate::support::WAIT, stream.read(&mut buf))
            .await
            .expect("upgrade answered in time")
            .unwrap();
        assert!(n > 0, "relay closed during the upgrade");
        received.extend_from_slice(&buf[..n]);
    };
    assert!(received.starts_with(b"HTTP/1.1 101"), "upgraded");
    received.drain(..head_end);

    // The handshake and every ping, masked client frames, in one write.
    let mut burst = masked_text(
        r#"{"type":"handshake","client_id":"pipeliner","version":"1.0.0","capabilities":[]}"#,
    );
    for id in 0..PINGS {
        burst.extend(masked_text(&format!(r#"{{"type":"ping","id":{id}}}"#)));
    }
    stream.write_all(&burst).await.unwrap();

    let mut pongs = Vec::new();
    while pongs.len() < PINGS {
        match next_server_frame(&mut received) {
            Some((0x1, text)) => {
                let message: serde_json::Value = serde_json::from_slice(&text).unwrap();
                if message["type"] == "pong" {
                    pongs.push(message["id"].as_u64().unwrap() as usize);
                }
            }
            Some((0x8, payload)) => panic!(
                "closed after {} pongs: code {:?}",
                pongs.len(),
                payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]))
            ),
            Some(_) => {}
            None => {
                let n = tokio::time::timeout(crate::support::WAIT, stream.read(&mut buf))
                    .await
                    .expect("replies in time")
                    .unwrap();
                assert!(n > 0, "relay closed after {} pongs", pongs.len());
                received.extend_from_slice(&buf[..n]);
            }
        }
    }
    assert_eq!(
        pongs,
        (0..PINGS).collect::<Vec<_>>(),
        "every pong, in order"
    );
    relay.shutdown().await;
}

/// Frames sent in the same write as the upgrade request (read by the HTTP exchange along
/// with the request) are the connection's first frames: the handshake and a ping sent
/// that way are both answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_with_the_upgrade_request_are_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let relay = TestRelay::start(fast_config()).await;
    let mut stream = tokio::net::TcpStream::connect(relay.ws_addr).await.unwrap();
    let mut request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        relay.ws_addr
    )
    .into_bytes();
    request.extend(masked_text(
        r#"{"type":"handshake","client_id":"eager","version":"1.0.0","capabilities":[]}"#,
    ));
    request.extend(masked_text(r#"{"type":"ping","id":"with-the-request"}"#));
    stream.write_all(&request).await.unwrap();

    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut upgraded = false;
    let mut types = Vec::new();
    while !types.iter().any(|t| t == "pong") {
        if !upgraded && let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(received.starts_with(b"HTTP/1.1 101"), "upgraded");
            received.drain(..end + 4);
            upgraded = true;
            continue;
        }
        if upgraded && let Some((opcode, payload)) = next_server_frame(&mut received) {
            assert_eq!(opcode, 0x1, "a text frame, not a close: {payload:?}");
            let message: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            if message["type"] == "pong" {
                assert_eq!(message["id"], "with-the-request");
            }
            types.push(message["type"].as_str().unwrap().to_string());
            continue;
        }
        let n = tokio::time::timeout(crate::support::WAIT, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no pong in time; got {types:?}"))
            .unwrap();
        assert!(n > 0, "relay closed; got {types:?}");
        received.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        types.first().map(String::as_str),
        Some("handshake_response")
    );
    relay.shutdown().await;
}

/// A masked text frame (all-zero mask: the payload goes as is).
fn masked_text(text: &str) -> Vec<u8> {
    let len = text.len();
    let mut frame = vec![0x81];
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(text.as_bytes());
    frame
}

/// Takes one whole unmasked server frame off the front of `buf`: its opcode and payload.
fn next_server_frame(buf: &mut Vec<u8>) -> Option<(u8, Vec<u8>)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, header) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        126 => return None,
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        127 => return None,
        short => (usize::from(short), 2),
    };
    if buf.len() < header + len {
        return None;
    }
    let opcode = buf[0] & 0x0F;
    let payload = buf[header..header + len].to_vec();
    buf.drain(..header + len);
    Some((opcode, payload))
}
