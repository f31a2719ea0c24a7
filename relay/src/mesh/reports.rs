//! What each peer last said about itself in MetricsSync (wallets, notifications it
//! originated, its chain watcher), kept for the operators' views (the dashboard). Only
//! known numeric fields are read from the peer's payload, so a record is a few dozen
//! bytes whatever the peer sends; it lives in the member record and goes with it.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;

use super::Mesh;

/// Running totals of this relay's routing, readable without rendering the metrics
/// registry (MetricsSync and the dashboard read them every few seconds).
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Notifications seen for the first time (published here or received from a peer).
    routed: AtomicU64,
    /// Of those, the ones anti-entropy fetched.
    repairs: AtomicU64,
    /// Wallets cut as slow consumers while notifications were fanned out to them.
    slow_cuts: AtomicU64,
}

impl Counts {
    pub(super) fn count_routed(&self, repaired: bool, slow_cuts: usize) {
        self.routed.fetch_add(1, Ordering::Relaxed);
        if repaired {
            self.repairs.fetch_add(1, Ordering::Relaxed);
        }
        self.slow_cuts
            .fetch_add(slow_cuts as u64, Ordering::Relaxed);
    }
}

/// This relay's routing totals since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RoutingTotals {
    pub notifications_routed: u64,
    pub anti_entropy_repairs: u64,
    pub slow_consumer_cuts: u64,
}

pub use crate::protocol::peer_metrics::LINKS_REPORTED_MAX;
use crate::protocol::peer_metrics::PeerMetrics;

/// This relay's chain watcher, as MetricsSync reports it to peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChainFigures {
    /// Highest block scanned for every caught-up wallet.
    pub scanned_height: Option<u64>,
    /// Bitcoin Core's tip.
    pub tip_height: Option<u64>,
    /// Blocks between the tip and `scanned_height`.
    pub lag: Option<u64>,
    /// A configured chain source is unreachable or behind.
    pub degraded: bool,
}

/// A peer's last MetricsSync, as this relay received it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeerReport {
    /// Unix milliseconds when it arrived here.
    pub received_ms: u64,
    /// Wallets connected to that relay.
    pub wallets: u64,
    /// Notifications that relay originated since it started.
    pub notifications_originated: u64,
    /// Notifications that relay routed (saw first) since it started; this and the
    /// next two are absent from relays that do not report them.
    pub notifications_routed: Option<u64>,
    /// Anti-entropy repairs that relay made since it started.
    pub anti_entropy_repairs: Option<u64>,
    /// Wallets that relay cut as slow consumers during notification fan-out.
    pub slow_consumer_cuts: Option<u64>,
    /// The relays it had a live link to (at most `LINKS_REPORTED_MAX`, each id within
    /// its bound), so an operator's view can draw links between other relays.
    pub linked_peers: Vec<String>,
    pub chain: ChainFigures,
}

/// The `metrics` object of this relay's MetricsSync.
pub(super) fn metrics_payload(mesh: &Mesh) -> Value {
    let chain = mesh.parts.status.chain_figures();
    let totals = mesh.routing_totals();
    serde_json::json!({
        "active_connections": mesh.parts.status.client_connections(),
        "mesh_connections": mesh.state.link_count(),
        // Read from the id sequence: rendering the registry here would cost every
        // sync a full exposition (the simulator measured it at 30 % of CPU).
        "notifications_originated": mesh.parts.origin.notifications_originated(),
        "notifications_routed": totals.notifications_routed,
        "anti_entropy_repairs": totals.anti_entropy_repairs,
        "slow_consumer_cuts": totals.slow_consumer_cuts,
        "chain_scanned_height": chain.scanned_height,
        "chain_tip_height": chain.tip_height,
        "chain_lag": chain.lag,
        "chain_degraded": chain.degraded,
        "linked_peers": mesh.state.linked_peers(LINKS_REPORTED_MAX),
    })
}

/// A peer's MetricsSync `metrics` object (read leniently: `PeerMetrics`) as a report;
/// fields missing or of the wrong type read as zero or absent.
#[cfg(test)]
fn parse(metrics: &PeerMetrics<'_>, received_ms: u64) -> PeerReport {
    let mut report = PeerReport::default();
    update(&mut report, metrics, received_ms);
    report
}

/// Makes `report` the one `metrics` says (as `parse` would), in place: each peer
/// reports every interval, and its list of linked peers is mostly the same, so the
/// strings held are rewritten rather than freed and allocated again.
pub(super) fn update(report: &mut PeerReport, metrics: &PeerMetrics<'_>, received_ms: u64) {
    *report = PeerReport {
        received_ms,
        wallets: metrics.active_connections.unwrap_or(0),
        notifications_originated: metrics.notifications_originated.unwrap_or(0),
        notifications_routed: metrics.notifications_routed,
        anti_entropy_repairs: metrics.anti_entropy_repairs,
        slow_consumer_cuts: metrics.slow_consumer_cuts,
        linked_peers: std::mem::take(&mut report.linked_peers),
        chain: ChainFigures {
            scanned_height: metrics.chain_scanned_height,
            tip_height: metrics.chain_tip_height,
            lag: metrics.chain_lag,
            degraded: metrics.chain_degraded.unwrap_or(false),
        },
    };
    let ids = &mut report.linked_peers;
    ids.truncate(metrics.linked_peers.len());
    for (i, id) in metrics.linked_peers.iter().enumerate() {
        match ids.get_mut(i) {
            Some(held) => {
                held.clear();
                held.push_str(id);
            }
            None => ids.push(id.to_string()),
        }
    }
}

impl Mesh {
    pub fn routing_totals(&self) -> RoutingTotals {
        RoutingTotals {
            notifications_routed: self.counts.routed.load(Ordering::Relaxed),
            anti_entropy_repairs: self.counts.repairs.load(Ordering::Relaxed),
            slow_consumer_cuts: self.counts.slow_cuts.load(Ordering::Relaxed),
        }
    }

    /// Each reporting member's routed total and when its report arrived: what the
    /// dashboard samples every few seconds, without cloning whole reports (each lists
    /// up to `LINKS_REPORTED_MAX` linked peers).
    pub fn peer_routed_totals(&self) -> Vec<(String, u64, Option<u64>)> {
        let state = self.state.lock();
        state
            .members
            .iter()
            .filter_map(|(id, m)| {
                let report = m.report.as_ref()?;
                Some((id.clone(), report.received_ms, report.notifications_routed))
            })
            .collect()
    }

    /// Each member's last report, by relay id (members that sent none are left out).
    pub fn peer_reports(&self) -> Vec<(String, PeerReport)> {
        let state = self.state.lock();
        state
            .members
            .iter()
            .filter_map(|(id, m)| Some((id.clone(), m.report.clone()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::peer::{self, PeerMessage};
    use serde_json::Value;

    /// How a report was read before `PeerMetrics`: from a `serde_json::Value` tree. The
    /// reference the typed reader is checked against.
    fn parse_tree(metrics: &Value, received_ms: u64) -> PeerReport {
        let number = |key: &str| metrics.get(key).and_then(Value::as_u64);
        PeerReport {
            received_ms,
            wallets: number("active_connections").unwrap_or(0),
            notifications_originated: number("notifications_originated").unwrap_or(0),
            notifications_routed: number("notifications_routed"),
            anti_entropy_repairs: number("anti_entropy_repairs"),
            slow_consumer_cuts: number("slow_consumer_cuts"),
            linked_peers: metrics
                .get("linked_peers")
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .filter_map(Value::as_str)
                        .filter(|id| crate::protocol::peer::relay_id_fits(id))
                        .take(LINKS_REPORTED_MAX)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            chain: ChainFigures {
                scanned_height: number("chain_scanned_height"),
                tip_height: number("chain_tip_height"),
                lag: number("chain_lag"),
                degraded: metrics
                    .get("chain_degraded")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        }
    }

    /// The report a MetricsSync frame whose `metrics` is the JSON text `metrics` gives,
    /// read as a relay reads it (`None`: no report, as for `null`).
    fn read(metrics: &str) -> Option<PeerReport> {
        let frame = format!(
            r#"{{"type":"sync","sync_type":"MetricsSync","relay_id":"a","message_id":"m","payload":{{"metrics":{metrics}}}}}"#
        );
        let Ok(PeerMessage::Sync { payload, .. }) = peer::parse(frame.as_bytes()) else {
            panic!("refused: {metrics}")
        };
        payload.metrics.as_ref().map(|m| parse(m, 5))
    }

    #[test]
    fn a_report_reads_known_numbers_and_ignores_the_rest() {
        let report = read(
            r#"{"active_connections": 7, "notifications_originated": 42,
                "chain_tip_height": 100, "chain_lag": "lots", "chain_degraded": true,
                "junk": [1, 2, 3], "linked_peers": ["relay-2", 3, "", "relay-3"]}"#,
        )
        .unwrap();
        assert_eq!(report.received_ms, 5);
        assert_eq!(report.wallets, 7);
        assert_eq!(report.notifications_originated, 42);
        assert_eq!(report.anti_entropy_repairs, None);
        assert_eq!(report.chain.tip_height, Some(100));
        assert_eq!(report.chain.lag, None);
        assert!(report.chain.degraded);
        assert_eq!(report.linked_peers, vec!["relay-2", "relay-3"]);
    }

    /// A report updated in place over an earlier one is the report read afresh, whether
    /// the new list of linked peers is longer, shorter or empty; ids are borrowed from
    /// the frame unless escaped.
    #[test]
    fn a_report_updated_in_place_is_the_fresh_one() {
        let frames = [
            r#"{"active_connections": 1, "linked_peers": ["relay-1", "relay-2"]}"#,
            r#"{"chain_degraded": true, "linked_peers": ["relay-3", "relay-4", "relay-\u0035"]}"#,
            r#"{"notifications_routed": 4, "linked_peers": ["relay-6"]}"#,
            r#"{"linked_peers": 7}"#,
            r#"{"linked_peers": ["relay-7", "relay-8"]}"#,
        ];
        let mut report = PeerReport::default();
        for (i, metrics) in frames.into_iter().enumerate() {
            let frame = format!(
                r#"{{"type":"sync","sync_type":"MetricsSync","relay_id":"a","message_id":"m","payload":{{"metrics":{metrics}}}}}"#
            );
            let Ok(PeerMessage::Sync { payload, .. }) = peer::parse(frame.as_bytes()) else {
                panic!("{metrics}")
            };
            let metrics = payload.metrics.unwrap();
            update(&mut report, &metrics, i as u64);
            assert_eq!(report, parse(&metrics, i as u64), "{i}");
            for id in &metrics.linked_peers {
                let borrowed = matches!(id, std::borrow::Cow::Borrowed(_));
                assert_eq!(borrowed, id != "relay-5", "{id}");
            }
        }
        assert_eq!(report.linked_peers, ["relay-7", "relay-8"]);
    }

    /// The typed reader answers as the `Value` tree did on hostile shapes: wrong types,
    /// negative, fractional and oversized numbers, repeated fields (the last wins),
    /// nested junk, a `metrics` that is not an object, `linked_peers` of every shape,
    /// over its bound in entries and in id length, escaped ids.
    #[test]
    fn the_typed_reader_reads_as_the_value_tree_did() {
        let long_id = "r".repeat(crate::protocol::peer::RELAY_ID_BYTES_MAX + 1);
        let many: Vec<String> = (0..LINKS_REPORTED_MAX + 10)
            .map(|i| format!("\"relay-{i}\""))
            .collect();
        let shapes = [
            "null".to_string(),
            "7".into(),
            "-1".into(),
            r#""text""#.into(),
            "[1, {\"active_connections\": 3}]".into(),
            "true".into(),
            "{}".into(),
            r#"{"active_connections": -3, "notifications_originated": 1.5,
                "notifications_routed": 18446744073709551615, "anti_entropy_repairs": 18446744073709551616,
                "slow_consumer_cuts": 1e3, "chain_scanned_height": null,
                "chain_tip_height": [4], "chain_lag": {"x": 1}, "chain_degraded": "true"}"#
                .into(),
            r#"{"active_connections": 3, "active_connections": "x", "chain_lag": "x",
                "chain_lag": 9, "chain_degraded": true, "chain_degraded": 1}"#
                .into(),
            r#"{"linked_peers": ["a", "a", ["b"], {"c": "d"}, null, true, 2, "\u0072elay-\n"]}"#
                .into(),
            format!(r#"{{"linked_peers": ["{long_id}", "ok"]}}"#),
            format!(r#"{{"linked_peers": [{}]}}"#, many.join(",")),
            r#"{"linked_peers": ["x"], "linked_peers": "y"}"#.into(),
            r#"{"linked_peers": {"relay-1": true}}"#.into(),
            r#"{"linked_peers": "relay-1"}"#.into(),
            r#"{"junk": {"deep": [[[{"active_connections": 1}]]]}, "active_connections": 2}"#
                .into(),
        ];
        for shape in shapes {
            let tree: Value = serde_json::from_str(&shape).unwrap();
            let expected = (!tree.is_null()).then(|| parse_tree(&tree, 5));
            assert_eq!(read(&shape), expected, "{shape}");
        }
    }
}
