//! Benchmarks of the relay's hot paths (`benches/`), and the baseline server that states
//! the relay's throughput as a ratio of what hyper + fastwebsockets can do at all.

// A measurement tool outside the relay's seam: it binds real sockets and reads real time.
#![allow(clippy::disallowed_methods)]

pub mod baseline;
