//! The NATS JetStream backbone: the alternative to the mesh for deployments that already
//! run NATS, or outgrow flooding (`[backbone] kind = "nats"`).
//!
//! Each notification this relay accepts is published once to one stream (`publish`),
//! with the notification id as `Nats-Msg-Id` so the server drops a retried duplicate;
//! the wallet's `notification_ack` waits for the stream's acknowledgement. Every relay
//! reads the stream through its own durable consumer and delivers to its local
//! subscribers exactly once (`consume`). Relays find each other through a key-value
//! bucket of records with a time-to-live (`members`), which fills `/relays`,
//! `/sync/status` and `sync_metrics` with the mesh's shapes; each record carries its
//! relay's public key, signed, and every notification read from the stream is checked
//! against its origin's key before delivery. Resume tokens name a position in the stream
//! (its sequence numbers, the same on every relay), so a wallet resumes on any relay
//! (`resume`). While no NATS server answers,
//! the relay is degraded and not ready; what wallets publish meanwhile waits in a buffer
//! bounded in bytes (`outbox`), beyond which publications are refused.

mod connect;
mod consume;
mod members;
mod outbox;
mod publish;
mod resume;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use async_nats::jetstream::kv;

use metrics::{Counter, Gauge, Histogram};

use crate::config::{BackboneConfig, Config};
use crate::health::Health;
use crate::hub::Hub;
use crate::identity::{Identity, PublicKey};
use crate::lifecycle::Lifecycle;
use crate::mesh::{
    PeerSyncDetail, RelayInfo, SYNC_ERRORS_MAX, SyncErrorRecord, SyncMetrics, SyncStatus, Trust,
    Unverified, health_from_age,
};
use crate::metrics::Metrics;
use crate::protocol::peer::{PeerHealth, SyncType};
use crate::protocol::signed::SignedRecord;
use crate::protocol::{Notification, VERSION};
use crate::resume::{Issuer, StreamKey, TokenError};
use crate::routing::{Accepted, Backbone, BackboneLink, Refused};

pub use members::Record;

/// How often the connection state is looked at (for `/health` and the gauge).
const STATE_POLL: Duration = Duration::from_millis(250);

pub struct NatsMetrics {
    /// The relay's registry: delivery, dedup and sync counters keep their mesh meaning.
    pub relay: Arc<Metrics>,
    pub connected: Gauge,
    pub publish_failures: Counter,
    pub refused: Counter,
    pub buffer_bytes: Gauge,
    pub publish_ack: Histogram,
}

impl NatsMetrics {
    fn new(relay: Arc<Metrics>) -> NatsMetrics {
        use crate::metrics::names::*;
        relay.scoped(|| {
            metrics::describe_gauge!(BACKBONE_CONNECTED, "1 while the relay is connected to a NATS server and the stream takes publications, else 0.");
            metrics::describe_counter!(BACKBONE_PUBLISH_FAILURES_TOTAL, "Notifications whose publication to the stream failed or timed out (each is retried).");
            metrics::describe_counter!(BACKBONE_REFUSED_TOTAL, "Publications refused because the backbone buffer was full.");
            metrics::describe_gauge!(BACKBONE_BUFFER_BYTES, "Bytes of notifications waiting for the stream's acknowledgement.");
            metrics::describe_histogram!(BACKBONE_PUBLISH_ACK_SECONDS, metrics::Unit::Seconds, "Time from publication to the stream's acknowledgement.");
            NatsMetrics {
                connected: metrics::gauge!(BACKBONE_CONNECTED),
                publish_failures: metrics::counter!(BACKBONE_PUBLISH_FAILURES_TOTAL),
                refused: metrics::counter!(BACKBONE_REFUSED_TOTAL),
                buffer_bytes: metrics::gauge!(BACKBONE_BUFFER_BYTES),
                publish_ack: metrics::histogram!(BACKBONE_PUBLISH_ACK_SECONDS),
                relay: relay.clone(),
            }
        })
    }
}

/// What the backbone needs from the rest of the relay.
pub struct NatsParts {
    pub config: Arc<Config>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<Hub>,
    pub health: Arc<Health>,
    /// Set down while no server takes publications.
    pub link: Arc<BackboneLink>,
    /// This relay's key pair: signs its record and the resume tokens it issues.
    pub identity: Arc<Identity>,
}

/// Relay ids whose record was looked up on demand recently (see `key_of_origin`).
const LOOKUPS_MAX: usize = 1024;
/// One on-demand lookup per relay id per this long: forged origins cannot make the
/// consumer wait on the bucket for every message.
const LOOKUP_INTERVAL: Duration = Duration::from_secs(1);

/// The NATS backbone of one relay.
pub struct NatsBackbone {
    config: Arc<Config>,
    lifecycle: Arc<Lifecycle>,
    pub metrics: NatsMetrics,
    hub: Arc<Hub>,
    health: Arc<Health>,
    link: Arc<BackboneLink>,
    outbox: outbox::Outbox,
    view: Mutex<View>,
    identity: Arc<Identity>,
    /// Which key each relay id is bound to (learned from signed records).
    trust: Trust,
    /// Signs this relay's resume tokens.
    issuer: Issuer,
    /// The membership bucket, once reached.
    bucket: OnceLock<kv::Store>,
    /// Held while a notification from the stream is delivered and while a resume
    /// replays: a token never names what its wallet was not offered, and a replay never
    /// races a live delivery.
    route: tokio::sync::Mutex<consume::Route>,
    resumes: resume::Queue,
    /// When each relay id's record was last looked up on demand.
    lookups: Mutex<HashMap<String, Instant>>,
    /// This backbone, for the tasks it starts from callbacks.
    me: OnceLock<std::sync::Weak<NatsBackbone>>,
    /// Set once the membership bucket was read: the other relays' keys are known, so
    /// the consumer may start (a backlog read before would be dropped as from unknown
    /// origins).
    keys_read: std::sync::atomic::AtomicBool,
    /// Set when a relay id was bound to a key for the first time, until the bindings are
    /// saved (`save_keys`).
    keys_learned: std::sync::atomic::AtomicBool,
}

/// What operators' views read, updated by the tasks.
#[derive(Default)]
struct View {
    connected: bool,
    /// False after a failed publication round, until one succeeds.
    publishing_failed: bool,
    members: Vec<Record>,
    last_sync_ms: Option<u64>,
    next_sync: u64,
    errors: VecDeque<SyncErrorRecord>,
    sync_rtt_total_ms: f64,
    sync_rtt_count: u64,
    /// The stream's identity in resume positions, once the consumer reached it.
    stream: Option<StreamKey>,
    /// The last connection failure reported (repeats are not logged again).
    last_event: Option<String>,
}

impl NatsBackbone {
    pub fn new(parts: NatsParts) -> Arc<NatsBackbone> {
        let bytes_max = parts.config.backbone.buffer_bytes_max;
        let relay_id = &parts.config.relay_id;
        let backbone = Arc::new(NatsBackbone {
            metrics: NatsMetrics::new(parts.metrics.clone()),
            outbox: outbox::Outbox::new(bytes_max),
            trust: Trust::new(
                parts.config.trusted_keys(),
                relay_id,
                *parts.identity.public(),
            ),
            issuer: Issuer::new(relay_id, parts.identity.clone()),
            identity: parts.identity,
            bucket: OnceLock::new(),
            route: tokio::sync::Mutex::new(consume::Route::default()),
            resumes: resume::Queue::new(),
            lookups: Mutex::new(HashMap::new()),
            config: parts.config,
            lifecycle: parts.lifecycle,
            hub: parts.hub,
            health: parts.health,
            link: parts.link,
            view: Mutex::new(View::default()),
            me: OnceLock::new(),
            keys_read: std::sync::atomic::AtomicBool::new(false),
            keys_learned: std::sync::atomic::AtomicBool::new(false),
        });
        let _ = backbone.me.set(Arc::downgrade(&backbone));
        backbone.restore_keys();
        backbone
    }

    /// The relay keys bound before a restart. A record lives a few intervals in the
    /// bucket: when a relay's record lapsed (its NATS server was electing a leader) just
    /// as this relay restarts, its notifications still in the stream are verified with
    /// the key known from before, not dropped as from an unknown origin.
    fn restore_keys(&self) {
        match crate::mesh::load_bindings(&self.config.data_dir) {
            Ok(saved) => {
                let restored = self.trust.restore(&saved);
                if restored > 0 {
                    tracing::info!(restored, "restored the relay keys bound before the restart");
                }
            }
            Err(error) => tracing::warn!(%error, "ignoring the saved relay keys"),
        }
    }

    /// Saves the bindings when a new one was learned since the last save.
    fn save_keys(&self) {
        if !self
            .keys_learned
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        if let Err(error) =
            crate::mesh::save_bindings(&self.config.data_dir, &self.trust.bindings())
        {
            tracing::warn!(%error, "cannot save the relay keys bound");
        }
    }

    fn config(&self) -> &BackboneConfig {
        &self.config.backbone
    }

    fn relay_id(&self) -> &str {
        &self.config.relay_id
    }

    fn interval(&self) -> Duration {
        self.config.sync_interval().max(Duration::from_secs(1))
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        // Every statement leaves the view consistent, so a poisoned lock is still usable.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refresh_buffer_gauge(&self) {
        self.metrics.buffer_bytes.set(self.outbox.bytes() as f64);
    }

    fn set_publishing(&self, ok: bool) {
        self.lock().publishing_failed = !ok;
        self.refresh_link();
    }

    fn set_connected(&self, connected: bool) {
        self.lock().connected = connected;
        self.refresh_link();
    }

    fn refresh_link(&self) {
        let up = {
            let view = self.lock();
            view.connected && !view.publishing_failed
        };
        if up != self.link.is_up() {
            tracing::warn!(up, "backbone {}", if up { "up" } else { "down" });
        }
        self.link.set_up(up);
        self.metrics.connected.set(if up { 1.0 } else { 0.0 });
    }

    fn record_error(&self, message: String) {
        let record = SyncErrorRecord {
            timestamp: self.lifecycle.unix_secs(),
            peer: "nats".into(),
            sync_type: None,
            message,
        };
        self.metrics.relay.sync_errors_other.increment(1);
        let mut view = self.lock();
        if view.errors.len() >= SYNC_ERRORS_MAX {
            view.errors.pop_front();
        }
        view.errors.push_back(record);
    }

    /// A connection event from the NATS client: failures (a refused login, a TLS
    /// handshake that failed, a server error) are logged when they change and kept in
    /// `/sync/status` errors, so a relay left degraded says why.
    fn connection_event(&self, event: async_nats::Event) {
        use async_nats::Event;
        match event {
            Event::Connected => {
                self.lock().last_event = None;
                tracing::info!("connected to a NATS server");
            }
            Event::ServerError(_) | Event::ClientError(_) | Event::Disconnected => {
                let message = format!("NATS {event}");
                let repeated = {
                    let mut view = self.lock();
                    let repeated = view.last_event.as_deref() == Some(message.as_str());
                    view.last_event = Some(message.clone());
                    repeated
                };
                if !repeated {
                    tracing::warn!(event = %message, "backbone connection");
                    self.record_error(message);
                    if !matches!(event, Event::Disconnected) {
                        self.spawn_diagnosis();
                    }
                }
            }
            other => tracing::info!(event = %other, "backbone connection"),
        }
    }

    /// Says why connecting fails (see `connect::diagnose`), once per new failure.
    fn spawn_diagnosis(&self) {
        let config = self.config.clone();
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        tokio::spawn(async move {
            if let Some(cause) = connect::diagnose(&config.backbone, &config.relay_id).await {
                tracing::warn!(%cause, "cannot connect to NATS");
                me.record_error(format!("NATS connect: {cause}"));
            }
        });
    }

    fn record_ack_latency(&self, latency: Duration) {
        self.metrics.publish_ack.record(latency.as_secs_f64());
    }

    fn record_sync(&self, rtt: Duration) {
        let now_ms = self.lifecycle.unix_ms();
        let mut view = self.lock();
        view.last_sync_ms = Some(now_ms);
        view.sync_rtt_total_ms += rtt.as_secs_f64() * 1000.0;
        view.sync_rtt_count += 1;
        drop(view);
        self.metrics
            .relay
            .sync_rtt(SyncType::StateSync)
            .record(rtt.as_secs_f64());
    }

    fn schedule_next_sync(&self, interval: Duration) {
        self.lock().next_sync = self.lifecycle.unix_secs() + interval.as_secs();
    }

    fn keys_read(&self) -> bool {
        self.keys_read.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_members(&self, members: Vec<Record>) {
        self.keys_read
            .store(true, std::sync::atomic::Ordering::Release);
        let known = members.len() as f64 + 1.0;
        self.lock().members = members;
        self.metrics.relay.mesh_known_relays.set(known);
    }

    fn own_record(&self) -> Record {
        let report = self.health.report();
        let address = self.config.advertised_addr().to_string();
        let status = report.status.to_string();
        let updated_ms = self.lifecycle.unix_ms();
        let health = if status == "healthy" {
            PeerHealth::Healthy
        } else {
            PeerHealth::Degraded
        };
        Record {
            signed: SignedRecord::sign(
                &self.identity,
                self.relay_id(),
                &address,
                health,
                updated_ms,
            ),
            relay_id: self.relay_id().to_string(),
            address,
            version: VERSION.to_string(),
            uptime: report.uptime,
            status,
            connections: report.connections,
            updated_ms,
        }
    }

    /// Binds a record's relay id to the key it proves; false when the record proves
    /// none, or the binding is refused (another key holds the id, the key serves another
    /// id, or `mesh.trusted_keys` does not hold it).
    fn learn_key(&self, record: &Record) -> bool {
        let Some(key) = record.proven_key() else {
            tracing::debug!(relay = %record.relay_id, "membership record with no valid signature ignored");
            return false;
        };
        let first = self.trust.key_of(&record.relay_id).is_none();
        match self.trust.bind(&record.relay_id, &key) {
            Ok(()) => {
                if first {
                    self.keys_learned
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                true
            }
            Err(refusal) => {
                tracing::debug!(relay = %record.relay_id, reason = refusal.as_str(), "membership record refused");
                false
            }
        }
    }

    /// The key bound to a relay id, if any.
    fn key_of(&self, relay_id: &str) -> Option<PublicKey> {
        self.trust.key_of(relay_id)
    }

    /// Checks a notification read from the stream against its origin's key, looking the
    /// origin's record up in the bucket when its key is not known yet (a relay that just
    /// joined publishes before this relay's next membership read).
    async fn verify(&self, notification: &Notification) -> Result<(), Unverified> {
        match self.trust.verify(notification) {
            Err(Unverified::UnknownOrigin) if self.may_look_up(&notification.relay_id) => {
                members::fetch_key(self, &notification.relay_id).await;
                self.trust.verify(notification)
            }
            verdict => verdict,
        }
    }

    fn may_look_up(&self, relay_id: &str) -> bool {
        let now = self.lifecycle.clock().now();
        let mut lookups = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        if lookups
            .get(relay_id)
            .is_some_and(|at| now.duration_since(*at) < LOOKUP_INTERVAL)
        {
            return false;
        }
        if lookups.len() >= LOOKUPS_MAX {
            lookups.retain(|_, at| now.duration_since(*at) < LOOKUP_INTERVAL);
            if lookups.len() >= LOOKUPS_MAX {
                return false;
            }
        }
        lookups.insert(relay_id.to_string(), now);
        true
    }

    /// Counts a notification from the stream dropped unverified (the mesh's counter).
    fn count_unverified(&self, notification: &Notification, why: Unverified) {
        self.metrics
            .relay
            .mesh_signatures_failed
            .get(why.as_str())
            .increment(1);
        let id: String = notification.message_id.chars().take(64).collect();
        tracing::info!(message_id = %id, reason = why.as_str(), "stream notification dropped unverified");
    }

    fn stream_key(&self) -> Option<StreamKey> {
        self.lock().stream
    }

    fn set_stream_key(&self, key: StreamKey) {
        self.lock().stream = Some(key);
    }
}

impl Backbone for NatsBackbone {
    /// Checks the token (signed by a relay whose key this relay learned, naming this
    /// stream) and queues the replay; the wallet stays paused until it is done.
    fn resume(&self, client: u64, token: &str) -> Result<(), TokenError> {
        resume::request(self, client, token)
    }

    /// Queues the notification for the stream; the wallet's acknowledgement waits for
    /// the stream's. Local subscribers get it back through this relay's consumer, like
    /// every other relay's.
    fn publish(&self, notification: Arc<Notification>) -> Accepted {
        let (stored, answer) = tokio::sync::oneshot::channel();
        let pending = outbox::Pending {
            message_id: notification.message_id.clone(),
            subject: connect::subject(&self.config().stream, &notification.notification_type),
            payload: notification.encode(),
            stored: Some(stored),
        };
        let accepted = match self.outbox.push(pending) {
            Ok(()) => Accepted::Pending(answer),
            Err(_) => {
                self.metrics.refused.increment(1);
                Accepted::Refused(Refused(
                    "the backbone is unreachable and its buffer is full: notification not published",
                ))
            }
        };
        self.refresh_buffer_gauge();
        accepted
    }
}

/// Runs the backbone: connects (and reconnects, forever), publishes what waits, consumes
/// the stream, keeps this relay's membership record.
pub async fn run(backbone: Arc<NatsBackbone>) {
    backbone.set_connected(false);
    let events = backbone.clone();
    let on_event = move |event| events.connection_event(event);
    let client = match connect::client(backbone.config(), backbone.relay_id(), on_event).await {
        Ok(client) => client,
        Err(error) => {
            // Only a bad credentials file gets here; validation checked it was a file.
            tracing::error!(%error, "cannot set up the NATS client; backbone stays down");
            backbone.record_error(format!("connect: {error}"));
            return;
        }
    };
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(backbone.config().publish_timeout_secs));
    let watch = watch_state(backbone.clone(), client);
    tokio::join!(
        watch,
        publish::run(backbone.clone(), js.clone()),
        consume::run(backbone.clone(), js.clone()),
        resume::run(backbone.clone(), js.clone()),
        members::run(backbone.clone(), js),
    );
}

async fn watch_state(backbone: Arc<NatsBackbone>, client: async_nats::Client) {
    loop {
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        backbone.set_connected(connected);
        tokio::time::sleep(STATE_POLL).await;
    }
}

/// The operators' views in NATS mode: the mesh's shapes, filled from the bucket.
impl NatsBackbone {
    fn health_of(&self, record: &Record, now_ms: u64) -> PeerHealth {
        let interval_ms = self.interval().as_millis() as u64;
        health_from_age(now_ms.saturating_sub(record.updated_ms), interval_ms)
    }

    /// Every relay with a live record, this one first. `connected`: its record is live
    /// (it reaches NATS); there are no direct links in this mode.
    pub fn relays(&self) -> Vec<RelayInfo> {
        let now_ms = self.lifecycle.unix_ms();
        let own = self.own_record();
        let mut relays = vec![RelayInfo {
            relay_id: own.relay_id,
            address: own.address,
            version: own.version,
            uptime: own.uptime,
            health: PeerHealth::Healthy,
            last_seen: now_ms / 1000,
            is_self: true,
            connected: self.link.is_up(),
            public_key: Some(self.identity.public().to_hex()),
        }];
        let view = self.lock();
        relays.extend(view.members.iter().map(|m| RelayInfo {
            relay_id: m.relay_id.clone(),
            address: m.address.clone(),
            version: m.version.clone(),
            uptime: m.uptime,
            health: self.health_of(m, now_ms),
            last_seen: m.updated_ms / 1000,
            is_self: false,
            connected: true,
            public_key: Some(m.signed.public_key.clone()),
        }));
        relays
    }

    /// Where a draining relay's wallets may go: other relays whose record was renewed
    /// lately (as the mesh judges a member's health), the most recently renewed first
    /// (at most the mesh's bound).
    pub fn reconnect_urls(&self) -> Vec<String> {
        let now_ms = self.lifecycle.unix_ms();
        let tls = self.config.tls.files().is_some();
        let view = self.lock();
        let mut members: Vec<&Record> = view
            .members
            .iter()
            .filter(|m| !m.address.is_empty())
            .filter(|m| self.health_of(m, now_ms) == PeerHealth::Healthy)
            .collect();
        members.sort_by_key(|m| std::cmp::Reverse(m.updated_ms));
        members
            .into_iter()
            .take(crate::mesh::RECONNECT_RELAYS_MAX)
            .map(|m| crate::mesh::public_ws_url(&m.address, tls))
            .collect()
    }

    /// `syncing` while connected to NATS, `disconnected` otherwise. `last_sync`: the last
    /// renewal of this relay's record; each peer's `last_sync`: the last renewal of its
    /// record; requests/responses: this relay's record writes and their acknowledgements.
    pub fn sync_status(&self) -> SyncStatus {
        let now_ms = self.lifecycle.unix_ms();
        let view = self.lock();
        let peers = view
            .members
            .iter()
            .map(|m| PeerSyncDetail {
                relay_id: m.relay_id.clone(),
                address: m.address.clone(),
                connected: true,
                health: self.health_of(m, now_ms),
                last_sync: m.updated_ms / 1000,
                sync_requests: 0,
                sync_responses: 0,
                avg_latency_ms: 0.0,
            })
            .collect();
        SyncStatus {
            status: if self.link.is_up() {
                "syncing"
            } else {
                "disconnected"
            },
            last_sync: view.last_sync_ms.map_or(0, |ms| ms / 1000),
            next_sync: view.next_sync.max(self.lifecycle.unix_secs()),
            sync_types: vec![SyncType::StateSync],
            errors: view.errors.iter().cloned().collect(),
            // No dialing in this mode: NATS connects the relays.
            dial_addresses: Vec::new(),
            peers,
        }
    }

    /// `sync_metrics`: known relays (live records + this one); `mesh_connections`: other
    /// relays with a live record; requests/responses: record writes and acknowledgements;
    /// cache hits/misses: redeliveries dropped and first deliveries; latency: mean record
    /// write round trip; errors: backbone errors.
    pub fn sync_metrics(&self) -> SyncMetrics {
        let exposition = self.metrics.relay.exposition();
        let sum = |name| exposition.sum(name) as u64;
        use crate::metrics::names as n;
        let view = self.lock();
        SyncMetrics {
            known_relays: view.members.len() as u64 + 1,
            mesh_connections: view.members.len() as u64,
            sync_requests: sum(n::SYNC_REQUESTS_TOTAL),
            sync_responses: sum(n::SYNC_RESPONSES_TOTAL),
            cache_hits: sum(n::DEDUP_HITS_TOTAL),
            cache_misses: sum(n::DEDUP_MISSES_TOTAL),
            avg_latency: if view.sync_rtt_count > 0 {
                view.sync_rtt_total_ms / view.sync_rtt_count as f64
            } else {
                0.0
            },
            error_count: sum(n::SYNC_ERRORS_TOTAL),
        }
    }
}
