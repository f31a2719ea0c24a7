//! One snapshot of the mesh as the dashboard draws it, built from the node's views.

use std::collections::BTreeMap;

use serde::Serialize;

use super::history::{History, WINDOW};
use crate::mesh::{ChainFigures, PeerReport, RelayInfo};
use crate::node::Node;
use crate::protocol::peer::PeerHealth;

#[derive(Serialize)]
pub(super) struct Snapshot {
    /// The relay answering.
    relay_id: String,
    /// Unix milliseconds when this snapshot was built.
    generated_at_ms: u64,
    /// This relay's own health: healthy, degraded or unhealthy.
    status: &'static str,
    /// Peers report every `sync.interval` seconds: their figures are that old at most.
    sync_interval_secs: u64,
    relays: Vec<RelayView>,
    links: Vec<LinkView>,
    alerts: Vec<Alert>,
    chart: Chart,
}

#[derive(Serialize)]
struct RelayView {
    relay_id: String,
    address: String,
    version: String,
    uptime: u64,
    health: PeerHealth,
    #[serde(rename = "self")]
    is_self: bool,
    /// A live link to it from this relay (always true for this relay).
    connected: bool,
    /// Unix seconds when this relay last heard from it.
    last_seen: u64,
    /// Seconds since its last MetricsSync arrived (0 for this relay; absent before one).
    report_age_secs: Option<u64>,
    wallets: Option<u64>,
    notifications_routed: Option<u64>,
    /// The latest rate on the chart.
    notifications_per_sec: Option<f64>,
    /// Mean sync round trip from this relay to it, in milliseconds.
    sync_rtt_ms: Option<f64>,
    anti_entropy_repairs: Option<u64>,
    slow_consumer_cuts: Option<u64>,
    chain: Option<ChainFigures>,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct LinkView {
    a: String,
    b: String,
    /// False when the link is only known from an unreachable relay's last report.
    live: bool,
}

#[derive(Serialize)]
struct Alert {
    /// `critical` or `warning`.
    severity: &'static str,
    relay_id: String,
    message: String,
}

#[derive(Serialize)]
struct Chart {
    window_secs: u64,
    series: Vec<Series>,
}

#[derive(Serialize)]
struct Series {
    relay_id: String,
    /// `[unix ms, notifications per second]`, oldest first.
    points: Vec<(u64, f64)>,
}

pub(super) fn build(node: &Node, history: &History) -> Snapshot {
    let now_ms = node.lifecycle.unix_ms();
    let relays = node.relays();
    let reports: BTreeMap<String, PeerReport> = node.mesh.peer_reports().into_iter().collect();
    let rtts: BTreeMap<String, f64> = node
        .sync_status()
        .peers
        .into_iter()
        .filter(|p| p.sync_responses > 0)
        .map(|p| (p.relay_id, p.avg_latency_ms))
        .collect();
    let views: Vec<RelayView> = relays
        .iter()
        .map(|relay| {
            let rate = history.rates(&relay.relay_id).last().map(|(_, rate)| *rate);
            if relay.is_self {
                own_view(node, relay, rate)
            } else {
                peer_view(
                    relay,
                    reports.get(&relay.relay_id),
                    rtts.get(&relay.relay_id).copied(),
                    rate,
                    now_ms,
                )
            }
        })
        .collect();
    let series = relays
        .iter()
        .map(|r| Series {
            relay_id: r.relay_id.clone(),
            points: history.rates(&r.relay_id),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    Snapshot {
        relay_id: node.relay_id().to_string(),
        generated_at_ms: now_ms,
        status: node.health_status().as_str(),
        sync_interval_secs: node.config.sync.interval,
        links: links(node.relay_id(), &relays, &reports),
        alerts: alerts(node, &views),
        relays: views,
        chart: Chart {
            window_secs: WINDOW.as_secs(),
            series,
        },
    }
}

fn own_view(node: &Node, relay: &RelayInfo, rate: Option<f64>) -> RelayView {
    let totals = node.mesh.routing_totals();
    let chain = node.chain.status();
    RelayView {
        relay_id: relay.relay_id.clone(),
        address: relay.address.clone(),
        version: relay.version.clone(),
        uptime: relay.uptime,
        health: relay.health,
        is_self: true,
        connected: true,
        last_seen: relay.last_seen,
        report_age_secs: Some(0),
        wallets: Some(node.client_connections() as u64),
        notifications_routed: Some(totals.notifications_routed),
        notifications_per_sec: rate,
        sync_rtt_ms: None,
        anti_entropy_repairs: Some(totals.anti_entropy_repairs),
        slow_consumer_cuts: Some(totals.slow_consumer_cuts),
        chain: chain.enabled.then(|| ChainFigures {
            scanned_height: chain.scanned_height.map(u64::from),
            tip_height: chain.core_tip.or(chain.blindbit_height).map(u64::from),
            lag: chain.lag.map(u64::from),
            degraded: chain.degraded.is_some(),
        }),
    }
}

fn peer_view(
    relay: &RelayInfo,
    report: Option<&PeerReport>,
    sync_rtt_ms: Option<f64>,
    rate: Option<f64>,
    now_ms: u64,
) -> RelayView {
    let has_chain = |c: &ChainFigures| c.tip_height.is_some() || c.degraded;
    RelayView {
        relay_id: relay.relay_id.clone(),
        address: relay.address.clone(),
        version: relay.version.clone(),
        uptime: relay.uptime,
        health: relay.health,
        is_self: false,
        connected: relay.connected,
        last_seen: relay.last_seen,
        report_age_secs: report.map(|r| now_ms.saturating_sub(r.received_ms) / 1000),
        wallets: report.map(|r| r.wallets),
        notifications_routed: report.and_then(|r| r.notifications_routed),
        notifications_per_sec: rate,
        sync_rtt_ms,
        anti_entropy_repairs: report.and_then(|r| r.anti_entropy_repairs),
        slow_consumer_cuts: report.and_then(|r| r.slow_consumer_cuts),
        chain: report.map(|r| r.chain.clone()).filter(|c| has_chain(c)),
    }
}

/// This relay's live links, and the links each peer last reported between known relays
/// (stale when that peer is unreachable).
fn links(own: &str, relays: &[RelayInfo], reports: &BTreeMap<String, PeerReport>) -> Vec<LinkView> {
    let health: BTreeMap<&str, PeerHealth> = relays
        .iter()
        .map(|r| (r.relay_id.as_str(), r.health))
        .collect();
    let pair = |x: &str, y: &str| {
        if x < y {
            (x.to_string(), y.to_string())
        } else {
            (y.to_string(), x.to_string())
        }
    };
    let mut found: BTreeMap<(String, String), bool> = BTreeMap::new();
    for relay in relays.iter().filter(|r| !r.is_self && r.connected) {
        found.insert(pair(own, &relay.relay_id), true);
    }
    for (reporter, report) in reports {
        let live = health.get(reporter.as_str()) != Some(&PeerHealth::Unreachable);
        for other in &report.linked_peers {
            if other == reporter || !health.contains_key(other.as_str()) {
                continue;
            }
            // This relay knows its own links first-hand: a peer's report of a link to
            // it is not more recent than that.
            if other == own && !found.contains_key(&pair(own, reporter)) {
                continue;
            }
            let entry = found.entry(pair(reporter, other)).or_insert(false);
            *entry |= live;
        }
    }
    found
        .into_iter()
        .map(|((a, b), live)| LinkView { a, b, live })
        .collect()
}

/// What an operator should look at: unreachable or degraded peers, degraded chain
/// sources, a relay draining or cut off from every peer.
fn alerts(node: &Node, views: &[RelayView]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let own = node.relay_id();
    if node.is_draining() {
        alerts.push(alert("critical", own, "draining: shutting down".into()));
    }
    let peers: Vec<&RelayView> = views.iter().filter(|v| !v.is_self).collect();
    if !peers.is_empty() && !peers.iter().any(|p| p.connected) {
        alerts.push(alert("critical", own, "no live link to any peer".into()));
    }
    if let Some(why) = node.chain.status().degraded {
        alerts.push(alert(
            "warning",
            own,
            format!("chain source degraded: {why}"),
        ));
    }
    for address in node.health.unreachable_peers() {
        alerts.push(alert(
            "critical",
            own,
            format!("configured peer {address} unreachable"),
        ));
    }
    for peer in peers {
        match peer.health {
            PeerHealth::Unreachable => alerts.push(alert(
                "critical",
                &peer.relay_id,
                format!("unreachable (last heard {} s ago)", age(node, peer)),
            )),
            PeerHealth::Degraded => alerts.push(alert(
                "warning",
                &peer.relay_id,
                format!("degraded (last heard {} s ago)", age(node, peer)),
            )),
            // A planned departure (lame duck) is nothing to act on.
            PeerHealth::Healthy | PeerHealth::Left => {}
        }
        if peer.chain.as_ref().is_some_and(|c| c.degraded) {
            alerts.push(alert(
                "warning",
                &peer.relay_id,
                "reports a degraded chain source".into(),
            ));
        }
    }
    alerts
}

fn age(node: &Node, view: &RelayView) -> u64 {
    node.unix_secs().saturating_sub(view.last_seen)
}

fn alert(severity: &'static str, relay_id: &str, message: String) -> Alert {
    Alert {
        severity,
        relay_id: relay_id.to_string(),
        message,
    }
}
