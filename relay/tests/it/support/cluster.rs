//! Relays as separate processes on loopback, HTTP helpers, and a TCP proxy that can cut
//! the links that pass through it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::WAIT;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `sdk_relay` process.
pub struct RelayProcess {
    pub id: String,
    pub ws_addr: SocketAddr,
    pub http_addr: SocketAddr,
    config_path: PathBuf,
    child: Option<Child>,
}

impl RelayProcess {
    /// Writes `extra_toml` (tables after the top-level keys) and starts the relay.
    pub async fn start(id: &str, top_level_toml: &str, extra_toml: &str) -> RelayProcess {
        let (ws_port, http_port) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!(
            "sdk_relay_mesh_{}_{id}_{ws_port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("relay.toml");
        let text = format!(
            "relay_id = \"{id}\"\nws_url = \"127.0.0.1:{ws_port}\"\nhttp_url = \"127.0.0.1:{http_port}\"\n\
             data_dir = \"{}\"\n{top_level_toml}\n{extra_toml}\n",
            dir.join("data").display()
        );
        std::fs::write(&config_path, text).unwrap();
        let mut relay = RelayProcess {
            id: id.to_string(),
            ws_addr: format!("127.0.0.1:{ws_port}").parse().unwrap(),
            http_addr: format!("127.0.0.1:{http_port}").parse().unwrap(),
            config_path,
            child: None,
        };
        relay.spawn().await;
        relay
    }

    async fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_sdk_relay"))
            .arg("--config")
            .arg(&self.config_path)
            .env("SDK_RELAY_LOG", "sdk_relay=debug")
            .stderr(Stdio::from(
                std::fs::File::create(self.config_path.with_extension("log")).unwrap(),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("relay binary starts");
        self.child = Some(child);
        for _ in 0..200 {
            if http_get(self.http_addr, "/health").await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("relay {} did not come up; log: {}", self.id, self.log());
    }

    /// Rewrites the tables after the top-level keys (takes effect at the next restart).
    pub fn set_extra(&mut self, extra_toml: &str) {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let top: Vec<&str> = text.lines().take_while(|l| !l.starts_with('[')).collect();
        std::fs::write(
            &self.config_path,
            format!("{}\n{extra_toml}\n", top.join("\n")),
        )
        .unwrap();
    }

    /// SIGKILL: the relay vanishes without closing anything.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts the same relay again (same id, ports and data directory).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Starts the relay again after it exited by itself (same id, ports and data).
    pub async fn start_again(&mut self) {
        assert!(!self.is_running(), "{} is still running", self.id);
        self.spawn().await;
    }

    /// Sends the process a signal by name (`TERM`, `USR2`) with the real `kill`.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("the `kill` program (Debian package procps)");
        assert!(status.success(), "kill -{name} {}", self.pid());
    }

    /// Waits (at most `limit`) for the process to exit by itself; its exit status and
    /// how long the wait took.
    pub async fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let started = tokio::time::Instant::now();
        let child = self.child.as_mut().expect("the relay process was started");
        let status = tokio::time::timeout(limit, child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {limit:?}", self.id))
            .expect("wait for the relay process");
        self.child = None;
        (status, started.elapsed())
    }

    /// The relay's public WebSocket URL, as relays name it in `reconnect`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.ws_addr)
    }

    /// The relay's `data_dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    fn dir(&self) -> PathBuf {
        self.config_path
            .parent()
            .expect("config lives in its directory")
            .to_path_buf()
    }

    /// The relay's process id, for reading its figures from `/proc` independently.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("the relay process is running")
    }

    /// Whether the process is still running (it has not exited or crashed).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// `GET path` as text (the Prometheus exposition).
    pub async fn get_text(&self, path: &str) -> String {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(self.http_addr).await.ok()?;
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                self.http_addr
            );
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = String::new();
            stream.read_to_string(&mut response).await.ok()?;
            Some(response.split_once("\r\n\r\n")?.1.to_string())
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("GET {path} on {}", self.id))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config_path.with_extension("log")).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Value {
        http_get(self.http_addr, path)
            .await
            .unwrap_or_else(|| panic!("GET {path} on {}", self.id))
    }

    pub async fn post(&self, path: &str, body: &str) -> Value {
        http_request(self.http_addr, "POST", path, body)
            .await
            .unwrap_or_else(|| panic!("POST {path} on {}", self.id))
    }

    /// Every relay this one lists in `/relays`: id -> health.
    pub async fn relay_health(&self) -> std::collections::BTreeMap<String, String> {
        let relays = self.get("/relays").await;
        relays["relays"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["relay_id"].as_str().unwrap().to_string(),
                    r["health"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for RelayProcess {
    /// Keeps the directory (config, log) of a failed test for inspection.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(self.dir());
        }
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> Option<Value> {
    http_request(addr, "GET", path, "").await
}

/// A minimal HTTP/1.1 exchange (`Connection: close`); the body parsed as JSON.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<Value> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).to_string();
        let (_, body) = text.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(WAIT, exchange).await.ok().flatten()
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the kernel says of a process, read from `/proc/<pid>` by the test itself.
pub mod procfs {
    /// User + system CPU time in clock ticks (USER_HZ, 100 per second on Linux): fields
    /// 14 and 15 of `/proc/<pid>/stat`.
    pub fn cpu_ticks(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
        let after_name = stat.rsplit_once(')').expect("stat has a command name").1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let utime: u64 = fields[11].parse().expect("utime");
        let stime: u64 = fields[12].parse().expect("stime");
        utime + stime
    }

    /// Resident memory in bytes: `VmRSS` of `/proc/<pid>/status`.
    pub fn resident_bytes(pid: u32) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .expect("VmRSS line")
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .expect("VmRSS in kB");
        kib * 1024
    }

    /// Open file descriptors.
    pub fn open_fds(pid: u32) -> usize {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("/proc/<pid>/fd")
            .count()
    }
}

/// A TCP proxy to `target` whose connections the test can cut (and later allow again),
/// and that can hold every byte for a fixed delay in each direction.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    live: Vec<tokio::task::AbortHandle>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        Proxy::start_with_delay(target, Duration::ZERO).await
    }

    /// A proxy that passes each byte on `delay` after it arrived, in both directions (a
    /// delay line: latency is added, throughput is kept).
    pub async fn start_with_delay(target: SocketAddr, delay: Duration) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let accept_state = state.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = accept_state.lock().unwrap();
                if state.cut {
                    continue; // dropped at once: the dialer sees the connection close
                }
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    if delay.is_zero() {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        delay_line(in_read, out_write, delay),
                        delay_line(out_read, in_write, delay)
                    );
                });
                state.live.retain(|t| !t.is_finished());
                state.live.push(task.abort_handle());
            }
        });
        Proxy { addr, state }
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for task in state.live.drain(..) {
            task.abort();
        }
    }

    pub fn heal(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

/// Copies `from` to `to`, writing each chunk `delay` after it was read.
async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = tokio::time::Instant::now() + delay;
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}
