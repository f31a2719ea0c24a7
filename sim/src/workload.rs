//! Named workloads run on client hosts: publishers, subscribers and the end-of-run
//! checker. What they observe goes into the shared `Observations` and the trace.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Received, WsClient, http_get};
use crate::trace::{Trace, now};

/// Port of the relays' WebSocket interface.
pub const WS_PORT: u16 = 8090;
/// Port of the relays' HTTP API.
pub const HTTP_PORT: u16 = 8091;
/// A client reconnects this long after losing its relay.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// A client that hears nothing (not even the relay's heartbeat) for its silence limit
/// gives the connection up: turmoil has no retransmission, so a partitioned connection
/// may never fail by itself. The limit is the relays' connection timeout plus this.
pub const CLIENT_SILENCE_SLACK: Duration = Duration::from_secs(1);

/// A notification a relay acknowledged.
#[derive(Debug, Clone)]
pub struct Published {
    pub publisher: String,
    pub message_id: String,
    pub relay: String,
    /// When the publisher sent it (simulated time).
    pub sent_at: Duration,
}

/// How a subscriber session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The subscriber left on schedule and closed the connection itself.
    Left,
    /// The relay sent a close frame with this code.
    ClosedByRelay(u16),
    /// The connection ended without a close frame (reset, end of stream).
    Reset,
    /// The subscriber heard nothing, not even the heartbeat, for its silence limit.
    Silent,
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Left => write!(f, "left"),
            SessionEnd::ClosedByRelay(code) => write!(f, "closed by its relay with {code}"),
            SessionEnd::Reset => write!(f, "reset without a close frame"),
            SessionEnd::Silent => write!(f, "silent past its limit"),
        }
    }
}

/// One subscriber connection, from accepted handshake to end.
#[derive(Debug, Clone)]
pub struct Session {
    pub subscriber: String,
    pub relay: String,
    pub started_at: Duration,
    /// `None` while still connected at the end of the run.
    pub ended_at: Option<Duration>,
    /// Why it ended; `None` while still connected at the end of the run.
    pub end: Option<SessionEnd>,
    /// Ids of the genuine notifications received (a forged one is never counted here,
    /// even under a genuine id: the wallet did not get what was published).
    pub received: Vec<String>,
    /// Forged notifications received: `<message id> (<attack>)`, from the mark every
    /// payload of the hostile host carries (`data.byzantine`).
    pub forged: Vec<String>,
}

/// The relays' answers to the checker's requests.
#[derive(Debug, Clone)]
pub struct RelayView {
    /// relay id -> health, as `GET /relays` lists them.
    pub relays: Result<BTreeMap<String, String>, String>,
    /// The relays `GET /relays` says it holds a live link to.
    pub connected: BTreeSet<String>,
    pub metrics: Option<Value>,
}

/// Everything the workloads saw, for the checks.
#[derive(Debug, Default)]
pub struct Observations {
    pub published: Vec<Published>,
    pub sessions: Vec<Session>,
    /// Publications sent whose acknowledgement never came (the relay may still have
    /// stamped and routed them, under an id nobody recorded).
    pub unacked: usize,
    pub views: BTreeMap<String, RelayView>,
    /// What each roaming wallet saw (`roam`).
    pub roams: Vec<crate::roam::RoamLog>,
    pub checker_done: bool,
    /// What the hostile hosts did and saw (empty without one).
    pub hostile: crate::hostile::HostileLog,
    /// `(relay, address) -> dials` over the whole run (`rt::DialLog`).
    pub dials: BTreeMap<(String, String), u64>,
}

pub type Shared = Rc<RefCell<Observations>>;

/// A publisher: `count` notifications on `relay`, one every `every`, from `start`.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub name: String,
    /// Set by the harness from the relays' timing (see `CLIENT_SILENCE_SLACK`).
    pub silence_max: Duration,
    pub relay: String,
    pub start: Duration,
    pub count: usize,
    pub every: Duration,
}

/// A subscriber with capability `notifications` on `relay`, from `start` until `leave`
/// (or the end of the run), reconnecting when it loses the relay.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub name: String,
    /// Set by the harness from the relays' timing (see `CLIENT_SILENCE_SLACK`).
    pub silence_max: Duration,
    pub relay: String,
    pub start: Duration,
    pub leave: Option<Duration>,
}

pub fn ws_addr(relay: &str) -> String {
    format!("{relay}:{WS_PORT}")
}

pub async fn sleep_until(at: Duration) {
    let wait = at.saturating_sub(now());
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

impl Publisher {
    pub async fn run(self, obs: Shared, trace: Trace) -> turmoil::Result {
        sleep_until(self.start).await;
        let mut sent = 0;
        let mut client: Option<WsClient> = None;
        while sent < self.count {
            let mut ws = match client.take() {
                Some(ws) => ws,
                None => match WsClient::handshaken(&ws_addr(&self.relay), &self.name, &["publish"])
                    .await
                {
                    Ok((ws, _)) => {
                        trace.here(&self.name, format!("connected to {}", self.relay));
                        ws
                    }
                    Err(e) => {
                        trace.here(&self.name, format!("connect to {} failed: {e}", self.relay));
                        tokio::time::sleep(RECONNECT_DELAY).await;
                        continue;
                    }
                },
            };
            let sent_at = now();
            let message = serde_json::json!({
                "type": "notification", "notification_type": "payment_detected",
                "data": {"publisher": self.name, "n": sent},
            });
            match self.publish(&mut ws, &message).await {
                Ok(message_id) => {
                    trace.here(&self.name, format!("ack {message_id}"));
                    obs.borrow_mut().published.push(Published {
                        publisher: self.name.clone(),
                        message_id,
                        relay: self.relay.clone(),
                        sent_at,
                    });
                    sent += 1;
                    client = Some(ws);
                    // A fixed cadence (not sleep-after-ack), so round trips do not push the
                    // last publication past the scenario's settle period.
                    sleep_until(self.start + self.every * sent as u32).await;
                }
                Err(e) => {
                    trace.here(&self.name, format!("publish failed: {e}"));
                    obs.borrow_mut().unacked += 1;
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
            }
        }
        if let Some(ws) = client {
            ws.close().await;
        }
        trace.here(&self.name, format!("done: {sent} published"));
        Ok(())
    }

    async fn publish(&self, ws: &mut WsClient, message: &Value) -> Result<String, String> {
        ws.send(message).await?;
        loop {
            match tokio::time::timeout(self.silence_max, ws.recv()).await {
                Err(_) => return Err("no ack in time".into()),
                Ok(Received::Closed(code)) => return Err(format!("closed with {code:?}")),
                Ok(Received::Message(m)) if m["type"] == "notification_ack" => {
                    return m["message_id"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("ack without message_id: {m}"));
                }
                Ok(Received::Message(_)) => continue,
            }
        }
    }
}

impl Subscriber {
    pub async fn run(self, obs: Shared, trace: Trace, end: Duration) -> turmoil::Result {
        sleep_until(self.start).await;
        let stop = self.leave.unwrap_or(end).min(end);
        while now() < stop {
            let (mut ws, relay) =
                match WsClient::handshaken(&ws_addr(&self.relay), &self.name, &["notifications"])
                    .await
                {
                    Ok(pair) => pair,
                    Err(e) => {
                        trace.here(&self.name, format!("connect to {} failed: {e}", self.relay));
                        tokio::time::sleep(RECONNECT_DELAY).await;
                        continue;
                    }
                };
            trace.here(&self.name, format!("subscribed on {relay}"));
            let index = {
                let mut o = obs.borrow_mut();
                o.sessions.push(Session {
                    subscriber: self.name.clone(),
                    relay,
                    started_at: now(),
                    ended_at: None,
                    end: None,
                    received: Vec::new(),
                    forged: Vec::new(),
                });
                o.sessions.len() - 1
            };
            let ended = self.listen(&mut ws, &obs, &trace, index, stop).await;
            match ended {
                None => {
                    // Left on schedule (or the run ended): close politely.
                    if stop < end {
                        let mut o = obs.borrow_mut();
                        o.sessions[index].ended_at = Some(now());
                        o.sessions[index].end = Some(SessionEnd::Left);
                        trace.here(&self.name, "left");
                    }
                    ws.close().await;
                    return Ok(());
                }
                Some(why) => {
                    {
                        let mut o = obs.borrow_mut();
                        o.sessions[index].ended_at = Some(now());
                        o.sessions[index].end = Some(why);
                    }
                    trace.here(
                        &self.name,
                        format!("lost {}: {}", self.relay, describe(why)),
                    );
                    tokio::time::sleep(RECONNECT_DELAY).await;
                }
            }
        }
        Ok(())
    }

    /// Records notifications until `stop` (`None`) or until the connection is lost.
    async fn listen(
        &self,
        ws: &mut WsClient,
        obs: &Shared,
        trace: &Trace,
        index: usize,
        stop: Duration,
    ) -> Option<SessionEnd> {
        loop {
            let left = stop.saturating_sub(now());
            if left.is_zero() {
                return None;
            }
            let received = tokio::time::timeout(left.min(self.silence_max), ws.recv()).await;
            match received {
                Err(_) if now() >= stop => return None,
                Err(_) => return Some(SessionEnd::Silent),
                Ok(Received::Closed(Some(code))) => return Some(SessionEnd::ClosedByRelay(code)),
                Ok(Received::Closed(None)) => return Some(SessionEnd::Reset),
                Ok(Received::Message(m)) if m["type"] == "notification" => {
                    let id = m["message_id"].as_str().unwrap_or_default().to_string();
                    if let Some(attack) = m["data"]["byzantine"].as_str() {
                        trace.here(&self.name, format!("recv FORGED {id} ({attack})"));
                        let forged = format!("{id} ({attack})");
                        obs.borrow_mut().sessions[index].forged.push(forged);
                        continue;
                    }
                    trace.here(&self.name, format!("recv {id}"));
                    obs.borrow_mut().sessions[index].received.push(id);
                }
                Ok(Received::Message(_)) => {}
            }
        }
    }
}

/// The words the trace has always used for a lost session.
fn describe(end: SessionEnd) -> String {
    match end {
        SessionEnd::Silent => "silent".into(),
        SessionEnd::ClosedByRelay(code) => format!("closed with Some({code})"),
        SessionEnd::Reset => "closed with None".into(),
        SessionEnd::Left => "left".into(),
    }
}

/// Reads every relay's `GET /relays` and `GET /metrics` at the end of the run.
pub async fn checker(relays: Vec<String>, obs: Shared, trace: Trace) -> turmoil::Result {
    for relay in relays {
        let addr = format!("{relay}:{HTTP_PORT}");
        let body = http_get(&addr, "/relays").await;
        let connected: BTreeSet<String> = body
            .as_ref()
            .ok()
            .and_then(|b| b["relays"].as_array())
            .into_iter()
            .flatten()
            .filter(|r| r["connected"] == true && r["self"] != true)
            .filter_map(|r| r["relay_id"].as_str().map(str::to_string))
            .collect();
        let listed = body.map(|body| {
            body["relays"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|r| {
                            (
                                r["relay_id"].as_str().unwrap_or_default().to_string(),
                                r["health"].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect::<BTreeMap<_, _>>()
                })
                .unwrap_or_default()
        });
        let metrics = http_get(&addr, "/metrics").await.ok();
        match &listed {
            Ok(list) => {
                let healthy = list.values().filter(|h| *h == "healthy").count();
                let links = metrics
                    .as_ref()
                    .and_then(|m| m["sync_metrics"]["mesh_connections"].as_u64())
                    .unwrap_or_default();
                trace.here(
                    "checker",
                    format!(
                        "{relay} lists {} relays, {healthy} healthy, {links} links",
                        list.len()
                    ),
                );
                // Debugging aid, on stderr (not the trace): the sync status of every relay.
                if std::env::var_os("SIM_DEBUG_STATUS").is_some()
                    && let Ok(status) = http_get(&addr, "/sync/status").await
                {
                    eprintln!("{relay} /sync/status: {status:#}");
                }
            }
            Err(e) => trace.here("checker", format!("{relay} /relays failed: {e}")),
        }
        obs.borrow_mut().views.insert(
            relay,
            RelayView {
                relays: listed,
                connected,
                metrics,
            },
        );
    }
    obs.borrow_mut().checker_done = true;
    Ok(())
}
