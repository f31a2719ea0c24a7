//! Scanning blocks: which keys need which block, fetching what Blindbit has for it, and
//! confirming every hit against Core before it is emitted.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use silentpayments::secp256k1::{PublicKey, XOnlyPublicKey};
use tokio::sync::mpsc;

use super::keys::WatchedKey;
use super::progress::Progress;
use super::scan::{candidate_scripts, filter_matches, scan_outputs, shared_secret};
use super::source::{BlindbitSource, BlindbitUtxo, CoreBlock, CoreSource, SourceError};
use super::watcher::{TickError, WAITING_FOR_INDEX, Watcher};
use crate::protocol::chain::{ChainEvent, Target, WalletId};

/// A payment found in a block, before or after confirmation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    pub target: Target,
    pub address: String,
    pub txid: String,
    pub vout: u32,
    pub value_sats: u64,
    pub script_hex: String,
    pub block_height: u32,
    pub block_hash: String,
}

/// What scanning one block gave.
#[derive(Debug)]
pub(crate) enum BlockOutcome {
    Scanned {
        hash: String,
        hits: Vec<Hit>,
    },
    /// Not scannable yet (Blindbit behind or disagreeing); try again next poll.
    Wait(String),
}

impl<C: CoreSource, B: BlindbitSource> Watcher<C, B> {
    /// Follows the best chain, then lets lagging wallets catch up, within
    /// `blocks_per_tick_max` blocks. Returns whether blocks are left to scan now, and why
    /// the best chain waits, if it does.
    pub(crate) async fn scan_available(
        &self,
        progress: &mut Progress,
        tip: u32,
        blindbit_height: u32,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(bool, Option<String>), TickError> {
        let mut budget = self.settings.blocks_per_tick_max;
        let waiting = self
            .follow_tip(progress, tip, blindbit_height, &mut budget, events)
            .await?;
        self.catch_up_wallets(progress, blindbit_height, &mut budget, events)
            .await?;
        Ok((budget == 0, waiting))
    }

    /// Rescans lagging wallets (cursor below the best chain's), lowest cursor first. A
    /// wallet whose block cannot be scanned yet waits without holding back the others.
    async fn catch_up_wallets(
        &self,
        progress: &mut Progress,
        blindbit_height: u32,
        budget: &mut u32,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(), TickError> {
        let mut waiting: BTreeSet<WalletId> = BTreeSet::new();
        while *budget > 0 {
            // Re-read each time: a reorg found while catching up moves it.
            let main_next = progress.next_height.expect("set before scanning");
            let Some(height) = self
                .handle
                .wallets()
                .iter()
                .filter(|(id, _)| !waiting.contains(id))
                .filter_map(|(_, e)| e.next_height)
                .filter(|h| *h < main_next)
                .min()
            else {
                break;
            };
            let keys: Vec<(Target, WatchedKey)> = self
                .keys_at(height, false)
                .into_iter()
                .filter(|(t, _)| !matches!(t, Target::Wallet(id) if waiting.contains(id)))
                .collect();
            *budget -= 1;
            if height > blindbit_height
                || !self.scan_and_emit(progress, height, &keys, events).await?
            {
                waiting.extend(keys.iter().filter_map(|(t, _)| match t {
                    Target::Wallet(id) => Some(*id),
                    Target::Own => None,
                }));
            }
        }
        Ok(())
    }

    /// Scans the best chain from `next_height` up to the tip for the own key and the
    /// wallets that have caught up.
    async fn follow_tip(
        &self,
        progress: &mut Progress,
        tip: u32,
        blindbit_height: u32,
        budget: &mut u32,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<Option<String>, TickError> {
        while *budget > 0 {
            let height = progress.next_height.expect("set before scanning");
            if height > tip {
                break;
            }
            let keys = self.keys_at(height, true);
            if !keys.is_empty() && height > blindbit_height {
                return Ok(Some(format!("{WAITING_FOR_INDEX} block {height}")));
            }
            *budget -= 1;
            let Some(hash) = self.core_hash_at(height).await? else {
                return Ok(Some(no_block(height)));
            };
            if !self.agrees_with_scanned(progress, height, &hash).await? {
                // Core reorganised since this poll's check: handle it before going on.
                self.reconcile(progress, events).await?;
                continue;
            }
            match self.scan_block(height, &hash, &keys).await? {
                BlockOutcome::Scanned { hash, hits } => {
                    self.emit_all(progress, hits, &keys, height, events).await?;
                    self.advance_main(progress, height, hash, events).await?;
                }
                BlockOutcome::Wait(reason) => return Ok(Some(reason)),
            }
        }
        Ok(None)
    }

    /// Scans one block for lagging wallets; false when it must wait.
    async fn scan_and_emit(
        &self,
        progress: &mut Progress,
        height: u32,
        keys: &[(Target, WatchedKey)],
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<bool, TickError> {
        let Some(hash) = self.core_hash_at(height).await? else {
            return Ok(false);
        };
        if !self.agrees_with_scanned(progress, height, &hash).await? {
            // A reorg: retract and rewind first; the cursors say what to scan next.
            self.reconcile(progress, events).await?;
            return Ok(true);
        }
        match self.scan_block(height, &hash, keys).await? {
            BlockOutcome::Scanned { hash, hits } => {
                self.remember_scanned(progress, height, &hash);
                self.emit_all(progress, hits, keys, height, events).await?;
                Ok(true)
            }
            BlockOutcome::Wait(_) => Ok(false),
        }
    }

    /// The keys to scan block `height` for: the own key on the best chain, and every
    /// wallet whose cursor is there.
    fn keys_at(&self, height: u32, main: bool) -> Vec<(Target, WatchedKey)> {
        let mut keys = Vec::new();
        if main && let Some(own) = &self.settings.own {
            keys.push((Target::Own, own.key.clone()));
        }
        for (id, entry) in self.handle.wallets() {
            if entry.next_height == Some(height) {
                keys.push((Target::Wallet(id), entry.key));
            }
        }
        keys
    }

    /// Emits the hits and moves the wallets scanned past this block.
    async fn emit_all(
        &self,
        progress: &mut Progress,
        hits: Vec<Hit>,
        keys: &[(Target, WatchedKey)],
        height: u32,
        events: &mpsc::Sender<ChainEvent>,
    ) -> Result<(), TickError> {
        for hit in hits {
            self.emit_hit(progress, hit, events).await?;
        }
        for (target, _) in keys {
            if let Target::Wallet(id) = target {
                self.handle.set_wallet_next(*id, height + 1);
            }
        }
        Ok(())
    }

    /// Scans block `hash` at `height` for `keys`; confirmed hits only.
    async fn scan_block(
        &self,
        height: u32,
        hash: &str,
        keys: &[(Target, WatchedKey)],
    ) -> Result<BlockOutcome, TickError> {
        let hash = hash.to_string();
        if keys.is_empty() {
            return Ok(BlockOutcome::Scanned {
                hash,
                hits: Vec::new(),
            });
        }
        let filter = match self
            .blindbit_call(|| self.blindbit.new_utxos_filter(height))
            .await
        {
            Ok(filter) => filter,
            Err(TickError::Blindbit(SourceError::NotFound)) => {
                return Ok(BlockOutcome::Wait(format!(
                    "{WAITING_FOR_INDEX} block {height}"
                )));
            }
            Err(e) => return Err(e),
        };
        if filter.block_hash != hash {
            return Ok(BlockOutcome::Wait(format!(
                "blindbit and bitcoin_core disagree on block {height}"
            )));
        }
        let tweaks = self
            .blindbit_call(|| self.blindbit.tweak_index(height))
            .await?;
        let matched = matching_keys(keys, &parse_tweaks(&tweaks), &filter.data, &hash);
        if matched.is_empty() {
            return Ok(BlockOutcome::Scanned {
                hash,
                hits: Vec::new(),
            });
        }
        let utxos = self.blindbit_call(|| self.blindbit.utxos(height)).await?;
        let hits = match_utxos(&matched, &utxos, height, &hash);
        if hits.is_empty() {
            return Ok(BlockOutcome::Scanned { hash, hits });
        }
        let block = self.core_call(|| self.core.block(&hash)).await?;
        let hits = confirm(hits, &block);
        Ok(BlockOutcome::Scanned { hash, hits })
    }
}

fn no_block(height: u32) -> String {
    format!("bitcoin_core has no block {height} any more")
}

fn parse_tweaks(tweaks: &[String]) -> Vec<PublicKey> {
    let parsed: Vec<PublicKey> = tweaks
        .iter()
        .filter_map(|t| PublicKey::from_str(t).ok())
        .collect();
    if parsed.len() != tweaks.len() {
        tracing::warn!(
            bad = tweaks.len() - parsed.len(),
            "blindbit served malformed tweaks"
        );
    }
    parsed
}

/// A key whose candidate outputs the block filter matched, with its shared secrets.
struct Matched<'a> {
    target: Target,
    key: &'a WatchedKey,
    secrets: Vec<silentpayments::SharedSecret>,
}

/// Keys worth a full output scan: those with a candidate output in the block filter.
fn matching_keys<'a>(
    keys: &'a [(Target, WatchedKey)],
    tweaks: &[PublicKey],
    filter: &[u8],
    hash: &str,
) -> Vec<Matched<'a>> {
    let Ok(block_hash) = bitcoin::BlockHash::from_str(hash) else {
        return Vec::new();
    };
    let mut matched = Vec::new();
    for (target, key) in keys {
        let secrets: Vec<_> = tweaks.iter().map(|t| shared_secret(t, key)).collect();
        let scripts: Vec<[u8; 34]> = secrets
            .iter()
            .flat_map(|s| candidate_scripts(key, s))
            .collect();
        if filter_matches(filter, &block_hash, &scripts) {
            matched.push(Matched {
                target: *target,
                key,
                secrets,
            });
        }
    }
    matched
}

/// Scans the block's taproot outputs (Blindbit tweaks are not tied to a txid, so every
/// secret is tried against every output).
fn match_utxos(
    matched: &[Matched<'_>],
    utxos: &[BlindbitUtxo],
    height: u32,
    hash: &str,
) -> Vec<Hit> {
    let mut by_key: BTreeMap<[u8; 32], Vec<&BlindbitUtxo>> = BTreeMap::new();
    for utxo in utxos {
        if let Some(key) = taproot_key(&utxo.scriptpubkey) {
            by_key.entry(key).or_default().push(utxo);
        }
    }
    let outputs: Vec<XOnlyPublicKey> = by_key
        .keys()
        .filter_map(|k| XOnlyPublicKey::from_slice(k).ok())
        .collect();
    let mut hits = Vec::new();
    for m in matched {
        for secret in &m.secrets {
            for found in scan_outputs(m.key, secret, &outputs) {
                for utxo in by_key.get(&found.output_key).into_iter().flatten() {
                    hits.push(Hit {
                        target: m.target,
                        address: m.key.address().to_string(),
                        txid: utxo.txid.clone(),
                        vout: utxo.vout,
                        value_sats: utxo.value,
                        script_hex: utxo.scriptpubkey.to_ascii_lowercase(),
                        block_height: height,
                        block_hash: hash.to_string(),
                    });
                }
            }
        }
    }
    hits.sort_by(|a, b| (a.target, &a.txid, a.vout).cmp(&(b.target, &b.txid, b.vout)));
    hits.dedup_by(|a, b| (a.target, &a.txid, a.vout) == (b.target, &b.txid, b.vout));
    hits
}

fn taproot_key(script_hex: &str) -> Option<[u8; 32]> {
    let script = hex::decode(script_hex).ok()?;
    match script.as_slice() {
        [0x51, 0x20, key @ ..] if key.len() == 32 => key.try_into().ok(),
        _ => None,
    }
}

/// Keeps the hits Core confirms: same txid, output index, value and script.
fn confirm(hits: Vec<Hit>, block: &CoreBlock) -> Vec<Hit> {
    hits.into_iter()
        .filter(|hit| {
            let ok = block.hash == hit.block_hash
                && block.txs.iter().any(|tx| {
                    tx.txid == hit.txid
                        && tx.outputs.iter().any(|o| {
                            o.n == hit.vout
                                && o.value_sats == hit.value_sats
                                && o.script_hex.eq_ignore_ascii_case(&hit.script_hex)
                        })
                });
            if !ok {
                tracing::warn!(txid = %hit.txid, vout = hit.vout, "bitcoin_core does not confirm a blindbit output: dropped");
            }
            ok
        })
        .collect()
}
