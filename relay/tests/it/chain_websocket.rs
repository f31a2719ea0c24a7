//! End to end: a wallet registers the documented keys over WebSocket with a relay whose
//! chain sources are a fake Bitcoin Core and a fake Blindbit (real HTTP servers replaying
//! recorded signet data), and receives its `payment_detected`; other clients do not.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::chain_fakes as fakes;
use crate::support::cluster::{RelayProcess, eventually, http_get};
use crate::support::{Client, TestRelay, fast_config};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use sdk_relay::config::{BitcoinCoreConfig, BlindbitConfig};
use serde_json::json;

const SCAN_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";

fn spend_public_hex() -> String {
    let secret = SecretKey::from_slice(&[2; 32]).unwrap();
    hex::encode(secret.public_key(&Secp256k1::new()).serialize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_receives_its_payment_over_websocket() {
    let fakes = fakes::start(fakes::chain(295120, 295126)).await;
    let mut config = fast_config();
    config.data_dir =
        std::env::temp_dir().join(format!("sdk_relay_chain_ws_{}", std::process::id()));
    config.bitcoin_core = Some(BitcoinCoreConfig {
        url: fakes.core_url.clone(),
        wallet: None,
        rpc_user: None,
        rpc_password: None,
        cookie_file: None,
        ca_file: None,
    });
    config.blindbit = Some(BlindbitConfig {
        url: fakes.blindbit_url.clone(),
        ca_file: None,
    });
    config.watcher.poll_interval_secs = 1;
    let relay = TestRelay::start(config).await;

    let (mut bystander, _) = Client::handshaken(relay.ws_addr, &["notifications"]).await;
    let (mut wallet, _) = Client::handshaken(relay.ws_addr, &[]).await;
    // Refusals name the field and the actual problem, and never echo the secret.
    let off_curve = format!("02{:064x}", 5);
    for (message, reason) in [
        (
            json!({"type": "watch", "spend_public_key": spend_public_hex(), "birth_height": 295120}),
            "watch: missing field `scan_secret_key`",
        ),
        (
            json!({"type": "watch", "scan_secret_key": SCAN_HEX, "spend_public_key": off_curve}),
            "watch: `spend_public_key` is not a valid secp256k1 point",
        ),
        (
            json!({"type": "watch", "scan_secret_key": SCAN_HEX, "spend_public_key": "02ab"}),
            "watch: `spend_public_key` must be 66 hex characters, not 4",
        ),
    ] {
        wallet.send_json(&message).await;
        let response = wallet.recv_type("watch_response").await;
        assert_eq!(response["status"], "rejected", "{response}");
        assert_eq!(response["reason"], reason);
    }
    wallet
        .send_json(&json!({
            "type": "watch",
            "scan_secret_key": SCAN_HEX,
            "spend_public_key": spend_public_hex(),
            "labels": [],
            "birth_height": 295120,
        }))
        .await;
    let response = wallet.recv_type("watch_response").await;
    assert_eq!(response["status"], "accepted", "{response}");
    let address = response["address"].as_str().unwrap().to_string();
    assert!(address.starts_with("tsp1"), "signet address: {address}");
    assert!(
        !response.to_string().contains(SCAN_HEX),
        "the secret is never echoed"
    );

    let payment = wallet.recv_type("notification").await;
    assert_eq!(payment["notification_type"], "payment_detected");
    let data = &payment["data"];
    assert_eq!(data["txid"], fakes::PAYMENT_TXID);
    assert_eq!(data["vout"], 0);
    assert_eq!(data["block_height"], fakes::PAYMENT_HEIGHT);
    assert_eq!(data["amount"], "0.0001");
    assert_eq!(data["address"], address.as_str());

    // The bystander (subscribed to everything) never sees another wallet's payment.
    bystander
        .send_json(&json!({"type":"ping","id":"end"}))
        .await;
    loop {
        let message = bystander.recv().await.unwrap();
        assert_ne!(
            message["notification_type"], "payment_detected",
            "{message}"
        );
        if message["type"] == "pong" {
            break;
        }
    }
    let health = eventually(
        Duration::from_secs(10),
        "chain shown in /health",
        || async {
            let health = http_get(relay.http_addr, "/health").await?;
            (health["chain"]["scanned_height"] == json!(295126)).then_some(health)
        },
    )
    .await;
    assert_eq!(health["chain"]["watcher"], "ok");
    assert_eq!(health["chain"]["wallets"], 1);
    relay.shutdown().await;
}

/// A Bitcoin Core that accepts connections and never answers (nor reads): the sockets
/// are kept open until the test ends. Returns its URL and the number of connections it
/// accepted.
async fn silent_core() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            kept.push(stream);
        }
    });
    (url, accepted)
}

// Proves a relay whose Core hangs shows `/health` degraded, naming Core and the timeout,
// after the first call's timeout: one connection to Core, not one per retry (the poll
// interval is an hour, so no later poll can have made it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_core_is_degraded_at_its_first_timeout() {
    let fakes = fakes::start(fakes::chain(295120, 295126)).await;
    let (core_url, accepted) = silent_core().await;
    let mut config = fast_config();
    config.bitcoin_core = Some(BitcoinCoreConfig {
        url: core_url,
        wallet: None,
        rpc_user: None,
        rpc_password: None,
        cookie_file: None,
        ca_file: None,
    });
    config.blindbit = Some(BlindbitConfig {
        url: fakes.blindbit_url.clone(),
        ca_file: None,
    });
    config.watcher.poll_interval_secs = 3600;
    config.watcher.request_timeout_secs = 1;
    let relay = TestRelay::start(config).await;
    let health = eventually(Duration::from_secs(30), "chain degraded", || async {
        let health = http_get(relay.http_addr, "/health").await?;
        (health["chain"]["watcher"] == "degraded").then_some(health)
    })
    .await;
    assert_eq!(health["status"], "degraded", "{health}");
    let reason = health["chain"]["degraded"].as_str().unwrap();
    assert!(
        reason.contains("bitcoin_core") && reason.contains("timed out"),
        "{reason}"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "no retry of a hung call"
    );
    relay.shutdown().await;
}

/// The next message that is not a periodic `health`.
async fn next_message(client: &mut Client) -> serde_json::Value {
    loop {
        let message = client.recv().await.expect("connection open");
        if message["type"] != "health" {
            return message;
        }
    }
}

// Proves the case end to end on a relay process: started without saved state at
// tip 295126, a wallet registered with birth height 295120 gets the payment of block
// 295125 from its rescan below that tip; a 2-block reorg over 295125 (its transaction
// mined again in the new 295126) brings `payment_reorged` for the old block, then
// `payment_detected` for the new one, from the rescan of the replacement blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorg_below_the_start_tip_reaches_the_wallet() {
    let fakes = fakes::start(fakes::chain(295120, 295126)).await;
    let toml = format!(
        "[bitcoin_core]\nurl = \"{}\"\n[blindbit]\nurl = \"{}\"\n[watcher]\npoll_interval_secs = 1\n",
        fakes.core_url, fakes.blindbit_url
    );
    let relay = RelayProcess::start("reorg", "", &toml).await;
    eventually(Duration::from_secs(60), "start tip scanned", || async {
        let health = http_get(relay.http_addr, "/health").await?;
        (health["chain"]["scanned_height"] == json!(295126)).then_some(())
    })
    .await;
    let (mut wallet, _) = Client::handshaken(relay.ws_addr, &[]).await;
    wallet
        .send_json(&json!({
            "type": "watch",
            "scan_secret_key": SCAN_HEX,
            "spend_public_key": spend_public_hex(),
            "birth_height": 295120,
        }))
        .await;
    assert_eq!(next_message(&mut wallet).await["status"], "accepted");
    let found = next_message(&mut wallet).await;
    assert_eq!(found["notification_type"], "payment_detected", "{found}");
    assert_eq!(found["data"]["block_height"], fakes::PAYMENT_HEIGHT);
    let old_hash = found["data"]["block_hash"].clone();
    crate::chain_watcher::wait_rescanned(&fakes, 295126).await;
    let new_hash = {
        let mut model = fakes.chain.lock().unwrap();
        let moved = model.blocks[&fakes::PAYMENT_HEIGHT].moved(295126, 1);
        model
            .blocks
            .insert(fakes::PAYMENT_HEIGHT, fakes::FakeBlock::empty(295125, 1));
        model.blocks.insert(295126, moved.clone());
        model
            .blocks
            .insert(295127, fakes::FakeBlock::empty(295127, 1));
        moved.hash
    };
    let reorged = next_message(&mut wallet).await;
    assert_eq!(reorged["notification_type"], "payment_reorged", "{reorged}");
    assert_eq!(reorged["data"]["txid"], fakes::PAYMENT_TXID);
    assert_eq!(reorged["data"]["block_hash"], old_hash);
    let again = next_message(&mut wallet).await;
    assert_eq!(again["notification_type"], "payment_detected", "{again}");
    assert_eq!(again["data"]["txid"], fakes::PAYMENT_TXID);
    assert_eq!(
        (&again["data"]["block_height"], &again["data"]["block_hash"]),
        (&json!(295126), &json!(new_hash))
    );
}

/// With no chain source configured, the watcher is reported disabled and the relay is
/// healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_chain_source_means_disabled() {
    let relay = TestRelay::start(fast_config()).await;
    let health = http_get(relay.http_addr, "/health").await.unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["chain"]["watcher"], "disabled");
    relay.shutdown().await;
}
