//! The HTTP API's errors and limits on loopback, with limits set small: every error
//! status with its JSON body and headers, basic auth, the per-address rate limit, the
//! body size limit, the request timeout, the connection cap and draining.

#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use crate::http_client::{self, Conn, get, send};
use crate::support::{TestRelay, WAIT, fast_config, tcp_from};
use sdk_relay::logs::LogRing;
use sdk_relay::node::Node;
use sdk_relay::rt::{Env, Listener as _, Net as _, TokioNet};
use tokio::io::AsyncWriteExt;

/// Proves bad queries and bodies get 400 naming the fault, unknown paths 404 and wrong
/// methods 405 with `Allow`, all as JSON errors.
#[tokio::test]
async fn client_errors_are_json_with_their_status() {
    let relay = TestRelay::start(fast_config()).await;
    let addr = relay.http_addr;
    let message = get(addr, "/logs?level=loud")
        .await
        .error_message(400, "bad_request");
    assert!(message.contains("level"), "{message}");
    for query in ["limit=0", "limit=1001", "limit=ten"] {
        let message = get(addr, &format!("/logs?{query}"))
            .await
            .error_message(400, "bad_request");
        assert!(message.contains("limit"), "{message}");
    }
    let json = [("Content-Type", "application/json")];
    let unknown = send(
        addr,
        "POST",
        "/sync/force",
        &json,
        br#"{"sync_types":["FooSync"]}"#,
    )
    .await
    .error_message(400, "bad_request");
    assert!(unknown.contains("FooSync"), "{unknown}");
    for body in [
        &b"{\"sync_types\":"[..],
        b"[1,2]",
        b"{\"sync_types\":\"StateSync\"}",
    ] {
        send(addr, "POST", "/sync/force", &json, body)
            .await
            .error_message(400, "bad_request");
    }
    get(addr, "/nope").await.error_message(404, "not_found");
    let wrong = send(addr, "DELETE", "/health", &[], b"").await;
    wrong.error_message(405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("GET"));
    let wrong = get(addr, "/sync/force").await;
    wrong.error_message(405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("POST"));
    relay.shutdown().await;
}

/// Proves bodies over `http_body_bytes_max` get 413, whether the length is declared or
/// only discovered while reading a chunked body.
#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let mut config = fast_config();
    config.limits.http_body_bytes_max = 64;
    let relay = TestRelay::start(config).await;
    let declared = [("Content-Length", "1000000")];
    send(relay.http_addr, "POST", "/sync/force", &declared, b"")
        .await
        .error_message(413, "payload_too_large");
    let padding = " ".repeat(100);
    let chunk = format!("{:x}\r\n{{}}{padding}\r\n0\r\n\r\n", padding.len() + 2);
    let chunked = [("Transfer-Encoding", "chunked")];
    send(
        relay.http_addr,
        "POST",
        "/sync/force",
        &chunked,
        chunk.as_bytes(),
    )
    .await
    .error_message(413, "payload_too_large");
    let small = send(relay.http_addr, "POST", "/sync/force", &[], b"{}").await;
    assert_eq!(small.status, 200, "{}", small.text());
    relay.shutdown().await;
}

/// Proves basic auth, when configured, guards every endpoint but /health, answers 401
/// with `WWW-Authenticate`, and lets the right credentials through.
#[tokio::test]
async fn basic_auth_guards_everything_but_health() {
    let mut config = fast_config();
    config.auth.http_basic_user = Some("op".into());
    config.auth.http_basic_password = Some("secret".into());
    let relay = TestRelay::start(config).await;
    let addr = relay.http_addr;
    assert_eq!(get(addr, "/health").await.status, 200);
    for path in [
        "/metrics",
        "/config",
        "/relays",
        "/sync/status",
        "/logs",
        "/openapi.json",
        "/metrics/prometheus",
    ] {
        let denied = get(addr, path).await;
        denied.error_message(401, "unauthorized");
        assert_eq!(
            denied.header("www-authenticate"),
            Some("Basic realm=\"sdk_relay\"")
        );
        // "op:wrong"
        let wrong = send(
            addr,
            "GET",
            path,
            &[("Authorization", "Basic b3A6d3Jvbmc=")],
            b"",
        )
        .await;
        assert_eq!(wrong.status, 401);
        // "op:secret"
        let right = send(
            addr,
            "GET",
            path,
            &[("Authorization", "Basic b3A6c2VjcmV0")],
            b"",
        )
        .await;
        assert_eq!(right.status, 200, "{path}: {}", right.text());
    }
    let config = get(addr, "/config").await;
    assert!(!config.text().contains("secret"));
    relay.shutdown().await;
}

/// Proves a client address over `http_requests_per_minute_max` gets 429 with a
/// `Retry-After` matching the refill rate, and the refusal is counted.
#[tokio::test]
async fn over_the_rate_limit_gets_429_with_retry_after() {
    let mut config = fast_config();
    config.limits.http_requests_per_minute_max = 4;
    let relay = TestRelay::start(config).await;
    for _ in 0..4 {
        assert_eq!(get(relay.http_addr, "/health").await.status, 200);
    }
    let limited = get(relay.http_addr, "/health").await;
    limited.error_message(429, "rate_limited");
    // Four per minute: one token every 15 s, less whatever refilled meanwhile.
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((10..=15).contains(&retry_after), "{retry_after}");
    let other_route = get(relay.http_addr, "/metrics").await;
    assert_eq!(
        other_route.status, 429,
        "the limit is per address, not per route"
    );
    relay.shutdown().await;
}

/// Proves a connection over `http_connections_max` is answered 503 with `Retry-After`
/// and closed, and that a freed slot is reused.
#[tokio::test]
async fn over_the_connection_cap_gets_503_and_close() {
    let mut config = fast_config();
    config.limits.http_connections_max = 2;
    let relay = TestRelay::start(config).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = Conn::open(relay.http_addr).await;
        assert_eq!(conn.get("/health").await.status, 200, "served, kept open");
        held.push(conn);
    }
    // Not `/health`: that is answered even over the cap (see below).
    let refused = get(relay.http_addr, "/sync/status").await;
    refused.error_message(503, "unavailable");
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert_eq!(refused.header("connection"), Some("close"));
    let exposition = held[0].get("/metrics/prometheus").await.text();
    assert!(
        exposition
            .contains("sdk_relay_http_requests_total{route=\"connection_limit\",status=\"503\"} 1"),
        "{exposition}"
    );
    let mut first = held.remove(0);
    first.stream.shutdown().await.unwrap();
    drop(first);
    let served = tokio::time::timeout(WAIT, async {
        loop {
            let reply = get(relay.http_addr, "/sync/status").await;
            if reply.status == 200 {
                return reply;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a freed slot is reused");
    assert_eq!(served.status, 200);
    relay.shutdown().await;
}

/// Proves a request not complete within `http_timeout_secs` is answered 503, after
/// that long: not before (less a little slack for the clocks), not long after.
#[tokio::test]
async fn a_stalled_request_times_out_with_503() {
    let mut config = fast_config();
    config.limits.http_timeout_secs = 2;
    let timeout = std::time::Duration::from_secs(config.limits.http_timeout_secs);
    let relay = TestRelay::start(config).await;
    // Started before the request is sent, so never after the relay's own deadline.
    let started = tokio::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(relay.http_addr)
        .await
        .unwrap();
    let head = "POST /sync/force HTTP/1.1\r\nHost: r\r\nContent-Length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await.unwrap();
    // The answer's first byte marks when the relay gave up (it may close a bit later).
    tokio::time::timeout(WAIT, stream.peek(&mut [0u8; 1]))
        .await
        .expect("answered in time")
        .unwrap();
    let elapsed = started.elapsed();
    let reply = http_client::read_reply(&mut stream).await;
    reply.error_message(503, "unavailable");
    assert!(reply.header("retry-after").is_some());
    let (early, late) = (
        timeout - std::time::Duration::from_millis(250),
        timeout + std::time::Duration::from_millis(1500),
    );
    assert!(
        (early..=late).contains(&elapsed),
        "answered after {elapsed:?}; http_timeout_secs is {timeout:?}"
    );
    relay.shutdown().await;
}

/// Proves a draining relay keeps answering: /health says unhealthy with 503 and why,
/// other endpoints 503, all with `Retry-After`, except the Prometheus scrape.
#[tokio::test]
async fn a_draining_relay_answers_503_with_retry_after() {
    let env = Env::tokio(3);
    let listener = TokioNet.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Node::new(
        fast_config(),
        env.clock.clone(),
        env.rng.clone(),
        LogRing::new(10),
    );
    let server = tokio::spawn(sdk_relay::http::serve(Arc::clone(&node), listener, None));
    assert_eq!(get(addr, "/health").await.status, 200);
    node.lifecycle.begin_shutdown();
    let health = get(addr, "/health").await;
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(health.header("retry-after").is_some());
    let body = health.json();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["checks"]["draining"], true);
    assert!(
        body["reasons"][0].as_str().unwrap().contains("draining"),
        "{body}"
    );
    let metrics = get(addr, "/metrics").await;
    metrics.error_message(503, "unavailable");
    assert!(metrics.header("retry-after").is_some());
    // Prometheus keeps scraping a draining relay: the drain shows, the scrape never fails.
    let scrape = get(addr, "/metrics/prometheus").await;
    assert_eq!(scrape.status, 200, "{}", scrape.text());
    assert!(scrape.text().contains("sdk_relay_drains_total"));
    server.abort();
}

/// Proves an idle keep-alive connection is closed after `http_timeout_secs`, so idle
/// clients cannot hold the `http_connections_max` slots.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let mut config = fast_config();
    config.limits.http_timeout_secs = 1;
    let relay = TestRelay::start(config).await;
    let mut conn = Conn::open(relay.http_addr).await;
    assert_eq!(conn.get("/health").await.status, 200);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut conn.stream, &mut rest),
    )
    .await
    .expect("the relay closes the idle connection");
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    relay.shutdown().await;
}

/// A GET with `Connection: close` from the loopback address `source`; the status and
/// the whole response.
async fn get_from(source: [u8; 4], addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut stream = tcp_from(source, addr).await;
    let head = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("answered and closed in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    (status, text)
}

/// Proves `http_connections_per_address_max`: an address holding its cap of open
/// connections gets 503 (counted as route `address_limit`) and a close, but `/health`
/// still, while another address is served; a closed connection gives its slot back.
#[tokio::test]
async fn one_address_over_its_cap_gets_503_others_are_served() {
    let mut config = fast_config();
    config.limits.http_connections_per_address_max = 3;
    let relay = TestRelay::start(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = Conn::open(relay.http_addr).await;
        assert_eq!(
            conn.get("/sync/status").await.status,
            200,
            "served, kept open"
        );
        held.push(conn);
    }
    let (status, text) = get_from([127, 0, 0, 1], relay.http_addr, "/sync/status").await;
    assert_eq!(status, 503, "{text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("retry-after: 5") && lower.contains("connection: close"),
        "{text}"
    );
    assert!(
        text.contains("too many connections from this address"),
        "{text}"
    );
    let (status, text) = get_from([127, 0, 0, 1], relay.http_addr, "/health").await;
    assert_eq!(status, 200, "probes are answered over the cap: {text}");
    let (status, text) = get_from([127, 0, 0, 2], relay.http_addr, "/sync/status").await;
    assert_eq!(status, 200, "another address is served: {text}");
    let exposition = held[0].get("/metrics/prometheus").await.text();
    assert!(
        exposition
            .contains("sdk_relay_http_requests_total{route=\"address_limit\",status=\"503\"} 1"),
        "{exposition}"
    );
    held.pop().unwrap().stream.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, async {
        while get_from([127, 0, 0, 1], relay.http_addr, "/sync/status")
            .await
            .0
            != 200
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a closed connection gives its address's slot back");
    relay.shutdown().await;
}

/// Proves the probes are answered while `http_connections_max` is held by idle sockets
/// (that never send a byte) from several addresses, each within its per-address cap:
/// other requests get 503, `GET /health` gets 200 within a second, and so do
/// `/health/live` and `/health/ready`.
#[tokio::test]
async fn health_probes_are_answered_with_every_connection_slot_held() {
    let mut config = fast_config();
    config.limits.http_connections_max = 40;
    config.limits.http_connections_per_address_max = 20;
    let relay = TestRelay::start(config).await;
    let mut idle = Vec::new();
    for source in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        for _ in 0..20 {
            idle.push(tcp_from(source, relay.http_addr).await);
        }
    }
    let (status, text) = get_from([127, 0, 0, 4], relay.http_addr, "/sync/status").await;
    assert_eq!(status, 503, "the cap is full: {text}");
    let started = tokio::time::Instant::now();
    let (status, text) = get_from([127, 0, 0, 4], relay.http_addr, "/health").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("healthy"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
    let (status, text) = get_from([127, 0, 0, 4], relay.http_addr, "/health/live").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"live\""), "{text}");
    let (status, text) = get_from([127, 0, 0, 4], relay.http_addr, "/health/ready").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"ready\""), "{text}");
    drop(idle);
    relay.shutdown().await;
}
