//! TLS on both ports, seen by real clients: Python `websockets` over `wss://` and `curl
//! --cacert` over `https://` against the relay binary; certificate reload under a live
//! connection (SIGHUP and a change of the files); two relays linked over wss; chain
//! sources over https. Certificates are made by the tests (`support::tls`).

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sdk_relay::chain::source::{
    BlindbitHttp, BlindbitSource as _, CoreAuth, CoreRpc, CoreSource as _,
};
use sdk_relay::config::Config;
use sdk_relay::conn::tls::{ClientTls, ServerTls};
use sdk_relay::rt::TokioNet;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::cluster::free_port;
use crate::support::tls::{Leaf, Pki, write_atomically};
use crate::support::{TestRelay, WAIT, chain_fakes, fast_config};

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// `curl --cacert CA https://addr/path`: the status and the body, or `None` when curl
/// could not complete the exchange (refused connection, failed handshake).
async fn curl(addr: &str, path: &str, ca_file: &Path) -> Option<(u16, String)> {
    let output = tokio::time::timeout(
        WAIT,
        Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "5"])
            .arg("--cacert")
            .arg(ca_file)
            .args(["--write-out", "\n%{http_code}"])
            .arg(format!("https://{addr}{path}"))
            .output(),
    )
    .await
    .expect("curl finishes")
    .expect("curl runs (scripts/test-deps.sh installs it)");
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n')?;
    Some((status.trim().parse().ok()?, body.to_string()))
}

/// Polls `check` every 100 ms until it holds, for at most `WAIT * 2`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// The hex DER of the certificate that `127.0.0.1:port` serves, as Python's `ssl` sees it.
async fn served_cert(port: u16, ca_file: &Path) -> Option<String> {
    let output = Command::new("python3")
        .arg(clients_dir().join("tls_client.py"))
        .args(["cert", "127.0.0.1", &port.to_string()])
        .arg(ca_file)
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A wallet over wss in a Python process, driven through its stdin.
struct Session {
    child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Session {
    async fn start(url: &str, ca_file: &Path) -> Session {
        let mut child = Command::new("python3")
            .arg(clients_dir().join("tls_client.py"))
            .args(["session", url])
            .arg(ca_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (scripts/test-deps.sh installs it)");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Session { child, lines }
    }

    async fn next(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("the client answers in time")
            .unwrap()
            .expect("the client is still running");
        serde_json::from_str(&line).unwrap()
    }

    /// Publishes a notification over the live connection; the relay's answer type.
    async fn publish(&mut self) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"publish\n").await.unwrap();
        stdin.flush().await.unwrap();
        let answer = self.next().await;
        assert_eq!(answer["event"], "answer", "{answer}");
        answer["type"].as_str().unwrap().to_string()
    }

    async fn finish(mut self) -> bool {
        drop(self.child.stdin.take());
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the client exits")
            .unwrap()
            .success()
    }
}

/// The counter `name{label}` in a Prometheus exposition (0 when absent).
fn counter(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The relay binary with `--tls-cert`/`--tls-key`: Python `websockets` handshakes over
/// wss and curl reads the API over https with the test CA. SIGHUP after new files are
/// written: new handshakes see the new certificate while the wallet's connection, made
/// before, still publishes. A bad certificate at SIGHUP is counted and logged, the
/// previous one stays served, the connection still works. Plain HTTP is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_wss_and_https_and_reloads_on_sighup() {
    let pki = Pki::new("binary");
    let first = pki.leaf("server");
    let (ws_port, http_port) = (free_port(), free_port());
    let config_file = pki.dir.join("relay.toml");
    // Reload on SIGHUP only, so what changes below is what the signal did.
    std::fs::write(&config_file, "[tls]\nreload_check_secs = 0\n").unwrap();
    let mut relay = Command::new(env!("CARGO_BIN_EXE_sdk_relay"))
        .arg("--config")
        .arg(&config_file)
        .args(["--ws-addr", &format!("127.0.0.1:{ws_port}")])
        .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
        .arg("--data-dir")
        .arg(pki.dir.join("data"))
        .arg("--tls-cert")
        .arg(&first.cert_file)
        .arg("--tls-key")
        .arg(&first.key_file)
        .stderr(Stdio::from(
            std::fs::File::create(pki.dir.join("relay.log")).unwrap(),
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = format!("127.0.0.1:{http_port}");
    let log = || std::fs::read_to_string(pki.dir.join("relay.log")).unwrap_or_default();
    eventually("the relay answers over https", || async {
        curl(&http, "/health/live", &pki.ca_file).await.is_some()
    })
    .await;
    let (status, body) = curl(&http, "/health", &pki.ca_file).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\""), "{body}");
    // The API port speaks TLS only: a plaintext request gets no HTTP answer.
    let plain = Command::new("curl")
        .args(["--silent", "--max-time", "5", "--write-out", "%{http_code}"])
        .arg(format!("http://{http}/health"))
        .output()
        .await
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");

    let mut session = Session::start(&format!("wss://127.0.0.1:{ws_port}"), &pki.ca_file).await;
    let ready = session.next().await;
    assert_eq!(ready["event"], "ready", "{ready}");
    assert_eq!(ready["cert"], hex::encode(&first.der));
    assert_eq!(session.publish().await, "notification_ack");

    let second = pki.leaf("server");
    assert_ne!(first.der, second.der);
    assert_eq!(
        served_cert(ws_port, &pki.ca_file).await,
        Some(hex::encode(&first.der)),
        "no reload before the signal"
    );
    signal(&relay, "-HUP").await;
    let wanted = hex::encode(&second.der);
    eventually("new handshakes see the new certificate", || async {
        served_cert(ws_port, &pki.ca_file).await.as_deref() == Some(&wanted)
            && served_cert(http_port, &pki.ca_file).await.as_deref() == Some(&wanted)
    })
    .await;
    assert_eq!(
        session.publish().await,
        "notification_ack",
        "the live connection survived"
    );

    write_atomically(&first.cert_file, "-----BEGIN CERTIFICATE-----\nbroken\n");
    signal(&relay, "-HUP").await;
    eventually("the bad certificate is counted", || async {
        let metrics = curl(&http, "/metrics/prometheus", &pki.ca_file).await;
        metrics.is_some_and(|(_, text)| {
            counter(&text, "sdk_relay_tls_reloads_total{result=\"error\"}") == 1.0
        })
    })
    .await;
    assert!(
        log().contains("previous certificate stays in force"),
        "{}",
        log()
    );
    let (_, metrics) = curl(&http, "/metrics/prometheus", &pki.ca_file)
        .await
        .unwrap();
    assert_eq!(counter(&metrics, "sdk_relay_tls_reload_failing"), 1.0);
    assert_eq!(
        served_cert(ws_port, &pki.ca_file).await,
        Some(wanted.clone())
    );
    assert_eq!(session.publish().await, "notification_ack");
    assert!(session.finish().await, "the wallet closed cleanly");

    let (_, metrics) = curl(&http, "/metrics/prometheus", &pki.ca_file)
        .await
        .unwrap();
    assert_eq!(
        counter(&metrics, "sdk_relay_tls_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert!(counter(&metrics, "sdk_relay_tls_handshakes_total{listener=\"ws\"}") >= 3.0);
    assert!(
        counter(
            &metrics,
            "sdk_relay_tls_handshakes_total{listener=\"http\"}"
        ) >= 3.0
    );
    // The plaintext request above failed its handshake.
    assert!(
        counter(
            &metrics,
            "sdk_relay_tls_handshake_failures_total{reason=\"protocol\"}"
        ) >= 1.0
    );

    signal(&relay, "-TERM").await;
    let status = tokio::time::timeout(WAIT, relay.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", log());
}

/// A certificate that cannot be loaded stops the start-up, naming the file and the
/// reason; nothing is served in plaintext instead.
#[test]
fn a_bad_certificate_stops_the_start_up() {
    let pki = Pki::new("bad");
    let leaf = pki.leaf("server");
    let other = pki.leaf("other");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sdk_relay"))
        .args(["--ws-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(pki.dir.join("data"))
        .arg("--tls-cert")
        .arg(&leaf.cert_file)
        .arg("--tls-key")
        .arg(&other.key_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot load the TLS certificate"),
        "{stderr}"
    );
    let missing = pki.dir.join("missing.pem");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sdk_relay"))
        .args(["--ws-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(pki.dir.join("data"))
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&leaf.key_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

async fn signal(child: &Child, which: &str) {
    let status = Command::new("kill")
        .arg(which)
        .arg(child.id().unwrap().to_string())
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

fn tls_config(leaf: &Leaf) -> Config {
    let mut config = fast_config();
    config.tls.cert_file = Some(leaf.cert_file.clone());
    config.tls.key_file = Some(leaf.key_file.clone());
    config
}

/// The certificate a TLS port serves, as a rustls client trusting `ca_file` sees it.
async fn served_der(addr: std::net::SocketAddr, ca_file: &Path) -> Option<Vec<u8>> {
    let tls = ClientTls::new(Some(ca_file), None).ok()?;
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let stream = tokio::time::timeout(WAIT, tls.connect(&addr.to_string(), stream))
        .await
        .ok()?
        .ok()?;
    Some(stream.get_ref().1.peer_certificates()?[0].to_vec())
}

/// With `reload_check_secs`, rewriting the files is enough: no signal, and new
/// handshakes see the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_files_are_reloaded_without_a_signal() {
    let pki = Pki::new("poll");
    let first = pki.leaf("server");
    let mut config = tls_config(&first);
    config.tls.reload_check_secs = 1;
    let relay = TestRelay::start(config).await;
    assert_eq!(
        served_der(relay.ws_addr, &pki.ca_file).await,
        Some(first.der.clone())
    );
    let second = pki.leaf("server");
    eventually("the rewritten files are served", || async {
        served_der(relay.ws_addr, &pki.ca_file).await.as_ref() == Some(&second.der)
    })
    .await;
    relay.shutdown().await;
}

/// Two relays serving TLS, the second dialing the first with `[mesh] tls` and the CA in
/// `ca_file`: they link over wss. A third trusting another CA does not link, and the
/// first counts the refusal of its certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_link_over_wss_with_a_private_ca() {
    let pki = Pki::new("mesh");
    let leaf = pki.leaf("relay");
    let mut a = tls_config(&leaf);
    a.relay_id = "relay-a".into();
    let a = TestRelay::start(a).await;
    let mut b = tls_config(&leaf);
    b.relay_id = "relay-b".into();
    b.mesh.tls = true;
    b.mesh.ca_file = Some(pki.ca_file.clone());
    b.mesh.peers = vec![a.ws_addr.to_string()];
    b.advertise_addr = Some("127.0.0.1:1".into());
    let b = TestRelay::start(b).await;
    let http_a = a.http_addr.to_string();
    eventually("relay-a sees relay-b linked", || async {
        let relays = curl(&http_a, "/relays", &pki.ca_file).await;
        relays.is_some_and(|(_, body)| {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            v["relays"].as_array().is_some_and(|list| {
                list.iter()
                    .any(|r| r["relay_id"] == "relay-b" && r["connected"] == true)
            })
        })
    })
    .await;

    let other = Pki::new("mesh-other");
    let mut c = tls_config(&other.leaf("relay"));
    c.relay_id = "relay-c".into();
    c.mesh.tls = true;
    c.mesh.ca_file = Some(other.ca_file.clone());
    c.mesh.peers = vec![a.ws_addr.to_string()];
    c.advertise_addr = Some("127.0.0.1:2".into());
    let c = TestRelay::start(c).await;
    eventually(
        "relay-a counts relay-c refusing its certificate",
        || async {
            let metrics = curl(&http_a, "/metrics/prometheus", &pki.ca_file).await;
            metrics.is_some_and(|(_, text)| {
                counter(
                    &text,
                    "sdk_relay_tls_handshake_failures_total{reason=\"certificate\"}",
                ) >= 1.0
            })
        },
    )
    .await;
    let (_, body) = curl(&http_a, "/relays", &pki.ca_file).await.unwrap();
    assert!(!body.contains("relay-c"), "{body}");
    c.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}

/// Core and Blindbit fakes (the real protocols) behind TLS: `https://` URLs with the CA
/// in `ca_file` answer; without it (the bundled web roots) the certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_sources_speak_https_with_a_ca_file() {
    let pki = Pki::new("chain");
    let leaf = pki.leaf("chain");
    let tls = Arc::new(ServerTls::load(&leaf.cert_file, &leaf.key_file, WAIT).unwrap());
    let fakes = chain_fakes::start_tls(chain_fakes::chain(100, 105), tls).await;
    assert!(fakes.core_url.starts_with("https://"));
    let timeout = Duration::from_secs(5);
    let core = CoreRpc::new(TokioNet, &fakes.core_url, CoreAuth::None, timeout)
        .unwrap()
        .with_ca_file(Some(&pki.ca_file))
        .unwrap();
    assert_eq!(core.blockchain_info().await.unwrap().blocks, 105);
    let blindbit = BlindbitHttp::new(TokioNet, &fakes.blindbit_url, timeout)
        .unwrap()
        .with_ca_file(Some(&pki.ca_file))
        .unwrap();
    assert_eq!(blindbit.block_height().await.unwrap(), 105);

    let untrusting = CoreRpc::new(TokioNet, &fakes.core_url, CoreAuth::None, timeout).unwrap();
    let error = untrusting.blockchain_info().await.unwrap_err().to_string();
    assert!(error.contains("UnknownIssuer"), "{error}");
}

/// Silent clients that never start their TLS handshake hold only their own connections:
/// with several of them pending on each port, a real client still connects over wss and
/// https at once; the silent ones are cut at `tls_handshake_timeout_secs` and counted
/// as `timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_does_not_stall_accepting() {
    let pki = Pki::new("silent");
    let leaf = pki.leaf("server");
    let mut config = tls_config(&leaf);
    config.limits.tls_handshake_timeout_secs = 2;
    let relay = TestRelay::start(config).await;
    let mut silent = Vec::new();
    for addr in [relay.ws_addr, relay.http_addr] {
        for _ in 0..4 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
    }
    assert_eq!(
        served_der(relay.ws_addr, &pki.ca_file).await,
        Some(leaf.der.clone())
    );
    let http = relay.http_addr.to_string();
    let (status, _) = curl(&http, "/health/live", &pki.ca_file).await.unwrap();
    assert_eq!(status, 200);
    eventually("the silent clients time out", || async {
        let metrics = curl(&http, "/metrics/prometheus", &pki.ca_file).await;
        metrics.is_some_and(|(_, text)| {
            counter(
                &text,
                "sdk_relay_tls_handshake_failures_total{reason=\"timeout\"}",
            ) == 8.0
        })
    })
    .await;
    // Cut by the relay: each silent socket reads the end of the stream.
    for mut stream in silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut stream, &mut buf))
            .await
            .expect("closed in time");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    relay.shutdown().await;
}
