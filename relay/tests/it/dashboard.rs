//! `GET /dashboard` and `GET /dashboard/data` on in-process relays over loopback: the
//! page is self-contained and behind basic auth, and the data shows a two-relay mesh,
//! its link, what a publication did and what the peer reported. (The page itself runs in
//! a real browser against relay processes in `scripts/browser-test.py`, which also kills
//! one and watches it turn unreachable.)

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use serde_json::{Value, json};

use crate::http_client::{get, send};
use crate::support::cluster::eventually;
use crate::support::{Client, TestRelay, fast_config};

const LONG: Duration = Duration::from_secs(30);

/// The page loads nothing from elsewhere, says so in its policy, and is guarded by
/// basic auth like the rest of the API (the data too).
#[tokio::test]
async fn the_page_is_self_contained_and_behind_basic_auth() {
    let mut config = fast_config();
    config.auth.http_basic_user = Some("op".into());
    config.auth.http_basic_password = Some("pw".into());
    let relay = TestRelay::start(config).await;
    for path in ["/dashboard", "/dashboard/data"] {
        assert_eq!(get(relay.http_addr, path).await.status, 401, "{path}");
    }
    let auth = [("Authorization", "Basic b3A6cHc=")]; // op:pw
    let page = send(relay.http_addr, "GET", "/dashboard", &auth, b"").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.starts_with("default-src 'none'; connect-src 'self'"));
    let html = page.text();
    assert!(html.contains("<svg id=\"graph\""), "the mesh graph");
    assert!(html.contains("<canvas id=\"chart\""), "the chart");
    assert!(
        !html.contains("src="),
        "no script or image loaded from elsewhere"
    );
    assert!(!html.contains("https://"), "no external URL");
    let data = send(relay.http_addr, "GET", "/dashboard/data", &auth, b"").await;
    assert_eq!(data.status, 200);
    assert_eq!(data.header("content-type"), Some("application/json"));
    assert_eq!(data.json()["relay_id"], "relay-1");
    relay.shutdown().await;
}

fn relay<'a>(data: &'a Value, id: &str) -> Option<&'a Value> {
    data["relays"]
        .as_array()?
        .iter()
        .find(|r| r["relay_id"] == id)
}

/// Two linked relays: relay-a's data lists both (itself marked), their link, the five
/// notifications a wallet published on it (its total, and a rate on the chart), and
/// what relay-b reported in MetricsSync (its wallet and the same five, routed there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_shows_the_mesh_and_what_flowed_through_it() {
    let mut config = fast_config();
    config.relay_id = "relay-b".into();
    let b = TestRelay::start(config).await;
    let mut config = fast_config();
    config.relay_id = "relay-a".into();
    config.mesh.peers = vec![b.ws_addr.to_string()];
    let a = TestRelay::start(config).await;
    let data = || async { get(a.http_addr, "/dashboard/data").await.json() };
    eventually(LONG, "relay-a linked to relay-b", || async {
        let d = data().await;
        (d["links"] == json!([{"a": "relay-a", "b": "relay-b", "live": true}])).then_some(())
    })
    .await;
    let _wallet_on_b = Client::handshaken(b.ws_addr, &["notifications"]).await;
    let (mut publisher, _) = Client::handshaken(a.ws_addr, &["publish"]).await;
    for i in 0..5 {
        publisher.publish("payment_detected", json!({"i": i})).await;
    }
    let d = eventually(
        LONG,
        "relay-b's report of 5 routed and 1 wallet",
        || async {
            let d = data().await;
            let peer = relay(&d, "relay-b")?;
            (peer["notifications_routed"] == 5 && peer["wallets"] == 1).then_some(d)
        },
    )
    .await;
    let own = relay(&d, "relay-a").unwrap();
    assert_eq!(own["self"], true);
    assert_eq!(own["notifications_routed"], 5);
    assert_eq!(own["wallets"], 1, "the publisher");
    assert_eq!(own["anti_entropy_repairs"], 0);
    let peer = relay(&d, "relay-b").unwrap();
    assert_eq!(peer["self"], false);
    assert_eq!(peer["health"], "healthy");
    assert!(
        peer["sync_rtt_ms"].as_f64().is_some(),
        "a measured round trip"
    );
    assert_eq!(d["alerts"], json!([]));
    eventually(LONG, "a rate above zero on relay-a's series", || async {
        let d = data().await;
        let series = d["chart"]["series"]
            .as_array()?
            .iter()
            .find(|s| s["relay_id"] == "relay-a")?
            .clone();
        series["points"]
            .as_array()?
            .iter()
            .any(|p| p[1].as_f64() > Some(0.0))
            .then_some(())
    })
    .await;

    b.shutdown().await;
    a.shutdown().await;
}
