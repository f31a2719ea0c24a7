//! The loop's progress: the best-chain cursor, the hashes of the blocks scanned inside the
//! reorg window (best chain and wallet rescans alike) that reveal a reorg, and the
//! payments that a reorg would retract. Persisted after each best-chain block so a restart
//! neither misses nor repeats a notification.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;

use super::block::Hit;
use super::source::{BlindbitSource, CoreSource};
use super::store::{self, OwnPayment, PersistedState, WalletPayment};
use super::watcher::{PAYMENTS_MAX, TickError, Watcher, WatcherError};
use crate::protocol::chain::{ChainEvent, Target, WalletId, format_btc};

/// A payment emitted and still inside the reorg window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PaymentRecord {
    pub block_height: u32,
    pub block_hash: String,
    pub txid: String,
    pub vout: u32,
    pub target: Target,
}

impl PaymentRecord {
    fn saved(&self) -> OwnPayment {
        OwnPayment {
            block_height: self.block_height,
            block_hash: self.block_hash.clone(),
            txid: self.txid.clone(),
            vout: self.vout,
        }
    }
}

/// The loop's own state; persisted after each main-chain block (wallets' payments only
/// when registrations are saved too).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub next_height: Option<u32>,
    /// Hash of every block scanned within `reorg_depth_max` of the best chain's last
    /// scanned block, whoever it was scanned for: a wallet's birth-range rescan below the
    /// start tip is as exposed to a reorg as the tip is.
    pub scanned: BTreeMap<u32, String>,
    pub payments: BTreeSet<PaymentRecord>,
    /// Best-chain blocks from this height on are announced with `block_mined`: Core's tip
    /// at a first start (older blocks are history), the saved cursor after a restart
    /// (blocks mined while the relay was down), lowered to the fork by a reorg (the
    /// replacement blocks are new).
    pub announce_from: Option<u32>,
}

/// Core's hash at each height the watcher remembers a hash for; `None` above its tip.
type CoreHashes = BTreeMap<u32, Option<String>>;

impl<C: CoreSource, B: BlindbitSource> Watcher<C, B> {
    pub(crate) fn load_progress(&self) -> Result<Progress, WatcherError> {
        let mut progress = Progress::default();
        let own_address = self
            .settings
            .own
            .as_ref()
            .map(|o| o.key.address().to_string());
        let Some(state) = store::load(&self.settings.data_dir)? else {
            return Ok(progress);
        };
        if state.own_address != own_address {
            tracing::warn!("own key changed since the last run: scanning from its birth height");
            return Ok(progress);
        }
        progress.next_height = state.next_height;
        progress.announce_from = state.next_height;
        progress.scanned = state.recent.into_iter().collect();
        let wallet_payments = state
            .wallet_payments
            .into_iter()
            .map(|p| (Target::Wallet(WalletId(p.wallet)), p.payment))
            .filter(|(target, _)| matches!(target, Target::Wallet(id) if self.handle.is_registered(*id)));
        progress.payments = state
            .own_payments
            .into_iter()
            .map(|p| (Target::Own, p))
            .chain(wallet_payments)
            .map(|(target, p)| PaymentRecord {
                block_height: p.block_height,
                block_hash: p.block_hash,
                txid: p.txid,
                vout: p.vout,
                target,
            })
            .collect();
        Ok(progress)
    }

    pub(crate) fn persist(&self, progress: &Progress) -> Result<(), TickError> {
        let state = PersistedState {
            version: 0,
            own_address: self
                .settings
                .own
                .as_ref()
                .map(|o| o.key.address().to_string()),
            next_height: progress.next_height,
            recent: progress
                .scanned
                .iter()
                .map(|(h, hash)| (*h, hash.clone()))
                .collect(),
            own_payments: progress
                .payments
                .iter()
                .filter(|p| p.target == Target::Own)
                .map(PaymentRecord::saved)
                .collect(),
            // A wallet id means the same wallet after a restart only when registrations
            // are saved too.
            wallet_payments: progress
                .payments
                .iter()
                .filter(|_| self.handle.persists())
                .filter_map(|p| match p.target {
                    Target::Wallet(id) => Some(WalletPayment {
                        wallet: id.0,
                        payment: p.saved(),
                    }),
                    Target::Own => None,
                })
                .collect(),
        };
        store::save(&self.settings.data_dir, &state).map_err(TickError::Store)
    }

    /// Detects a reorg: the last scanned best-chain block is no longer Core's.
    pub(crate) async fn check_reorg(
        &self,
        progress: &mut Progress,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(), TickError> {
        let Some((&top, top_hash)) = progress.scanned.last_key_value() else {
            return Ok(());
        };
        if self.core_hash_at(top).await?.as_deref() == Some(top_hash.as_str()) {
            return Ok(());
        }
        self.reconcile(progress, events).await
    }

    /// Re-checks every remembered block and payment against Core, however it was found
    /// (best chain or a wallet's rescan): the fork is just below the lowest one Core no
    /// longer has. Nothing happens when Core still has them all.
    pub(crate) async fn reconcile(
        &self,
        progress: &mut Progress,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(), TickError> {
        let current = self.core_hashes(progress).await?;
        let still =
            |height: u32, hash: &str| current.get(&height).and_then(Option::as_deref) == Some(hash);
        let Some(lowest_replaced) = progress
            .scanned
            .iter()
            .map(|(h, hash)| (*h, hash.as_str()))
            .chain(
                progress
                    .payments
                    .iter()
                    .map(|p| (p.block_height, p.block_hash.as_str())),
            )
            .filter(|(h, hash)| !still(*h, hash))
            .map(|(h, _)| h)
            .min()
        else {
            return Ok(());
        };
        let fork = lowest_replaced.saturating_sub(1);
        let window_full = progress.scanned.len() >= self.settings.reorg_depth_max as usize;
        if window_full
            && progress.scanned.first_key_value().map(|(h, _)| *h) == Some(lowest_replaced)
        {
            tracing::warn!(
                fork,
                "reorg as deep as the blocks remembered (reorg_depth_max): rescanning from there"
            );
        }
        tracing::info!(fork, "chain reorganisation");
        self.disconnect(progress, fork, &current, events).await
    }

    /// Core's hash at every height a scanned block or a payment is remembered at.
    async fn core_hashes(&self, progress: &Progress) -> Result<CoreHashes, TickError> {
        let heights: BTreeSet<u32> = progress
            .scanned
            .keys()
            .copied()
            .chain(progress.payments.iter().map(|p| p.block_height))
            .collect();
        let mut current = CoreHashes::new();
        for height in heights {
            current.insert(height, self.core_hash_at(height).await?);
        }
        Ok(current)
    }

    /// Retracts every payment whose block Core no longer has, forgets the replaced blocks
    /// and rewinds every cursor (best chain and wallets) to `fork + 1`, so the
    /// replacement blocks are scanned for every key.
    async fn disconnect(
        &self,
        progress: &mut Progress,
        fork: u32,
        current: &CoreHashes,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(), TickError> {
        let gone: Vec<PaymentRecord> = progress
            .payments
            .iter()
            .filter(|p| {
                current.get(&p.block_height).and_then(Option::as_deref) != Some(&p.block_hash)
            })
            .cloned()
            .collect();
        for p in gone {
            progress.payments.remove(&p);
            let event = ChainEvent::PaymentReorged {
                target: p.target,
                txid: p.txid,
                vout: p.vout,
                block_height: p.block_height,
                block_hash: p.block_hash,
            };
            events.send(event).await.map_err(|_| TickError::Closed)?;
        }
        progress.scanned.retain(|h, _| *h <= fork);
        let next = fork + 1;
        progress.next_height = Some(progress.next_height.map_or(next, |n| n.min(next)));
        progress.announce_from = Some(progress.announce_from.map_or(next, |a| a.min(next)));
        self.handle.rewind_wallets(next);
        self.handle
            .save_changed(Some(self.clock.now()))
            .map_err(TickError::Store)?;
        self.persist(progress)
    }

    /// Remembers the hash of a block scanned for a wallet's rescan, if it is inside the
    /// reorg window of the best chain.
    pub(crate) fn remember_scanned(&self, progress: &mut Progress, height: u32, hash: &str) {
        let main_top = progress.next_height.unwrap_or(0).saturating_sub(1);
        if height > main_top.saturating_sub(self.settings.reorg_depth_max) {
            progress.scanned.insert(height, hash.to_string());
        }
    }

    /// Whether block `hash` at `height` belongs to the chain the remembered blocks are on:
    /// the same hash where one is remembered at `height`, else built on the one remembered
    /// just below (true when neither is). Without this, a reorg between a poll's check and
    /// a block's scan would leave a replaced block remembered behind a tip that matches.
    pub(crate) async fn agrees_with_scanned(
        &self,
        progress: &Progress,
        height: u32,
        hash: &str,
    ) -> Result<bool, TickError> {
        if let Some(known) = progress.scanned.get(&height) {
            return Ok(known == hash);
        }
        let Some(parent) = height
            .checked_sub(1)
            .and_then(|below| progress.scanned.get(&below))
        else {
            return Ok(true);
        };
        let header = self.core_call(|| self.core.block_header(hash)).await?;
        Ok(header.previous_block_hash.as_deref() == Some(parent.as_str()))
    }

    /// Emits a confirmed payment unless already emitted for the same block.
    pub(crate) async fn emit_hit(
        &self,
        progress: &mut Progress,
        hit: Hit,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(), TickError> {
        let record = PaymentRecord {
            block_height: hit.block_height,
            block_hash: hit.block_hash.clone(),
            txid: hit.txid.clone(),
            vout: hit.vout,
            target: hit.target,
        };
        if progress.payments.contains(&record) {
            return Ok(());
        }
        tracing::info!(txid = %hit.txid, vout = hit.vout, height = hit.block_height, "payment detected");
        let event = ChainEvent::PaymentDetected {
            target: hit.target,
            txid: hit.txid,
            vout: hit.vout,
            block_height: hit.block_height,
            block_hash: hit.block_hash,
            amount: format_btc(hit.value_sats),
            address: hit.address,
        };
        events.send(event).await.map_err(|_| TickError::Closed)?;
        progress.payments.insert(record);
        while progress.payments.len() > PAYMENTS_MAX {
            progress.payments.pop_first();
        }
        Ok(())
    }

    /// Records a scanned main-chain block, announces it, and persists.
    pub(crate) async fn advance_main(
        &self,
        progress: &mut Progress,
        height: u32,
        hash: String,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(), TickError> {
        let window_start = height.saturating_sub(self.settings.reorg_depth_max);
        progress.scanned.insert(height, hash.clone());
        progress.scanned.retain(|h, _| *h > window_start);
        progress.payments.retain(|p| p.block_height > window_start);
        progress.next_height = Some(height + 1);
        if progress.announce_from.is_some_and(|a| height >= a) {
            let event = ChainEvent::BlockMined { height, hash };
            events.send(event).await.map_err(|_| TickError::Closed)?;
        }
        self.persist(progress)
    }
}
