//! The two chain sources, behind traits so tests and the simulator can substitute them:
//! Bitcoin Core (authority on the tip, reorgs, values and scripts) and a Blindbit index
//! (BIP352 tweaks and filters per block).

mod blindbit;
mod core;
pub mod http;

use std::future::Future;

use serde::Deserialize;

pub use blindbit::BlindbitHttp;
pub use core::{CoreAuth, CoreRpc};

/// A failed call to a chain source. Never carries credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{addr}: {message}")]
    Io { addr: String, message: String },
    #[error("{addr}: timed out")]
    Timeout { addr: String },
    #[error("HTTP status {status}")]
    Status { status: u16 },
    #[error("RPC error {code}: {message}")]
    Rpc { code: i64, message: String },
    #[error("unexpected response: {0}")]
    Decode(String),
    #[error("not found")]
    NotFound,
    #[error("configuration: {0}")]
    Config(String),
}

impl SourceError {
    /// Worth retrying: the source may answer next time (timeouts, resets, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Io { .. } | SourceError::Timeout { .. } => true,
            SourceError::Status { status } => *status >= 500,
            _ => false,
        }
    }
}

/// `getblockchaininfo`, the fields the watcher uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ChainInfo {
    /// `main`, `test`, `testnet4`, `signet` or `regtest`.
    pub chain: String,
    pub blocks: u32,
    #[serde(rename = "bestblockhash")]
    pub best_block_hash: String,
}

/// `getblockheader`, the fields the watcher uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HeaderInfo {
    pub hash: String,
    pub height: u32,
    /// -1 when the block is not on the best chain any more.
    pub confirmations: i64,
    #[serde(rename = "previousblockhash", default)]
    pub previous_block_hash: Option<String>,
}

/// One output of a block, as Core reports it (`getblock` verbosity 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreOutput {
    pub n: u32,
    pub value_sats: u64,
    pub script_hex: String,
}

/// One transaction of a block: its id and outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreTx {
    pub txid: String,
    pub outputs: Vec<CoreOutput>,
}

/// A block from `getblock` verbosity 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreBlock {
    pub hash: String,
    pub height: u32,
    pub txs: Vec<CoreTx>,
}

/// Bitcoin Core's JSON-RPC, the calls the watcher makes.
pub trait CoreSource: Send + Sync + 'static {
    fn blockchain_info(&self) -> impl Future<Output = Result<ChainInfo, SourceError>> + Send;
    fn best_block_hash(&self) -> impl Future<Output = Result<String, SourceError>> + Send;
    /// `Err(NotFound)` above the tip.
    fn block_hash(&self, height: u32) -> impl Future<Output = Result<String, SourceError>> + Send;
    fn block_header(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<HeaderInfo, SourceError>> + Send;
    fn block(&self, hash: &str) -> impl Future<Output = Result<CoreBlock, SourceError>> + Send;
}

/// Blindbit `/info`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlindbitInfo {
    pub network: String,
    pub height: u32,
}

/// Blindbit `/filter/new-utxos/:height`: a BIP158 GCS over the block's taproot outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUtxoFilter {
    pub block_hash: String,
    pub data: Vec<u8>,
}

/// One taproot output from Blindbit `/utxos/:height`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlindbitUtxo {
    pub txid: String,
    pub vout: u32,
    pub value: u64,
    pub scriptpubkey: String,
    #[serde(default)]
    pub block_hash: String,
}

/// The Blindbit oracle HTTP API v1, the calls the watcher makes.
pub trait BlindbitSource: Send + Sync + 'static {
    fn info(&self) -> impl Future<Output = Result<BlindbitInfo, SourceError>> + Send;
    fn block_height(&self) -> impl Future<Output = Result<u32, SourceError>> + Send;
    /// Tweaks (33-byte compressed points, hex) of every eligible transaction, spent or not.
    fn tweak_index(
        &self,
        height: u32,
    ) -> impl Future<Output = Result<Vec<String>, SourceError>> + Send;
    fn new_utxos_filter(
        &self,
        height: u32,
    ) -> impl Future<Output = Result<NewUtxoFilter, SourceError>> + Send;
    fn utxos(
        &self,
        height: u32,
    ) -> impl Future<Output = Result<Vec<BlindbitUtxo>, SourceError>> + Send;
}

/// Whether Core's `chain` names the configured network.
pub fn chain_matches(chain: &str, network: crate::config::Network) -> bool {
    use crate::config::Network;
    matches!(
        (chain, network),
        ("main", Network::Mainnet)
            | ("test" | "testnet4", Network::Testnet)
            | ("signet", Network::Signet)
            | ("regtest", Network::Regtest)
    )
}

/// Satoshis from a BTC amount as Core prints it (8 decimals, exact in an f64 after rounding).
pub fn btc_to_sats(btc: f64) -> Option<u64> {
    let sats = (btc * 100_000_000.0).round();
    (0.0..=2.1e15).contains(&sats).then_some(sats as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Network;

    // Proves Core's `chain` names map to the configured network, and amounts convert exactly.
    #[test]
    fn chain_names_and_amounts() {
        assert!(chain_matches("main", Network::Mainnet));
        assert!(chain_matches("test", Network::Testnet));
        assert!(chain_matches("testnet4", Network::Testnet));
        assert!(chain_matches("signet", Network::Signet));
        assert!(chain_matches("regtest", Network::Regtest));
        assert!(!chain_matches("main", Network::Signet));
        assert!(!chain_matches("signet", Network::Mainnet));
        assert_eq!(btc_to_sats(0.0001), Some(10_000));
        assert_eq!(btc_to_sats(20999999.9769), Some(2_099_999_997_690_000));
        assert_eq!(btc_to_sats(0.00000001), Some(1));
        assert_eq!(btc_to_sats(-1.0), None);
        assert!(SourceError::Status { status: 503 }.is_transient());
        assert!(!SourceError::Status { status: 401 }.is_transient());
        assert!(!SourceError::NotFound.is_transient());
    }
}
