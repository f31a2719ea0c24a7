//! The turmoil side of the relay's seam (`sdk_relay::rt`): simulated sockets, the
//! simulated clock, and per-relay RNG seeds derived from the run seed.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sdk_relay::rt::{Clock, Env, Listener, Net, SeededRng};
use tokio::time::Instant;

/// The simulated wall clock starts here (2026-01-01T00:00:00Z), whatever the host's date:
/// `timestamp` fields and message-id nonces then replay from a seed.
pub const SIM_EPOCH_UNIX_SECS: u64 = 1_767_225_600;

/// Sockets on turmoil's simulated network.
#[derive(Debug, Default, Clone, Copy)]
pub struct TurmoilNet;

/// A turmoil TCP listener.
pub struct TurmoilListener(turmoil::net::TcpListener);

impl Net for TurmoilNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = TurmoilListener;

    async fn bind(&self, addr: &str) -> io::Result<TurmoilListener> {
        Ok(TurmoilListener(
            turmoil::net::TcpListener::bind(addr.to_string()).await?,
        ))
    }

    async fn connect(&self, addr: &str) -> io::Result<turmoil::net::TcpStream> {
        turmoil::net::TcpStream::connect(addr.to_string()).await
    }

    /// The simulated DNS: a name `set_dns` gave answers its hosts' addresses; any other
    /// name is looked up as one turmoil host.
    async fn resolve(&self, name: &str) -> io::Result<Vec<SocketAddr>> {
        let (host, port) = name
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not host:port"))?;
        let hosts = DNS
            .with(|dns| dns.borrow().get(host).cloned())
            .unwrap_or_else(|| vec![host.to_string()]);
        Ok(hosts
            .iter()
            .map(|h| SocketAddr::new(turmoil::lookup(h.as_str()), port))
            .collect())
    }
}

thread_local! {
    /// The simulated DNS zone: name -> the turmoil hosts it answers (one simulation runs
    /// on one thread).
    static DNS: std::cell::RefCell<std::collections::BTreeMap<String, Vec<String>>> =
        std::cell::RefCell::default();
}

/// Forgets every name `set_dns` gave (a new run starts with an empty zone).
pub fn reset_dns() {
    DNS.with(|dns| dns.borrow_mut().clear());
}

/// Makes `name` answer `hosts` from now on (an empty list: no address).
pub fn set_dns(name: &str, hosts: Vec<String>) {
    DNS.with(|dns| dns.borrow_mut().insert(name.to_string(), hosts));
}

impl Listener for TurmoilListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(turmoil::net::TcpStream, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// tokio time (which turmoil drives) for `now`, turmoil's simulated wall clock for
/// `unix_time`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TurmoilClock;

impl Clock for TurmoilClock {
    #[allow(clippy::disallowed_methods)] // The seam itself; tokio time is simulated here.
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_time(&self) -> Duration {
        // The builder's epoch is pinned to SIM_EPOCH_UNIX_SECS; outside a host (never in
        // practice) the epoch itself.
        turmoil::since_epoch().unwrap_or(Duration::from_secs(SIM_EPOCH_UNIX_SECS))
    }
}

/// The seed of one boot of one relay: a mix of the run seed, the relay's index and how
/// many times it booted, so a restarted relay draws a fresh stream.
pub fn relay_seed(run_seed: u64, relay_index: usize, boot: u64) -> u64 {
    splitmix64(splitmix64(run_seed ^ (relay_index as u64).wrapping_mul(0x9e37_79b9)) ^ boot)
}

/// 32 bytes drawn from `seed` (an Ed25519 key seed: the simulation's keys replay).
pub fn key_seed(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut x = seed;
    for chunk in out.chunks_mut(8) {
        x = splitmix64(x);
        chunk.copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// The key seed of relay `relay_index` in a run (the same in every boot: it is the
/// relay's identity, kept in its key file).
pub fn relay_key_seed(run_seed: u64, relay_index: usize) -> [u8; 32] {
    key_seed(relay_seed(run_seed, relay_index, u64::MAX))
}

/// SplitMix64, a standard 64-bit mixer: nearby seeds give unrelated streams.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Every address each relay dialed in a run, with how many times: the byzantine checks
/// compare them with the addresses a relay may dial (real relays and the hostile host's
/// own), so a dial that gossip alone named is seen even when nothing answers there.
/// Bounded by the relays' own dial tables (a relay dials only addresses it keeps).
#[derive(Debug, Clone, Default)]
pub struct DialLog(Arc<Mutex<BTreeMap<(String, String), u64>>>);

impl DialLog {
    fn record(&self, relay: &str, address: &str) {
        let mut dials = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *dials
            .entry((relay.to_string(), address.to_string()))
            .or_default() += 1;
    }

    /// `(relay, address) -> dials`, in order.
    pub fn dials(&self) -> BTreeMap<(String, String), u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Turmoil sockets that note every `connect` of one relay in the run's `DialLog`.
#[derive(Debug, Clone)]
pub struct RecordingNet {
    pub relay: String,
    pub log: DialLog,
}

impl Net for RecordingNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = TurmoilListener;

    async fn bind(&self, addr: &str) -> io::Result<TurmoilListener> {
        TurmoilNet.bind(addr).await
    }

    async fn connect(&self, addr: &str) -> io::Result<turmoil::net::TcpStream> {
        self.log.record(&self.relay, &named(addr));
        TurmoilNet.connect(addr).await
    }

    async fn resolve(&self, name: &str) -> io::Result<Vec<SocketAddr>> {
        TurmoilNet.resolve(name).await
    }
}

/// `addr` with a simulated host's IP address (what DNS discovery dials) replaced by the
/// host's name, so the dial log names hosts the same way whichever way they were found.
fn named(addr: &str) -> String {
    match addr.parse::<SocketAddr>() {
        Ok(socket) => match turmoil::reverse_lookup(socket.ip()) {
            Some(host) => format!("{host}:{}", socket.port()),
            None => addr.to_string(),
        },
        Err(_) => addr.to_string(),
    }
}

/// The environment of one simulated relay boot; its dials go into `dials`.
pub fn env(
    run_seed: u64,
    relay_index: usize,
    boot: u64,
    dials: DialLog,
    verified: Arc<sdk_relay::identity::VerifiedMemo>,
) -> Env<RecordingNet> {
    Env {
        net: RecordingNet {
            relay: crate::fault::host(relay_index),
            log: dials,
        },
        clock: Arc::new(TurmoilClock),
        rng: SeededRng::new(relay_seed(run_seed, relay_index, boot)),
        verified: Some(verified),
    }
}
