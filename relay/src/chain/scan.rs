//! BIP352 receiving over one block: tweaks -> shared secrets -> filter check -> outputs.
//!
//! Pure computation (no I/O), so the official test vectors exercise exactly the code the
//! watcher runs. The `silentpayments` crate does the curve work; this module adds what
//! the watcher needs around it: the BIP158 pre-check and a per-k output match bounded by
//! K_max (see [`scan_outputs`] for why it is not the crate's).

use std::collections::BTreeSet;

use bitcoin::bip158::BlockFilter;
use bitcoin::hashes::{Hash, HashEngine, sha256};
use silentpayments::SharedSecret;
use silentpayments::secp256k1::{PublicKey, Scalar, Secp256k1, SecretKey, XOnlyPublicKey};
use silentpayments::utils::receiving::{
    calculate_ecdh_shared_secret, calculate_tweak_data, generate_script_pubkey_from_output_key,
    get_pubkey_from_input,
};

use super::keys::WatchedKey;

/// BIP352 K_max: outputs one recipient group may receive in one transaction.
pub const K_MAX: u32 = 2323;

/// One input of a transaction, as needed to compute its tweak.
#[derive(Debug, Clone)]
pub struct TxInput {
    pub txid: String,
    pub vout: u32,
    pub script_sig: Vec<u8>,
    pub witness: Vec<Vec<u8>>,
    pub prevout_script: Vec<u8>,
}

/// The per-transaction tweak (`input_hash * A`), what a Blindbit index serves; `None`
/// when no input is eligible or the keys sum to the point at infinity.
pub fn tweak_from_inputs(inputs: &[TxInput]) -> Option<PublicKey> {
    let mut keys = Vec::new();
    let mut outpoints = Vec::new();
    for input in inputs {
        let outpoint =
            silentpayments::utils::OutPoint::from_txid_and_vout(&input.txid, input.vout).ok()?;
        outpoints.push(outpoint);
        if let Ok(Some(key)) =
            get_pubkey_from_input(&input.script_sig, &input.witness, &input.prevout_script)
        {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return None;
    }
    let refs: Vec<&PublicKey> = keys.iter().collect();
    calculate_tweak_data(&refs, &outpoints).ok()
}

/// The shared secret of one tweak with one watched key (`b_scan * tweak`).
pub fn shared_secret(tweak: &PublicKey, key: &WatchedKey) -> SharedSecret {
    calculate_ecdh_shared_secret(tweak, key.scan().secret())
}

/// The scripts a first output (k = 0) to this key would have, one per label and unlabelled:
/// what is looked up in the block's BIP158 filter.
pub fn candidate_scripts(key: &WatchedKey, secret: &SharedSecret) -> Vec<[u8; 34]> {
    match key
        .receiver()
        .generate_output_keys_from_shared_secret(secret)
    {
        Ok(map) => map
            .into_values()
            .map(generate_script_pubkey_from_output_key)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether any candidate script is in a Blindbit new-UTXO filter (BIP158 GCS keyed by the
/// block hash; Blindbit puts the x-only output keys in it).
pub fn filter_matches(
    filter: &[u8],
    block_hash: &bitcoin::BlockHash,
    scripts: &[[u8; 34]],
) -> bool {
    if scripts.is_empty() {
        return false;
    }
    let filter = BlockFilter::new(filter);
    // A filter we cannot decode must not hide a payment: fall back to a full output scan.
    filter
        .match_any(block_hash, scripts.iter().map(|s| &s[2..]))
        .unwrap_or(true)
}

/// An output found for a key: its x-only key and the tweak that spends it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub output_key: [u8; 32],
    pub priv_key_tweak: [u8; 32],
}

/// Scans output keys for one shared secret; found outputs sorted, at most K_MAX.
///
/// Keys, labels, shared secret and candidates come from the `silentpayments` crate; this
/// per-k loop is ours. The crate's `Receiver::scan_transaction` (0.8.1) tries every label
/// against every output at each k (two square roots per pair, O(k x outputs)) and has no
/// K_max check: on the 2,324-output vector it runs about 70 s in a test build on a 2-core
/// machine and returns all 2,324 outputs. Here each k costs one point per label plus set
/// look-ups, and k stops at K_MAX (2,323 found, the vector's expectation).
pub fn scan_outputs(
    key: &WatchedKey,
    secret: &SharedSecret,
    outputs: &[XOnlyPublicKey],
) -> Vec<Found> {
    let mut remaining: BTreeSet<[u8; 32]> = outputs.iter().map(XOnlyPublicKey::serialize).collect();
    let secp = Secp256k1::verification_only();
    let mut found = Vec::new();
    for k in 0..K_MAX {
        let Some(t_k) = t_k(secret, k) else { break };
        let Ok(p_k) = key.spend_key().add_exp_tweak(&secp, &Scalar::from(t_k)) else {
            break;
        };
        let Some(hit) = match_k(key, &p_k, &t_k, &remaining) else {
            break;
        };
        remaining.remove(&hit.output_key);
        found.push(hit);
    }
    found.sort();
    found
}

/// The output paid at this k, unlabelled first, then under each label.
fn match_k(
    key: &WatchedKey,
    p_k: &PublicKey,
    t_k: &SecretKey,
    outputs: &BTreeSet<[u8; 32]>,
) -> Option<Found> {
    let x = p_k.x_only_public_key().0.serialize();
    if outputs.contains(&x) {
        return Some(Found {
            output_key: x,
            priv_key_tweak: t_k.secret_bytes(),
        });
    }
    for (m, m_g) in key.label_points() {
        let Ok(labelled) = p_k.combine(m_g) else {
            continue;
        };
        let x = labelled.x_only_public_key().0.serialize();
        if outputs.contains(&x) {
            let tweak = t_k.add_tweak(&Scalar::from(*m)).ok()?;
            return Some(Found {
                output_key: x,
                priv_key_tweak: tweak.secret_bytes(),
            });
        }
    }
    None
}

/// The crate's own scan, for cross-checking [`scan_outputs`] on small inputs (tests).
pub fn crate_scan(
    key: &WatchedKey,
    secret: &SharedSecret,
    outputs: &[XOnlyPublicKey],
) -> Vec<Found> {
    let Ok(found) = key.receiver().scan_transaction(secret, outputs) else {
        return Vec::new();
    };
    let mut out: Vec<Found> = found
        .into_values()
        .flatten()
        .map(|(key, tweak)| Found {
            output_key: key.serialize(),
            priv_key_tweak: tweak.to_be_bytes(),
        })
        .collect();
    out.sort();
    out
}

/// `t_k = hash_BIP0352/SharedSecret(ser_P(ecdh_shared_secret) || ser_32(k))`.
fn t_k(secret: &SharedSecret, k: u32) -> Option<SecretKey> {
    let tag = sha256::Hash::hash(b"BIP0352/SharedSecret");
    let mut engine = sha256::Hash::engine();
    engine.input(tag.as_byte_array());
    engine.input(tag.as_byte_array());
    engine.input(&PublicKey::from(*secret).serialize());
    engine.input(&k.to_be_bytes());
    SecretKey::from_slice(sha256::Hash::from_engine(engine).as_byte_array()).ok()
}
