//! The relay as users meet it: the binary, its signals and command line, and the
//! specification's own Python and JavaScript clients as separate processes.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::support::{Client, TestRelay, WAIT, fast_config};
use tokio::process::Command;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

async fn run_client(program: &str, script: &str, url: &str) -> (bool, String) {
    let output = tokio::time::timeout(
        WAIT * 2,
        Command::new(program)
            .arg(clients_dir().join(script))
            .arg(url)
            .current_dir(clients_dir())
            .output(),
    )
    .await
    .expect("client finishes")
    .unwrap_or_else(|e| panic!("cannot run {program}: {e} (see README: test prerequisites)"));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output.status.success(), format!("{stdout}\n{stderr}"))
}

fn types(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|v| v["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The specification's Python client (package `websockets`) handshakes and hears health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_spec_client_handshakes() {
    let relay = TestRelay::start(fast_config()).await;
    let (ok, output) = run_client(
        "python3",
        "spec_client.py",
        &format!("ws://{}", relay.ws_addr),
    )
    .await;
    assert!(ok, "python client failed:\n{output}");
    assert_eq!(
        types(&output)[..2],
        ["handshake_response", "health"],
        "{output}"
    );
    relay.shutdown().await;
}

/// The specification's JavaScript client (Node, package `ws`) handshakes and hears health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_spec_client_handshakes() {
    assert!(
        clients_dir().join("node_modules/ws").exists(),
        "run `npm ci --prefix relay/tests/clients` first (the README's test command does)"
    );
    let relay = TestRelay::start(fast_config()).await;
    let (ok, output) =
        run_client("node", "spec_client.js", &format!("ws://{}", relay.ws_addr)).await;
    assert!(ok, "node client failed:\n{output}");
    assert_eq!(
        types(&output)[..2],
        ["handshake_response", "health"],
        "{output}"
    );
    relay.shutdown().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A second relay started on a running relay's data directory (its key, its log) exits 2
/// naming the directory, and the running relay goes on serving; once it has stopped,
/// the directory is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_serves_one_relay_at_a_time() {
    let (ws_port, http_port) = (free_port(), free_port());
    let data_dir = std::env::temp_dir().join(format!("sdk_relay_lock_{ws_port}"));
    let relay = |ws: u16, http: u16| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sdk_relay"));
        command
            .args(["--ws-addr", &format!("127.0.0.1:{ws}")])
            .args(["--http-addr", &format!("127.0.0.1:{http}")])
            .arg("--data-dir")
            .arg(&data_dir)
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    };
    let mut first = relay(ws_port, http_port).spawn().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{ws_port}").parse().unwrap();
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the first relay came up");

    let second = tokio::time::timeout(WAIT, relay(free_port(), free_port()).output())
        .await
        .expect("the second relay exits by itself")
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is in use by another relay process") && stderr.contains("relay.lock"),
        "{stderr}"
    );
    Client::handshaken(addr, &["notifications"]).await;

    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let (ws_again, http_again) = (free_port(), free_port());
    let mut again = relay(ws_again, http_again).spawn().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{ws_again}").parse().unwrap();
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        up,
        "the directory is free once its relay is gone (even killed)"
    );
    again.start_kill().unwrap();
    again.wait().await.unwrap();
    std::fs::remove_dir_all(&data_dir).ok();
}

/// SIGTERM: clients are closed with 1001 and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let (ws_port, http_port) = (free_port(), free_port());
    let data_dir = std::env::temp_dir().join(format!("sdk_relay_sigterm_{ws_port}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sdk_relay"))
        .args([
            "--ws-addr",
            &format!("127.0.0.1:{ws_port}"),
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{ws_port}").parse().unwrap();
    let mut client = None;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            client = Some(Client::handshaken(addr, &["notifications"]).await.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = client.expect("relay came up");
    let kill = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().unwrap().to_string())
        .status();
    assert!(kill.unwrap().success());
    assert_eq!(client.recv_close().await, Some(1001));
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    std::fs::remove_dir_all(&data_dir).ok();
}

fn relay_command() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_sdk_relay"))
}

/// `check-config` names the offending key and exits 2; a valid file prints the TOML.
#[test]
fn check_config_names_the_bad_key() {
    let dir = std::env::temp_dir().join(format!("sdk_relay_check_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "[limits]\nws_connections_max = 0\n",
            "limits.ws_connections_max",
        ),
        ("[mesh]\npeers = [\"nohost\"]\n", "mesh.peers[0]"),
        // Peers, and the default ws_url 0.0.0.0:8090 would be advertised to them.
        ("[mesh]\npeers = [\"a:8090\"]\n", "advertise_addr"),
        ("colour = \"blue\"\n", "colour"),
        ("[tls]\ncert_file = \"/x/cert.pem\"\n", "tls.key_file"),
        ("[mesh]\ntls = true\n", "mesh.tls"),
        (
            "[limits]\nheartbeat_interval_secs = 90\n",
            "limits.heartbeat_interval_secs",
        ),
    ];
    for (text, key) in cases {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let output = relay_command()
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(key),
            "{text}: message should name {key}: {stderr}"
        );
    }
    let path = dir.join("good.toml");
    std::fs::write(&path, "relay_id = \"relay-9\"\n[sync]\ninterval = 10\n").unwrap();
    let output = relay_command()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .arg("--network")
        .arg("regtest")
        .output()
        .unwrap();
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("relay_id = \"relay-9\"") && printed.contains("network = \"regtest\""),
        "{printed}"
    );
    let env = relay_command()
        .arg("check-config")
        .env("SDK_RELAY_PEERS", "a:8090,b:8090")
        .env("SDK_RELAY_ADVERTISE_ADDR", "relay1.example:8090")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&env.stdout).contains("peers = [\"a:8090\", \"b:8090\"]"));
    let unadvertised = relay_command()
        .args(["check-config", "--peer", "a:8090"])
        .output()
        .unwrap();
    assert_eq!(unadvertised.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unadvertised.stderr);
    assert!(
        stderr.contains("advertise_addr") && stderr.contains("--advertise-addr"),
        "{stderr}"
    );
    let bad_flag = relay_command()
        .args(["check-config", "--ws-addr", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(bad_flag.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_flag.stderr).contains("ws_url"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `check-config` on a file with every secret set prints none of them: each is `***`,
/// and the user names beside them still show.
#[test]
fn check_config_prints_secrets_as_stars() {
    let dir = std::env::temp_dir().join(format!("sdk_relay_secrets_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scan_key = "5c".repeat(32);
    let secrets = [
        "ws-token-one-secret",
        "ws-token-two-secret",
        "http-basic-secret",
        "mesh-token-secret",
        "rpc-password-secret",
        scan_key.as_str(),
    ];
    let text = format!(
        "[auth]\nws_tokens = [\"{}\", \"{}\"]\nhttp_basic_user = \"operator\"\n\
         http_basic_password = \"{}\"\nmesh_token = \"{}\"\n\
         [bitcoin_core]\nurl = \"http://bitcoin:8332\"\nrpc_user = \"rpc\"\nrpc_password = \"{}\"\n\
         [watcher]\nscan_secret_key = \"{}\"\nspend_public_key = \"02{}\"\n",
        secrets[0],
        secrets[1],
        secrets[2],
        secrets[3],
        secrets[4],
        secrets[5],
        "ab".repeat(32)
    );
    let path = dir.join("secrets.toml");
    std::fs::write(&path, text).unwrap();
    let output = relay_command()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    for secret in secrets {
        assert!(
            !stdout.contains(secret),
            "{secret} printed in clear:\n{stdout}"
        );
        assert!(
            !stderr.contains(secret),
            "{secret} printed in clear:\n{stderr}"
        );
    }
    let printed: toml::Value = toml::from_str(&stdout).expect("check-config prints TOML");
    let stars = toml::Value::from("***");
    assert_eq!(
        printed["auth"]["ws_tokens"],
        toml::Value::from(vec!["***", "***"])
    );
    assert_eq!(printed["auth"]["http_basic_password"], stars);
    assert_eq!(printed["auth"]["mesh_token"], stars);
    assert_eq!(
        printed["auth"]["http_basic_user"],
        toml::Value::from("operator")
    );
    assert_eq!(printed["bitcoin_core"]["rpc_password"], stars);
    assert_eq!(
        printed["bitcoin_core"]["rpc_user"],
        toml::Value::from("rpc")
    );
    assert_eq!(printed["watcher"]["scan_secret_key"], stars);
    // Unset secrets stay unset: no `***` for a password that is not there.
    let open = relay_command().arg("check-config").output().unwrap();
    let open = String::from_utf8_lossy(&open.stdout);
    assert!(!open.contains("***"), "{open}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--help` explains every flag.
#[test]
fn help_lists_every_flag() {
    let output = relay_command().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--config",
        "--relay-id",
        "--ws-addr",
        "--http-addr",
        "--advertise-addr",
        "--peer",
        "--network",
        "--data-dir",
        "--log-level",
        "--log-format",
        "SDK_RELAY_LOG_FORMAT",
        "--watcher-request-timeout-secs",
        "SDK_RELAY_WATCHER_REQUEST_TIMEOUT_SECS",
        "check-config",
        "SDK_RELAY_PEERS",
    ] {
        assert!(help.contains(flag), "--help should mention {flag}:\n{help}");
    }
}

/// Runs the binary with `--log-format format` (stderr a pipe, not a terminal) on ports
/// the OS picks (no race with other tests for a free port) until it logs that it
/// started, stops it with SIGTERM, and returns what it logged.
async fn logged_with_format(format: &str, relay_id: &str) -> String {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};
    let data_dir = std::env::temp_dir().join(format!(
        "sdk_relay_logfmt_{relay_id}_{}",
        std::process::id()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sdk_relay"))
        .args(["--relay-id", relay_id, "--log-format", format])
        .args(["--ws-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data_dir)
        .env_remove("SDK_RELAY_LOG")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut logged = String::new();
    tokio::time::timeout(WAIT, async {
        while !logged.contains("relay started") {
            let read = stderr.read_line(&mut logged).await.unwrap();
            assert!(read > 0, "the relay exited early: {logged}");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the relay logs its start: {logged}"));
    // The signal handlers are installed just after that record; a SIGTERM before them
    // kills the process without a clean stop, which does not matter here.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kill = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().unwrap().to_string())
        .status();
    assert!(kill.unwrap().success());
    tokio::time::timeout(WAIT, stderr.read_to_string(&mut logged))
        .await
        .expect("stderr closes in time")
        .unwrap();
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    std::fs::remove_dir_all(&data_dir).ok();
    logged
}

/// `--log-format json`: every line of the process log is a JSON object carrying the
/// relay id; `--log-format text` to a pipe carries it too, and no colour escapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_lines_and_uncoloured_text_carry_the_relay_id() {
    let json = logged_with_format("json", "relay-json").await;
    let lines: Vec<&str> = json.lines().collect();
    assert!(lines.len() >= 2, "start and stop are logged: {json}");
    for line in &lines {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(record["relay_id"], "relay-json", "{line}");
        assert!(record["level"].is_string(), "{line}");
        assert!(record["fields"]["message"].is_string(), "{line}");
    }
    assert!(json.contains("relay started"), "{json}");

    let text = logged_with_format("text", "relay-text").await;
    assert!(text.contains("relay started"), "{text}");
    assert!(!text.contains("\x1b["), "ANSI escapes on a pipe: {text:?}");
    for line in text.lines() {
        assert!(line.contains("relay_id=relay-text"), "{line}");
    }
}

/// An idle relay runs its main thread and its workers, nothing else: the notification
/// log's committer goes to the blocking pool only with something to commit, so an idle
/// relay starts no thread there (which it would then wake 20 times a second).
#[tokio::test]
async fn an_idle_relay_runs_only_its_workers() {
    let relay = crate::support::cluster::RelayProcess::start("relay-idle", "", "").await;
    // Twenty of the committer's rounds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let workers = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", relay.pid()))
        .unwrap()
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).unwrap())
        .collect();
    assert_eq!(threads.len(), 1 + workers, "threads: {threads:?}");
}
