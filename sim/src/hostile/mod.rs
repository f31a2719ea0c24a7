//! A hostile relay host: a workload that joins the mesh as a relay (it speaks the peer
//! protocol over the simulated network) and attacks the honest relays from inside.
//!
//! It holds its own Ed25519 key, which the relays admit (an insider: the simulation runs
//! a trusted mesh whose `trusted_keys` list it), links to every honest relay under its
//! own name, reads what they send it (genuine notifications, log summaries, membership
//! records, sync requests) and, every step, sends the frames of its next attack. What it learns makes the attacks sharp: the streams and sequence numbers
//! of genuine notifications give the ids their origin will issue next (pre-claims), and
//! genuine frames can be replayed. Every notification it makes is marked
//! (`wire::MARK`), so the checks see a forgery that reached a wallet; every dial a relay
//! makes is recorded by the harness (`rt::DialLog`), so an address only gossip named is
//! seen even when nothing answers there.

mod attacks;
mod link;
pub mod wire;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sdk_relay::conn::codec::Incoming;
use serde_json::Value;

use sdk_relay::identity::{Identity, PublicKey};

use self::link::PeerLink;
use crate::rt::splitmix64;
use crate::trace::{Trace, now};
use crate::workload::{RECONNECT_DELAY, Shared, WS_PORT, sleep_until, ws_addr};

/// One kind of attack; a hostile host cycles through its list, one step each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attack {
    /// Notifications stamped with another relay's id, under ids of its streams.
    Forge,
    /// Genuine notifications sent again, as received and with their data changed.
    Replay,
    /// The ids honest relays will issue next, sent first with forged data, advertised in
    /// a log summary and served to the relays that fetch them.
    PreClaim,
    /// A second link that says it is another (real) relay.
    ClaimId,
    /// Records of relays that do not exist, and of real relays at addresses that are
    /// not relays.
    FabricatedRecords,
    /// Records with ids and addresses over their bounds, and more records than a relay
    /// keeps.
    OversizedRecords,
    /// Records last seen years ahead.
    FarFuture,
    /// Log summaries over their bounds, naming everything up to 2^63, or in a message
    /// over the size limit.
    HugeSummary,
    /// The same sync request many times per sync interval.
    RepeatedSyncs,
    /// Fetches of thousands of ids, again and again.
    FetchFlood,
    /// More new notifications at once than a relay checks in a second (each with a
    /// signature that is no one's, so each would cost a signature check).
    NotificationFlood,
}

impl Attack {
    pub fn name(self) -> &'static str {
        match self {
            Attack::Forge => "forge",
            Attack::Replay => "replay",
            Attack::PreClaim => "pre-claim",
            Attack::ClaimId => "claim-id",
            Attack::FabricatedRecords => "fabricated-records",
            Attack::OversizedRecords => "oversized-records",
            Attack::FarFuture => "far-future",
            Attack::HugeSummary => "huge-summary",
            Attack::RepeatedSyncs => "repeated-syncs",
            Attack::FetchFlood => "fetch-flood",
            Attack::NotificationFlood => "notification-flood",
        }
    }
}

/// A hostile relay host: `name` is both its host name and the relay id it claims as its
/// own; it advertises `name:8090` (where nothing listens).
#[derive(Debug, Clone)]
pub struct Hostile {
    pub name: String,
    /// The honest relays it links to.
    pub targets: Vec<String>,
    pub attacks: Vec<Attack>,
    pub start: Duration,
    /// When it stops attacking and closes its links.
    pub stop: Duration,
    /// Its randomness and its key come from this.
    pub seed: u64,
}

/// What the hostile hosts did and saw.
#[derive(Debug, Default)]
pub struct HostileLog {
    /// Frames sent, by attack.
    pub sent: BTreeMap<&'static str, u64>,
    /// Links honest relays accepted from a host claiming another relay's id:
    /// `relay-3 accepted byz-1 as relay-2`.
    pub impostures: BTreeSet<String>,
    /// Links the relays ended, by how (`closed with Some(1008)`, ...).
    pub ended: BTreeMap<String, u64>,
    /// Impostor handshakes the relays refused, by the reason they gave.
    pub refused: BTreeMap<String, u64>,
    /// Links an honest relay accepted.
    pub links: u64,
    /// Whole notification floods sent with time left to answer them, by relay.
    pub flooded: BTreeMap<String, u64>,
    /// Links cut (1008) right after a notification flood, by relay.
    pub flood_cuts: BTreeMap<String, u64>,
}

/// Time between two attack steps on one link (plus up to half of it, seeded).
const STEP: Duration = Duration::from_millis(300);
/// Genuine notification frames kept for replays.
const GENUINE_MAX: usize = 64;
/// A flood sent later than this before the attacks stop may get no answer in time, so
/// it does not count as one a relay had to cut.
const FLOOD_ANSWER_TIME: Duration = Duration::from_secs(1);

/// What a hostile host has learned, shared by its links.
#[derive(Default)]
struct Knowledge {
    /// Genuine notification frames, oldest first (at most `GENUINE_MAX`).
    genuine: VecDeque<Bytes>,
    /// Highest seq seen per stream (`<relay_id>-<nonce>`) of an honest relay.
    streams: BTreeMap<String, u64>,
    /// Ids pre-claimed already, so each is claimed once (bounded by the steps taken).
    claimed: BTreeSet<String>,
    /// Forgeries made, for fresh ids.
    forged: u64,
    /// Sync ids sent.
    syncs: u64,
    /// Oversized-records steps taken (one in `BULK_EVERY` carries the bulk).
    oversized_steps: u64,
    /// Genuine membership records of honest relays, newest per relay (their keys, and
    /// records to tamper with).
    records: BTreeMap<String, Value>,
}

/// A running hostile host: its plan, its key, and what it learned.
pub(crate) struct Agent {
    me: Hostile,
    identity: Identity,
    known: RefCell<Knowledge>,
}

impl Hostile {
    pub fn address(&self) -> String {
        format!("{}:{WS_PORT}", self.name)
    }

    /// The seed of its Ed25519 key.
    pub fn key_seed(&self) -> [u8; 32] {
        crate::rt::key_seed(splitmix64(self.seed ^ 0x006b_6579))
    }

    pub async fn run(self, obs: Shared, trace: Trace) -> turmoil::Result {
        sleep_until(self.start).await;
        let agent = Rc::new(Agent {
            identity: Identity::from_seed(&self.key_seed()),
            me: self,
            known: RefCell::default(),
        });
        let targets = agent.me.targets.clone();
        let mut tasks = Vec::new();
        for (index, target) in targets.iter().enumerate() {
            let seed = splitmix64(agent.me.seed ^ (index as u64 + 1));
            tasks.push(tokio::task::spawn_local(agent.clone().haunt(
                target.clone(),
                obs.clone(),
                trace.clone(),
                seed,
            )));
            if agent.me.attacks.contains(&Attack::ClaimId) && targets.len() > 1 {
                let victim = targets[(index + 1) % targets.len()].clone();
                tasks.push(tokio::task::spawn_local(agent.clone().impersonate(
                    target.clone(),
                    victim,
                    obs.clone(),
                    trace.clone(),
                    seed ^ 0x1d,
                )));
            }
        }
        for task in tasks {
            let _ = task.await;
        }
        let (sent, refused) = {
            let o = obs.borrow();
            let sent: Vec<String> = o
                .hostile
                .sent
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let refused: Vec<String> = o
                .hostile
                .refused
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            (sent.join(", "), refused.join(", "))
        };
        let name = &agent.me.name;
        trace.here(name, format!("attacks over, frames sent: {sent}"));
        if !refused.is_empty() {
            trace.here(name, format!("impostor handshakes refused: {refused}"));
        }
        Ok(())
    }
}

impl Agent {
    fn name(&self) -> &str {
        &self.me.name
    }

    /// Opens a link to `target` and completes the handshake as `relay_id` naming `key`.
    async fn link(
        &self,
        target: &str,
        relay_id: &str,
        key: &PublicKey,
        rng: &mut ChaCha8Rng,
    ) -> Result<(PeerLink, Value), String> {
        let mut link = PeerLink::open(&ws_addr(target), rng.random()).await?;
        let nonce: [u8; 32] = rng.random();
        let address = ws_addr(relay_id);
        let answer =
            link::handshake(&mut link, relay_id, &address, key, &self.identity, nonce).await?;
        Ok((link, answer))
    }

    /// Links to `target` under its own name and attacks until `stop`, relinking when
    /// the relay cuts it.
    async fn haunt(self: Rc<Self>, target: String, obs: Shared, trace: Trace, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut turn = rng.random_range(0..self.me.attacks.len().max(1));
        let key = *self.identity.public();
        while now() < self.me.stop {
            match self.link(&target, self.name(), &key, &mut rng).await {
                Ok((link, answer)) if answer["status"] == "accepted" => {
                    obs.borrow_mut().hostile.links += 1;
                    trace.here(self.name(), format!("linked to {target}"));
                    let ended = self.attack(link, &target, &obs, &mut rng, &mut turn).await;
                    trace.here(self.name(), format!("link to {target} ended: {ended}"));
                    *obs.borrow_mut().hostile.ended.entry(ended).or_default() += 1;
                }
                Ok((link, answer)) => {
                    trace.here(
                        self.name(),
                        format!("refused by {target}: {}", answer["reason"]),
                    );
                    link.close().await;
                }
                Err(e) => trace.here(self.name(), format!("link to {target} failed: {e}")),
            }
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    }

    /// Attack steps on one link until `stop` or until the relay ends it; how it ended.
    async fn attack(
        &self,
        mut link: PeerLink,
        target: &str,
        obs: &Shared,
        rng: &mut ChaCha8Rng,
        turn: &mut usize,
    ) -> String {
        let mut next = now() + STEP;
        let (attacks, stop) = (&self.me.attacks, self.me.stop);
        let mut last_attack = None;
        loop {
            if now() >= stop {
                link.close().await;
                return "attacks over".into();
            }
            tokio::select! {
                biased;
                incoming = link.incoming.recv() => match incoming {
                    None => return "closed without a close frame".into(),
                    Some(Incoming::Close(code)) => {
                        if code == Some(1008) && last_attack == Some(Attack::NotificationFlood) {
                            *obs.borrow_mut().hostile.flood_cuts.entry(target.to_string()).or_default() += 1;
                        }
                        return format!("closed with {code:?}");
                    }
                    Some(Incoming::Ping(payload)) => link.pong(&payload).await,
                    Some(Incoming::Text(text)) => {
                        let answers = self.absorb(&text);
                        if link.send(&answers).await.is_err() {
                            return "send failed".into();
                        }
                    }
                    Some(_) => {}
                },
                () = sleep_until(next.min(stop)) => {
                    if attacks.is_empty() || now() >= stop {
                        continue;
                    }
                    let attack = attacks[*turn % attacks.len()];
                    *turn += 1;
                    let frames = attacks::frames(self, attack, target, rng);
                    *obs.borrow_mut().hostile.sent.entry(attack.name()).or_default() +=
                        frames.len() as u64;
                    if link.send(&frames).await.is_err() {
                        return "send failed".into();
                    }
                    last_attack = Some(attack);
                    if attack == Attack::NotificationFlood && now() + FLOOD_ANSWER_TIME < stop {
                        *obs.borrow_mut().hostile.flooded.entry(target.to_string()).or_default() += 1;
                    }
                    next = now() + STEP + Duration::from_millis(rng.random_range(0..150));
                }
            }
        }
    }

    /// Learns from one frame a relay sent; the frames that answer it.
    fn absorb(&self, text: &[u8]) -> Vec<Bytes> {
        let Ok(message) = serde_json::from_slice::<Value>(text) else {
            return Vec::new();
        };
        let own = self.name();
        match message["type"].as_str() {
            Some("notification") => {
                if message["data"][wire::MARK].is_null()
                    && let Some((stream, seq)) =
                        message["message_id"].as_str().and_then(wire::split_id)
                {
                    let mut k = self.known.borrow_mut();
                    learn(&mut k.streams, stream, seq, own);
                    if k.genuine.len() == GENUINE_MAX {
                        k.genuine.pop_front();
                    }
                    k.genuine.push_back(Bytes::copy_from_slice(text));
                }
                Vec::new()
            }
            Some("sync" | "sync_response") => {
                let payload = &message["payload"];
                let mut k = self.known.borrow_mut();
                for stream in payload["log"].as_array().into_iter().flatten() {
                    let hi = stream["ranges"]
                        .as_array()
                        .and_then(|r| r.last())
                        .and_then(|r| r[1].as_u64());
                    if let (Some(name), Some(hi)) = (stream["stream"].as_str(), hi) {
                        learn(&mut k.streams, name, hi, own);
                    }
                }
                for record in payload["records"].as_array().into_iter().flatten() {
                    if let Some(id) = record["relay_id"].as_str().filter(|id| *id != own)
                        && k.records.len() < 64
                    {
                        k.records.insert(id.to_string(), record.clone());
                    }
                }
                drop(k);
                if message["type"] == "sync" {
                    attacks::answer_sync(self, &message).into_iter().collect()
                } else {
                    Vec::new()
                }
            }
            Some("fetch") => attacks::answer_fetch(self, &message),
            _ => Vec::new(),
        }
    }

    /// Dials `target` again and again claiming to be `victim`, a real relay: naming its
    /// own key (the id is bound to another), or the victim's key it learned from a
    /// record (it cannot sign with it). Records every link `target` accepts that way,
    /// and uses it to send notifications stamped as the victim's.
    async fn impersonate(
        self: Rc<Self>,
        target: String,
        victim: String,
        obs: Shared,
        trace: Trace,
        seed: u64,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut attempt = 0u64;
        while now() < self.me.stop {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2000))).await;
            attempt += 1;
            let victim_key =
                self.known.borrow().records.get(&victim).and_then(|r| {
                    PublicKey::parse(r["public_key"].as_str().unwrap_or_default()).ok()
                });
            let key = match victim_key {
                Some(key) if attempt.is_multiple_of(2) => key,
                _ => *self.identity.public(),
            };
            let Ok((mut link, answer)) = self.link(&target, &victim, &key, &mut rng).await else {
                continue;
            };
            *obs.borrow_mut().hostile.sent.entry("claim-id").or_default() += 1;
            if answer["status"] != "accepted" {
                let reason = answer["reason"].as_str().unwrap_or("no reason").to_string();
                *obs.borrow_mut().hostile.refused.entry(reason).or_default() += 1;
                link.close().await;
                continue;
            }
            let claim = format!("{target} accepted {} as {victim}", self.name());
            if obs.borrow_mut().hostile.impostures.insert(claim.clone()) {
                trace.here(self.name(), claim);
            }
            let frames = attacks::forge_as(&self, &victim, "claim-id", 3);
            *obs.borrow_mut().hostile.sent.entry("claim-id").or_default() += frames.len() as u64;
            let _ = link.send(&frames).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            link.close().await;
        }
    }
}

/// Notes that `stream` reached `seq`, unless the stream is the hostile host's own.
fn learn(streams: &mut BTreeMap<String, u64>, stream: &str, seq: u64, own: &str) {
    if wire::stream_origin(stream) == own || streams.len() >= 64 && !streams.contains_key(stream) {
        return;
    }
    let hi = streams.entry(stream.to_string()).or_default();
    *hi = (*hi).max(seq);
}
