//! The relay's metrics: one registry behind both `/metrics` endpoints.

pub mod names;
