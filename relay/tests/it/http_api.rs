//! The HTTP API seen from outside: every endpoint's shape on a live relay over
//! loopback, the specification's cURL examples run with the real `curl`, the metrics
//! the API reports checked against the process itself, and the served OpenAPI document
//! checked against `docs/openapi.yaml`.

#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use crate::http_client::{get, send};
use crate::support::{Client, TestRelay, fast_config};
use sdk_relay::logs::LogRing;
use sdk_relay::node::Node;
use sdk_relay::rt::{Env, Listener as _, Net as _, TokioNet};
use serde_json::Value;

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// Proves /health has the specification's fields plus why, and says healthy at rest.
#[tokio::test]
async fn health_reports_status_uptime_version_and_why() {
    let relay = TestRelay::start(fast_config()).await;
    let reply = get(relay.http_addr, "/health").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["status"], "healthy");
    assert!(body["uptime"].is_u64());
    assert_eq!(body["version"], sdk_relay::protocol::VERSION);
    assert!(body["timestamp"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["reasons"], serde_json::json!([]));
    assert_eq!(body["checks"]["draining"], false);
    assert_eq!(body["checks"]["known_relays"], 1);
    relay.shutdown().await;
}

/// Proves /health/live answers 200 with the relay's id and uptime, and /health/ready
/// 200 on a fresh relay with `ready_peers_min = 0`, both without credentials.
#[tokio::test]
async fn probes_live_and_ready_on_a_fresh_relay() {
    let mut config = fast_config();
    assert_eq!(config.mesh.ready_peers_min, 0, "the default");
    config.auth.http_basic_user = Some("admin".into());
    config.auth.http_basic_password = Some("secret".into());
    let relay_id = config.relay_id.clone();
    let relay = TestRelay::start(config).await;
    assert_eq!(get(relay.http_addr, "/metrics").await.status, 401);
    let live = get(relay.http_addr, "/health/live").await;
    assert_eq!(live.status, 200, "{}", live.text());
    assert_eq!(live.header("content-type"), Some("application/json"));
    let body = live.json();
    assert_eq!(body["status"], "live");
    assert_eq!(body["relay_id"], relay_id.as_str());
    assert!(body["uptime"].is_u64());
    let ready = get(relay.http_addr, "/health/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let body = ready.json();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["reasons"], serde_json::json!([]));
    assert_eq!(body["checks"]["ready_peers_min"], 0);
    assert_eq!(body["checks"]["draining"], false);
    relay.shutdown().await;
}

/// Proves /health/ready is 503 with `Retry-After` naming the peers condition while
/// fewer than `mesh.ready_peers_min` peers are linked; /health/live stays 200.
#[tokio::test]
async fn ready_waits_for_ready_peers_min_links() {
    let mut config = fast_config();
    config.mesh.ready_peers_min = 1;
    let relay = TestRelay::start(config).await;
    let ready = get(relay.http_addr, "/health/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.header("retry-after").is_some());
    let body = ready.json();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["linked_peers"], 0);
    let reasons = body["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{body}");
    let reason = reasons[0].as_str().unwrap();
    assert!(reason.starts_with("peers:"), "{reason}");
    assert!(reason.contains("ready_peers_min"), "{reason}");
    assert_eq!(get(relay.http_addr, "/health/live").await.status, 200);
    assert_eq!(get(relay.http_addr, "/health").await.status, 200);
    relay.shutdown().await;
}

/// Proves draining makes /health/ready 503 naming the drain, while /health/live
/// stays 200.
#[tokio::test]
async fn draining_makes_ready_503_while_live_stays_200() {
    let env = Env::tokio(3);
    let listener = TokioNet.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = Node::new(
        fast_config(),
        env.clock.clone(),
        env.rng.clone(),
        LogRing::new(10),
    );
    let server = tokio::spawn(sdk_relay::http::serve(Arc::clone(&node), listener));
    assert_eq!(get(addr, "/health/ready").await.status, 200);
    node.lifecycle.begin_shutdown();
    let ready = get(addr, "/health/ready").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.header("retry-after").is_some());
    let body = ready.json();
    assert_eq!(body["checks"]["draining"], true);
    let reasons = body["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{body}");
    assert!(
        reasons[0].as_str().unwrap().starts_with("draining"),
        "{body}"
    );
    let live = get(addr, "/health/live").await;
    assert_eq!(live.status, 200, "{}", live.text());
    assert_eq!(live.json()["status"], "live");
    server.abort();
}

/// Proves /metrics has both objects of the specification with real, typed numbers.
#[tokio::test]
async fn metrics_json_has_sync_and_system_figures() {
    let relay = TestRelay::start(fast_config()).await;
    let _ = get(relay.http_addr, "/health").await;
    let body = get(relay.http_addr, "/metrics").await.json();
    assert_eq!(
        keys(&body["sync_metrics"]),
        [
            "avg_latency",
            "cache_hits",
            "cache_misses",
            "error_count",
            "known_relays",
            "mesh_connections",
            "sync_requests",
            "sync_responses"
        ]
    );
    let system = &body["system_metrics"];
    let memory = system["memory_usage"].as_str().unwrap();
    assert!(memory.ends_with("MB"), "{memory}");
    assert!(system["memory_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(system["cpu_usage"].as_str().unwrap().ends_with('%'));
    assert_eq!(system["active_connections"], 0);
    assert!(
        system["total_requests"].as_u64().unwrap() >= 1,
        "the /health request before is counted: {body}"
    );
    relay.shutdown().await;
}

/// Proves requests are counted by route and status, and timed per route, in the
/// Prometheus exposition, with the exposition's content type.
#[tokio::test]
async fn prometheus_exposition_counts_requests_by_route_and_status() {
    let relay = TestRelay::start(fast_config()).await;
    for _ in 0..3 {
        assert_eq!(get(relay.http_addr, "/relays").await.status, 200);
    }
    assert_eq!(get(relay.http_addr, "/nowhere").await.status, 404);
    let reply = get(relay.http_addr, "/metrics/prometheus").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    let sample = |route: &str, status: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("sdk_relay_http_requests_total{"))
            .filter(|l| l.contains(&format!("route=\"{route}\"")))
            .filter(|l| l.contains(&format!("status=\"{status}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(sample("relays", "200"), 3.0, "{text}");
    assert_eq!(sample("unmatched", "404"), 1.0, "{text}");
    assert!(
        text.contains("sdk_relay_http_request_duration_seconds_count{route=\"relays\"} 3"),
        "{text}"
    );
    assert!(text.contains("sdk_relay_http_request_duration_seconds_count{route=\"logs\"} 0"));
    assert_eq!(
        sample("logs", "200"),
        0.0,
        "registered before any request: {text}"
    );
    assert!(text.contains("sdk_relay_http_requests_total{route=\"logs\",status=\"200\"} 0"));
    assert!(text.contains("sdk_relay_http_connections"));
    relay.shutdown().await;
}

/// Proves /config shows the effective configuration under the TOML keys and never a
/// secret.
#[tokio::test]
async fn config_is_effective_and_redacted() {
    let mut config = fast_config();
    config.relay_id = "relay-cfg".into();
    config.auth.ws_tokens = vec!["ws-secret-token".into()];
    config.auth.mesh_token = Some("mesh-secret-token".into());
    config.bitcoin_core = Some(sdk_relay::config::BitcoinCoreConfig {
        url: "http://bitcoin:18443".into(),
        wallet: Some("relay_wallet".into()),
        rpc_user: Some("rpc".into()),
        rpc_password: Some("rpc-secret-password".into()),
        cookie_file: None,
    });
    let relay = TestRelay::start(config).await;
    let reply = get(relay.http_addr, "/config").await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    for secret in [
        "ws-secret-token",
        "mesh-secret-token",
        "rpc-secret-password",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let body = reply.json();
    assert_eq!(body["relay_id"], "relay-cfg");
    assert_eq!(body["network"], "signet");
    assert_eq!(body["ws_url"], relay.ws_addr.to_string());
    assert_eq!(body["http_url"], relay.http_addr.to_string());
    assert_eq!(body["sync"]["interval"], 1);
    assert_eq!(body["sync"]["health_interval"], 2);
    assert_eq!(body["bitcoin_core"]["url"], "http://bitcoin:18443");
    assert_eq!(body["bitcoin_core"]["wallet"], "relay_wallet");
    assert_eq!(body["bitcoin_core"]["rpc_password"], "***");
    assert_eq!(body["bitcoin_core"]["enabled"], true);
    // Unset, a source is still an object, as the specification shows it.
    assert_eq!(body["blindbit"], serde_json::json!({ "enabled": false }));
    assert_eq!(body["auth"]["ws_tokens"], serde_json::json!(["***"]));
    assert_eq!(body["auth"]["mesh_token"], "***");
    assert_eq!(body["auth"]["http_basic_password"], Value::Null);
    assert_eq!(body["limits"]["http_connections_max"], 100);
    relay.shutdown().await;

    let mut config = fast_config();
    config.blindbit = Some(sdk_relay::config::BlindbitConfig {
        url: "http://blindbit:8000".into(),
    });
    let relay = TestRelay::start(config).await;
    let body = get(relay.http_addr, "/config").await.json();
    assert_eq!(
        body["bitcoin_core"],
        serde_json::json!({ "enabled": false })
    );
    assert_eq!(
        body["blindbit"],
        serde_json::json!({ "enabled": true, "url": "http://blindbit:8000" })
    );
    relay.shutdown().await;
}

/// Proves /relays, /sync/status and /sync/force have the specification's shapes, and
/// that /sync/force reads its optional body as the issue says.
#[tokio::test]
async fn mesh_endpoints_have_the_specified_shapes() {
    let relay = TestRelay::start(fast_config()).await;
    let relays = get(relay.http_addr, "/relays").await.json();
    let me = &relays["relays"][0];
    assert_eq!(me["relay_id"], "relay-1");
    assert_eq!(me["self"], true);
    for key in ["address", "version", "uptime", "health", "last_seen"] {
        assert!(!me[key].is_null(), "{key} missing: {me}");
    }
    let status = get(relay.http_addr, "/sync/status").await.json();
    assert!(status["status"].is_string());
    assert!(status["next_sync"].is_u64());
    // The specification shows an integer: 0 before a first sync, never null.
    assert_eq!(status["last_sync"], 0, "{status}");
    assert_eq!(
        status["sync_types"],
        serde_json::json!(["StateSync", "HealthSync", "MetricsSync"])
    );
    assert!(status["errors"].is_array());

    let all = serde_json::json!(["StateSync", "HealthSync", "MetricsSync"]);
    for body in [&b""[..], b"{}"] {
        let reply = send(relay.http_addr, "POST", "/sync/force", &[], body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let answer = reply.json();
        assert_eq!(answer["status"], "sync_triggered");
        assert_eq!(answer["sync_types"], all);
        assert!(answer["timestamp"].is_u64());
        assert!(answer["peers"].is_u64());
    }
    let json = [("Content-Type", "application/json")];
    let body = br#"{"sync_types": ["StateSync", "HealthSync"]}"#;
    let answer = send(relay.http_addr, "POST", "/sync/force", &json, body)
        .await
        .json();
    assert_eq!(
        answer["sync_types"],
        serde_json::json!(["StateSync", "HealthSync"])
    );
    relay.shutdown().await;
}

/// Proves /logs filters by minimum level and honours the limit, records coming from
/// the relay's tracing subscriber.
#[tokio::test]
async fn logs_filter_by_level_and_limit() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let ring = sdk_relay::logs::LogRing::new(100);
    let clock: sdk_relay::rt::SharedClock = std::sync::Arc::new(sdk_relay::rt::TokioClock);
    let subscriber = tracing_subscriber::registry().with(ring.layer(clock));
    // The test runtime is single-threaded: the relay's tasks log through this default.
    let _guard = tracing::subscriber::set_default(subscriber);
    let relay = TestRelay::start_with_logs(fast_config(), ring).await;
    tracing::warn!("a warning for the ring");
    tracing::info!("an info for the ring");
    tracing::debug!("a debug for the ring");
    let messages = |body: Value| -> Vec<String> {
        body["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["message"].as_str().unwrap().to_string())
            .collect()
    };
    let warn = get(relay.http_addr, "/logs?level=warn").await.json();
    assert!(messages(warn.clone()).contains(&"a warning for the ring".to_string()));
    assert!(
        !messages(warn)
            .iter()
            .any(|m| m.contains("info for the ring"))
    );
    let debug = get(relay.http_addr, "/logs?level=debug&limit=1000")
        .await
        .json();
    assert!(messages(debug).contains(&"a debug for the ring".to_string()));
    let one = get(relay.http_addr, "/logs?limit=1").await.json();
    assert_eq!(one["logs"].as_array().unwrap().len(), 1);
    let record = &one["logs"][0];
    assert_eq!(keys(record), ["level", "message", "timestamp"]);
    assert!(record["timestamp"].as_str().unwrap().ends_with('Z'));
    let default = get(relay.http_addr, "/logs").await.json();
    assert!(
        !messages(default)
            .iter()
            .any(|m| m.contains("debug for the ring")),
        "the default level is info"
    );
    relay.shutdown().await;
}

/// Proves `active_connections` counts live WebSocket clients and `memory_usage` is the
/// resident memory of this process (the relay runs in it), read independently from
/// /proc.
#[tokio::test]
async fn system_metrics_agree_with_websocket_clients_and_proc_rss() {
    let relay = TestRelay::start(fast_config()).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::handshaken(relay.ws_addr, &["sync"]).await.0);
    }
    let system = get(relay.http_addr, "/metrics").await.json()["system_metrics"].clone();
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", std::process::id()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    assert_eq!(system["active_connections"], 3, "{system}");
    let reported_mb: u64 = system["memory_usage"]
        .as_str()
        .unwrap()
        .trim_end_matches("MB")
        .parse()
        .unwrap();
    let proc_mb = rss_kib / 1024;
    // Both reads are of one live process; allow for what it allocates in between.
    let tolerance_mb = 16 + proc_mb / 10;
    assert!(
        reported_mb.abs_diff(proc_mb) <= tolerance_mb,
        "reported {reported_mb} MB, /proc says {proc_mb} MB"
    );
    let bytes = system["memory_bytes"].as_u64().unwrap();
    assert!((bytes >> 20).abs_diff(proc_mb) <= tolerance_mb);
    drop(clients);
    relay.shutdown().await;
}

/// Proves the served OpenAPI document is `docs/openapi.yaml`, and that it documents
/// exactly the routes the relay serves.
#[tokio::test]
async fn openapi_json_is_the_yaml_description() {
    let relay = TestRelay::start(fast_config()).await;
    let served = get(relay.http_addr, "/openapi.json").await.json();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    let yaml = std::fs::read_to_string(path).expect("docs/openapi.yaml");
    let expected: Value = serde_norway::from_str(&yaml).expect("valid YAML");
    assert_eq!(served, expected);
    assert!(served["openapi"].as_str().unwrap().starts_with("3.0"));
    let documented = keys(&served["paths"]);
    assert_eq!(
        documented,
        [
            "/config",
            "/health",
            "/health/live",
            "/health/ready",
            "/logs",
            "/metrics",
            "/metrics/prometheus",
            "/openapi.json",
            "/relays",
            "/sync/force",
            "/sync/status"
        ]
    );
    for path in documented {
        let method = if path == "/sync/force" { "POST" } else { "GET" };
        assert!(served["paths"][path][method.to_lowercase()].is_object());
        let reply = send(relay.http_addr, method, path, &[], b"").await;
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    }
    relay.shutdown().await;
}

/// Proves the specification's cURL examples work verbatim (only host:port changed)
/// with the real `curl`, against a live relay.
#[tokio::test]
async fn specification_curl_examples_succeed() {
    let relay = TestRelay::start(fast_config()).await;
    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/spec_curl_examples.sh"
    );
    let script = std::fs::read_to_string(spec).expect("examples file");
    // The fixture must be the specification's text, character for character. The
    // specification is kept in the repository (docs/specification.fr.txt), so this check
    // runs on every checkout.
    let original = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/specification.fr.txt");
    let text = std::fs::read_to_string(original)
        .unwrap_or_else(|e| panic!("the specification {original}: {e}"));
    let commands: Vec<&str> = script
        .split("\n\n")
        .filter(|c| c.contains("curl "))
        .collect();
    assert_eq!(commands.len(), 4, "the fixture holds four cURL examples");
    for command in script.split("\n\n") {
        assert!(
            text.contains(command.trim()),
            "not in the specification: {command}"
        );
    }
    let script = script.replace("localhost:8091", &relay.http_addr.to_string());
    let mut outputs = Vec::new();
    for command in script.split("\n\n").filter(|c| c.contains("curl ")) {
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .output()
            .await
            .expect("curl runs");
        assert!(output.status.success(), "{command}: {output:?}");
        let body: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{command}: not JSON ({e}): {output:?}"));
        assert!(body.get("error").is_none(), "{command}: {body}");
        outputs.push(body);
    }
    assert_eq!(outputs.len(), 4, "the specification has four cURL examples");
    assert_eq!(outputs[0]["status"], "healthy");
    assert!(outputs[1]["system_metrics"].is_object());
    assert!(outputs[2]["relay_id"].is_string());
    assert_eq!(outputs[3]["status"], "sync_triggered");
    assert_eq!(outputs[3]["sync_types"], serde_json::json!(["StateSync"]));
    relay.shutdown().await;
}

/// Proves client mistakes (400, 401, 404, 405) are logged below error level, so an
/// operator's error log shows only the relay's own failures.
#[tokio::test]
async fn client_mistakes_are_not_logged_as_errors() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let ring = sdk_relay::logs::LogRing::new(100);
    let clock: sdk_relay::rt::SharedClock = std::sync::Arc::new(sdk_relay::rt::TokioClock);
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(ring.layer(clock)));
    let mut config = fast_config();
    config.auth.http_basic_user = Some("op".into());
    config.auth.http_basic_password = Some("pw".into());
    // A closed mesh: an open one is warned about at start, which is not a client's mistake.
    config.auth.mesh_token = Some("mesh-secret".into());
    let relay = TestRelay::start_with_logs(config, ring.clone()).await;
    assert_eq!(get(relay.http_addr, "/logs?level=nope").await.status, 401);
    assert_eq!(get(relay.http_addr, "/nope").await.status, 404);
    assert_eq!(
        send(relay.http_addr, "PUT", "/health", &[], b"")
            .await
            .status,
        405
    );
    let auth = [("Authorization", "Basic b3A6cHc=")]; // op:pw
    let bad = send(relay.http_addr, "GET", "/logs?level=nope", &auth, b"").await;
    assert_eq!(bad.status, 400);
    let refusals = ring.recent(tracing::Level::DEBUG, 1000);
    assert!(
        refusals.iter().any(|r| r.message.contains("refused")),
        "refusals are logged at debug: {refusals:?}"
    );
    let errors = ring.recent(tracing::Level::WARN, 1000);
    assert!(errors.is_empty(), "{errors:?}");
    relay.shutdown().await;
}

/// Proves the API's whole pipeline (route, method, body, handler, metrics) answers
/// without a socket, through `http::app`, the entry point tests can call directly.
#[tokio::test]
async fn the_api_answers_without_a_socket() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use sdk_relay::rt::Env;

    let env = Env::tokio(5);
    let node = sdk_relay::node::Node::new(
        fast_config(),
        env.clock.clone(),
        env.rng.clone(),
        sdk_relay::logs::LogRing::new(10),
    );
    let api = sdk_relay::http::app(node.clone());
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    let call = |method: &str, path: &str, body: &'static str| {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let api = api.clone();
        async move {
            let response = api.call(client, request).await;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, health) = call("GET", "/health", "").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    let (status, error) = call("POST", "/sync/force", r#"{"sync_types":["Bogus"]}"#).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bogus")
    );
    let (status, forced) = call("POST", "/sync/force", "{}").await;
    assert_eq!((status, forced["peers"].as_u64()), (200, Some(0)));
    assert_eq!(call("GET", "/nowhere", "").await.0, 404);
    assert_eq!(call("DELETE", "/health", "").await.0, 405);
    let exposition = node.metrics.render();
    assert!(
        exposition.contains(r#"sdk_relay_http_requests_total{route="sync_force",status="400"} 1"#),
        "requests without a socket are counted like the others"
    );
}
