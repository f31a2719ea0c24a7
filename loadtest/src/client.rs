//! Opening load-test clients: upgrade, then the relay's JSON handshake (or the baseline's
//! convention), and ramping many of them up at a bounded pace and concurrency.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::target::WsTarget;
use crate::workload;
use crate::ws::{self, OpCode, WsConn};

/// Connections being opened at once during a ramp.
pub const RAMP_CONCURRENCY_MAX: usize = 64;
/// Longest error text kept as a key of the error counts.
const ERROR_KEY_BYTES_MAX: usize = 80;

/// What a client does, which decides the capabilities it asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives notifications (and answers pings).
    Subscriber,
    /// Publishes notifications.
    Publisher,
}

/// How to open clients against one target.
#[derive(Debug, Clone)]
pub struct Opener {
    pub target: WsTarget,
    /// The baseline server: no JSON handshake; a publisher announces itself with `pub`.
    pub baseline: bool,
    pub token: Option<String>,
    pub timeout: Duration,
}

impl Opener {
    /// Opens client `index` from `source`, ready for traffic.
    ///
    /// # Errors
    /// Connect, upgrade or handshake failure, or the timeout.
    pub async fn open(
        &self,
        index: usize,
        source: Option<IpAddr>,
        role: Role,
    ) -> anyhow::Result<WsConn> {
        let mut conn = ws::connect_accepted(&self.target, source, self.timeout).await?;
        if self.baseline {
            if role == Role::Publisher {
                conn.writer.send_text(BASELINE_PUBLISHER_HELLO).await?;
            }
            return Ok(conn);
        }
        let capabilities: &[&str] = match role {
            Role::Subscriber => &["notifications"],
            Role::Publisher => &["publish"],
        };
        let hello = workload::handshake_message(
            &format!("loadtest-{index}"),
            capabilities,
            self.token.as_deref(),
        );
        conn.writer.send_text(hello.as_bytes()).await?;
        tokio::time::timeout(self.timeout, await_accepted(&mut conn))
            .await
            .context("no handshake_response in time")??;
        Ok(conn)
    }
}

/// The baseline server's publisher announcement (`bench::baseline::PUBLISHER_HELLO`).
pub const BASELINE_PUBLISHER_HELLO: &[u8] = b"pub";

async fn await_accepted(conn: &mut WsConn) -> anyhow::Result<()> {
    loop {
        let Some(message) = conn.reader.next().await? else {
            bail!("closed before the handshake response");
        };
        match message.opcode {
            OpCode::Close => bail!(
                "closed during the handshake (code {:?})",
                message.close_code()
            ),
            OpCode::Ping => conn.writer.send_pong(&message.payload).await?,
            OpCode::Text => {
                let value: serde_json::Value = serde_json::from_slice(&message.payload)
                    .context("handshake response is not JSON")?;
                if value["type"] == "handshake_response" {
                    if value["status"] == "accepted" {
                        return Ok(());
                    }
                    bail!("handshake rejected: {}", value["reason"]);
                }
            }
            _ => {}
        }
    }
}

/// Counts of failures by kind (a short error text).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ErrorCounts(pub BTreeMap<String, u64>);

impl ErrorCounts {
    pub fn add(&mut self, error: &anyhow::Error) {
        self.add_kind(&format!("{error:#}"));
    }

    pub fn add_kind(&mut self, kind: &str) {
        let mut end = kind.len().min(ERROR_KEY_BYTES_MAX);
        while !kind.is_char_boundary(end) {
            end -= 1;
        }
        *self.0.entry(kind[..end].to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &ErrorCounts) {
        for (kind, n) in &other.0 {
            *self.0.entry(kind.clone()).or_default() += n;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// Opens `count` clients with `open(index)`, at most `per_sec` per second (0: no pace)
/// and [`RAMP_CONCURRENCY_MAX`] at once. Returns the opened ones in index order (failed
/// ones left out) and the failures.
pub async fn ramp<T, F, Fut>(count: usize, per_sec: u64, open: F) -> (Vec<(usize, T)>, ErrorCounts)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(RAMP_CONCURRENCY_MAX));
    let opened = Arc::new(AtomicUsize::new(0));
    let progress = {
        let opened = opened.clone();
        crate::progress::Progress::start(move || {
            format!(
                "ramp: {}/{count} connections",
                opened.load(Ordering::Relaxed)
            )
        })
    };
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..count {
        if per_sec > 0 {
            let due = start + Duration::from_secs_f64(index as f64 / per_sec as f64);
            tokio::time::sleep_until(due).await;
        }
        let permit = permits.clone().acquire_owned().await.expect("never closed");
        let opening = open(index);
        let opened = opened.clone();
        tasks.spawn(async move {
            let result = opening.await;
            drop(permit);
            if result.is_ok() {
                opened.fetch_add(1, Ordering::Relaxed);
            }
            (index, result)
        });
    }
    let mut clients = Vec::with_capacity(count);
    let mut errors = ErrorCounts::default();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("opening tasks do not panic") {
            (index, Ok(client)) => clients.push((index, client)),
            (_, Err(e)) => errors.add(&e),
        }
    }
    drop(progress);
    clients.sort_by_key(|(index, _)| *index);
    (clients, errors)
}
