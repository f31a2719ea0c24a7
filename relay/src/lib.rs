//! sdk_relay: the relay that Bitcoin Silent Payments wallets connect to.

pub mod chain;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod rt;
