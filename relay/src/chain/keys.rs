//! Silent-payment keys the watcher scans for: the relay's own and registered wallets'.
//!
//! The scan secret key lives only inside [`ScanSecret`], whose `Debug` redacts it, so no
//! log line, error or metric can print it by accident.

use silentpayments::receiving::{Label, Receiver};
use silentpayments::secp256k1::{PublicKey, Secp256k1, SecretKey};
use silentpayments::{Network as SpNetwork, SpVersion};

use crate::config::Network;

pub use crate::protocol::watch::LABELS_MAX;

/// A scan secret key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ScanSecret(SecretKey);

impl std::fmt::Debug for ScanSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScanSecret({})", crate::secret::REDACTED)
    }
}

impl ScanSecret {
    /// Parses 64 hex characters.
    ///
    /// # Errors
    /// Not 64 hex characters, or not a valid secp256k1 secret key (the message never
    /// contains the input).
    pub fn from_hex(text: &str) -> Result<ScanSecret, KeyError> {
        let bytes = decode_fixed::<32>(text).map_err(|e| KeyError::Format {
            field: "scan_secret_key",
            problem: e,
        })?;
        SecretKey::from_slice(&bytes)
            .map(ScanSecret)
            .map_err(|_| KeyError::ScanKeyRange)
    }

    pub(crate) fn secret(&self) -> &SecretKey {
        &self.0
    }

    /// The key as 64 hex characters, for the registrations file only (`registry`).
    pub(crate) fn to_hex(&self) -> String {
        hex::encode(self.0.secret_bytes())
    }
}

/// Why a key set was refused; never carries key material. Each message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("`{field}` {problem}")]
    Format {
        field: &'static str,
        problem: HexProblem,
    },
    #[error(
        "`scan_secret_key` is not a valid secp256k1 secret key (zero, or not below the curve order)"
    )]
    ScanKeyRange,
    #[error("`spend_public_key` must start with 02 or 03 (a compressed public key)")]
    SpendKeyPrefix,
    #[error("`spend_public_key` is not a valid secp256k1 point")]
    SpendKeyPoint,
    #[error("`labels`: at most {LABELS_MAX} labels")]
    TooManyLabels,
    #[error("`labels`: label {0} gives an invalid key")]
    Label(u32),
}

/// What is wrong with a fixed-length hex field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexProblem {
    #[error("must be {expected} hex characters, not {got}")]
    Length { expected: usize, got: usize },
    #[error("must be hexadecimal (0-9, a-f)")]
    NotHex,
}

fn decode_fixed<const N: usize>(text: &str) -> Result<[u8; N], HexProblem> {
    let got = text.chars().count();
    if got != 2 * N {
        return Err(HexProblem::Length {
            expected: 2 * N,
            got,
        });
    }
    let bytes = hex::decode(text).map_err(|_| HexProblem::NotHex)?;
    bytes.try_into().map_err(|_| HexProblem::NotHex)
}

/// Parses a compressed public key from 66 hex characters.
///
/// # Errors
/// Not 66 hex characters, not a compressed encoding, or not a point on the curve.
pub fn parse_spend_key(text: &str) -> Result<PublicKey, KeyError> {
    let bytes = decode_fixed::<33>(text).map_err(|e| KeyError::Format {
        field: "spend_public_key",
        problem: e,
    })?;
    if !matches!(bytes[0], 0x02 | 0x03) {
        return Err(KeyError::SpendKeyPrefix);
    }
    PublicKey::from_slice(&bytes).map_err(|_| KeyError::SpendKeyPoint)
}

/// The address prefix: `sp` on mainnet, `tsp` elsewhere (signet, testnet, regtest).
pub fn sp_network(network: Network) -> SpNetwork {
    match network {
        Network::Mainnet => SpNetwork::Mainnet,
        Network::Testnet | Network::Signet | Network::Regtest => SpNetwork::Testnet,
    }
}

/// One watched key set: scan secret, spend public key and labels, ready to scan with.
#[derive(Clone)]
pub struct WatchedKey {
    scan: ScanSecret,
    receiver: Receiver,
    spend: PublicKey,
    /// Each label's scalar `m` and point `m*G` (change label 0 first), for the k loop.
    label_points: Vec<(SecretKey, PublicKey)>,
    address: String,
}

impl std::fmt::Debug for WatchedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchedKey")
            .field("scan", &self.scan)
            .field("address", &self.address)
            .finish()
    }
}

impl WatchedKey {
    /// Builds the receiver (change label 0 always included, as BIP352 reserves it) and
    /// the base address.
    ///
    /// # Errors
    /// Too many labels, or a label that gives an invalid key.
    pub fn new(
        scan: ScanSecret,
        spend: PublicKey,
        labels: &[u32],
        network: Network,
    ) -> Result<WatchedKey, KeyError> {
        if labels.len() > LABELS_MAX {
            return Err(KeyError::TooManyLabels);
        }
        let secp = Secp256k1::signing_only();
        let scan_pub = scan.secret().public_key(&secp);
        let change = Label::new(*scan.secret(), 0);
        let mut receiver = Receiver::new(
            SpVersion::ZERO,
            scan_pub,
            spend,
            change,
            sp_network(network),
        )
        .map_err(|_| KeyError::Label(0))?;
        let mut label_points = Vec::with_capacity(labels.len() + 1);
        for m in std::iter::once(0).chain(labels.iter().copied()) {
            let label = Label::new(*scan.secret(), m);
            let scalar = SecretKey::from_slice(&label.as_inner().to_be_bytes())
                .map_err(|_| KeyError::Label(m))?;
            if m != 0 {
                receiver.add_label(label).map_err(|_| KeyError::Label(m))?;
            }
            label_points.push((scalar, scalar.public_key(&secp)));
        }
        label_points.dedup();
        let address = receiver.receiving_code().to_string();
        Ok(WatchedKey {
            scan,
            receiver,
            spend,
            label_points,
            address,
        })
    }

    /// The base (unlabelled) silent-payment address, `sp1…` or `tsp1…`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The wallet's private topic (see `protocol::PRIVATE_TOPIC_PREFIX`): its own chain
    /// events travel the mesh on it. The same keys give the same topic on every relay;
    /// it is a hash of the secret scan key, so only who holds that key (the wallet, and
    /// the relays it registered with) can name it, and nothing about the key or the
    /// address can be learnt from it.
    pub fn topic(&self) -> String {
        wallet_topic(self.scan.secret(), &self.spend)
    }

    pub(crate) fn scan(&self) -> &ScanSecret {
        &self.scan
    }

    pub(crate) fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    pub(crate) fn spend_key(&self) -> &PublicKey {
        &self.spend
    }

    pub(crate) fn label_points(&self) -> &[(SecretKey, PublicKey)] {
        &self.label_points
    }
}

/// `wallet:` and the first 16 bytes of SHA-256(domain, scan secret, spend public key), in
/// hex.
fn wallet_topic(scan: &SecretKey, spend: &PublicKey) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"sdk_relay wallet topic v1\0")
        .chain_update(scan.secret_bytes())
        .chain_update(spend.serialize())
        .finalize();
    let topic = format!(
        "{}{}",
        crate::protocol::PRIVATE_TOPIC_PREFIX,
        hex::encode(&digest[..crate::protocol::WALLET_TOPIC_HEX_DIGITS / 2])
    );
    debug_assert!(crate::protocol::is_wallet_topic(&topic));
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a wallet's topic is the same for the same keys (on any network, any labels:
    // every relay derives it alike), differs with either key, and is a wallet topic.
    #[test]
    fn the_topic_follows_the_keys_only() {
        let secp = Secp256k1::new();
        let scan = ScanSecret::from_hex(&"01".repeat(32)).unwrap();
        let other_scan = ScanSecret::from_hex(&"03".repeat(32)).unwrap();
        let spend = SecretKey::from_slice(&[2; 32]).unwrap().public_key(&secp);
        let other_spend = SecretKey::from_slice(&[4; 32]).unwrap().public_key(&secp);
        let topic = |scan: &ScanSecret, spend, labels: &[u32], network| {
            WatchedKey::new(scan.clone(), spend, labels, network)
                .unwrap()
                .topic()
        };
        let base = topic(&scan, spend, &[], Network::Signet);
        assert!(crate::protocol::is_wallet_topic(&base), "{base}");
        assert_eq!(base, topic(&scan, spend, &[1, 2], Network::Mainnet));
        assert_ne!(base, topic(&other_scan, spend, &[], Network::Signet));
        assert_ne!(base, topic(&scan, other_spend, &[], Network::Signet));
        assert!(!base.contains(&"01".repeat(32)));
    }

    // Proves the documented test keys give a tsp1 address on signet and that Debug redacts.
    #[test]
    fn documented_keys_give_tsp_address_and_redact() {
        let secp = Secp256k1::new();
        let scan = ScanSecret::from_hex(&"01".repeat(32)).unwrap();
        let spend = SecretKey::from_slice(&[2; 32]).unwrap().public_key(&secp);
        let key = WatchedKey::new(scan.clone(), spend, &[1, 2], Network::Signet).unwrap();
        assert!(key.address().starts_with("tsp1q"), "{}", key.address());
        let main = WatchedKey::new(scan, spend, &[], Network::Mainnet).unwrap();
        assert!(main.address().starts_with("sp1q"));
        assert!(!format!("{key:?}").contains(&"01".repeat(32)));
        assert!(ScanSecret::from_hex("00").is_err());
        assert!(ScanSecret::from_hex(&"00".repeat(32)).is_err());
        assert!(parse_spend_key(&"05".repeat(33)).is_err());
        assert!(parse_spend_key("02").is_err());
    }

    // Proves each key refusal names the field and the actual problem.
    #[test]
    fn key_refusals_name_field_and_problem() {
        let message = |e: KeyError| e.to_string();
        assert_eq!(
            message(ScanSecret::from_hex("00").unwrap_err()),
            "`scan_secret_key` must be 64 hex characters, not 2"
        );
        assert_eq!(
            message(ScanSecret::from_hex(&"zz".repeat(32)).unwrap_err()),
            "`scan_secret_key` must be hexadecimal (0-9, a-f)"
        );
        assert_eq!(
            message(ScanSecret::from_hex(&"00".repeat(32)).unwrap_err()),
            "`scan_secret_key` is not a valid secp256k1 secret key (zero, or not below the curve order)"
        );
        assert_eq!(
            message(parse_spend_key("02").unwrap_err()),
            "`spend_public_key` must be 66 hex characters, not 2"
        );
        assert_eq!(
            message(parse_spend_key(&"05".repeat(33)).unwrap_err()),
            "`spend_public_key` must start with 02 or 03 (a compressed public key)"
        );
        // x = 5 has no point on secp256k1 (5^3 + 7 = 132 is not a square mod p).
        let off_curve = format!("02{:064x}", 5);
        assert_eq!(
            message(parse_spend_key(&off_curve).unwrap_err()),
            "`spend_public_key` is not a valid secp256k1 point"
        );
    }
}
