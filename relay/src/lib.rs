//! sdk_relay: the relay that Bitcoin Silent Payments wallets connect to.
//!
//! The rooms, from the top (ARCHITECTURE.md draws them and says what each may import):
//! `server` runs one relay; `node` assembles it and answers the HTTP API's views; `http`
//! and `ws` are its two faces (operators, wallets), `dashboard` the operators' live page
//! `http` serves; `mesh` links relays and routes every notification (or `nats` carries
//! them through NATS JetStream); `wallets`, `health`, `routing`, `hub` and `chain` are the parts they
//! share; `conn` is the connection layer under both faces; `protocol` holds every wire
//! message; `config`, `metrics`, `logs`, `process`, `lifecycle`, `secret` and `rt` (the
//! seam through which every socket, timer, timestamp and random choice passes) are the
//! ground floor.

pub mod chain;
pub mod config;
pub mod conn;
pub mod dashboard;
pub mod health;
pub mod http;
pub mod hub;
pub mod identity;
pub mod lifecycle;
pub mod logs;
pub mod logstore;
pub mod mesh;
pub mod metrics;
#[cfg(feature = "mutations")]
pub mod mutation;
pub mod nats;
pub mod node;
pub mod process;
pub mod protocol;
pub mod resume;
pub mod routing;
pub mod rt;
pub mod secret;
mod server;
pub mod wallets;
pub mod ws;

pub use server::{Listeners, run, run_until, run_with_log_store};
