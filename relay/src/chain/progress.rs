//! The loop's progress: the best-chain cursor, the recent (height, hash) pairs that
//! reveal a reorg, and the payments that a reorg would retract. Persisted after each
//! best-chain block so a restart neither misses nor repeats a notification.

use std::collections::{BTreeSet, VecDeque};

use tokio::sync::mpsc;

use super::block::Hit;
use super::source::{BlindbitSource, CoreSource};
use super::store::{self, OwnPayment, PersistedState};
use super::watcher::{PAYMENTS_MAX, TickError, Watcher, WatcherError};
use crate::protocol::chain::{ChainEvent, Target, format_btc};

/// A payment emitted and still inside the reorg window.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PaymentRecord {
    pub block_height: u32,
    pub block_hash: String,
    pub txid: String,
    pub vout: u32,
    pub target: Target,
}

/// The loop's own state; persisted (own payments only) after each main-chain block.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub next_height: Option<u32>,
    pub recent: VecDeque<(u32, String)>,
    pub payments: BTreeSet<PaymentRecord>,
    /// Core's tip when the watcher started: `block_mined` is for blocks from here on.
    pub first_tip: Option<u32>,
}

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
        progress.recent = state.recent.into_iter().collect();
        progress.payments = state
            .own_payments
            .into_iter()
            .map(|p| PaymentRecord {
                block_height: p.block_height,
                block_hash: p.block_hash,
                txid: p.txid,
                vout: p.vout,
                target: Target::Own,
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
            recent: progress.recent.iter().cloned().collect(),
            own_payments: progress
                .payments
                .iter()
                .filter(|p| p.target == Target::Own)
                .map(|p| OwnPayment {
                    block_height: p.block_height,
                    block_hash: p.block_hash.clone(),
                    txid: p.txid.clone(),
                    vout: p.vout,
                })
                .collect(),
        };
        store::save(&self.settings.data_dir, &state).map_err(TickError::Store)
    }

    /// Walks back to the fork point when Core's chain no longer holds our last block.
    pub(crate) async fn check_reorg(
        &self,
        progress: &mut Progress,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(), TickError> {
        let Some((height, hash)) = progress.recent.back().cloned() else {
            return Ok(());
        };
        if self.core_hash_at(height).await?.as_deref() == Some(hash.as_str()) {
            return Ok(());
        }
        let oldest = progress.recent.front().map_or(height, |(h, _)| *h);
        let mut fork = oldest.saturating_sub(1);
        let recent: Vec<(u32, String)> = progress.recent.iter().rev().cloned().collect();
        for (h, known) in recent {
            if self.core_hash_at(h).await?.as_deref() == Some(known.as_str()) {
                fork = h;
                break;
            }
        }
        if fork < oldest {
            tracing::warn!(
                fork,
                "reorg deeper than reorg_depth_max: rescanning from its bottom"
            );
        }
        tracing::info!(fork, from = height, "chain reorganisation");
        self.disconnect(progress, fork, events).await
    }

    /// Retracts payments above `fork` and rewinds every cursor to `fork + 1`.
    async fn disconnect(
        &self,
        progress: &mut Progress,
        fork: u32,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(), TickError> {
        let gone: Vec<PaymentRecord> = progress
            .payments
            .iter()
            .filter(|p| p.block_height > fork)
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
        progress.recent.retain(|(h, _)| *h <= fork);
        progress.next_height = Some(fork + 1);
        self.handle.rewind_wallets(fork + 1);
        self.persist(progress)
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
        progress.recent.push_back((height, hash.clone()));
        while progress.recent.len() > self.settings.reorg_depth_max as usize {
            progress.recent.pop_front();
        }
        let window_start = height.saturating_sub(self.settings.reorg_depth_max);
        progress.payments.retain(|p| p.block_height > window_start);
        progress.next_height = Some(height + 1);
        if progress.first_tip.is_some_and(|t| height >= t) {
            let event = ChainEvent::BlockMined { height, hash };
            events.send(event).await.map_err(|_| TickError::Closed)?;
        }
        self.persist(progress)
    }
}
