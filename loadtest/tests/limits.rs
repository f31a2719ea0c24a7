//! `loadtest limits` (the real binary) against targets on loopback. Every check passes
//! against a relay enforcing the limits it is told (and against fakes that behave),
//! and each check has negative controls: a target that breaks exactly that limit, which
//! must make the run fail naming that check, and only that check, with the reason.
//!
//! Targets that misbehave: in-process relays configured 20 % or one byte off the limits
//! loadtest is told, the baseline server (no limits at all), and tiny fake servers
//! (`fake/`) answering the wrong status codes or leaving out `Retry-After`.
//!
//! Every run is told the same small limits (20 connections, 4 KiB messages, 60
//! requests/min, 4 KiB bodies), so it stays short; no wall-clock figure is asserted.

// Tests bind real loopback sockets: outside the relay's seam.
#![allow(clippy::disallowed_methods)]

mod fake;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use bench::baseline::{self, Mode};
use sdk_relay::config::Config;
use sdk_relay::logs::LogRing;
use sdk_relay::rt::{Env, Listener as _, Net as _, TokioNet};

use fake::{Reply, WsFake};

/// The limits every run of `loadtest limits` is told.
const CONNECTIONS: usize = 20;
const MESSAGE_BYTES: usize = 4096;
const REQUESTS_PER_MINUTE: usize = 60;
const BODY_BYTES: usize = 4096;

/// The checks' names, as reported.
const CONNECTIONS_CHECK: &str = "ws_connections_max";
const MESSAGE_ACCEPTED: &str = "ws_message_bytes_max accepted";
const MESSAGE_REFUSED: &str = "ws_message_bytes_max + 1 closed with 1009";
const BODY_ACCEPTED: &str = "http_body_bytes_max accepted";
const BODY_REFUSED: &str = "http_body_bytes_max + 1 answered 413";
const RATE_CHECK: &str = "http_requests_per_minute_max";

/// Starts a relay with `config` on a thread of its own; it lives as long as the test
/// process. Returns its WebSocket and HTTP addresses.
fn start_relay(mut config: Config, name: &str) -> (SocketAddr, SocketAddr) {
    config.data_dir =
        std::env::temp_dir().join(format!("loadtest-limits-{}-{name}", std::process::id()));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let ws = TokioNet.bind("127.0.0.1:0").await.expect("bind ws");
            let http = TokioNet.bind("127.0.0.1:0").await.expect("bind http");
            let addrs = (ws.local_addr().unwrap(), http.local_addr().unwrap());
            config.ws_url = addrs.0.to_string();
            config.http_url = addrs.1.to_string();
            config.validate().expect("test config is valid");
            tx.send(addrs).expect("test waits");
            sdk_relay::run(
                config,
                Env::tokio(7),
                sdk_relay::Listeners {
                    ws,
                    http,
                    tls: None,
                },
                LogRing::new(100),
                std::future::pending(),
            )
            .await;
        });
    });
    rx.recv().expect("relay started")
}

/// A relay configured with exactly the limits loadtest is told.
fn small_limits() -> Config {
    let mut config = Config::default();
    config.limits.ws_connections_max = CONNECTIONS;
    config.limits.ws_message_bytes_max = MESSAGE_BYTES;
    config.limits.http_requests_per_minute_max = REQUESTS_PER_MINUTE as u32;
    config.limits.http_body_bytes_max = BODY_BYTES;
    config
}

/// Starts the baseline server (hyper + fastwebsockets, no limits at all; it answers
/// every plain HTTP request 400) on a thread of its own.
fn start_baseline() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            tx.send(listener.local_addr().expect("local addr"))
                .expect("test waits");
            baseline::serve(listener, Mode::Echo, std::future::pending())
                .await
                .expect("serve");
        });
    });
    rx.recv().expect("baseline started")
}

/// One run's outcome: exit status, the JSON report and stderr.
struct Run {
    success: bool,
    report: serde_json::Value,
    stderr: String,
}

impl Run {
    fn checks(&self) -> &Vec<serde_json::Value> {
        self.report["checks"].as_array().expect("checks")
    }

    fn failed(&self) -> Vec<&str> {
        self.checks()
            .iter()
            .filter(|c| c["passed"] == false)
            .map(|c| c["name"].as_str().unwrap())
            .collect()
    }

    fn detail(&self, name: &str) -> &str {
        self.checks()
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["detail"].as_str())
            .unwrap_or_else(|| panic!("no check {name}: {:#}", self.report))
    }

    /// The run passed every check it ran.
    fn assert_passes(&self) {
        assert!(self.success, "{:#}\n{}", self.report, self.stderr);
        assert!(self.failed().is_empty(), "{:#}", self.report);
    }

    /// The run failed, exactly the checks `names` failed, and the detail of each says
    /// `why` (the same index). The exit message names them too.
    fn assert_fails(&self, names: &[&str], why: &[&str]) {
        assert!(!self.success, "{:#}", self.report);
        assert_eq!(self.failed(), names, "{:#}", self.report);
        for (name, why) in names.iter().zip(why) {
            let detail = self.detail(name);
            assert!(
                detail.contains(why),
                "{name}: `{detail}` does not say `{why}`"
            );
        }
        let summary = format!("loadtest limits: failed: {}", names.join(", "));
        assert!(self.stderr.contains(&summary), "{}", self.stderr);
    }
}

/// Runs `loadtest limits --checks checks` with the small limits against `ws` and `http`
/// (an address a run does not use only needs to parse).
fn limits(ws: SocketAddr, http: SocketAddr, checks: &str) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--json", "--threads", "1", "limits"])
        .args(["--ws-url", &format!("ws://{ws}/")])
        .args(["--http-url", &format!("http://{http}")])
        .args(["--ws-connections-max", &CONNECTIONS.to_string()])
        .args(["--ws-message-bytes-max", &MESSAGE_BYTES.to_string()])
        .args([
            "--http-requests-per-minute-max",
            &REQUESTS_PER_MINUTE.to_string(),
        ])
        .args(["--http-body-bytes-max", &BODY_BYTES.to_string()])
        .args(["--timeout-secs", "10", "--checks", checks])
        .output()
        .expect("loadtest runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stderr}"));
    Run {
        success: output.status.success(),
        report,
        stderr,
    }
}

const ALL_CHECKS: &str = "connections,message-size,body-size,rate-limit";

fn relay_run(config: Config, name: &str, checks: &str) -> Run {
    let (ws, http) = start_relay(config, name);
    limits(ws, http, checks)
}

/// The HTTP fake's rate behaviour when it is right: the first `REQUESTS_PER_MINUTE`
/// GETs answered 200, later ones 429 with `Retry-After: 1`.
fn counted_gets(
    within: Reply,
    past: impl Fn() -> Reply + Send + Sync + 'static,
) -> impl Fn(&fake::Request) -> Reply + Send + Sync + 'static {
    let gets = AtomicUsize::new(0);
    let within_status = within.status;
    move |request| {
        if request.method != "GET" {
            return Reply::status(405);
        }
        if gets.fetch_add(1, Ordering::Relaxed) < REQUESTS_PER_MINUTE {
            Reply::status(within_status)
        } else {
            past()
        }
    }
}

// ---- Positive: the checks pass where the limits hold. ----

#[test]
fn every_limit_check_passes_against_a_relay_enforcing_them() {
    let run = relay_run(small_limits(), "enforcing", ALL_CHECKS);
    run.assert_passes();
    let names: Vec<&str> = run
        .checks()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            CONNECTIONS_CHECK,
            MESSAGE_ACCEPTED,
            MESSAGE_REFUSED,
            BODY_ACCEPTED,
            BODY_REFUSED,
            RATE_CHECK
        ]
    );
    assert!(
        run.detail(BODY_ACCEPTED)
            .contains("4096-byte body answered 200")
    );
    assert!(
        run.detail(BODY_REFUSED)
            .contains("4097-byte body answered 413")
    );
    assert!(run.detail(RATE_CHECK).contains("the first 429 at request"));
}

/// The fakes are not failures by themselves: set to behave, they pass every check, so
/// each negative control below differs from a passing target by the one thing it
/// breaks.
#[test]
fn every_limit_check_passes_against_fakes_that_behave() {
    let ws = fake::ws(WsFake::correct(CONNECTIONS, MESSAGE_BYTES));
    let rate = counted_gets(Reply::status(200), || {
        Reply::status(429).with("Retry-After", "1")
    });
    let http = fake::http(move |request| {
        if request.method == "POST" {
            Reply::status(if request.content_length <= BODY_BYTES {
                200
            } else {
                413
            })
        } else {
            rate(request)
        }
    });
    limits(ws, http, ALL_CHECKS).assert_passes();
}

// ---- ws_connections_max: `max` held, the next refused 503 with Retry-After. ----

#[test]
fn connection_check_fails_against_a_relay_with_a_cap_20_percent_higher() {
    let mut config = small_limits();
    config.limits.ws_connections_max = CONNECTIONS * 6 / 5;
    let run = relay_run(config, "cap-higher", "connections");
    run.assert_fails(
        &[CONNECTIONS_CHECK],
        &["connection 21 was accepted with 20 already open"],
    );
}

#[test]
fn connection_check_fails_against_a_relay_with_a_cap_20_percent_lower() {
    let mut config = small_limits();
    config.limits.ws_connections_max = CONNECTIONS * 4 / 5;
    let run = relay_run(config, "cap-lower", "connections");
    run.assert_fails(
        &[CONNECTIONS_CHECK],
        &["only 16 of 20 connections were accepted"],
    );
}

#[test]
fn connection_check_fails_against_a_server_with_no_connection_cap() {
    let ws = fake::ws(WsFake {
        cap: None,
        ..WsFake::correct(CONNECTIONS, MESSAGE_BYTES)
    });
    let run = limits(ws, ws, "connections");
    run.assert_fails(
        &[CONNECTIONS_CHECK],
        &["connection 21 was accepted with 20 already open"],
    );
}

#[test]
fn connection_check_fails_on_503_without_retry_after() {
    let ws = fake::ws(WsFake {
        refusal_retry_after: None,
        ..WsFake::correct(CONNECTIONS, MESSAGE_BYTES)
    });
    let run = limits(ws, ws, "connections");
    run.assert_fails(
        &[CONNECTIONS_CHECK],
        &["connection 21 answered HTTP 503 with no Retry-After"],
    );
}

#[test]
fn connection_check_fails_on_a_refusal_other_than_503() {
    let ws = fake::ws(WsFake {
        refusal_status: 429,
        ..WsFake::correct(CONNECTIONS, MESSAGE_BYTES)
    });
    let run = limits(ws, ws, "connections");
    run.assert_fails(
        &[CONNECTIONS_CHECK],
        &["connection 21 answered HTTP 429 (Retry-After: 5); want 503 with Retry-After"],
    );
}

// ---- ws_message_bytes_max: exactly the maximum acknowledged, one byte more 1009. ----

#[test]
fn message_size_check_fails_against_a_relay_accepting_2_mib() {
    let mut config = small_limits();
    config.limits.ws_message_bytes_max = 2 << 20;
    let run = relay_run(config, "2mib", "message-size");
    run.assert_fails(
        &[MESSAGE_REFUSED],
        &["a 4097-byte message got notification_ack; want close code 1009"],
    );
}

#[test]
fn message_size_check_fails_against_a_relay_one_byte_stricter() {
    let mut config = small_limits();
    config.limits.ws_message_bytes_max = MESSAGE_BYTES - 1;
    let run = relay_run(config, "message-stricter", "message-size");
    run.assert_fails(
        &[MESSAGE_ACCEPTED],
        &["a 4096-byte notification got close code 1009; want notification_ack"],
    );
}

#[test]
fn message_size_check_fails_on_a_close_code_other_than_1009() {
    let ws = fake::ws(WsFake {
        oversize_close_code: 1008,
        ..WsFake::correct(CONNECTIONS, MESSAGE_BYTES)
    });
    let run = limits(ws, ws, "message-size");
    run.assert_fails(
        &[MESSAGE_REFUSED],
        &["a 4097-byte message got close code 1008; want close code 1009"],
    );
}

// ---- http_body_bytes_max: exactly the maximum accepted, one byte more 413. ----

#[test]
fn body_check_fails_against_a_relay_one_byte_more_permissive() {
    let mut config = small_limits();
    config.limits.http_body_bytes_max = BODY_BYTES + 1;
    let run = relay_run(config, "body-permissive", "body-size");
    run.assert_fails(
        &[BODY_REFUSED],
        &["with a 4097-byte body (one byte over the maximum) answered 200; want 413"],
    );
}

#[test]
fn body_check_fails_against_a_relay_one_byte_stricter() {
    let mut config = small_limits();
    config.limits.http_body_bytes_max = BODY_BYTES - 1;
    let run = relay_run(config, "body-stricter", "body-size");
    run.assert_fails(
        &[BODY_ACCEPTED],
        &["with a 4096-byte body (exactly the maximum) answered 413; want it accepted"],
    );
}

#[test]
fn body_check_fails_against_a_server_answering_413_to_every_post() {
    let http = fake::http(|_| Reply::status(413));
    let run = limits(http, http, "body-size");
    run.assert_fails(
        &[BODY_ACCEPTED],
        &["with a 4096-byte body (exactly the maximum) answered 413; want it accepted"],
    );
}

#[test]
fn body_check_fails_against_a_server_with_no_body_limit() {
    let http = fake::http(|_| Reply::status(200));
    let run = limits(http, http, "body-size");
    run.assert_fails(
        &[BODY_REFUSED],
        &["with a 4097-byte body (one byte over the maximum) answered 200; want 413"],
    );
}

#[test]
fn body_check_fails_on_a_refusal_other_than_413() {
    let http = fake::http(|request| {
        Reply::status(if request.content_length <= BODY_BYTES {
            200
        } else {
            400
        })
    });
    let run = limits(http, http, "body-size");
    run.assert_fails(
        &[BODY_REFUSED],
        &["with a 4097-byte body (one byte over the maximum) answered 400; want 413"],
    );
}

#[test]
fn body_check_fails_against_the_baseline() {
    let baseline = start_baseline();
    let run = limits(baseline, baseline, "body-size");
    run.assert_fails(
        &[BODY_ACCEPTED, BODY_REFUSED],
        &[
            "answered 400; want it accepted (2xx)",
            "answered 400; want 413",
        ],
    );
}

// ---- http_requests_per_minute_max: exactly the burst allowed, then 429 + Retry-After. ----

#[test]
fn rate_check_fails_against_a_relay_allowing_20_percent_more() {
    let mut config = small_limits();
    config.limits.http_requests_per_minute_max = (REQUESTS_PER_MINUTE * 6 / 5) as u32;
    let run = relay_run(config, "rate-higher", "rate-limit");
    run.assert_fails(&[RATE_CHECK], &["too permissive: "]);
    // Sent as fast as answers came, all of them were allowed (the relay's bucket holds
    // 72); how many were sent depends on the refill the time taken allows.
    assert!(
        run.detail(RATE_CHECK)
            .contains("requests were answered without 429"),
        "{:#}",
        run.report
    );
}

#[test]
fn rate_check_fails_against_a_relay_allowing_20_percent_less() {
    let mut config = small_limits();
    config.limits.http_requests_per_minute_max = (REQUESTS_PER_MINUTE * 4 / 5) as u32;
    let run = relay_run(config, "rate-lower", "rate-limit");
    // Request 49 unless the relay refilled a token (0.8/s) before it came.
    run.assert_fails(&[RATE_CHECK], &["too strict: request "]);
    assert!(
        run.detail(RATE_CHECK)
            .contains("yet the first 60 requests of a client in a minute must be allowed"),
        "{:#}",
        run.report
    );
}

#[test]
fn rate_check_fails_against_the_baseline_with_no_rate_limit() {
    let baseline = start_baseline();
    let run = limits(baseline, baseline, "rate-limit");
    run.assert_fails(&[RATE_CHECK], &["too permissive: "]);
    assert!(
        run.detail(RATE_CHECK).contains("(statuses 400×"),
        "{:#}",
        run.report
    );
}

#[test]
fn rate_check_fails_on_429_without_retry_after() {
    let http = fake::http(counted_gets(Reply::status(200), || Reply::status(429)));
    let run = limits(http, http, "rate-limit");
    run.assert_fails(
        &[RATE_CHECK],
        &["request 61 answered 429 without a valid Retry-After: no Retry-After"],
    );
}

#[test]
fn rate_check_fails_on_a_refusal_other_than_429() {
    let http = fake::http(counted_gets(Reply::status(200), || {
        Reply::status(503).with("Retry-After", "1")
    }));
    let run = limits(http, http, "rate-limit");
    run.assert_fails(&[RATE_CHECK], &["too permissive: "]);
    assert!(
        run.detail(RATE_CHECK).contains("(statuses 200×60 503×"),
        "{:#}",
        run.report
    );
}
