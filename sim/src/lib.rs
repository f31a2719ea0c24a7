//! Deterministic simulation of an sdk_relay mesh on turmoil.
//!
//! The relays are the real thing: each simulated host runs `sdk_relay::run`, the
//! production entry point, over the turmoil implementation of the relay's seam (`rt`).
//! The harness (`harness`) owns the hosts, runs named workloads (`workload`) on client
//! hosts, applies faults (`fault`) between simulation steps, and ends every run with
//! whole-mesh checks (`check`). Scenarios (`scenario`) are named plans built from a seed;
//! the same scenario and seed give a byte-identical trace.

pub mod check;
pub mod client;
pub mod fault;
pub mod harness;
pub mod hostile;
pub mod roam;
pub mod rt;
pub mod scenario;
pub mod trace;
pub mod workload;
