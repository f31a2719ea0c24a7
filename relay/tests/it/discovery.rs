//! Peer discovery by DNS (`[mesh] peers_dns`) on real loopback sockets, with the DNS
//! answer under the test's control: the relays resolve through a network seam whose
//! `resolve` reads a zone the test edits, and dial and listen like production. The mesh
//! forms from DNS alone, follows the answer as it changes, and stops dialing an address
//! that left it.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sdk_relay::logs::LogRing;
use sdk_relay::rt::{Net, TokioListener, TokioNet};

use crate::http_client;
use crate::support::cluster::eventually;
use crate::support::{TestRelay, fast_config};

const NAME: &str = "relays.test:8090";
const LONG: Duration = Duration::from_secs(30);

/// Real sockets; names resolve from `zone` (a name missing from it does not resolve).
#[derive(Clone, Default)]
struct ZoneNet {
    zone: Arc<Mutex<BTreeMap<String, Vec<SocketAddr>>>>,
}

impl ZoneNet {
    fn answer(&self, name: &str, addresses: &[SocketAddr]) {
        self.zone
            .lock()
            .unwrap()
            .insert(name.to_string(), addresses.to_vec());
    }
}

impl Net for ZoneNet {
    type Stream = tokio::net::TcpStream;
    type Listener = TokioListener;

    async fn bind(&self, addr: &str) -> io::Result<TokioListener> {
        TokioNet.bind(addr).await
    }

    async fn connect(&self, addr: &str) -> io::Result<tokio::net::TcpStream> {
        TokioNet.connect(addr).await
    }

    async fn resolve(&self, name: &str) -> io::Result<Vec<SocketAddr>> {
        self.zone
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no such name {name}")))
    }
}

async fn start(net: &ZoneNet, id: &str, name: &str) -> TestRelay {
    start_advertising(net, id, name, None).await
}

/// Like `start`; `advertise` (with `{port}` for its WebSocket port) is the address the
/// relay advertises instead of its `ws_url`.
async fn start_advertising(
    net: &ZoneNet,
    id: &str,
    name: &str,
    advertise: Option<&str>,
) -> TestRelay {
    let mut config = fast_config();
    config.relay_id = id.to_string();
    config.mesh.peers_dns = vec![name.to_string()];
    config.mesh.peers_dns_interval_secs = 1;
    config.advertise_addr = advertise.map(str::to_string);
    // A mesh of the test's own: relays of other tests (in this process or another) that
    // dial a port these relays reuse, or listen on one the test let go, are refused.
    config.auth.mesh_token = Some(format!("dns-discovery-test-{}", std::process::id()));
    TestRelay::start_on(config, LogRing::new(100), net.clone()).await
}

async fn metric(relay: &TestRelay, name: &str) -> f64 {
    let text = http_client::get(relay.http_addr, "/metrics/prometheus")
        .await
        .text();
    sdk_relay::metrics::sum_series(&text, name)
}

async fn links(relay: &TestRelay) -> f64 {
    metric(relay, "sdk_relay_mesh_connections").await
}

/// The addresses in the relay's dial table (`/sync/status`).
async fn dial_table(relay: &TestRelay) -> BTreeSet<String> {
    let status = http_client::get(relay.http_addr, "/sync/status")
        .await
        .json();
    status["dial_addresses"]
        .as_array()
        .expect("dial_addresses is a list")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// The peers named by the sync errors the relay recorded.
async fn errors_about(relay: &TestRelay) -> Vec<String> {
    let status = http_client::get(relay.http_addr, "/sync/status")
        .await
        .json();
    status["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{}: {}", e["peer"], e["message"]))
        .collect()
}

async fn relay_ids(relay: &TestRelay) -> Vec<String> {
    let listed = http_client::get(relay.http_addr, "/relays").await.json();
    let mut ids: Vec<String> = listed["relays"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["health"] == "healthy")
        .map(|r| r["relay_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// An address where no relay answers, as a pod that went away leaves behind. The test
/// holds its port (a closed port could be taken by any process on the machine, even
/// another relay, and answer): it accepts each connection and drops it at once.
struct NotARelay {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl NotARelay {
    async fn start() -> NotARelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        NotARelay { addr, task }
    }
}

impl Drop for NotARelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// No configured peer anywhere: while the name answers nothing no link forms; once it
/// names the three relays they link fully; relay 0, whose answer names it under an
/// address other than the one it advertises, finds itself by dialing and keeps its own
/// address out of its dial table without counting an error; an address that leaves the
/// answer leaves the dial table, and its failures leave no lasting trace in `/health`; a
/// relay the answer names later joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_forms_from_dns_alone_and_follows_its_answer() {
    let net = ZoneNet::default();
    net.answer(NAME, &[]);
    let mut relays = Vec::new();
    // Relay 0 advertises `localhost:PORT` while DNS names it `127.0.0.1:PORT`.
    relays.push(start_advertising(&net, "dns-1", NAME, Some("localhost:{port}")).await);
    for i in 2..=3 {
        relays.push(start(&net, &format!("dns-{i}"), NAME).await);
    }
    // Three resolutions of an empty answer: nothing to dial.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for relay in &relays {
        assert_eq!(links(relay).await, 0.0, "no link without a DNS answer");
        assert!(dial_table(relay).await.is_empty(), "nothing to dial");
    }

    let gone = NotARelay::start().await;
    let mut answer: Vec<SocketAddr> = relays.iter().map(|r| r.ws_addr).collect();
    answer.push(gone.addr);
    net.answer(NAME, &answer);
    for relay in &relays {
        eventually(LONG, "every relay linked to both others", || async {
            (links(relay).await == 2.0).then_some(())
        })
        .await;
    }
    let own = relays[0].ws_addr.to_string();
    let dead = gone.addr.to_string();
    // Relay 0 dials its own DNS address once, is refused as itself, and drops it; it
    // keeps retrying the dead address.
    eventually(
        LONG,
        "relay 0 dials the dead address and found itself in the answer",
        || async {
            let table = dial_table(&relays[0]).await;
            let refused_itself = metric(
                &relays[0],
                "sdk_relay_ws_handshakes_total{outcome=\"rejected\"}",
            )
            .await;
            (table.contains(&dead) && !table.contains(&own) && refused_itself >= 1.0).then_some(())
        },
    )
    .await;
    let errors = errors_about(&relays[0]).await;
    assert!(
        !errors
            .iter()
            .any(|e| e.contains(&own) || e.contains("dns-1")),
        "finding itself in DNS is no error: {errors:?}"
    );

    answer.pop();
    net.answer(NAME, &answer);
    let peers: BTreeSet<String> = answer[1..].iter().map(ToString::to_string).collect();
    let table = eventually(
        LONG,
        "the address that left DNS left the dial table",
        || async {
            let table = dial_table(&relays[0]).await;
            (!table.contains(&dead)).then_some(table)
        },
    )
    .await;
    assert!(
        table.is_subset(&peers),
        "the dial table holds what DNS names but relay 0: {table:?}"
    );
    assert!(
        !dial_table(&relays[0]).await.contains(&own),
        "relay 0 never dials itself again"
    );
    // Only configured peers' failed dials are sync errors: an address DNS alone named
    // may be a pod already gone that the answer still lists.
    let errors = errors_about(&relays[0]).await;
    assert!(
        !errors.iter().any(|e| e.contains(&dead)),
        "the dead DNS address counted no error: {errors:?}"
    );
    let health = http_client::get(relays[0].http_addr, "/health")
        .await
        .json();
    assert_ne!(
        health["status"], "degraded",
        "an address DNS no longer names does not degrade the relay: {health}"
    );
    drop(gone);

    // A fourth relay resolves a name that answers nothing, so it dials no one: it joins
    // only because the others' answer now names it.
    net.answer("nobody.test:8090", &[]);
    let newcomer = start(&net, "dns-4", "nobody.test:8090").await;
    answer.push(newcomer.ws_addr);
    net.answer(NAME, &answer);
    eventually(LONG, "the newcomer linked to the three", || async {
        (links(&newcomer).await == 3.0).then_some(())
    })
    .await;
    eventually(LONG, "relay 0 lists four healthy relays", || async {
        (relay_ids(&relays[0]).await.len() == 4).then_some(())
    })
    .await;
    newcomer.shutdown().await;
    for relay in relays {
        relay.shutdown().await;
    }
}
