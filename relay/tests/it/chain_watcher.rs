//! The chain watcher against a fake Bitcoin Core and a fake Blindbit (real HTTP servers on
//! loopback replaying recorded signet data): detection, reorgs, lag, faults, restarts.
//! Waits are bounded; nothing asserts on elapsed time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::support::chain_fakes as fakes;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use fakes::{Chain, FakeBlock, Fakes, Fault, PAYMENT_HEIGHT, PAYMENT_TXID};
use sdk_relay::chain::keys::{ScanSecret, WatchedKey};
use sdk_relay::chain::source::{BlindbitHttp, CoreAuth, CoreRpc};
use sdk_relay::chain::{
    ChainEvent, OwnKey, RetryPolicy, Target, WatchHandle, WatchRequest, WatchSettings, Watcher,
    WatcherError,
};
use sdk_relay::config::{BitcoinCoreConfig, BlindbitConfig, Config, Network};
use sdk_relay::rt::{Env, SeededRng, TokioClock, TokioNet};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const SCAN_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const PAYMENT_HASH: &str = "00000012c5a8005cd56f2cb97334b038fc6dc442c1c1682ba9065e4402b3eaa0";
const WAIT: Duration = Duration::from_secs(60);

fn spend_public_hex() -> String {
    let secret = SecretKey::from_slice(&[2; 32]).unwrap();
    hex::encode(secret.public_key(&Secp256k1::new()).serialize())
}

fn own_key(birth: u32) -> OwnKey {
    let spend = sdk_relay::chain::keys::parse_spend_key(&spend_public_hex()).unwrap();
    let key = WatchedKey::new(
        ScanSecret::from_hex(SCAN_HEX).unwrap(),
        spend,
        &[],
        Network::Signet,
    );
    OwnKey {
        key: key.unwrap(),
        birth_height: Some(birth),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sdk_relay_chain_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn settings(dir: PathBuf, own: Option<OwnKey>) -> WatchSettings {
    WatchSettings {
        network: Network::Signet,
        data_dir: dir,
        poll_interval: Duration::from_millis(50),
        // Generous: a loaded CI machine must not turn a slow answer into a fault.
        request_timeout: Duration::from_secs(2),
        reorg_depth_max: 10,
        own,
        retry: RetryPolicy {
            attempts_max: 3,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(40),
        },
        blocks_per_tick_max: 100,
        lag_blocks_max: 1,
    }
}

struct Running {
    events: mpsc::Receiver<ChainEvent>,
    handle: WatchHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), WatcherError>>,
}

impl Running {
    async fn stop(mut self) -> Vec<ChainEvent> {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
        drain(&mut self.events)
    }
}

fn spawn(fakes: &Fakes, settings: WatchSettings) -> Running {
    let handle = WatchHandle::new(Network::Signet, 8, true);
    let timeout = settings.request_timeout;
    let watcher = Watcher {
        core: CoreRpc::new(TokioNet, &fakes.core_url, CoreAuth::None, timeout).unwrap(),
        blindbit: BlindbitHttp::new(TokioNet, &fakes.blindbit_url, timeout).unwrap(),
        settings,
        clock: Arc::new(TokioClock),
        rng: SeededRng::new(7),
        handle: handle.clone(),
    };
    let (tx, events) = mpsc::channel(1024);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(watcher.run(tx, async move {
        let _ = stopped.await;
    }));
    Running {
        events,
        handle,
        stop: Some(stop),
        task,
    }
}

/// Polls the status until `done` holds (bounded by WAIT).
async fn wait_status(
    handle: &WatchHandle,
    what: &str,
    done: impl Fn(&sdk_relay::chain::ChainStatus) -> bool,
) {
    let polled = tokio::time::timeout(WAIT, async {
        while !done(&handle.status()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        polled.is_ok(),
        "timed out waiting for {what}: {:?}",
        handle.status()
    );
}

async fn wait_scanned(handle: &WatchHandle, height: u32) {
    wait_status(handle, &format!("scanned {height}"), |s| {
        s.scanned_height >= Some(height)
    })
    .await;
}

fn drain(events: &mut mpsc::Receiver<ChainEvent>) -> Vec<ChainEvent> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        out.push(e);
    }
    out
}

fn payments(events: &[ChainEvent]) -> Vec<&ChainEvent> {
    events
        .iter()
        .filter(|e| !matches!(e, ChainEvent::BlockMined { .. }))
        .collect()
}

fn assert_documented_payment(event: &ChainEvent, target: Target, height: u32, hash: &str) {
    match event {
        ChainEvent::PaymentDetected {
            target: t,
            txid,
            vout,
            block_height,
            block_hash,
            amount,
            address,
        } => {
            assert_eq!((t, txid.as_str(), *vout), (&target, PAYMENT_TXID, 0));
            assert_eq!((*block_height, block_hash.as_str()), (height, hash));
            assert_eq!(amount, "0.0001");
            assert!(address.starts_with("tsp1q"), "{address}");
        }
        other => panic!("expected the documented payment, got {other:?}"),
    }
}

async fn fakes_for(chain: Chain) -> Fakes {
    fakes::start(chain).await
}

// Proves the real entry point (config, basic auth, HTTP clients): with the documented keys
// it emits exactly one payment_detected, for 295125:0 at 0.0001 BTC, and block_mined for the tip.
#[tokio::test]
async fn run_from_config_detects_the_documented_payment() {
    let chain = fakes::chain(295120, 295126);
    chain.lock().unwrap().core_auth = Some("rpcuser:rpcpass".into());
    let fakes = fakes_for(chain).await;
    let mut config = Config {
        data_dir: temp_dir("run"),
        bitcoin_core: Some(BitcoinCoreConfig {
            url: fakes.core_url.clone(),
            wallet: None,
            rpc_user: Some("rpcuser".into()),
            rpc_password: Some("rpcpass".into()),
            cookie_file: None,
            ca_file: None,
        }),
        blindbit: Some(BlindbitConfig {
            url: fakes.blindbit_url.clone(),
            ca_file: None,
        }),
        ..Config::default()
    };
    config.watcher.scan_secret_key = Some(SCAN_HEX.into());
    config.watcher.spend_public_key = Some(spend_public_hex());
    config.watcher.birth_height = Some(295120);
    config.validate().unwrap();
    let handle = WatchHandle::from_config(&config);
    let (tx, mut rx) = mpsc::channel(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = tokio::spawn({
        let handle = handle.clone();
        async move { sdk_relay::chain::run(&config, Env::tokio(1), handle, tx, shutdown).await }
    });
    wait_scanned(&handle, 295126).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let events = drain(&mut rx);
    let found = payments(&events);
    assert_eq!(found.len(), 1, "{events:?}");
    assert_documented_payment(found[0], Target::Own, PAYMENT_HEIGHT, PAYMENT_HASH);
    assert!(events.contains(&ChainEvent::BlockMined {
        height: 295126,
        hash: fakes.chain.lock().unwrap().blocks[&295126].hash.clone()
    }));
}

// Proves blocks 200000 and 200001 (real recordings, with tweaks) give no payment, after
// Blindbit was actually asked for their filters.
#[tokio::test]
async fn nothing_in_blocks_200000_and_200001() {
    let fakes = fakes_for(fakes::chain(200000, 200001)).await;
    let run = spawn(&fakes, settings(temp_dir("200k"), Some(own_key(200000))));
    wait_scanned(&run.handle, 200001).await;
    let events = run.stop().await;
    assert!(payments(&events).is_empty(), "{events:?}");
    let paths = fakes.chain.lock().unwrap().blindbit_paths.clone();
    for h in [200000, 200001] {
        assert!(
            paths.contains(&format!("/filter/new-utxos/{h}")),
            "{paths:?}"
        );
        assert!(paths.contains(&format!("/tweak-index/{h}")), "{paths:?}");
    }
}

// Proves a wallet registered at run time is rescanned from its birth height and gets the
// payment under its own id and address; another wallet gets nothing; a wallet stuck on a
// block the sources lack (registered first) holds back neither the best chain nor the
// other wallets.
#[tokio::test]
async fn registered_wallet_gets_its_payment() {
    let fakes = fakes_for(fakes::chain(295120, 295126)).await;
    let mut run = spawn(&fakes, settings(temp_dir("wallet"), None));
    wait_scanned(&run.handle, 295126).await;
    let text = format!(
        r#"{{"type":"watch","scan_secret_key":"{SCAN_HEX}","spend_public_key":"{}","labels":[1,2],"birth_height":295120}}"#,
        spend_public_hex()
    );
    // Registered first: its birth block does not exist, so it waits forever.
    let unborn = text
        .replace("295120", "1000")
        .replace(SCAN_HEX, &"04".repeat(32));
    run.handle
        .register(WatchRequest::from_json(&unborn).unwrap())
        .unwrap();
    let (id, address) = run
        .handle
        .register(WatchRequest::from_json(&text).unwrap())
        .map(|r| (r.id, r.address))
        .unwrap();
    let other = text.replace(SCAN_HEX, &"03".repeat(32));
    let (other_id, _) = run
        .handle
        .register(WatchRequest::from_json(&other).unwrap())
        .map(|r| (r.id, r.address))
        .unwrap();
    let event = tokio::time::timeout(WAIT, async {
        loop {
            match run.events.recv().await.unwrap() {
                ChainEvent::BlockMined { .. } => continue,
                e => return e,
            }
        }
    })
    .await
    .unwrap();
    assert_documented_payment(&event, Target::Wallet(id), PAYMENT_HEIGHT, PAYMENT_HASH);
    let ChainEvent::PaymentDetected { address: got, .. } = &event else {
        unreachable!()
    };
    assert_eq!(got, &address);
    fakes
        .chain
        .lock()
        .unwrap()
        .blocks
        .insert(295127, FakeBlock::empty(295127, 0));
    wait_scanned(&run.handle, 295127).await;
    let rest = run.stop().await;
    assert!(
        payments(&rest).is_empty(),
        "wallet {other_id} or a duplicate: {rest:?}"
    );
}

// Proves a reorg retracts the payment (payment_reorged) and re-detects it where the new
// chain mined it, each exactly once.
#[tokio::test]
async fn reorg_retracts_then_redetects() {
    let fakes = fakes_for(fakes::chain(295120, 295126)).await;
    let run = spawn(&fakes, settings(temp_dir("reorg"), Some(own_key(295120))));
    wait_scanned(&run.handle, 295126).await;
    let moved = {
        let mut model = fakes.chain.lock().unwrap();
        let original = model.blocks[&PAYMENT_HEIGHT].clone();
        let moved = original.moved(295126, 1);
        model.blocks.insert(295125, FakeBlock::empty(295125, 1));
        model.blocks.insert(295126, moved.clone());
        model.blocks.insert(295127, FakeBlock::empty(295127, 1));
        moved
    };
    wait_status(&run.handle, "new chain scanned", |s| {
        s.scanned_height >= Some(295127)
    })
    .await;
    let events = run.stop().await;
    let found = payments(&events);
    assert_eq!(found.len(), 3, "{events:?}");
    assert_documented_payment(found[0], Target::Own, PAYMENT_HEIGHT, PAYMENT_HASH);
    assert_eq!(
        found[1],
        &ChainEvent::PaymentReorged {
            target: Target::Own,
            txid: PAYMENT_TXID.into(),
            vout: 0,
            block_height: PAYMENT_HEIGHT,
            block_hash: PAYMENT_HASH.into(),
        }
    );
    assert_documented_payment(found[2], Target::Own, 295126, &moved.hash);
}

// Proves the watcher waits while Blindbit lags or disagrees on a hash (no false or missed
// payment, status degraded while far behind), then detects once when it catches up.
#[tokio::test]
async fn waits_for_a_lagging_blindbit() {
    let chain = fakes::chain(295120, 295126);
    chain.lock().unwrap().blindbit_height = Some(295123);
    let fakes = fakes_for(chain).await;
    let mut run = spawn(&fakes, settings(temp_dir("lag"), Some(own_key(295120))));
    wait_status(&run.handle, "lag reported", |s| {
        s.scanned_height == Some(295123)
            && s.degraded
                .as_deref()
                .is_some_and(|d| d.contains("blindbit behind"))
    })
    .await;
    assert!(payments(&drain(&mut run.events)).is_empty());
    {
        let mut model = fakes.chain.lock().unwrap();
        model.blindbit_height = None;
        model
            .blindbit_hash_override
            .insert(PAYMENT_HEIGHT, "11".repeat(32));
    }
    wait_status(&run.handle, "disagreement reported", |s| {
        s.blindbit_height == Some(295126)
            && s.degraded
                .as_deref()
                .is_some_and(|d| d.contains("disagree"))
    })
    .await;
    let paths_before = fakes.chain.lock().unwrap().blindbit_paths.len();
    wait_status(&run.handle, "a few more polls", |_| {
        fakes.chain.lock().unwrap().blindbit_paths.len() > paths_before + 6
    })
    .await;
    assert_eq!(
        run.handle.status().scanned_height,
        Some(295124),
        "must not pass a block the sources disagree on"
    );
    assert!(payments(&drain(&mut run.events)).is_empty());
    fakes.chain.lock().unwrap().blindbit_hash_override.clear();
    wait_scanned(&run.handle, 295126).await;
    let events = run.stop().await;
    let found = payments(&events);
    assert_eq!(found.len(), 1, "{events:?}");
    assert_documented_payment(found[0], Target::Own, PAYMENT_HEIGHT, PAYMENT_HASH);
}

// Proves 5xx answers and hanging requests are retried with backoff, reported as degraded
// naming the source, never crash the watcher, and cost no payment once they stop.
#[tokio::test]
async fn survives_5xx_and_timeouts() {
    let chain = fakes::chain(295120, 295126);
    chain.lock().unwrap().core_fault = Fault::Status(503);
    let fakes = fakes_for(chain).await;
    let mut run = spawn(&fakes, settings(temp_dir("faults"), Some(own_key(295120))));
    wait_status(&run.handle, "core degraded", |s| {
        s.degraded
            .as_deref()
            .is_some_and(|d| d.contains("bitcoin_core") && d.contains("503"))
    })
    .await;
    let requests = fakes.chain.lock().unwrap().core_requests;
    assert!(requests >= 3, "retried: {requests}");
    assert!(!run.task.is_finished());
    fakes.chain.lock().unwrap().core_fault = Fault::None;
    wait_scanned(&run.handle, 295126).await;
    wait_status(&run.handle, "recovered", |s| s.degraded.is_none()).await;
    fakes.chain.lock().unwrap().blindbit_fault = Fault::Hang;
    fakes
        .chain
        .lock()
        .unwrap()
        .blocks
        .insert(295127, FakeBlock::empty(295127, 0));
    wait_status(&run.handle, "blindbit degraded", |s| {
        s.degraded
            .as_deref()
            .is_some_and(|d| d.contains("blindbit") && d.contains("timed out"))
    })
    .await;
    assert!(!run.task.is_finished());
    assert!(payments(&drain(&mut run.events)).len() == 1);
    fakes.chain.lock().unwrap().blindbit_fault = Fault::None;
    wait_scanned(&run.handle, 295127).await;
    let events = run.stop().await;
    assert!(
        payments(&events).is_empty(),
        "no duplicate after recovery: {events:?}"
    );
}

// Proves a restart resumes from the persisted height: no rescan of old blocks, no
// duplicate payment, every block mined while it was down announced (its catch-up), a
// rescan longer than one poll's budget going on without waiting for the next poll.
#[tokio::test]
async fn restart_resumes_without_duplicate() {
    let dir = temp_dir("restart");
    let fakes = fakes_for(fakes::chain(295120, 295126)).await;
    // Two blocks per poll and an hour between polls: catching up must not wait for polls.
    let slow = |dir: PathBuf| WatchSettings {
        blocks_per_tick_max: 2,
        poll_interval: Duration::from_secs(3600),
        ..settings(dir, Some(own_key(295120)))
    };
    let first = spawn(&fakes, slow(dir.clone()));
    wait_scanned(&first.handle, 295126).await;
    let events = first.stop().await;
    assert_eq!(payments(&events).len(), 1);
    assert!(dir.join(sdk_relay::chain::store::STATE_FILE).exists());
    {
        let mut model = fakes.chain.lock().unwrap();
        model.blocks.insert(295127, FakeBlock::empty(295127, 0));
        model.blocks.insert(295128, FakeBlock::empty(295128, 0));
        model.blindbit_paths.clear();
    }
    let second = spawn(&fakes, slow(dir));
    wait_scanned(&second.handle, 295128).await;
    let events = second.stop().await;
    assert!(payments(&events).is_empty(), "{events:?}");
    let mined: Vec<ChainEvent> = {
        let model = fakes.chain.lock().unwrap();
        [295127, 295128]
            .map(|height| ChainEvent::BlockMined {
                height,
                hash: model.blocks[&height].hash.clone(),
            })
            .into()
    };
    assert_eq!(events, mined);
    let paths = fakes.chain.lock().unwrap().blindbit_paths.clone();
    assert!(
        !paths.iter().any(|p| p.ends_with("/295125")),
        "rescanned old blocks: {paths:?}"
    );
}

// Proves the start-up check refuses a Core on another network, and that without sources
// the watcher reports itself disabled.
#[tokio::test]
async fn wrong_network_is_refused_and_no_source_is_disabled() {
    let chain = fakes::chain(295120, 295121);
    chain.lock().unwrap().core_chain = "main".into();
    let fakes = fakes_for(chain).await;
    let run = spawn(&fakes, settings(temp_dir("net"), None));
    let result = tokio::time::timeout(WAIT, run.task).await.unwrap().unwrap();
    assert!(
        matches!(result, Err(WatcherError::WrongNetwork { .. })),
        "{result:?}"
    );
    let config = Config::default();
    let handle = WatchHandle::from_config(&config);
    let (tx, _rx) = mpsc::channel(1);
    sdk_relay::chain::run(
        &config,
        Env::tokio(1),
        handle.clone(),
        tx,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(!handle.status().enabled);
}

// Proves every hit is confirmed against Core. The same chain is scanned twice: with Core
// agreeing, the documented payment is detected (so detection works in this setup);
// with Core reporting another value for that output, the hit is still found (Core is
// asked for the payment's block, which the watcher only does for hits, and the drop is
// logged naming the transaction) and nothing is emitted.
#[tokio::test]
async fn hit_not_confirmed_by_core_is_dropped() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let ring = sdk_relay::logs::LogRing::new(1000);
    // The watcher runs on this test's thread (current-thread runtime): its records land here.
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(ring.layer(Arc::new(TokioClock))),
    );
    let getblock_of_payment = |fakes: &Fakes| {
        fakes
            .chain
            .lock()
            .unwrap()
            .core_calls
            .iter()
            .filter(|(method, params)| method == "getblock" && params[0] == PAYMENT_HASH)
            .count()
    };

    let confirmed = fakes_for(fakes::chain(295120, 295126)).await;
    let run = spawn(
        &confirmed,
        settings(temp_dir("confirmed"), Some(own_key(295120))),
    );
    wait_scanned(&run.handle, 295126).await;
    let events = run.stop().await;
    let found = payments(&events);
    assert_eq!(
        found.len(),
        1,
        "Core agreeing, the payment is detected: {events:?}"
    );
    assert_documented_payment(found[0], Target::Own, PAYMENT_HEIGHT, PAYMENT_HASH);
    assert_eq!(getblock_of_payment(&confirmed), 1);

    let chain = fakes::chain(295120, 295126);
    let key = (PAYMENT_TXID.to_string(), 0);
    chain
        .lock()
        .unwrap()
        .core_value_override
        .insert(key, 20_000);
    let fakes = fakes_for(chain).await;
    let run = spawn(&fakes, settings(temp_dir("confirm"), Some(own_key(295120))));
    wait_scanned(&run.handle, 295126).await;
    let events = run.stop().await;
    assert!(payments(&events).is_empty(), "{events:?}");
    assert_eq!(
        getblock_of_payment(&fakes),
        1,
        "the hit was found: Core was asked to confirm it"
    );
    let warnings = ring.recent(tracing::Level::WARN, 1000);
    assert!(
        warnings
            .iter()
            .any(|r| r.message.contains("does not confirm") && r.message.contains(PAYMENT_TXID)),
        "the dropped hit is logged: {warnings:?}"
    );
}

// Proves cookie-file authentication, and that a refused login is reported as degraded
// (naming Core, never the password) while the watcher keeps running.
#[tokio::test]
async fn cookie_file_auth_and_refused_login() {
    let dir = temp_dir("cookie");
    std::fs::create_dir_all(&dir).unwrap();
    let cookie = dir.join(".cookie");
    std::fs::write(&cookie, "__cookie__:s3cret\n").unwrap();
    let chain = fakes::chain(295120, 295122);
    chain.lock().unwrap().core_auth = Some("__cookie__:s3cret".into());
    let fakes = fakes_for(chain).await;
    let handle = WatchHandle::new(Network::Signet, 8, true);
    let (tx, mut rx) = mpsc::channel(64);
    let watcher = |auth: CoreAuth, handle: WatchHandle, tx| {
        Watcher {
            core: CoreRpc::new(TokioNet, &fakes.core_url, auth, Duration::from_secs(2)).unwrap(),
            blindbit: BlindbitHttp::new(TokioNet, &fakes.blindbit_url, Duration::from_secs(2))
                .unwrap(),
            settings: settings(dir.clone(), None),
            clock: Arc::new(TokioClock),
            rng: SeededRng::new(1),
            handle,
        }
        .run(tx, std::future::pending())
    };
    let task = tokio::spawn(watcher(CoreAuth::Cookie(cookie), handle.clone(), tx));
    wait_scanned(&handle, 295122).await;
    task.abort();
    assert!(payments(&drain(&mut rx)).is_empty());
    let refused = WatchHandle::new(Network::Signet, 8, true);
    let (tx, _rx) = mpsc::channel(64);
    let bad = CoreAuth::Basic {
        user: "__cookie__".into(),
        password: "wrong".into(),
    };
    let task = tokio::spawn(watcher(bad, refused.clone(), tx));
    wait_status(&refused, "refused login reported", |s| {
        s.degraded
            .as_deref()
            .is_some_and(|d| d.contains("bitcoin_core") && d.contains("401"))
    })
    .await;
    assert!(!refused.status().degraded.unwrap().contains("wrong"));
    assert!(!task.is_finished());
    task.abort();
}

/// Runs the issue's case: a relay without saved state starts at tip 295126, a wallet
/// registers with birth height 295120 (below that tip) and gets the payment of block
/// 295125 from its rescan; then a 2-block reorg replaces 295125 and 295126, the payment's
/// transaction mined again in the new 295126 when `remined`. Returns the wallet's id, the
/// new chain's blocks 295125..=295127 (hashes) and every event after the first detection.
async fn reorg_below_start_tip(
    name: &str,
    remined: bool,
) -> (Target, Vec<String>, Vec<ChainEvent>) {
    let fakes = fakes_for(fakes::chain(295120, 295126)).await;
    let mut run = spawn(&fakes, settings(temp_dir(name), None));
    wait_scanned(&run.handle, 295126).await;
    let text = format!(
        r#"{{"type":"watch","scan_secret_key":"{SCAN_HEX}","spend_public_key":"{}","birth_height":295120}}"#,
        spend_public_hex()
    );
    let (id, _) = run
        .handle
        .register(WatchRequest::from_json(&text).unwrap())
        .map(|r| (r.id, r.address))
        .unwrap();
    let first = tokio::time::timeout(WAIT, async {
        loop {
            match run.events.recv().await.unwrap() {
                ChainEvent::BlockMined { .. } => continue,
                e => return e,
            }
        }
    })
    .await
    .expect("the rescan below the start tip finds the payment");
    assert_documented_payment(&first, Target::Wallet(id), PAYMENT_HEIGHT, PAYMENT_HASH);
    wait_rescanned(&fakes, 295126).await;
    let new_chain = {
        let mut model = fakes.chain.lock().unwrap();
        let original = model.blocks[&PAYMENT_HEIGHT].clone();
        let second = if remined {
            original.moved(295126, 1)
        } else {
            FakeBlock::empty(295126, 1)
        };
        model.blocks.insert(295125, FakeBlock::empty(295125, 1));
        model.blocks.insert(295126, second);
        model.blocks.insert(295127, FakeBlock::empty(295127, 1));
        (295125..=295127)
            .map(|h| model.blocks[&h].hash.clone())
            .collect::<Vec<_>>()
    };
    wait_scanned(&run.handle, 295127).await;
    // The wallet's cursor follows the best chain: once block 295128 is scanned, the
    // replacement blocks have been scanned for it too.
    fakes
        .chain
        .lock()
        .unwrap()
        .blocks
        .insert(295128, FakeBlock::empty(295128, 1));
    wait_scanned(&run.handle, 295128).await;
    let events = run.stop().await;
    (Target::Wallet(id), new_chain, events)
}

/// Waits until the wallet's rescan asked Blindbit for block `height` (the best chain,
/// scanned before the wallet registered, did not: it had no key to scan for), so the
/// wallet has caught up with the tip and only a rewind can make it scan the
/// replacement blocks.
pub async fn wait_rescanned(fakes: &Fakes, height: u32) {
    let path = format!("/filter/new-utxos/{height}");
    let asked = tokio::time::timeout(WAIT, async {
        while !fakes.chain.lock().unwrap().blindbit_paths.contains(&path) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(asked.is_ok(), "the wallet's rescan never reached {height}");
}

fn reorged(target: Target) -> ChainEvent {
    ChainEvent::PaymentReorged {
        target,
        txid: PAYMENT_TXID.into(),
        vout: 0,
        block_height: PAYMENT_HEIGHT,
        block_hash: PAYMENT_HASH.into(),
    }
}

// Proves the issue's case: a payment found by a wallet's birth-range rescan below the
// relay's start tip is retracted by a 2-block reorg over its block, the replacement
// blocks are rescanned for the wallet (which finds the payment again where the new chain
// mined it, once), and the replacement blocks are announced with block_mined.
#[tokio::test]
async fn reorg_below_start_tip_retracts_and_rescans() {
    let (wallet, new_chain, events) = reorg_below_start_tip("below_tip", true).await;
    let found = payments(&events);
    assert_eq!(found.len(), 2, "{events:?}");
    assert_eq!(found[0], &reorged(wallet));
    assert_documented_payment(found[1], wallet, 295126, &new_chain[1]);
    for (height, hash) in (295125..).zip(&new_chain) {
        let mined = ChainEvent::BlockMined {
            height,
            hash: hash.clone(),
        };
        assert!(events.contains(&mined), "{height} announced: {events:?}");
    }
}

// Proves the same reorg with the payment's transaction not mined again ends with
// payment_reorged and no new detection.
#[tokio::test]
async fn reorg_below_start_tip_without_the_payment() {
    let (wallet, _, events) = reorg_below_start_tip("below_tip_gone", false).await;
    assert_eq!(payments(&events), vec![&reorged(wallet)], "{events:?}");
}

/// The registrations the relay saved in `dir`, if it saved any.
fn saved_wallets(dir: &std::path::Path) -> Option<usize> {
    let path = dir.join(sdk_relay::chain::registry::WALLETS_FILE);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    saved["wallets"].as_array().map(Vec::len)
}

// Proves registrations are saved while Core cannot be reached (every poll fails), and
// that one made just after a save (inside the once-a-second interval) is saved when the
// watcher shuts down.
#[tokio::test]
async fn registrations_are_saved_while_core_is_down_and_at_shutdown() {
    let fakes = fakes_for(fakes::chain(295120, 295121)).await;
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let dir = temp_dir("saved");
    let mut config = Config {
        data_dir: dir.clone(),
        bitcoin_core: Some(BitcoinCoreConfig {
            url: refused,
            wallet: None,
            rpc_user: None,
            rpc_password: None,
            cookie_file: None,
            ca_file: None,
        }),
        blindbit: Some(BlindbitConfig {
            url: fakes.blindbit_url.clone(),
            ca_file: None,
        }),
        ..Config::default()
    };
    config.watcher.poll_interval_secs = 1;
    let handle = WatchHandle::from_config(&config);
    let (tx, _rx) = mpsc::channel(64);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let handle = handle.clone();
        async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            sdk_relay::chain::run(&config, Env::tokio(1), handle, tx, shutdown).await
        }
    });
    wait_status(&handle, "core unreachable", |s| {
        s.degraded
            .as_deref()
            .is_some_and(|d| d.contains("bitcoin_core"))
    })
    .await;
    let watch = |scan: &str| {
        let text = format!(
            r#"{{"type":"watch","scan_secret_key":"{scan}","spend_public_key":"{}"}}"#,
            spend_public_hex()
        );
        handle
            .register(WatchRequest::from_json(&text).unwrap())
            .unwrap()
    };
    watch(SCAN_HEX);
    let saved = tokio::time::timeout(WAIT, async {
        while saved_wallets(&dir) != Some(1) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(saved.is_ok(), "saved while every poll fails");
    watch(&"03".repeat(32));
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(saved_wallets(&dir), Some(2), "saved at shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
