//! What the watcher tells the relay (the `watch` messages are in `watch`).
//!
//! The relay wraps each event's `data` object in a `notification` with notification_type
//! `payment_detected`, `payment_reorged` or `block_mined`, and routes it by `Target`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A registered wallet, unique for the life of one watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WalletId(pub u64);

impl std::fmt::Display for WalletId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "wallet-{}", self.0)
    }
}

/// Whose payment it is: the relay's own key (every `notifications` subscriber) or one
/// registered wallet (that wallet's connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Own,
    Wallet(WalletId),
}

/// Something the chain watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEvent {
    BlockMined {
        height: u32,
        hash: String,
    },
    PaymentDetected {
        target: Target,
        txid: String,
        vout: u32,
        block_height: u32,
        block_hash: String,
        /// BTC as an exact decimal string, e.g. `"0.0001"`.
        amount: String,
        /// The receiving silent-payment address, `sp1…` or `tsp1…`.
        address: String,
    },
    PaymentReorged {
        target: Target,
        txid: String,
        vout: u32,
        block_height: u32,
        block_hash: String,
    },
}

impl ChainEvent {
    /// The `notification_type` the relay publishes this event under.
    pub fn notification_type(&self) -> &'static str {
        match self {
            ChainEvent::BlockMined { .. } => "block_mined",
            ChainEvent::PaymentDetected { .. } => "payment_detected",
            ChainEvent::PaymentReorged { .. } => "payment_reorged",
        }
    }

    /// Who should receive it; `None` for `block_mined` (everyone subscribed).
    pub fn target(&self) -> Option<Target> {
        match self {
            ChainEvent::BlockMined { .. } => None,
            ChainEvent::PaymentDetected { target, .. }
            | ChainEvent::PaymentReorged { target, .. } => Some(*target),
        }
    }

    /// The notification's `data` object.
    pub fn data(&self) -> Value {
        match self {
            ChainEvent::BlockMined { height, hash } => json!({"height": height, "hash": hash}),
            ChainEvent::PaymentDetected {
                txid,
                vout,
                block_height,
                block_hash,
                amount,
                address,
                ..
            } => json!({
                "txid": txid, "vout": vout, "block_height": block_height,
                "block_hash": block_hash, "amount": amount, "address": address,
            }),
            ChainEvent::PaymentReorged {
                txid,
                vout,
                block_height,
                block_hash,
                ..
            } => json!({
                "txid": txid, "vout": vout, "block_height": block_height, "block_hash": block_hash,
            }),
        }
    }
}

/// An exact BTC decimal string from satoshis: `10000` -> `"0.0001"`, `100000000` -> `"1"`.
pub fn format_btc(sats: u64) -> String {
    let whole = sats / 100_000_000;
    let frac = sats % 100_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:08}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves amounts are exact decimal strings from satoshis.
    #[test]
    fn formats_btc_exactly() {
        assert_eq!(format_btc(10_000), "0.0001");
        assert_eq!(format_btc(100_000_000), "1");
        assert_eq!(format_btc(1), "0.00000001");
        assert_eq!(format_btc(2_100_000_000_000_000), "21000000");
        assert_eq!(format_btc(123_456_789), "1.23456789");
        assert_eq!(format_btc(0), "0");
    }

    // Proves each event's data object and notification type.
    #[test]
    fn event_data() {
        let e = ChainEvent::PaymentDetected {
            target: Target::Own,
            txid: "ab".into(),
            vout: 0,
            block_height: 7,
            block_hash: "cd".into(),
            amount: "0.0001".into(),
            address: "tsp1".into(),
        };
        assert_eq!(e.notification_type(), "payment_detected");
        assert_eq!(e.data()["amount"], "0.0001");
        let b = ChainEvent::BlockMined {
            height: 1,
            hash: "h".into(),
        };
        assert_eq!(b.data(), json!({"height":1,"hash":"h"}));
        assert_eq!(b.target(), None);
    }
}
