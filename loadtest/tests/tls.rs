//! Every `loadtest` subcommand against a relay serving TLS (a certificate from a CA made
//! here with rcgen): `wss://` and `https://` URLs with `--ca-file`. The `limits` checks
//! pass over TLS against a relay enforcing them and still fail against one that does
//! not; without `--ca-file` the run refuses the relay's certificate.

// Tests bind real loopback sockets: outside the relay's seam.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use sdk_relay::config::Config;
use sdk_relay::conn::tls::ServerTls;
use sdk_relay::logs::LogRing;
use sdk_relay::rt::{Env, Listener as _, Net as _, TokioNet};

const CONNECTIONS: usize = 20;
const MESSAGE_BYTES: usize = 4096;
const REQUESTS_PER_MINUTE: usize = 60;
const BODY_BYTES: usize = 4096;

/// A CA and one leaf for 127.0.0.1 it signs, as PEM files: (CA file, certificate, key).
fn certificates(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("loadtest-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "loadtest CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_pem).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// Starts a relay serving TLS with `config` on a thread of its own; it lives as long as
/// the test process. Returns its WebSocket and HTTP addresses.
fn start_tls_relay(
    mut config: Config,
    cert: &Path,
    key: &Path,
    name: &str,
) -> (SocketAddr, SocketAddr) {
    config.data_dir =
        std::env::temp_dir().join(format!("loadtest-tls-{}-{name}-data", std::process::id()));
    let tls = Arc::new(ServerTls::load(cert, key, Duration::from_secs(10)).unwrap());
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
            let listeners = sdk_relay::Listeners {
                ws,
                http,
                tls: Some(tls),
            };
            let logs = LogRing::new(100);
            sdk_relay::run(
                config,
                Env::tokio(7),
                listeners,
                logs,
                std::future::pending(),
            )
            .await;
        });
    });
    rx.recv().expect("relay started")
}

fn small_limits() -> Config {
    let mut config = Config::default();
    config.limits.ws_connections_max = CONNECTIONS;
    config.limits.ws_message_bytes_max = MESSAGE_BYTES;
    config.limits.http_requests_per_minute_max = REQUESTS_PER_MINUTE as u32;
    config.limits.http_body_bytes_max = BODY_BYTES;
    config
}

struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

fn loadtest(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--json", "--threads", "1"])
        .args(args)
        .output()
        .expect("loadtest runs");
    Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn limits(ws: SocketAddr, http: SocketAddr, ca_file: Option<&Path>) -> Output {
    let mut args = vec![
        "limits".to_string(),
        "--ws-url".into(),
        format!("wss://{ws}/"),
        "--http-url".into(),
        format!("https://{http}"),
        "--ws-connections-max".into(),
        CONNECTIONS.to_string(),
        "--ws-message-bytes-max".into(),
        MESSAGE_BYTES.to_string(),
        "--http-requests-per-minute-max".into(),
        REQUESTS_PER_MINUTE.to_string(),
        "--http-body-bytes-max".into(),
        BODY_BYTES.to_string(),
        "--timeout-secs".into(),
        "10".into(),
    ];
    if let Some(ca_file) = ca_file {
        args.push("--ca-file".into());
        args.push(ca_file.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    loadtest(&args)
}

fn failed_checks(output: &Output) -> Vec<String> {
    let report: serde_json::Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", output.stderr));
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every limit check passes over wss/https against a relay enforcing the limits; the
/// same checks over TLS still catch a connection cap 20 % too high.
#[test]
fn limits_checks_work_over_tls() {
    let (ca, cert, key) = certificates("limits");
    let (ws, http) = start_tls_relay(small_limits(), &cert, &key, "enforcing");
    let run = limits(ws, http, Some(&ca));
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    assert!(failed_checks(&run).is_empty(), "{}", run.stdout);

    let mut loose = small_limits();
    loose.limits.ws_connections_max = CONNECTIONS * 6 / 5;
    let (ws, http) = start_tls_relay(loose, &cert, &key, "loose");
    let run = limits(ws, http, Some(&ca));
    assert!(!run.success);
    assert_eq!(
        failed_checks(&run),
        ["ws_connections_max"],
        "{}",
        run.stdout
    );
}

/// Without `--ca-file`, the relay's private certificate is refused: the run fails and
/// says why.
#[test]
fn an_untrusted_certificate_is_refused() {
    let (_, cert, key) = certificates("untrusted");
    let (ws, http) = start_tls_relay(small_limits(), &cert, &key, "untrusted");
    let run = loadtest(&[
        "run",
        "--ws-url",
        &format!("wss://{ws}/"),
        "--connections",
        "2",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
    ]);
    assert!(!run.success, "{}", run.stdout);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(text.contains("UnknownIssuer"), "{text}");
    let _ = http;
}

/// `run` (ping), `connections` (memory from `/metrics` over https) and `mesh` speak
/// wss/https with `--ca-file` and report traffic.
#[test]
fn run_connections_and_mesh_work_over_tls() {
    let (ca, cert, key) = certificates("subcommands");
    let mut config = small_limits();
    config.limits.http_requests_per_minute_max = 1000;
    let (ws, http) = start_tls_relay(config, &cert, &key, "subcommands");
    let ca = ca.display().to_string();
    let wss = format!("wss://{ws}/");

    let run = loadtest(&[
        "run",
        "--ws-url",
        &wss,
        "--ca-file",
        &ca,
        "--connections",
        "4",
        "--duration-secs",
        "1",
        "--warmup-secs",
        "0",
    ]);
    assert!(run.success, "{}\n{}", run.stdout, run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(report["messages"].as_u64().unwrap_or(0) > 0, "{report:#}");

    let https = format!("https://{http}");
    let connections = loadtest(&[
        "connections",
        "--ws-url",
        &wss,
        "--ca-file",
        &ca,
        "--connections",
        "8",
        "--hold-secs",
        "0",
        "--http-url",
        &https,
    ]);
    assert!(
        connections.success,
        "{}\n{}",
        connections.stdout, connections.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&connections.stdout).unwrap();
    assert_eq!(report["connections_open"], 8, "{report:#}");

    let mesh = loadtest(&[
        "mesh",
        "--relay",
        &wss,
        "--ca-file",
        &ca,
        "--subscribers-per-relay",
        "2",
        "--messages",
        "20",
        "--rate",
        "100",
        "--drain-secs",
        "1",
    ]);
    assert!(mesh.success, "{}\n{}", mesh.stdout, mesh.stderr);
    let report: serde_json::Value = serde_json::from_str(&mesh.stdout).unwrap();
    assert_eq!(report["relays"][0]["deliveries"], 40, "{report:#}");
}
