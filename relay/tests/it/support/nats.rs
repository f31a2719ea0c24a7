//! Real `nats-server` processes with JetStream on loopback: one server, or a cluster of
//! three, each on ephemeral ports and a temporary store. Each process dies with its
//! handle (`kill_on_drop`), so a failing test leaves none behind.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::cluster::free_port;

pub struct NatsServer {
    pub name: String,
    pub port: u16,
    config_path: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    fn new(
        name: &str,
        dir: &std::path::Path,
        port: u16,
        cluster: Option<(u16, &[u16])>,
        extra: &str,
    ) -> NatsServer {
        let store = dir.join(format!("{name}-store"));
        std::fs::create_dir_all(&store).unwrap();
        let mut text = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
             jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 512MB\n}}\n",
            store.display()
        );
        if let Some((cluster_port, routes)) = cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            text.push_str(&format!(
                "cluster {{\n  name: relays\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        text.push_str(extra);
        let config_path = dir.join(format!("{name}.conf"));
        std::fs::write(&config_path, text).unwrap();
        NatsServer {
            name: name.into(),
            port,
            config_path,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it accepts connections.
    pub async fn start(&mut self) {
        let log = std::fs::File::create(self.config_path.with_extension("log")).unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts (scripts/test-deps.sh installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "nats-server {} did not listen; log: {}",
            self.name,
            self.log()
        );
    }

    /// SIGKILL: the server vanishes mid-stream.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.config_path.with_extension("log")).unwrap_or_default()
    }
}

/// Servers sharing one temporary directory, removed when the test passed.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
    dir: PathBuf,
}

impl NatsCluster {
    /// `size` servers; with more than one, routed into one JetStream cluster.
    pub async fn start(size: usize) -> NatsCluster {
        NatsCluster::start_with(size, "").await
    }

    /// One server whose configuration ends with `extra` (authorization, TLS).
    pub async fn single_with(extra: &str) -> NatsCluster {
        NatsCluster::start_with(1, extra).await
    }

    async fn start_with(size: usize, extra: &str) -> NatsCluster {
        let ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let dir = std::env::temp_dir().join(format!(
            "sdk_relay_nats_{}_{}",
            std::process::id(),
            ports[0]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut servers: Vec<NatsServer> = (0..size)
            .map(|i| {
                let others: Vec<u16> = cluster_ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| *p)
                    .collect();
                let cluster = (size > 1).then_some((cluster_ports[i], others.as_slice()));
                NatsServer::new(&format!("n{}", i + 1), &dir, ports[i], cluster, extra)
            })
            .collect();
        for server in &mut servers {
            server.start().await;
        }
        NatsCluster { servers, dir }
    }

    /// The servers' temporary directory (removed with them): room for test files.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("--- {}\n{}", s.name, s.log()))
            .collect()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
