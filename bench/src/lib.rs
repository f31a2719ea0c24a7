//! Benchmarks of the relay hot paths and the baseline server.
