//! Test support: a relay running in-process on loopback, and a WebSocket client built on
//! fastwebsockets (an independent implementation of the protocol's framing).

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::Duration;

use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use sdk_relay::config::Config;
use sdk_relay::conn::tls::ServerTls;
use sdk_relay::logs::LogRing;
use sdk_relay::rt::{Env, Listener as _, Net as _, TokioNet};
use serde_json::Value;
use tokio::sync::oneshot;

/// Every wait in tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A relay serving on ephemeral loopback ports until dropped.
pub struct TestRelay {
    pub ws_addr: SocketAddr,
    pub http_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    data_dir: std::path::PathBuf,
}

impl TestRelay {
    pub async fn start(config: Config) -> TestRelay {
        TestRelay::start_with_logs(config, LogRing::new(1000)).await
    }

    /// Like `start`, with the ring `GET /logs` reads.
    pub async fn start_with_logs(config: Config, logs: LogRing) -> TestRelay {
        TestRelay::start_on(config, logs, TokioNet).await
    }

    /// Like `start`, with the relay dialing and resolving through `net` (its listeners
    /// are real loopback sockets all the same).
    pub async fn start_on<N>(mut config: Config, logs: LogRing, relay_net: N) -> TestRelay
    where
        N: sdk_relay::rt::Net<Listener = sdk_relay::rt::TokioListener>,
    {
        let net = TokioNet;
        let ws = net.bind("127.0.0.1:0").await.expect("bind ws");
        let http = net.bind("127.0.0.1:0").await.expect("bind http");
        let ws_addr = ws.local_addr().unwrap();
        let http_addr = http.local_addr().unwrap();
        config.ws_url = ws_addr.to_string();
        config.http_url = http_addr.to_string();
        // `{port}` in advertise_addr stands for the WebSocket port drawn just now.
        if let Some(advertised) = &config.advertise_addr {
            config.advertise_addr = Some(advertised.replace("{port}", &ws_addr.port().to_string()));
        }
        config.validate().expect("test config is valid");
        // With `[tls]` set, both ports serve its certificate, as `main` arranges.
        let tls = config.tls.files().map(|(cert, key)| {
            let timeout = config.limits.tls_handshake_timeout();
            std::sync::Arc::new(ServerTls::load(cert, key, timeout).expect("test certificate"))
        });
        let (stop, stopped) = oneshot::channel::<()>();
        // A seed of its own: the relay's key is drawn from it, and a mesh refuses two
        // relays with one key.
        static SEEDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(7);
        let tokio_env = Env::tokio(SEEDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let env = Env {
            net: relay_net,
            clock: tokio_env.clock,
            rng: tokio_env.rng,
            verified: None,
        };
        let data_dir = config.data_dir.clone();
        let done = tokio::spawn(sdk_relay::run(
            config,
            env,
            sdk_relay::Listeners { ws, http, tls },
            logs,
            async move {
                let _ = stopped.await;
            },
        ));
        TestRelay {
            ws_addr,
            http_addr,
            stop: Some(stop),
            done: Some(done),
            data_dir,
        }
    }

    /// Stops the relay and waits for its drain to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(WAIT, done)
                .await
                .expect("relay stops in time")
                .unwrap();
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// Short intervals so timing behaviour shows within seconds.
pub fn fast_config() -> Config {
    let mut config = Config::default();
    config.limits.heartbeat_interval_secs = 1;
    config.limits.connection_timeout_secs = 3;
    config.sync.interval = 1;
    config.sync.health_interval = 2;
    // Each relay its own data directory: relays persist what they saw there.
    static RELAYS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RELAYS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    config.data_dir =
        std::env::temp_dir().join(format!("sdk_relay_tests_{}_{n}", std::process::id()));
    config
}

/// What the relay answered to an upgrade it refused.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
}

pub struct Client {
    ws: FragmentCollector<TokioIo<Upgraded>>,
}

impl Client {
    /// Opens a WebSocket connection (no protocol handshake yet).
    pub async fn connect(addr: SocketAddr) -> Result<Client, Refused> {
        Client::connect_with(addr, true).await
    }

    /// Like `connect`; without `auto_pong` the client reads but never answers pings.
    pub async fn connect_with(addr: SocketAddr, auto_pong: bool) -> Result<Client, Refused> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("tcp connect");
        Client::upgrade_over(stream, addr, auto_pong).await
    }

    /// Connects from the loopback address `source` (127.0.0.x: every such address is
    /// this host's, so tests can be several client addresses at once) and handshakes.
    pub async fn handshaken_from(source: [u8; 4], addr: SocketAddr) -> (Client, Value) {
        let stream = tcp_from(source, addr).await;
        let client = Client::upgrade_over(stream, addr, true).await;
        client.expect("upgrade accepted").handshake(&[]).await
    }

    async fn upgrade_over(
        stream: tokio::net::TcpStream,
        addr: SocketAddr,
        auto_pong: bool,
    ) -> Result<Client, Refused> {
        let request = sdk_relay::conn::client::upgrade_request(&addr.to_string());
        let upgrade = fastwebsockets::handshake::client(
            &sdk_relay::conn::client::SpawnExecutor,
            request,
            stream,
        );
        match tokio::time::timeout(WAIT, upgrade)
            .await
            .expect("upgrade answered in time")
        {
            Ok((mut ws, _)) => {
                ws.set_auto_pong(auto_pong);
                Ok(Client {
                    ws: FragmentCollector::new(ws),
                })
            }
            Err(fastwebsockets::WebSocketError::InvalidStatusCode(status)) => {
                Err(Refused { status })
            }
            Err(e) => panic!("upgrade failed: {e}"),
        }
    }

    /// Connects and completes the protocol handshake with `capabilities`; returns the
    /// client and the `handshake_response`.
    pub async fn handshaken(addr: SocketAddr, capabilities: &[&str]) -> (Client, Value) {
        Client::handshaken_with(addr, capabilities, true).await
    }

    pub async fn handshaken_with(
        addr: SocketAddr,
        capabilities: &[&str],
        auto_pong: bool,
    ) -> (Client, Value) {
        let client = Client::connect_with(addr, auto_pong)
            .await
            .expect("upgrade accepted");
        client.handshake(capabilities).await
    }

    async fn handshake(mut self, capabilities: &[&str]) -> (Client, Value) {
        let client = &mut self;
        client
            .send_json(&serde_json::json!({
                "type": "handshake", "client_id": "test", "version": "1.0.0", "capabilities": capabilities,
            }))
            .await;
        let response = client.recv_type("handshake_response").await;
        assert_eq!(response["status"], "accepted", "{response}");
        (self, response)
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
            .await
            .expect("send");
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .write_frame(Frame::binary(Payload::Borrowed(bytes)))
            .await
            .expect("send");
    }

    /// The next text message, or the close code if the relay closed instead.
    pub async fn recv(&mut self) -> Result<Value, Option<u16>> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.read_frame())
                .await
                .expect("message in time");
            let frame = match frame {
                Ok(frame) => frame,
                Err(_) => return Err(None),
            };
            match frame.opcode {
                OpCode::Text => {
                    return Ok(serde_json::from_slice(&frame.payload).expect("relay sends JSON"));
                }
                OpCode::Close => {
                    let code = (frame.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                    return Err(code);
                }
                _ => continue,
            }
        }
    }

    /// The next message of `kind`, skipping periodic `health` and `sync` messages; the
    /// whole wait is bounded (periodic messages alone never keep it going).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        let wait = async {
            loop {
                let message = self
                    .recv()
                    .await
                    .unwrap_or_else(|code| panic!("closed with {code:?} waiting for {kind}"));
                if message["type"] == kind {
                    return message;
                }
                let periodic = message["type"] == "health" || message["type"] == "sync";
                assert!(periodic, "expected {kind}, got {message}");
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("no {kind} within {WAIT:?}"))
    }

    /// Publishes a notification and returns the id the relay stamped on it.
    pub async fn publish(&mut self, notification_type: &str, data: Value) -> String {
        self.send_json(&serde_json::json!({"type":"notification","notification_type":notification_type,"data":data}))
            .await;
        let ack = self.recv_type("notification_ack").await;
        ack["message_id"]
            .as_str()
            .expect("acks carry the id")
            .to_string()
    }

    /// The message ids of the next `count` notifications, in arrival order.
    pub async fn recv_notification_ids(&mut self, count: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(count);
        while ids.len() < count {
            let message = self.recv_type("notification").await;
            ids.push(
                message["message_id"]
                    .as_str()
                    .expect("notifications carry an id")
                    .to_string(),
            );
        }
        ids
    }

    /// Reads until the relay closes; returns the close code (`None` if the socket just ended).
    pub async fn recv_close(&mut self) -> Option<u16> {
        loop {
            if let Err(code) = self.recv().await {
                return code;
            }
        }
    }
}

/// A TCP connection to `addr` from the loopback address `source` (127.0.0.x).
pub async fn tcp_from(source: [u8; 4], addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connected in time")
        .expect("tcp connect")
}

/// Raises this process's open-file limit, for tests that hold many sockets.
pub fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

pub mod chain_fakes;
pub mod cluster;
pub mod nats;
pub mod peer;
pub mod tls;

/// Sends a raw upgrade request and returns the status code and the response head, for
/// refusals that a WebSocket client library hides.
pub async fn raw_upgrade(addr: SocketAddr) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tcp connect");
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        assert!(n > 0, "relay closed without answering");
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, head)
}
