//! Peer discovery by DNS (`[mesh] peers_dns`) on real loopback sockets, with the DNS
//! answer under the test's control: the relays resolve through a network seam whose
//! `resolve` reads a zone the test edits, and dial and listen like production. The mesh
//! forms from DNS alone, follows the answer as it changes, and stops dialing an address
//! that left it.

// Tests act from outside the relay, so they use real sockets and clocks directly.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
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
    let mut config = fast_config();
    config.relay_id = id.to_string();
    config.mesh.peers_dns = vec![name.to_string()];
    config.mesh.peers_dns_interval_secs = 1;
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

/// No configured peer anywhere: while the name answers nothing no link forms; once it
/// names the three relays they link fully; an address that leaves the answer leaves the
/// dial table; a relay the answer names later joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_forms_from_dns_alone_and_follows_its_answer() {
    let net = ZoneNet::default();
    net.answer(NAME, &[]);
    let mut relays = Vec::new();
    for i in 1..=3 {
        relays.push(start(&net, &format!("dns-{i}"), NAME).await);
    }
    // Three resolutions of an empty answer: nothing to dial.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for relay in &relays {
        assert_eq!(links(relay).await, 0.0, "no link without a DNS answer");
    }

    // An address nothing listens on, as a pod that went away leaves behind.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut answer: Vec<SocketAddr> = relays.iter().map(|r| r.ws_addr).collect();
    answer.push(gone);
    net.answer(NAME, &answer);
    for relay in &relays {
        eventually(LONG, "every relay linked to both others", || async {
            (links(relay).await == 2.0).then_some(())
        })
        .await;
    }
    // Fully linked, relay 0's dial table is stable: the peers it dialed and the dead
    // address it keeps retrying (never itself).
    let dials = metric(&relays[0], "sdk_relay_mesh_dial_addresses").await;
    assert!(dials >= 1.0, "the dead address is in the dial table");

    answer.pop();
    net.answer(NAME, &answer);
    eventually(
        LONG,
        "the address that left DNS left the dial table",
        || async {
            (metric(&relays[0], "sdk_relay_mesh_dial_addresses").await == dials - 1.0).then_some(())
        },
    )
    .await;

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
