//! The chain watcher: finds silent payments (BIP352) to the relay's own keys and to
//! wallets registered over WebSocket, and tells the relay as [`ChainEvent`]s.
//!
//! Bitcoin Core is the authority on the tip, reorgs and output values; a Blindbit index
//! serves the per-transaction tweaks that make scanning cheap. Both sit behind traits
//! ([`CoreSource`], [`BlindbitSource`]) so tests and the simulator can substitute them.
//! The watcher owns no socket of its own: every connection goes through `rt::Net`.
//!
//! Wiring, for the relay: build a [`WatchHandle::from_config`], spawn [`run`] with it, a
//! bounded `mpsc::Sender<ChainEvent>` and the shutdown future; publish each received
//! event's [`ChainEvent::data`] under [`ChainEvent::notification_type`], to the wallet's
//! connections for `Target::Wallet`, to every `notifications` subscriber otherwise. A
//! `watch` message goes to [`WatchHandle::register`] (answer with
//! [`encode_watch_response`]); unregister when the wallet's connection closes.
//! [`WatchHandle::status`] feeds `/health`. A full events channel pauses scanning rather
//! than dropping events. With `[watcher] persist_wallets`, registrations (and their scan
//! cursors) are saved in `data_dir` and outlive their connection and the relay; without,
//! a wallet re-registers (and is rescanned from its birth height) after a restart.

mod block;
mod handle;
#[cfg(test)]
mod hang_tests;
pub mod keys;
mod progress;
pub mod registry;
pub mod scan;
pub mod source;
pub mod store;
mod watcher;

pub use crate::config::WatcherConfig;
pub use crate::protocol::chain::{ChainEvent, Target, WalletId, format_btc};
pub use crate::protocol::watch::{
    UnwatchRequest, WatchOutcome, WatchRequest, encode_unwatch_response, encode_watch_response,
};
pub use handle::{ChainStatus, Registration, WatchHandle};
pub use source::{BlindbitSource, CoreSource, SourceError};
pub use watcher::{OwnKey, RetryPolicy, WatchSettings, Watcher, WatcherError, run};
