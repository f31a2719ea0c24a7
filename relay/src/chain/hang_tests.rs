//! A chain source that accepts a connection and never answers is a failure at its first
//! timeout. Measured on tokio's paused clock: virtual time, so the bound is checked
//! exactly and independently of the machine's load.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::source::{
    BlindbitInfo, BlindbitSource, BlindbitUtxo, ChainInfo, CoreAuth, CoreBlock, CoreRpc,
    CoreSource, HeaderInfo, NewUtxoFilter, SourceError,
};
use super::{ChainStatus, RetryPolicy, WatchHandle, WatchSettings, Watcher};
use crate::config::Network;
use crate::rt::{Clock, Listener, Net, SeededRng, TokioClock};

const POLL: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(3);
/// How often the test looks at the status: the measuring error.
const STEP: Duration = Duration::from_millis(100);
const TIP: u32 = 5;

/// Dials succeed and the other end never reads nor writes (it is kept open).
#[derive(Clone, Default)]
struct SilentNet {
    kept: Arc<Mutex<Vec<DuplexStream>>>,
}

struct NoListener;

impl Listener for NoListener {
    type Stream = DuplexStream;

    async fn accept(&mut self) -> io::Result<(DuplexStream, SocketAddr)> {
        std::future::pending().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Err(io::Error::other("not listening"))
    }
}

impl Net for SilentNet {
    type Stream = DuplexStream;
    type Listener = NoListener;

    async fn bind(&self, _addr: &str) -> io::Result<NoListener> {
        Ok(NoListener)
    }

    async fn connect(&self, _addr: &str) -> io::Result<DuplexStream> {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        self.kept.lock().expect("not poisoned").push(theirs);
        Ok(ours)
    }

    async fn resolve(&self, _name: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(Vec::new())
    }
}

fn hash(height: u32) -> String {
    format!("{height:064x}")
}

/// Core over a chain of empty blocks `0..=TIP`, until `hung` is set: from then on every
/// call goes through the real JSON-RPC client to a connection that never answers.
struct SwitchCore {
    hung: Arc<AtomicBool>,
    silent: CoreRpc<SilentNet>,
}

impl SwitchCore {
    fn hung(&self) -> bool {
        self.hung.load(Ordering::SeqCst)
    }
}

impl CoreSource for SwitchCore {
    async fn blockchain_info(&self) -> Result<ChainInfo, SourceError> {
        if self.hung() {
            return self.silent.blockchain_info().await;
        }
        Ok(ChainInfo {
            chain: "signet".into(),
            blocks: TIP,
            best_block_hash: hash(TIP),
        })
    }

    async fn best_block_hash(&self) -> Result<String, SourceError> {
        if self.hung() {
            return self.silent.best_block_hash().await;
        }
        Ok(hash(TIP))
    }

    async fn block_hash(&self, height: u32) -> Result<String, SourceError> {
        if self.hung() {
            return self.silent.block_hash(height).await;
        }
        (height <= TIP)
            .then(|| hash(height))
            .ok_or(SourceError::NotFound)
    }

    async fn block_header(&self, block: &str) -> Result<HeaderInfo, SourceError> {
        if self.hung() {
            return self.silent.block_header(block).await;
        }
        let height = (0..=TIP)
            .find(|h| hash(*h) == block)
            .ok_or(SourceError::NotFound)?;
        Ok(HeaderInfo {
            hash: block.to_string(),
            height,
            confirmations: i64::from(TIP - height + 1),
            previous_block_hash: height.checked_sub(1).map(hash),
        })
    }

    async fn block(&self, block: &str) -> Result<CoreBlock, SourceError> {
        self.silent.block(block).await
    }
}

/// A Blindbit that has indexed the chain; never asked for a block (no key is watched).
struct IndexedBlindbit;

impl BlindbitSource for IndexedBlindbit {
    async fn info(&self) -> Result<BlindbitInfo, SourceError> {
        Ok(BlindbitInfo {
            network: "signet".into(),
            height: TIP,
        })
    }

    async fn block_height(&self) -> Result<u32, SourceError> {
        Ok(TIP)
    }

    async fn tweak_index(&self, _height: u32) -> Result<Vec<String>, SourceError> {
        Err(SourceError::NotFound)
    }

    async fn new_utxos_filter(&self, _height: u32) -> Result<NewUtxoFilter, SourceError> {
        Err(SourceError::NotFound)
    }

    async fn utxos(&self, _height: u32) -> Result<Vec<BlindbitUtxo>, SourceError> {
        Err(SourceError::NotFound)
    }
}

/// Starts a watcher over a `SwitchCore`; returns its handle and the switch.
fn start(name: &str, hung_from_start: bool) -> (WatchHandle, Arc<AtomicBool>) {
    let hung = Arc::new(AtomicBool::new(hung_from_start));
    let silent = CoreRpc::new(
        SilentNet::default(),
        "http://core.invalid:8332",
        CoreAuth::None,
        TIMEOUT,
    )
    .expect("valid url");
    let data_dir =
        std::env::temp_dir().join(format!("sdk_relay_hang_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let handle = WatchHandle::new(Network::Signet, 1, true);
    let watcher = Watcher {
        core: SwitchCore {
            hung: hung.clone(),
            silent,
        },
        blindbit: IndexedBlindbit,
        settings: WatchSettings {
            network: Network::Signet,
            data_dir,
            poll_interval: POLL,
            request_timeout: TIMEOUT,
            reorg_depth_max: 10,
            own: None,
            retry: RetryPolicy::default(),
            blocks_per_tick_max: 100,
            lag_blocks_max: 1,
        },
        clock: Arc::new(TokioClock),
        rng: SeededRng::new(3),
        handle: handle.clone(),
    };
    let (events, mut received) = mpsc::channel(16);
    tokio::spawn(async move { while received.recv().await.is_some() {} });
    tokio::spawn(watcher.run(events, std::future::pending()));
    (handle, hung)
}

/// Virtual time until the status satisfies `done` (at most an hour of it).
async fn time_until(handle: &WatchHandle, done: impl Fn(&ChainStatus) -> bool) -> Duration {
    let start = TokioClock.now();
    while !done(&handle.status()) {
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "never happened: {:?}",
            handle.status()
        );
        tokio::time::sleep(STEP).await;
    }
    start.elapsed()
}

fn hung_core(status: &ChainStatus) -> bool {
    status
        .degraded
        .as_deref()
        .is_some_and(|d| d.contains("bitcoin_core") && d.contains("timed out"))
}

// Proves a Core hung from the start is reported at its first call's timeout: retrying a
// timed-out call (4 attempts with backoff, as before) would take over 15 s of it.
#[tokio::test(start_paused = true)]
async fn core_hung_from_the_start_is_degraded_at_the_first_timeout() {
    let (handle, _) = start("start", true);
    let took = time_until(&handle, hung_core).await;
    assert!(took <= TIMEOUT + STEP, "degraded after {took:?}");
}

// Proves a Core that hangs while the watcher is healthy is reported within one poll
// interval plus one request timeout.
#[tokio::test(start_paused = true)]
async fn core_hanging_later_is_degraded_within_a_poll_and_a_timeout() {
    let (handle, hung) = start("later", false);
    time_until(&handle, |s| {
        s.scanned_height == Some(TIP) && s.degraded.is_none()
    })
    .await;
    hung.store(true, Ordering::SeqCst);
    let took = time_until(&handle, hung_core).await;
    assert!(took <= POLL + TIMEOUT + STEP, "degraded after {took:?}");
}
