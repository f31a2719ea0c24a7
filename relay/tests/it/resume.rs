//! Resuming a wallet's session on another relay, on real processes, with the Python
//! `websockets` client `tests/clients/resume_wallet.py`: a wallet subscribed on relay A,
//! disconnected while relay B publishes, resumes on relay C with its last token and gets
//! exactly what it missed (in order, once) then `resumed` with `recovered: true`; past
//! the log's retention it is told `recovered: false`; a forged token is refused.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::lame_duck::{FAST, clients_dir, wait_linked_healthy};
use crate::support::Client;
use crate::support::cluster::RelayProcess;

/// How long a Python wallet may run at most (it bounds its own waits at 20 s).
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);

fn peers_toml(addrs: &[&RelayProcess]) -> String {
    let list: Vec<String> = addrs.iter().map(|r| format!("\"{}\"", r.ws_addr)).collect();
    format!("[mesh]\npeers = [{}]\n", list.join(", "))
}

/// Runs `resume_wallet.py URL args…` to its end; the events it printed.
async fn wallet(url: &str, args: &[&str]) -> Vec<Value> {
    let output = tokio::time::timeout(
        SCRIPT_LIMIT,
        tokio::process::Command::new("python3")
            .arg(clients_dir().join("resume_wallet.py"))
            .arg(url)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the wallet script ends by itself")
    .expect("python3 with `websockets` (scripts/test-deps.sh installs it)");
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        output.status.success(),
        "{:?}: {events:?} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    events
}

fn notification_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "notification")
        .map(|e| e["message_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn last_token(events: &[Value]) -> String {
    events
        .iter()
        .rev()
        .find_map(|e| e["resume_token"].as_str())
        .expect("notifications carry a resume token")
        .to_string()
}

fn resumed(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["event"] == "resumed")
        .unwrap_or_else(|| panic!("no `resumed`: {events:?}"))
}

/// Three relays A–B–C, fully linked, with `limits` added to each configuration.
async fn mesh_of_three(limits: &str) -> (RelayProcess, RelayProcess, RelayProcess) {
    let a = RelayProcess::start("relay-a", "", &format!("{FAST}{limits}")).await;
    let b = RelayProcess::start(
        "relay-b",
        "",
        &format!("{FAST}{limits}{}", peers_toml(&[&a])),
    )
    .await;
    let c = RelayProcess::start(
        "relay-c",
        "",
        &format!("{FAST}{limits}{}", peers_toml(&[&a, &b])),
    )
    .await;
    for (relay, others) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
        wait_linked_healthy(relay, &others).await;
    }
    (a, b, c)
}

/// The wallet takes one `pay` notification on A (and its token), then leaves; B
/// publishes `missed` (pay) and two `other`; C has seen all of them. Returns the token
/// and the ids of the missed `pay` notifications, in publication order: those, after any
/// warm-up published while the wallet was leaving (a loaded machine makes that happen).
async fn wallet_misses_some(
    a: &RelayProcess,
    b: &RelayProcess,
    c: &RelayProcess,
    missed: usize,
) -> (String, Vec<String>) {
    let (mut publisher, _) = Client::handshaken(b.ws_addr, &["publish"]).await;
    let (mut watcher_on_c, _) = Client::handshaken(c.ws_addr, &["notifications"]).await;
    let url = a.ws_url();
    let first = tokio::spawn(async move { wallet(&url, &["listen", "pay", "1"]).await });
    // Publish until the listening wallet (subscribed a moment after connecting) has one.
    let mut published = 0;
    let mut warmups = Vec::new();
    while !first.is_finished() {
        warmups.push(
            publisher
                .publish("pay", serde_json::json!({"warmup": published}))
                .await,
        );
        published += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            published < 100,
            "the wallet on relay-a never got a notification"
        );
    }
    let events = first.await.unwrap();
    let token = last_token(&events);
    // Warm-ups published after the one the wallet took, before its process was seen to
    // end, are missed too (a loaded machine leaves time for a few).
    let took = notification_ids(&events)
        .pop()
        .expect("the wallet took one");
    let mut ids: Vec<String> = warmups
        .iter()
        .skip_while(|id| **id != took)
        .skip(1)
        .cloned()
        .collect();
    for n in 0..missed {
        ids.push(publisher.publish("pay", serde_json::json!({"n": n})).await);
        publisher
            .publish("other", serde_json::json!({"n": n}))
            .await;
    }
    // C routed everything B published (warm-up included).
    let seen = watcher_on_c
        .recv_notification_ids(published + 2 * missed)
        .await;
    assert!(seen.contains(ids.last().unwrap()), "{seen:?}");
    (token, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_resumes_on_another_relay_with_exactly_what_it_missed() {
    let (a, b, c) = mesh_of_three("").await;
    let (token, missed) = wallet_misses_some(&a, &b, &c, 3).await;
    let events = wallet(&c.ws_url(), &["resume", &token, "2"]).await;
    assert_eq!(notification_ids(&events), missed, "{events:?}");
    let done = resumed(&events);
    assert_eq!(done["recovered"], true, "{events:?}");
    assert_eq!(done["replayed"], missed.len(), "{events:?}");
    // `resumed` comes after the replay.
    let last = events
        .iter()
        .rposition(|e| e["event"] == "notification")
        .unwrap();
    let at = events.iter().position(|e| e["event"] == "resumed").unwrap();
    assert!(last < at, "{events:?}");
    // The token of the last replayed notification names everything: nothing again.
    let again = wallet(&b.ws_url(), &["resume", &last_token(&events), "1"]).await;
    assert!(notification_ids(&again).is_empty(), "{again:?}");
    assert_eq!(resumed(&again)["recovered"], true, "{again:?}");
    assert_eq!(resumed(&again)["replayed"], 0, "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_retention_a_resume_reports_recovered_false() {
    let (a, b, c) = mesh_of_three("[limits]\nnotification_log_retention_secs = 2\n").await;
    let (token, _missed) = wallet_misses_some(&a, &b, &c, 2).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A later notification makes the log drop what passed its retention.
    let (mut publisher, _) = Client::handshaken(b.ws_addr, &["publish"]).await;
    let (mut watcher_on_c, _) = Client::handshaken(c.ws_addr, &["notifications"]).await;
    let late = publisher
        .publish("pay", serde_json::json!({"late": true}))
        .await;
    assert_eq!(
        watcher_on_c.recv_notification_ids(1).await,
        vec![late.clone()]
    );
    let events = wallet(&c.ws_url(), &["resume", &token, "1"]).await;
    let done = resumed(&events);
    assert_eq!(done["recovered"], false, "{events:?}");
    assert_eq!(done["reason"], "evicted", "{events:?}");
    assert_eq!(notification_ids(&events), vec![late], "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_corrupted_token_is_refused_with_a_clear_error() {
    let (a, b, c) = mesh_of_three("").await;
    let (token, _) = wallet_misses_some(&a, &b, &c, 1).await;
    let mut corrupted = token.into_bytes();
    let middle = corrupted.len() / 2;
    corrupted[middle] = if corrupted[middle] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let corrupted = String::from_utf8(corrupted).unwrap();
    for bad in [corrupted.as_str(), "not-a-token", "AAAA"] {
        let events = wallet(&c.ws_url(), &["resume", bad, "0.5"]).await;
        let error = events
            .iter()
            .find(|e| e["event"] == "error")
            .unwrap_or_else(|| panic!("no error for {bad}: {events:?}"));
        assert_eq!(error["code"], "invalid_resume_token", "{events:?}");
        assert!(notification_ids(&events).is_empty(), "{events:?}");
    }
    // The relay is still up and serving.
    assert!(c.get("/health").await["status"].is_string());
}

/// Relay C is killed (SIGKILL, nothing saved on the way out) after it routed what the
/// wallet missed, and started again: its log comes back from `data_dir`, and the
/// wallet resuming there gets exactly what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_serves_resumes_from_its_log_on_disk() {
    let (a, b, mut c) = mesh_of_three("").await;
    let (token, missed) = wallet_misses_some(&a, &b, &c, 3).await;
    // Several group commits (50 ms each) and a sync interval.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.restart().await;
    let events = wallet(&c.ws_url(), &["resume", &token, "2"]).await;
    assert_eq!(notification_ids(&events), missed, "{events:?}");
    let done = resumed(&events);
    assert_eq!(done["recovered"], true, "{events:?}");
    assert_eq!(done["replayed"], missed.len(), "{events:?}");
    assert!(
        c.log().contains("restored the notification log from disk"),
        "{}",
        c.log()
    );
}

mod payments {
    //! A wallet's own payments on resume: found by the relay it registered with while it
    //! was away, delivered on another relay by its resume token, once.

    use serde_json::{Value, json};

    use super::peers_toml;
    use crate::lame_duck::{FAST, wait_linked_healthy};
    use crate::support::Client;
    use crate::support::chain_fakes::{self as fakes, FakeBlock, Fakes};
    use crate::support::cluster::{RelayProcess, eventually, http_get};

    const SCAN_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const LONG: std::time::Duration = std::time::Duration::from_secs(60);

    fn watch() -> Value {
        use bitcoin::secp256k1::{Secp256k1, SecretKey};
        let spend = SecretKey::from_slice(&[2; 32]).unwrap();
        json!({
            "type": "watch",
            "scan_secret_key": SCAN_HEX,
            "spend_public_key": hex::encode(spend.public_key(&Secp256k1::new()).serialize()),
            "birth_height": 295120,
        })
    }

    fn sources_toml(fakes: &Fakes) -> String {
        format!(
            "[bitcoin_core]\nurl = \"{}\"\n[blindbit]\nurl = \"{}\"\n[watcher]\npoll_interval_secs = 1\n",
            fakes.core_url, fakes.blindbit_url
        )
    }

    async fn wait_scanned(relay: &RelayProcess, scanned: u32) {
        eventually(LONG, &format!("{} scanned {scanned}", relay.id), || async {
            let health = http_get(relay.http_addr, "/health").await?;
            (health["chain"]["scanned_height"] == json!(scanned)).then_some(())
        })
        .await;
    }

    /// Notifications `relay` has routed (each new one counts as a dedup miss).
    async fn routed(relay: &RelayProcess) -> u64 {
        let text = relay.get_text("/metrics/prometheus").await;
        text.lines()
            .find_map(|line| line.strip_prefix("sdk_relay_dedup_misses_total "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64)
    }

    // Proves the wallet's own `payment_detected` reaches it on resume on any relay: it
    // registers its keys on A (which watches the chain) with capability `resume`, takes the
    // token of its `watch_response` and leaves; A finds its payment while it is away; it
    // resumes on C (no chain watcher there) and gets the payment once, then `resumed`
    // with `recovered: true, replayed: 1`. A `*` subscriber on C never sees the payment,
    // and may not subscribe to the wallet's topic. Back on A (resuming with its newest
    // token) and registering its keys again, the payment A kept for it is not handed to it
    // a second time: `pending_delivered: 0`, and the next message is the answer to a ping.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wallet_resuming_on_another_relay_gets_its_payment_found_while_away_once() {
        let fakes = fakes::start(fakes::chain(295120, 295124)).await;
        let a =
            RelayProcess::start("relay-a", "", &format!("{FAST}{}", sources_toml(&fakes))).await;
        let c = RelayProcess::start("relay-c", "", &format!("{FAST}{}", peers_toml(&[&a]))).await;
        wait_linked_healthy(&a, &[&c]).await;
        wait_linked_healthy(&c, &[&a]).await;

        let (mut wallet, _) = Client::handshaken(a.ws_addr, &["resume"]).await;
        wallet.send_json(&watch()).await;
        let response = wallet.recv_type("watch_response").await;
        assert_eq!(response["status"], "accepted", "{response}");
        let token = response["resume_token"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("a resumable wallet's watch_response has a token: {response}")
            })
            .to_string();
        wait_scanned(&a, 295124).await;
        drop(wallet);

        let (mut spy, _) = Client::handshaken(c.ws_addr, &["notifications"]).await;
        {
            let mut model = fakes.chain.lock().unwrap();
            model.blocks.insert(
                fakes::PAYMENT_HEIGHT,
                FakeBlock::recorded(fakes::PAYMENT_HEIGHT),
            );
            model.blocks.insert(295126, FakeBlock::empty(295126, 0));
        }
        wait_scanned(&a, 295126).await;
        // C has routed everything A has (nothing else publishes): the payment included.
        eventually(LONG, "C routed all A routed", || async {
            let routed_a = routed(&a).await;
            (routed_a > 0 && routed(&c).await == routed_a).then_some(())
        })
        .await;
        spy.send_json(&json!({"type": "ping", "id": "spy"})).await;
        loop {
            let message = spy.recv().await.expect("spy connected");
            assert_ne!(
                message["notification_type"], "payment_detected",
                "a wallet's payment reached a `*` subscriber: {message}"
            );
            if message["type"] == "pong" {
                break;
            }
        }

        let (mut wallet, _) = Client::handshaken(c.ws_addr, &["resume"]).await;
        wallet
            .send_json(&json!({"type": "resume", "token": token}))
            .await;
        let payment = wallet.recv_type("notification").await;
        assert_eq!(
            payment["notification_type"], "payment_detected",
            "{payment}"
        );
        assert_eq!(payment["data"]["txid"], fakes::PAYMENT_TXID);
        assert_eq!(payment["relay_id"], "relay-a", "found by A: {payment}");
        let topic = payment["topic"]
            .as_str()
            .expect("on the wallet's topic")
            .to_string();
        let newest = payment["resume_token"]
            .as_str()
            .expect("with a token")
            .to_string();
        let resumed = wallet.recv_type("resumed").await;
        assert_eq!(
            (&resumed["recovered"], &resumed["replayed"]),
            (&json!(true), &json!(1)),
            "{resumed}"
        );

        spy.send_json(&json!({"type": "subscribe", "notification_types": [topic]}))
            .await;
        let refused = spy.recv_type("error").await;
        assert!(
            refused["message"]
                .as_str()
                .unwrap_or_default()
                .contains("private"),
            "{refused}"
        );
        drop(wallet);

        let (mut wallet, _) = Client::handshaken(a.ws_addr, &["resume"]).await;
        wallet
            .send_json(&json!({"type": "resume", "token": newest}))
            .await;
        let resumed = wallet.recv_type("resumed").await;
        assert_eq!(
            (&resumed["recovered"], &resumed["replayed"]),
            (&json!(true), &json!(0)),
            "{resumed}"
        );
        wallet.send_json(&watch()).await;
        let again = wallet.recv_type("watch_response").await;
        assert_eq!(
            (&again["status"], &again["pending_delivered"]),
            (&json!("accepted"), &json!(0)),
            "{again}"
        );
        wallet.send_json(&json!({"type": "ping", "id": 7})).await;
        let pong = wallet.recv_type("pong").await;
        assert_eq!(pong["id"], 7);
    }
}
