//! The official BIP352 receiving vectors through the watcher's own scanning code.

use std::collections::BTreeSet;
use std::str::FromStr;

use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey, XOnlyPublicKey};
use sdk_relay::chain::keys::{ScanSecret, WatchedKey};
use sdk_relay::chain::scan::{
    K_MAX, TxInput, crate_scan, scan_outputs, shared_secret, tweak_from_inputs,
};
use sdk_relay::config::Network;
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/bip352/send_and_receive_test_vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn inputs(given: &Value) -> Vec<TxInput> {
    given["vin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vin| {
            let witness_hex = vin["txinwitness"].as_str().unwrap();
            let witness: Vec<Vec<u8>> = if witness_hex.is_empty() {
                Vec::new()
            } else {
                let w: bitcoin::Witness =
                    bitcoin::consensus::deserialize(&hex::decode(witness_hex).unwrap()).unwrap();
                w.to_vec()
            };
            TxInput {
                txid: vin["txid"].as_str().unwrap().into(),
                vout: u32::try_from(vin["vout"].as_u64().unwrap()).unwrap(),
                script_sig: hex::decode(vin["scriptSig"].as_str().unwrap()).unwrap(),
                witness,
                prevout_script: hex::decode(
                    vin["prevout"]["scriptPubKey"]["hex"].as_str().unwrap(),
                )
                .unwrap(),
            }
        })
        .collect()
}

fn key(given: &Value) -> WatchedKey {
    let material = &given["key_material"];
    let scan = ScanSecret::from_hex(material["scan_priv_key"].as_str().unwrap()).unwrap();
    let spend_secret = SecretKey::from_str(material["spend_priv_key"].as_str().unwrap()).unwrap();
    let spend = spend_secret.public_key(&Secp256k1::new());
    let labels: Vec<u32> = given["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| u32::try_from(l.as_u64().unwrap()).unwrap())
        .collect();
    WatchedKey::new(
        scan,
        PublicKey::from_slice(&spend.serialize()).unwrap(),
        &labels,
        Network::Mainnet,
    )
    .unwrap()
}

fn outputs(given: &Value) -> Vec<XOnlyPublicKey> {
    given["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| XOnlyPublicKey::from_str(o.as_str().unwrap()).unwrap())
        .collect()
}

/// Runs one receiving case; returns how many outputs were found.
fn check_case(comment: &str, case: &Value) -> usize {
    let (given, expected) = (&case["given"], &case["expected"]);
    let tweak = tweak_from_inputs(&inputs(given));
    let expected_tweak = expected["tweak"].as_str();
    assert_eq!(
        tweak.map(|t| hex::encode(t.serialize())).as_deref(),
        expected_tweak,
        "{comment}: tweak"
    );
    let key = key(given);
    let addresses: Vec<&str> = expected["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        addresses.contains(&key.address()),
        "{comment}: address {}",
        key.address()
    );
    let Some(tweak) = tweak else {
        return 0; // No tweak: a Blindbit index has nothing for this transaction.
    };
    let secret = shared_secret(&tweak, &key);
    let ss_hex = hex::encode(PublicKey::from(secret).serialize());
    assert_eq!(
        Some(ss_hex.as_str()),
        expected["shared_secret"].as_str(),
        "{comment}: shared secret"
    );
    let found = scan_outputs(&key, &secret, &outputs(given));
    if let Some(n) = expected["n_outputs"].as_u64() {
        assert_eq!(found.len() as u64, n, "{comment}: count");
        return found.len();
    }
    let got: BTreeSet<(String, String)> = found
        .iter()
        .map(|f| (hex::encode(f.output_key), hex::encode(f.priv_key_tweak)))
        .collect();
    let want: BTreeSet<(String, String)> = expected["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["pub_key"].as_str().unwrap().into(),
                o["priv_key_tweak"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(got, want, "{comment}: found outputs");
    assert_eq!(
        found,
        crate_scan(&key, &secret, &outputs(given)),
        "{comment}: crate agrees"
    );
    found.len()
}

// Proves every receiving case: tweak from inputs, shared secret, exactly the expected
// outputs and spend tweaks (labels included), nothing for no-tweak cases, K_max bounded.
#[test]
fn every_receiving_vector() {
    let mut cases = 0;
    let mut no_tweak = 0;
    let mut labelled = 0;
    let mut kmax_seen = false;
    for vector in vectors() {
        let comment = vector["comment"].as_str().unwrap().to_string();
        for case in vector["receiving"].as_array().unwrap() {
            let found = check_case(&comment, case);
            cases += 1;
            no_tweak += usize::from(case["expected"]["tweak"].is_null());
            labelled += usize::from(!case["given"]["labels"].as_array().unwrap().is_empty());
            if case["expected"]["n_outputs"].is_u64() {
                assert_eq!(case["given"]["outputs"].as_array().unwrap().len(), 2324);
                assert_eq!(found, K_MAX as usize, "K_max bounds the 2,324-output case");
                kmax_seen = true;
            }
        }
    }
    assert!(
        cases >= 29 && no_tweak >= 2 && labelled >= 6 && kmax_seen,
        "{cases} {no_tweak} {labelled}"
    );
}

// Proves the BIP158 check on a real Blindbit filter (block 295125): the documented
// output's key is in it, under that block's hash only, and an unrelated key is not.
#[test]
fn recorded_blindbit_filter_matches_the_documented_output() {
    use sdk_relay::chain::scan::filter_matches;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/blindbit-signet/295125/filter-new-utxos.json"
    );
    let filter: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let data = hex::decode(filter["data"].as_str().unwrap()).unwrap();
    let hash = bitcoin::BlockHash::from_str(filter["block_hash"].as_str().unwrap()).unwrap();
    let script: [u8; 34] =
        hex::decode("5120dbd93fdd869e3522405749a594c2e3f4833ac98d0f4e70da6e7294f6623258c3")
            .unwrap()
            .try_into()
            .unwrap();
    let mut other = script;
    other[33] ^= 1;
    assert!(filter_matches(&data, &hash, &[script]));
    assert!(!filter_matches(&data, &hash, &[other]));
    let wrong_hash = bitcoin::BlockHash::from_str(&"00".repeat(32)).unwrap();
    assert!(!filter_matches(&data, &wrong_hash, &[script]));
}
