//! The watcher task: follows Core's tip, scans each block once Blindbit has indexed it and
//! both agree on its hash, confirms hits against Core, and retracts payments on a reorg.
//!
//! One loop, one owner of the progress state: no locks around scanning, and the order of
//! emitted events is the order of blocks. Wallets registered at run time carry their own
//! cursor, so a rescan from a birth height interleaves with following the tip.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::handle::WatchHandle;
use super::keys::{KeyError, ScanSecret, WatchedKey, parse_spend_key};
use super::progress::Progress;
use super::source::{
    BlindbitHttp, BlindbitSource, CoreRpc, CoreSource, SourceError, chain_matches,
};
use super::store::StoreError;
use crate::config::{Config, Network};
use crate::protocol::chain::ChainEvent;
use crate::rt::{Env, Net, SeededRng, SharedClock};

/// Start of the wait reason for a block Blindbit has not indexed yet.
pub(crate) const WAITING_FOR_INDEX: &str = "waiting for blindbit to index";

/// Payments remembered for reorg retraction and de-duplication, whatever the window.
pub const PAYMENTS_MAX: usize = 100_000;

/// How failed calls to a source are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per request, first included.
    pub attempts_max: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 4,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
        }
    }
}

/// The relay's own keys and where their history starts.
#[derive(Debug, Clone)]
pub struct OwnKey {
    pub key: WatchedKey,
    pub birth_height: Option<u32>,
}

/// Everything the loop needs to know, from `Config` or set by a test.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub network: Network,
    /// Where the progress file lives.
    pub data_dir: PathBuf,
    pub poll_interval: Duration,
    /// Deadline of one call to a source, connect included.
    pub request_timeout: Duration,
    pub reorg_depth_max: u32,
    pub own: Option<OwnKey>,
    pub retry: RetryPolicy,
    /// Blocks scanned per poll, so a long rescan does not starve the tip.
    pub blocks_per_tick_max: u32,
    /// One source more than this many blocks behind the other (`[watcher]
    /// lag_blocks_max`) makes the status `degraded`.
    pub lag_blocks_max: u32,
}

/// Why the watcher stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    #[error("invalid watcher configuration: {0}")]
    Config(String),
    #[error("own key: {0}")]
    Key(#[from] KeyError),
    #[error("{source_name} is on chain `{chain}`, the relay is configured for {expected}")]
    WrongNetwork {
        source_name: &'static str,
        chain: String,
        expected: &'static str,
    },
    #[error("watcher state: {0}")]
    Store(#[from] StoreError),
}

impl WatchSettings {
    /// Settings from the relay configuration, own key parsed and checked.
    ///
    /// # Errors
    /// The key file cannot be read, or a key is malformed.
    pub fn from_config(config: &Config) -> Result<WatchSettings, WatcherError> {
        let w = &config.watcher;
        let scan = w
            .scan_secret_key_hex()
            .map_err(|e| WatcherError::Config(e.to_string()))?;
        let own = match (scan, &w.spend_public_key) {
            (Some(scan), Some(spend)) => {
                let key = WatchedKey::new(
                    ScanSecret::from_hex(&scan)?,
                    parse_spend_key(spend)?,
                    &[],
                    config.network,
                )?;
                Some(OwnKey {
                    key,
                    birth_height: w.birth_height,
                })
            }
            _ => None,
        };
        Ok(WatchSettings {
            network: config.network,
            data_dir: config.data_dir.clone(),
            poll_interval: Duration::from_secs(w.poll_interval_secs),
            request_timeout: Duration::from_secs(w.request_timeout_secs),
            reorg_depth_max: w.reorg_depth_max,
            own,
            retry: RetryPolicy::default(),
            blocks_per_tick_max: 100,
            lag_blocks_max: w.lag_blocks_max,
        })
    }
}

/// Runs the watcher over the configured sources until `shutdown` resolves or the events
/// receiver is dropped. Without `[bitcoin_core]` or `[blindbit]` it marks itself disabled
/// and returns at once.
///
/// # Errors
/// Bad own key, a source on another network, or an unusable data directory.
pub async fn run<N: Net>(
    config: &Config,
    env: Env<N>,
    handle: WatchHandle,
    events: mpsc::Sender<ChainEvent>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WatcherError> {
    let (Some(core_config), Some(blindbit_config)) = (&config.bitcoin_core, &config.blindbit)
    else {
        handle.update_status(|s| s.enabled = false);
        return Ok(());
    };
    let settings = WatchSettings::from_config(config)?;
    let source_error = |e: SourceError| WatcherError::Config(e.to_string());
    let core = CoreRpc::from_config(env.net.clone(), core_config, settings.request_timeout)
        .map_err(source_error)?;
    let blindbit = BlindbitHttp::new(env.net, &blindbit_config.url, settings.request_timeout)
        .and_then(|b| b.with_ca_file(blindbit_config.ca_file.as_deref()))
        .map_err(source_error)?;
    let watcher = Watcher {
        core,
        blindbit,
        settings,
        clock: env.clock,
        rng: env.rng,
        handle,
    };
    watcher.run(events, shutdown).await
}

/// The watcher over any pair of sources (real, fake or simulated).
pub struct Watcher<C, B> {
    pub core: C,
    pub blindbit: B,
    pub settings: WatchSettings,
    pub clock: SharedClock,
    pub rng: SeededRng,
    pub handle: WatchHandle,
}

/// Why a poll ended early.
#[derive(Debug)]
pub(crate) enum TickError {
    Core(SourceError),
    Blindbit(SourceError),
    Store(StoreError),
    /// The events receiver is gone: the relay is shutting down.
    Closed,
}

impl<C: CoreSource, B: BlindbitSource> Watcher<C, B> {
    /// Polls until `shutdown` resolves or the events receiver is dropped.
    ///
    /// # Errors
    /// A source on another network, or an unreadable state file.
    pub async fn run(
        self,
        events: mpsc::Sender<ChainEvent>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), WatcherError> {
        let mut shutdown = std::pin::pin!(shutdown);
        self.handle.update_status(|s| s.enabled = true);
        let mut progress = self.load_progress()?;
        loop {
            match self.check_networks().await {
                Ok(()) => break,
                Err(Ok(fatal)) => return Err(fatal),
                Err(Err(tick)) => self.report(&tick),
            }
            self.save_wallets(false);
            if self.wait(&mut shutdown).await {
                self.save_wallets(true);
                return Ok(());
            }
        }
        loop {
            let more = match self.tick(&mut progress, &events).await {
                Ok(more) => more,
                Err(TickError::Closed) => {
                    self.save_wallets(true);
                    return Ok(());
                }
                Err(e) => {
                    self.report(&e);
                    false
                }
            };
            self.save_wallets(false);
            let stop = if more {
                // A long rescan goes on at once, but still yields to shutdown.
                tokio::select! {
                    biased;
                    () = shutdown.as_mut() => true,
                    () = std::future::ready(()) => false,
                }
            } else {
                self.wait(&mut shutdown).await
            };
            if stop {
                self.save_wallets(true);
                return Ok(());
            }
        }
    }

    /// Saves wallet registrations and cursors that changed, after every poll whatever
    /// its outcome (a registration made while Core is down is saved too), at most once a
    /// second unless `flush` (at shutdown). Not at every block: after a crash, a wallet
    /// rescans the blocks since the last save; its payments there within the reorg
    /// window are in the payments saved with each best-chain block and not sent again,
    /// older ones (a birth-range rescan) may be.
    fn save_wallets(&self, flush: bool) {
        let now = (!flush).then(|| self.clock.now());
        if let Err(e) = self.handle.save_changed(now) {
            self.report(&TickError::Store(e));
        }
    }

    /// Sleeps one poll interval; a wallet registration wakes it early. True on shutdown.
    async fn wait(&self, shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
        tokio::select! {
            biased;
            () = shutdown.as_mut() => true,
            () = self.clock.sleep(self.settings.poll_interval) => false,
            () = self.handle.shared.wake.notified() => false,
        }
    }

    fn report(&self, error: &TickError) {
        let reason = match error {
            TickError::Core(e) => format!("bitcoin_core unreachable: {e}"),
            TickError::Blindbit(e) => format!("blindbit unreachable: {e}"),
            TickError::Store(e) => format!("cannot persist watcher state: {e}"),
            TickError::Closed => return,
        };
        tracing::warn!(%reason, "chain watcher degraded");
        self.handle.update_status(|s| s.degraded = Some(reason));
    }

    /// Start-up check: both sources serve the configured network.
    async fn check_networks(&self) -> Result<(), Result<WatcherError, TickError>> {
        let expected = self.settings.network;
        let info = self
            .core_call(|| self.core.blockchain_info())
            .await
            .map_err(Err)?;
        if !chain_matches(&info.chain, expected) {
            return Err(Ok(WatcherError::WrongNetwork {
                source_name: "bitcoin_core",
                chain: info.chain,
                expected: expected.as_str(),
            }));
        }
        let info = self
            .blindbit_call(|| self.blindbit.info())
            .await
            .map_err(Err)?;
        if !chain_matches(&info.network, expected) && info.network != expected.as_str() {
            return Err(Ok(WatcherError::WrongNetwork {
                source_name: "blindbit",
                chain: info.network,
                expected: expected.as_str(),
            }));
        }
        Ok(())
    }

    /// Retries transient failures with exponential backoff and jitter, a bounded number
    /// of times. A timeout is not retried here: the call already took a whole request
    /// timeout, and trying again would hide a hung source from `/health` for as long
    /// again; it fails the poll at once, and the next poll tries again.
    async fn retry<T, Fut>(&self, mut op: impl FnMut() -> Fut) -> Result<T, SourceError>
    where
        Fut: Future<Output = Result<T, SourceError>>,
    {
        let policy = self.settings.retry;
        let mut delay = policy.backoff_base;
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e)
                    if e.is_transient()
                        && !matches!(e, SourceError::Timeout { .. })
                        && attempt < policy.attempts_max =>
                {
                    let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    let jitter = Duration::from_millis(self.rng.range_u64(0, millis / 2 + 1));
                    tracing::debug!(error = %e, attempt, "chain source call failed, retrying");
                    self.clock.sleep(delay + jitter).await;
                    delay = (delay * 2).min(policy.backoff_max);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    pub(crate) async fn core_call<T, Fut>(&self, op: impl FnMut() -> Fut) -> Result<T, TickError>
    where
        Fut: Future<Output = Result<T, SourceError>>,
    {
        self.retry(op).await.map_err(TickError::Core)
    }

    pub(crate) async fn blindbit_call<T, Fut>(
        &self,
        op: impl FnMut() -> Fut,
    ) -> Result<T, TickError>
    where
        Fut: Future<Output = Result<T, SourceError>>,
    {
        self.retry(op).await.map_err(TickError::Blindbit)
    }

    /// Core's hash at `height`; `None` above its tip.
    pub(crate) async fn core_hash_at(&self, height: u32) -> Result<Option<String>, TickError> {
        match self.core_call(|| self.core.block_hash(height)).await {
            Ok(hash) => Ok(Some(hash)),
            Err(TickError::Core(SourceError::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One poll: tips, reorg check, then scan what both sources have. True when blocks
    /// are left to scan at once.
    async fn tick(
        &self,
        progress: &mut Progress,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<bool, TickError> {
        let tip_hash = self.core_call(|| self.core.best_block_hash()).await?;
        let tip = self
            .core_call(|| self.core.block_header(&tip_hash))
            .await?
            .height;
        let blindbit_height = self.blindbit_call(|| self.blindbit.block_height()).await?;
        self.handle.update_status(|s| {
            s.core_tip = Some(tip);
            s.blindbit_height = Some(blindbit_height);
        });
        self.check_reorg(progress, events).await?;
        let first_tip = *progress.announce_from.get_or_insert(tip);
        let own_birth = self.settings.own.as_ref().and_then(|o| o.birth_height);
        let main_next = *progress
            .next_height
            .get_or_insert(own_birth.unwrap_or(first_tip).min(tip));
        for (id, entry) in self.handle.wallets() {
            if entry.next_height.is_none() {
                self.handle.set_wallet_next(id, main_next);
            }
        }
        let (more, waiting) = self
            .scan_available(progress, tip, blindbit_height, events)
            .await?;
        self.update_health(progress, tip, blindbit_height, waiting);
        Ok(more)
    }

    fn update_health(&self, progress: &Progress, tip: u32, blindbit: u32, waiting: Option<String>) {
        let scanned = progress.next_height.and_then(|h| h.checked_sub(1));
        let lag_max = self.settings.lag_blocks_max;
        let behind = tip.saturating_sub(blindbit);
        let core_behind = blindbit.saturating_sub(tip);
        // Blindbit a block or so behind is normal right after a block; longer is not.
        // Any other wait (sources disagreeing on a hash) is a fault to report.
        let degraded = if behind > lag_max {
            Some(format!(
                "blindbit behind bitcoin_core by {behind} blocks (watcher.lag_blocks_max is {lag_max})"
            ))
        } else if core_behind > lag_max {
            Some(format!(
                "bitcoin_core behind blindbit by {core_behind} blocks (watcher.lag_blocks_max is {lag_max})"
            ))
        } else {
            waiting.filter(|reason| !reason.starts_with(WAITING_FOR_INDEX))
        };
        self.handle.update_status(|s| {
            s.scanned_height = scanned;
            s.lag = scanned.map(|h| tip.saturating_sub(h));
            s.degraded = degraded;
        });
    }
}
