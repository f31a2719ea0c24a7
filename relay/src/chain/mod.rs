//! The chain watcher: finds silent payments (BIP352) to the relay's own keys and to
//! wallets registered over WebSocket, and tells the relay as [`ChainEvent`]s.
//!
//! Bitcoin Core is the authority on the tip, reorgs and output values; a Blindbit index
//! serves the per-transaction tweaks that make scanning cheap. Both sit behind traits
//! ([`CoreSource`], [`BlindbitSource`]) so tests and the simulator can substitute them.
//! The watcher owns no socket of its own: every connection goes through `rt::Net`.

mod block;
pub mod config;
pub mod events;
mod handle;
pub mod keys;
mod progress;
pub mod scan;
pub mod source;
pub mod store;
mod watcher;

pub use config::WatcherConfig;
pub use events::{
    ChainEvent, Target, WalletId, WatchOutcome, WatchRequest, encode_watch_response, format_btc,
};
pub use handle::{ChainStatus, WatchHandle};
pub use source::{BlindbitSource, CoreSource, SourceError};
pub use watcher::{OwnKey, RetryPolicy, WatchSettings, Watcher, WatcherError, run};
