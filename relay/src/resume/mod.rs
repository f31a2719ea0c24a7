//! Session resumption: where a wallet is in the mesh's notification streams
//! (`position`), and the signed, opaque token that carries it from one relay to another
//! (`token`).
//!
//! A position names, for every origin stream (`<relay_id>-<boot nonce>`), the seq ranges
//! of the notifications a wallet has been accounted for: delivered to it, or not matching
//! its subscriptions when the relay routed them. The relay that issues a token signs it
//! with its Ed25519 key, so every relay that knows the issuer's key (from a handshake or
//! a verified membership record) can check it and replay exactly what is missing.

pub mod budget;
pub mod position;
pub mod token;

pub use budget::ReplayBudget;
pub use position::{Position, RangeSet, StreamKey, message_position, stream_key};
pub use token::{Issuer, Token, TokenError};
