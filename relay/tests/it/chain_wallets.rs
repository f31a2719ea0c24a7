//! Wallets that outlive their connection and the relay: a relay process (killed with
//! SIGKILL and restarted on the same data directory) keeps scanning for a registered
//! wallet while it is away and hands it what it found when it registers again; `unwatch`
//! ends that; `persist_wallets = false` keeps nothing. Sources are the fake Core and
//! Blindbit replaying recorded signet data. Waits are bounded; nothing asserts on time.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use crate::support::chain_fakes::{self as fakes, FakeBlock, Fakes};
use crate::support::cluster::{RelayProcess, eventually, http_get};
use crate::support::{Client, TestRelay, fast_config};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use sdk_relay::config::{BitcoinCoreConfig, BlindbitConfig};
use serde_json::{Value, json};

const SCAN_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const LONG: Duration = Duration::from_secs(60);

fn spend_public_hex() -> String {
    let secret = SecretKey::from_slice(&[2; 32]).unwrap();
    hex::encode(secret.public_key(&Secp256k1::new()).serialize())
}

fn watch() -> Value {
    json!({
        "type": "watch",
        "scan_secret_key": SCAN_HEX,
        "spend_public_key": spend_public_hex(),
        "birth_height": 295120,
    })
}

fn sources_toml(fakes: &Fakes) -> String {
    format!(
        "[bitcoin_core]\nurl = \"{}\"\n[blindbit]\nurl = \"{}\"\n[watcher]\npoll_interval_secs = 1\n",
        fakes.core_url, fakes.blindbit_url
    )
}

/// Waits until the relay's `/health` shows `scanned` as the scanned height and `wallets`
/// registered wallets.
async fn wait_chain(relay: &RelayProcess, scanned: u32, wallets: usize) {
    let what = format!("scanned {scanned} with {wallets} wallets");
    eventually(LONG, &what, || async {
        let health = http_get(relay.http_addr, "/health").await?;
        let chain = &health["chain"];
        (chain["scanned_height"] == json!(scanned) && chain["wallets"] == json!(wallets))
            .then_some(())
    })
    .await;
}

/// Waits until the relay has saved `count` registrations (it saves after its next poll).
async fn wait_saved(relay: &RelayProcess, count: usize) {
    let path = relay
        .data_dir()
        .join(sdk_relay::chain::registry::WALLETS_FILE);
    eventually(LONG, &format!("{count} registrations saved"), || async {
        let saved: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        (saved["wallets"].as_array()?.len() == count).then_some(())
    })
    .await;
}

/// The next message that is not a periodic `health`.
async fn next_message(client: &mut Client) -> Value {
    loop {
        let message = client.recv().await.expect("connection open");
        if message["type"] != "health" {
            return message;
        }
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

// Proves a registration outlives its connection and two SIGKILL restarts: the payment
// mined while the wallet was away (and the relay down) is found after the restart, kept
// across the second one, and delivered once when the wallet registers again, right after
// its watch_response (pending_delivered 1); both files are 0600 and the scan key is in no
// log line. Then `unwatch` forgets the wallet, for good: a restart loads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn away_wallet_gets_its_payment_after_restarts() {
    let fakes = fakes::start(fakes::chain(295120, 295124)).await;
    let mut relay = RelayProcess::start("wallets", "", &sources_toml(&fakes)).await;
    let (mut wallet, _) = Client::handshaken(relay.ws_addr, &[]).await;
    wallet.send_json(&watch()).await;
    let response = wallet.recv_type("watch_response").await;
    assert_eq!(response["status"], "accepted", "{response}");
    assert_eq!(response["pending_delivered"], 0);
    let address = response["address"].as_str().unwrap().to_string();
    wait_chain(&relay, 295124, 1).await;
    wait_saved(&relay, 1).await;
    drop(wallet);

    relay.kill().await;
    {
        let mut model = fakes.chain.lock().unwrap();
        model.blocks.insert(
            fakes::PAYMENT_HEIGHT,
            FakeBlock::recorded(fakes::PAYMENT_HEIGHT),
        );
        model.blocks.insert(295126, FakeBlock::empty(295126, 0));
    }
    relay.restart().await;
    wait_chain(&relay, 295126, 1).await;
    let dir = relay.data_dir();
    #[cfg(unix)]
    for file in [
        sdk_relay::chain::registry::WALLETS_FILE,
        sdk_relay::wallets::PENDING_FILE,
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    relay.restart().await;
    wait_chain(&relay, 295126, 1).await;

    let (mut wallet, _) = Client::handshaken(relay.ws_addr, &[]).await;
    wallet.send_json(&watch()).await;
    let response = next_message(&mut wallet).await;
    assert_eq!(response["type"], "watch_response", "{response}");
    assert_eq!(response["status"], "accepted", "{response}");
    assert_eq!(
        (&response["pending_delivered"], &response["pending_dropped"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(response["address"], address.as_str());
    let payment = next_message(&mut wallet).await;
    assert_eq!(
        payment["notification_type"], "payment_detected",
        "{payment}"
    );
    assert_eq!(payment["data"]["txid"], fakes::PAYMENT_TXID);
    assert_eq!(payment["data"]["block_height"], fakes::PAYMENT_HEIGHT);
    assert_eq!(payment["data"]["address"], address.as_str());

    // Delivered once: registering again on the same connection brings nothing more.
    wallet.send_json(&watch()).await;
    let again = wallet.recv_type("watch_response").await;
    assert_eq!(again["pending_delivered"], 0, "{again}");

    wallet
        .send_json(&json!({"type": "unwatch", "address": "tsp1qnotmine"}))
        .await;
    let refused = wallet.recv_type("unwatch_response").await;
    assert_eq!(refused["status"], "rejected", "{refused}");
    wallet
        .send_json(&json!({"type": "unwatch", "address": address}))
        .await;
    let done = wallet.recv_type("unwatch_response").await;
    assert_eq!(done["status"], "accepted", "{done}");
    wait_chain(&relay, 295126, 0).await;
    wait_saved(&relay, 0).await;
    drop(wallet);
    relay.restart().await;
    wait_chain(&relay, 295126, 0).await;
    assert!(
        !relay.log().contains(SCAN_HEX),
        "the scan key is never logged"
    );
}

// Proves `persist_wallets = false`: the wallet is forgotten when its connection closes,
// and nothing is written for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_persistence_a_wallet_ends_with_its_connection() {
    let fakes = fakes::start(fakes::chain(295120, 295124)).await;
    let mut config = fast_config();
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
    config.watcher.persist_wallets = false;
    let dir = config.data_dir.clone();
    let relay = TestRelay::start(config).await;
    let wallets = |n: usize| {
        let addr = relay.http_addr;
        async move {
            let health = http_get(addr, "/health").await?;
            (health["chain"]["wallets"] == json!(n)).then_some(())
        }
    };
    let (mut wallet, _) = Client::handshaken(relay.ws_addr, &[]).await;
    wallet.send_json(&watch()).await;
    assert_eq!(
        wallet.recv_type("watch_response").await["status"],
        "accepted"
    );
    eventually(LONG, "registered", || wallets(1)).await;
    drop(wallet);
    eventually(LONG, "forgotten at disconnect", || wallets(0)).await;
    assert!(!dir.join(sdk_relay::chain::registry::WALLETS_FILE).exists());
    relay.shutdown().await;
}

// Proves a wallet away longer than `wallet_away_secs_max` is forgotten (checked at each
// new block), its scan key gone from the saved registrations; one still connected stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_away_too_long_is_forgotten() {
    let fakes = fakes::start(fakes::chain(295120, 295124)).await;
    let mut config = fast_config();
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
    config.watcher.wallet_away_secs_max = 1;
    let file = config
        .data_dir
        .join(sdk_relay::chain::registry::WALLETS_FILE);
    let relay = TestRelay::start(config).await;
    let (mut staying, _) = Client::handshaken(relay.ws_addr, &[]).await;
    let mut other = watch();
    other["scan_secret_key"] = json!("03".repeat(32));
    staying.send_json(&other).await;
    assert_eq!(
        staying.recv_type("watch_response").await["status"],
        "accepted"
    );
    let (mut leaving, _) = Client::handshaken(relay.ws_addr, &[]).await;
    leaving.send_json(&watch()).await;
    assert_eq!(
        leaving.recv_type("watch_response").await["status"],
        "accepted"
    );
    drop(leaving);
    let mut height = 295125;
    eventually(LONG, "the away wallet forgotten", || {
        fakes
            .chain
            .lock()
            .unwrap()
            .blocks
            .insert(height, FakeBlock::empty(height, 0));
        height += 1;
        let addr = relay.http_addr;
        let file = file.clone();
        async move {
            let health = http_get(addr, "/health").await?;
            let saved = std::fs::read_to_string(&file).ok()?;
            (health["chain"]["wallets"] == json!(1) && !saved.contains(SCAN_HEX)).then_some(())
        }
    })
    .await;
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(
        saved.contains(&"03".repeat(32)),
        "the connected wallet stays"
    );
    drop(staying);
    relay.shutdown().await;
}

// Proves the bounds over WebSocket: 8 wallets per connection (the 9th refused, naming
// the bound), `wallets_max` per relay (refused while every wallet is connected), and a
// wallet away making room when the relay is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_bounded_per_connection_and_per_relay() {
    let fakes = fakes::start(fakes::chain(295120, 295124)).await;
    let mut config = fast_config();
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
    config.watcher.wallets_max = 9;
    let relay = TestRelay::start(config).await;
    let keyed = |byte: u8| {
        let mut message = watch();
        message["scan_secret_key"] = json!(format!("{byte:02x}").repeat(32));
        message
    };
    async fn answer(client: &mut Client, message: &Value) -> Value {
        client.send_json(message).await;
        client.recv_type("watch_response").await
    }
    let (mut many, _) = Client::handshaken(relay.ws_addr, &[]).await;
    for byte in 10..18 {
        assert_eq!(answer(&mut many, &keyed(byte)).await["status"], "accepted");
    }
    let ninth = answer(&mut many, &keyed(18)).await;
    assert_eq!(ninth["reason"], "watch: at most 8 wallets per connection");
    let (mut one, _) = Client::handshaken(relay.ws_addr, &[]).await;
    assert_eq!(answer(&mut one, &keyed(20)).await["status"], "accepted");
    let (mut late, _) = Client::handshaken(relay.ws_addr, &[]).await;
    let full = answer(&mut late, &keyed(30)).await;
    assert_eq!(full["reason"], "watch: too many watched wallets (max 9)");
    drop(one);
    // The relay notices the closed connection on its own time: ask until it has.
    let deadline = tokio::time::Instant::now() + LONG;
    let room = loop {
        let response = answer(&mut late, &keyed(30)).await;
        if response["status"] == "accepted" {
            break response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room made: {response}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(room["address"].as_str().unwrap().starts_with("tsp1"));
    let health = http_get(relay.http_addr, "/health").await.unwrap();
    assert_eq!(health["chain"]["wallets"], 9);
    drop((many, late));
    relay.shutdown().await;
}
