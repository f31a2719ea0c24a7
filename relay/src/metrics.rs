//! The relay's metrics: one registry (the `metrics` facade over a Prometheus recorder)
//! per relay, behind both `GET /metrics/prometheus` and the JSON `GET /metrics`.
//!
//! Each relay owns its recorder instead of installing a global one, so several relays in
//! one process (tests, the simulator) keep separate figures. Handles are registered once
//! at start-up for every label value the relay uses, so hot paths only touch atomics.

pub mod names;
mod striped;

pub use striped::{Slot, StripedBy, StripedCounter};

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use names::*;

use crate::conn::Delivery;
use crate::conn::tls::HandshakeFailure;
use crate::protocol::peer::SyncType;
use crate::protocol::{InboundKind, LabelValue, OutboundKind};

/// Why a peer handshake was refused: the key is not in `mesh.trusted_keys`; the relay id
/// is bound to another key; the key to another relay id; a signature or the mesh token's MAC did not verify; a
/// malformed key, nonce or message; no answer in time; `mesh::BINDINGS_MAX` ids bound.
pub const HANDSHAKE_REFUSALS: &[&str] = &[
    "untrusted_key",
    "key_mismatch",
    "key_in_use",
    "bad_signature",
    "bad_token",
    "malformed",
    "timeout",
    "full",
];
/// Why a peer's notification was dropped unverified: a bad or missing signature; an id
/// that is not its origin's; an origin whose key is not known from verified membership.
pub const SIGNATURE_FAILURES: &[&str] = &["bad_signature", "foreign_id", "unknown_origin"];
/// Why a gossiped membership record was refused.
pub const RECORD_REJECTIONS: &[&str] = &[
    "bad_signature",
    "malformed",
    "untrusted_key",
    "key_mismatch",
    "key_in_use",
    "future_timestamp",
    "full",
];

/// Counters for a closed set of label values; unknown values count under `other`.
pub struct Labeled {
    entries: Vec<(&'static str, Counter)>,
}

impl Labeled {
    fn new(name: &'static str, label: &'static str, values: &[&'static str]) -> Self {
        let mut entries: Vec<(&'static str, Counter)> = values
            .iter()
            .map(|v| (*v, metrics::counter!(name, label => *v)))
            .collect();
        entries.push(("other", metrics::counter!(name, label => "other")));
        Labeled { entries }
    }

    pub fn get(&self, value: &str) -> &Counter {
        self.entries
            .iter()
            .find(|(v, _)| *v == value)
            .or_else(|| self.entries.last())
            .map(|(_, c)| c)
            .expect("`other` is always present")
    }
}

/// One counter per value of a label enum: the label set is the enum, so no value can
/// be missing from it.
pub struct LabeledBy<E: LabelValue> {
    counters: Vec<(E, Counter)>,
}

impl<E: LabelValue> LabeledBy<E> {
    fn new(name: &'static str, label: &'static str) -> Self {
        let counters = E::ALL
            .iter()
            .map(|v| (*v, metrics::counter!(name, label => v.as_str())))
            .collect();
        LabeledBy { counters }
    }

    pub fn get(&self, value: E) -> &Counter {
        &self
            .counters
            .iter()
            .find(|(v, _)| *v == value)
            .expect("every value of the enum is registered")
            .1
    }
}

const CLOSE_CODES: &[&str] = &[
    "1000", "1001", "1002", "1003", "1006", "1007", "1008", "1009", "1011", "1013",
];

pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    pub ws_connections: Gauge,
    pub ws_accepted: Counter,
    pub ws_refused: Labeled,
    pub ws_handshakes: Labeled,
    /// Counted for every message: striped per thread (see `striped`), in the registry
    /// at every rendering.
    pub ws_received: StripedBy<InboundKind>,
    pub ws_sent: StripedBy<OutboundKind>,
    pub ws_received_bytes: StripedCounter,
    pub ws_sent_bytes: StripedCounter,
    pub ws_closes: Labeled,
    pub ws_slow_consumers: Counter,
    pub ws_errors_sent: Counter,
    pub ws_rate_limited: Counter,
    /// By listener (`ws`, `http`).
    pub tls_handshakes: Labeled,
    /// By reason (`HandshakeFailure`).
    pub tls_handshake_failures: Labeled,
    /// By result (`ok`, `error`).
    pub tls_reloads: Labeled,
    /// 1 while the last reload attempt failed.
    pub tls_reload_failing: Gauge,
    pub notifications_published: Counter,
    pub notifications_delivered: Counter,
    pub notifications_forwarded: Counter,
    pub dedup_hits: Counter,
    pub dedup_misses: Counter,
    pub anti_entropy_repairs: Counter,
    pub resident_memory: Gauge,
    pub cpu_seconds: Counter,
    pub chain_scanned_height: Gauge,
    pub chain_tip_height: Gauge,
    pub chain_payments_detected: Counter,
    pub open_fds: Gauge,
    pub uptime: Gauge,
    pub http_connections: Gauge,
    pub mesh_known_relays: Gauge,
    pub mesh_connections: Gauge,
    /// Addresses in the dial table (bounded: pruned to what is still known).
    pub mesh_dial_addresses: Gauge,
    /// Peer records and messages dropped for naming something over its length bound.
    pub mesh_rejected: Counter,
    /// By health: healthy, degraded, unreachable, left.
    pub mesh_peers: [Gauge; 4],
    /// Configured peers unreachable now (`mesh::CONFIGURED_PEER_FAILED_DIALS` failed
    /// dials in a row, no live link, no `leaving` from them).
    pub mesh_configured_peers_unreachable: Gauge,
    /// Times this relay entered a drain, by kind: `shutdown`, `lame_duck`.
    pub drains: [Counter; 2],
    /// Peer handshakes refused, by [`HANDSHAKE_REFUSALS`] reason.
    pub mesh_handshakes_refused: Labeled,
    /// Notifications from peers dropped before delivery, by [`SIGNATURE_FAILURES`] reason.
    pub mesh_signatures_failed: Labeled,
    /// Membership records refused, by [`RECORD_REJECTIONS`] reason.
    pub mesh_records_rejected: Labeled,
    pub sync_requests: LabeledBy<SyncType>,
    pub sync_received: LabeledBy<SyncType>,
    pub sync_responses: LabeledBy<SyncType>,
    /// By sync type; malformed peer messages (no sync type) count in `sync_errors_other`.
    pub sync_errors: LabeledBy<SyncType>,
    pub sync_errors_other: Counter,
    sync_rtt: Vec<(SyncType, Histogram)>,
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .expect("static bucket list is non-empty")
            .build_recorder();
        let handle = recorder.handle();
        let recorder = Arc::new(recorder);
        metrics::with_local_recorder(&*recorder, || Self::register(recorder.clone(), handle))
    }

    fn register(recorder: Arc<PrometheusRecorder>, handle: PrometheusHandle) -> Self {
        describe();
        Metrics {
            recorder,
            handle,
            ws_connections: metrics::gauge!(WS_CONNECTIONS),
            ws_accepted: metrics::counter!(WS_CONNECTIONS_ACCEPTED_TOTAL),
            ws_refused: Labeled::new(
                WS_CONNECTIONS_REFUSED_TOTAL,
                "reason",
                &[
                    "limit",
                    "draining",
                    "bad_upgrade",
                    "accept_error",
                    "pending_upgrades",
                    "per_address",
                ],
            ),
            ws_handshakes: Labeled::new(
                WS_HANDSHAKES_TOTAL,
                "outcome",
                &["accepted", "rejected", "timeout", "protocol_error"],
            ),
            ws_received: StripedBy::new(WS_MESSAGES_RECEIVED_TOTAL, "type"),
            ws_sent: StripedBy::new(WS_MESSAGES_SENT_TOTAL, "type"),
            ws_received_bytes: StripedCounter::new(WS_RECEIVED_BYTES_TOTAL),
            ws_sent_bytes: StripedCounter::new(WS_SENT_BYTES_TOTAL),
            ws_closes: Labeled::new(WS_CLOSES_TOTAL, "code", CLOSE_CODES),
            ws_slow_consumers: metrics::counter!(WS_SLOW_CONSUMER_DISCONNECTS_TOTAL),
            ws_errors_sent: metrics::counter!(WS_ERRORS_SENT_TOTAL),
            ws_rate_limited: metrics::counter!(WS_RATE_LIMITED_TOTAL),
            tls_handshakes: Labeled::new(TLS_HANDSHAKES_TOTAL, "listener", &["ws", "http"]),
            tls_handshake_failures: Labeled::new(
                TLS_HANDSHAKE_FAILURES_TOTAL,
                "reason",
                &HandshakeFailure::ALL.map(HandshakeFailure::as_str),
            ),
            tls_reloads: Labeled::new(TLS_RELOADS_TOTAL, "result", &["ok", "error"]),
            tls_reload_failing: metrics::gauge!(TLS_RELOAD_FAILING),
            notifications_published: metrics::counter!(NOTIFICATIONS_PUBLISHED_TOTAL),
            notifications_delivered: metrics::counter!(NOTIFICATIONS_DELIVERED_TOTAL),
            notifications_forwarded: metrics::counter!(NOTIFICATIONS_FORWARDED_TOTAL),
            dedup_hits: metrics::counter!(DEDUP_HITS_TOTAL),
            dedup_misses: metrics::counter!(DEDUP_MISSES_TOTAL),
            anti_entropy_repairs: metrics::counter!(ANTI_ENTROPY_REPAIRS_TOTAL),
            resident_memory: metrics::gauge!(PROCESS_RESIDENT_MEMORY_BYTES),
            cpu_seconds: metrics::counter!(PROCESS_CPU_SECONDS_TOTAL),
            chain_scanned_height: metrics::gauge!(CHAIN_SCANNED_HEIGHT),
            chain_tip_height: metrics::gauge!(CHAIN_TIP_HEIGHT),
            chain_payments_detected: metrics::counter!(CHAIN_PAYMENTS_DETECTED_TOTAL),
            open_fds: metrics::gauge!(PROCESS_OPEN_FDS),
            uptime: metrics::gauge!(UPTIME_SECONDS),
            http_connections: metrics::gauge!(HTTP_CONNECTIONS),
            mesh_known_relays: metrics::gauge!(MESH_KNOWN_RELAYS),
            mesh_connections: metrics::gauge!(MESH_CONNECTIONS),
            mesh_dial_addresses: metrics::gauge!(MESH_DIAL_ADDRESSES),
            mesh_rejected: metrics::counter!(MESH_REJECTED_TOTAL),
            mesh_handshakes_refused: Labeled::new(
                MESH_HANDSHAKES_REFUSED_TOTAL,
                "reason",
                HANDSHAKE_REFUSALS,
            ),
            mesh_signatures_failed: Labeled::new(
                MESH_SIGNATURES_FAILED_TOTAL,
                "reason",
                SIGNATURE_FAILURES,
            ),
            mesh_records_rejected: Labeled::new(
                MESH_RECORDS_REJECTED_TOTAL,
                "reason",
                RECORD_REJECTIONS,
            ),
            mesh_peers: ["healthy", "degraded", "unreachable", "left"]
                .map(|h| metrics::gauge!(MESH_PEERS, "health" => h)),
            mesh_configured_peers_unreachable: metrics::gauge!(MESH_CONFIGURED_PEERS_UNREACHABLE),
            drains: ["shutdown", "lame_duck"].map(|k| metrics::counter!(DRAINS_TOTAL, "kind" => k)),
            sync_requests: LabeledBy::new(SYNC_REQUESTS_TOTAL, "sync_type"),
            sync_received: LabeledBy::new(SYNC_REQUESTS_RECEIVED_TOTAL, "sync_type"),
            sync_responses: LabeledBy::new(SYNC_RESPONSES_TOTAL, "sync_type"),
            sync_errors: LabeledBy::new(SYNC_ERRORS_TOTAL, "sync_type"),
            sync_errors_other: metrics::counter!(SYNC_ERRORS_TOTAL, "sync_type" => "other"),
            sync_rtt: SyncType::ALL
                .iter()
                .map(|t| {
                    let histogram =
                        metrics::histogram!(SYNC_ROUND_TRIP_SECONDS, "sync_type" => t.as_str());
                    (*t, histogram)
                })
                .collect(),
        }
    }

    /// Runs `register` with this relay's recorder as the current one, for handles that
    /// other modules (HTTP, mesh, chain) create with the `metrics` macros.
    pub fn scoped<T>(&self, register: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.recorder, register)
    }

    /// The round-trip histogram of one sync type.
    pub fn sync_rtt(&self, sync_type: SyncType) -> &Histogram {
        &self
            .sync_rtt
            .iter()
            .find(|(t, _)| *t == sync_type)
            .expect("every sync type is registered")
            .1
    }

    /// Counts what a delivery of `kind` frames of `frame_bytes` each did.
    pub fn count_delivery(&self, delivery: Delivery, kind: OutboundKind, frame_bytes: usize) {
        self.ws_sent.get(kind).increment(delivery.delivered as u64);
        self.ws_sent_bytes
            .increment((delivery.delivered * frame_bytes) as u64);
        if kind == OutboundKind::Notification {
            self.notifications_delivered
                .increment(delivery.delivered as u64);
        }
        self.ws_slow_consumers
            .increment(delivery.slow_disconnects as u64);
    }

    /// Counts one server-side TLS handshake on `listener` (`ws` or `http`).
    pub fn count_tls_handshake(&self, listener: &str, outcome: Result<(), HandshakeFailure>) {
        match outcome {
            Ok(()) => self.tls_handshakes.get(listener).increment(1),
            Err(failure) => self
                .tls_handshake_failures
                .get(failure.as_str())
                .increment(1),
        }
    }

    /// Counts one message queued to one client.
    pub fn count_sent(&self, kind: OutboundKind, frame_bytes: usize) {
        self.ws_sent.get(kind).increment(1);
        self.ws_sent_bytes.increment(frame_bytes as u64);
    }

    /// The Prometheus text exposition of every metric (every view reads this).
    pub fn render(&self) -> String {
        self.ws_received.flush();
        self.ws_sent.flush();
        self.ws_received_bytes.flush();
        self.ws_sent_bytes.flush();
        self.handle.render()
    }

    /// Sums every series of `name` in the exposition (all label values), so the JSON view
    /// is computed from exactly the values Prometheus sees. Renders the whole registry:
    /// to read several figures, take one `exposition` and sum from it.
    pub fn sum(&self, name: &str) -> f64 {
        self.exposition().sum(name)
    }

    /// One rendering of the registry, to read several figures from.
    pub fn exposition(&self) -> Exposition {
        Exposition(self.render())
    }

    /// A histogram handle registered in this relay's registry.
    pub fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Histogram {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, *v))
            .collect();
        self.scoped(|| metrics::histogram!(name, labels))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A rendered exposition.
pub struct Exposition(String);

impl Exposition {
    /// Sums every series of `name` (all label values).
    pub fn sum(&self, name: &str) -> f64 {
        sum_series(&self.0, name)
    }
}

/// Sums the values of every sample line of metric `name` in a text exposition.
pub fn sum_series(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = if let Some(labelled) = rest.strip_prefix('{') {
                labelled.rsplit_once('}')?.1
            } else if rest.starts_with(' ') {
                rest
            } else {
                return None;
            };
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP API requests, by route and status code."
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP API request duration, by route."
    );
    metrics::describe_gauge!(
        CHAIN_SCANNED_HEIGHT,
        "Highest block scanned by the chain watcher."
    );
    metrics::describe_gauge!(
        CHAIN_TIP_HEIGHT,
        "Bitcoin Core's tip as the chain watcher last saw it."
    );
    metrics::describe_counter!(
        CHAIN_PAYMENTS_DETECTED_TOTAL,
        "Silent payments detected and confirmed."
    );
    metrics::describe_gauge!(WS_CONNECTIONS, "Open WebSocket connections.");
    metrics::describe_counter!(
        TLS_HANDSHAKES_TOTAL,
        "TLS handshakes completed, by listener (ws, http)."
    );
    metrics::describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "TLS handshakes failed, by reason."
    );
    metrics::describe_gauge!(
        TLS_RELOAD_FAILING,
        "1 while the certificate files could not be loaded at the last reload (the previous certificate is served)."
    );
    metrics::describe_counter!(
        TLS_RELOADS_TOTAL,
        "Certificate reloads, by result (on error the previous certificate stays)."
    );
    metrics::describe_counter!(
        WS_CONNECTIONS_ACCEPTED_TOTAL,
        "WebSocket upgrades accepted."
    );
    metrics::describe_counter!(
        WS_CONNECTIONS_REFUSED_TOTAL,
        "WebSocket connections refused, by reason."
    );
    metrics::describe_counter!(WS_HANDSHAKES_TOTAL, "Protocol handshakes, by outcome.");
    metrics::describe_counter!(
        WS_MESSAGES_RECEIVED_TOTAL,
        "Messages received from clients, by type."
    );
    metrics::describe_counter!(
        WS_MESSAGES_SENT_TOTAL,
        "Messages queued to clients, by type."
    );
    metrics::describe_counter!(
        WS_RECEIVED_BYTES_TOTAL,
        Unit::Bytes,
        "Message bytes received."
    );
    metrics::describe_counter!(WS_SENT_BYTES_TOTAL, Unit::Bytes, "Message bytes sent.");
    metrics::describe_counter!(
        WS_CLOSES_TOTAL,
        "WebSocket connections closed, by close code."
    );
    metrics::describe_counter!(
        WS_SLOW_CONSUMER_DISCONNECTS_TOTAL,
        "Clients disconnected because their outbound queue filled."
    );
    metrics::describe_counter!(WS_ERRORS_SENT_TOTAL, "`error` messages sent to clients.");
    metrics::describe_counter!(
        WS_RATE_LIMITED_TOTAL,
        "Wallet messages refused as over the connection's message rate (`rate_limited`)."
    );
    metrics::describe_counter!(
        NOTIFICATIONS_PUBLISHED_TOTAL,
        "Notifications published by local clients."
    );
    metrics::describe_counter!(
        NOTIFICATIONS_DELIVERED_TOTAL,
        "Notification deliveries to local clients."
    );
    metrics::describe_counter!(
        NOTIFICATIONS_FORWARDED_TOTAL,
        "Notifications forwarded to peer relays."
    );
    metrics::describe_counter!(DEDUP_HITS_TOTAL, "Notifications dropped as already seen.");
    metrics::describe_counter!(DEDUP_MISSES_TOTAL, "Notifications seen for the first time.");
    metrics::describe_counter!(
        ANTI_ENTROPY_REPAIRS_TOTAL,
        "Notifications recovered by anti-entropy."
    );
    metrics::describe_gauge!(
        PROCESS_RESIDENT_MEMORY_BYTES,
        Unit::Bytes,
        "Resident memory of the relay process."
    );
    metrics::describe_counter!(
        PROCESS_CPU_SECONDS_TOTAL,
        Unit::Seconds,
        "CPU time used by the relay process."
    );
    metrics::describe_gauge!(
        PROCESS_OPEN_FDS,
        "Open file descriptors of the relay process."
    );
    metrics::describe_gauge!(
        UPTIME_SECONDS,
        Unit::Seconds,
        "Seconds since the relay started."
    );
    metrics::describe_gauge!(HTTP_CONNECTIONS, "Open HTTP API connections.");
    metrics::describe_gauge!(
        MESH_KNOWN_RELAYS,
        "Relays known in the mesh, this one included."
    );
    metrics::describe_gauge!(MESH_CONNECTIONS, "Live links to peer relays.");
    metrics::describe_gauge!(
        MESH_DIAL_ADDRESSES,
        "Addresses in the dial table (configured peers and known relays' addresses)."
    );
    metrics::describe_counter!(
        MESH_REJECTED_TOTAL,
        "Gossip records, notifications, fetch ids and sync fields from peers dropped for a name over its length bound."
    );
    metrics::describe_gauge!(MESH_PEERS, "Known peer relays, by health.");
    metrics::describe_gauge!(
        MESH_CONFIGURED_PEERS_UNREACHABLE,
        "Configured peers unreachable now (a peer that said it was leaving is not counted)."
    );
    metrics::describe_counter!(
        DRAINS_TOTAL,
        "Drains this relay entered, by kind (shutdown, lame_duck)."
    );
    metrics::describe_counter!(
        MESH_HANDSHAKES_REFUSED_TOTAL,
        "Peer handshakes refused (either side), by reason."
    );
    metrics::describe_counter!(
        MESH_SIGNATURES_FAILED_TOTAL,
        "Notifications from peers dropped unverified, before delivery, by reason."
    );
    metrics::describe_counter!(
        MESH_RECORDS_REJECTED_TOTAL,
        "Gossiped membership records refused, by reason."
    );
    metrics::describe_counter!(
        SYNC_REQUESTS_TOTAL,
        "Sync requests sent to peers, by sync type."
    );
    metrics::describe_counter!(
        SYNC_REQUESTS_RECEIVED_TOTAL,
        "Sync requests received from peers, by sync type."
    );
    metrics::describe_counter!(
        SYNC_RESPONSES_TOTAL,
        "Sync responses received from peers, by sync type."
    );
    metrics::describe_counter!(
        SYNC_ERRORS_TOTAL,
        "Sync requests unanswered in time or malformed peer messages."
    );
    metrics::describe_histogram!(
        SYNC_ROUND_TRIP_SECONDS,
        Unit::Seconds,
        "Sync request round trip."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The label sets are the enums: every message kind shows in the exposition from the
    /// start, `watch` included (it once fell under `other`).
    #[test]
    fn every_message_kind_has_its_own_series() {
        let m = Metrics::new();
        m.ws_received.get(InboundKind::Watch).increment(2);
        let text = m.render();
        for kind in InboundKind::ALL {
            let series = format!(
                "sdk_relay_ws_messages_received_total{{type=\"{}\"}}",
                kind.as_str()
            );
            assert!(text.contains(&series), "missing {series}");
        }
        for kind in OutboundKind::ALL {
            let series = format!(
                "sdk_relay_ws_messages_sent_total{{type=\"{}\"}}",
                kind.as_str()
            );
            assert!(text.contains(&series), "missing {series}");
        }
        assert!(text.contains(r#"sdk_relay_ws_messages_received_total{type="watch"} 2"#));
        assert!(!text.contains(r#"sdk_relay_ws_messages_received_total{type="other"}"#));
    }

    #[test]
    fn each_relay_has_its_own_registry_and_the_sum_reads_it_back() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.ws_sent.get(OutboundKind::Pong).increment(3);
        a.ws_sent.get(OutboundKind::Error).increment(2);
        a.ws_refused.get("nonsense").increment(1);
        b.ws_sent.get(OutboundKind::Pong).increment(7);
        assert_eq!(a.sum(WS_MESSAGES_SENT_TOTAL), 5.0);
        assert_eq!(b.sum(WS_MESSAGES_SENT_TOTAL), 7.0);
        a.ws_connections.set(4.0);
        assert_eq!(a.sum(WS_CONNECTIONS), 4.0);
        assert!(
            a.render()
                .contains("sdk_relay_ws_connections_refused_total{reason=\"other\"} 1")
        );
    }
}
