//! sdk_relay: the relay that Bitcoin Silent Payments wallets connect to.
//!
//! Layers, from the wire inwards: `ws` and `http` (the two interfaces), `hub` (local
//! fan-out), `node` (state shared by one relay's tasks), `protocol` (pure message
//! types), `config`, `metrics`, `logs`, `process`, and `rt`, the seam through which every
//! socket, timer, timestamp and random choice passes.

mod accept;
pub mod chain;
pub mod config;
pub mod http;
pub mod hub;
pub mod logs;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod process;
pub mod protocol;
pub mod rt;
mod server;
pub mod ws;

pub use server::{Listeners, run};
