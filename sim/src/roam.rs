//! Roaming wallets: a wallet with capability `resume` that disconnects at seeded times
//! and resumes on another relay with its last resume token, and the check that it got
//! every notification exactly once across its sessions, or was told it may not have.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::client::{Received, WsClient};
use crate::fault::host;
use crate::trace::{Trace, now};
use crate::workload::{Observations, Shared, WS_PORT};

/// A roaming wallet: on `first` from `start`, then at each hop's time it drops the
/// connection, stays away `offline`, and resumes on relay `to`.
#[derive(Debug, Clone)]
pub struct Roamer {
    pub name: String,
    /// Set by the harness from the relays' timing.
    pub silence_max: Duration,
    pub relays: usize,
    pub first: usize,
    pub start: Duration,
    pub hops: Vec<Hop>,
}

#[derive(Debug, Clone, Copy)]
pub struct Hop {
    pub at: Duration,
    pub offline: Duration,
    pub to: usize,
}

/// What a roaming wallet saw over all its sessions.
#[derive(Debug, Clone, Default)]
pub struct RoamLog {
    pub roamer: String,
    /// When it received its first notification (and so its first token).
    pub first_token_at: Option<Duration>,
    pub received: Vec<String>,
    /// `resumed` answers: (when, recovered, reason, replayed).
    pub resumes: Vec<(Duration, bool, Option<String>, u64)>,
    /// Refused resumes (`invalid_resume_token`) and other errors the relay sent.
    pub errors: Vec<String>,
    /// `reconnect` messages (a draining relay's) that carried a resume token.
    pub reconnect_tokens: usize,
}

/// The relay index of a `reconnect` URL (`ws://relay-3:8090/` -> 3).
fn relay_index(url: &str) -> Option<usize> {
    url.trim_start_matches("ws://")
        .split(':')
        .next()?
        .strip_prefix("relay-")?
        .parse()
        .ok()
}

const RECONNECT_DELAY: Duration = Duration::from_millis(500);
const TYPE: &str = "payment_detected";

impl Roamer {
    pub async fn run(self, obs: Shared, trace: Trace, end: Duration) -> turmoil::Result {
        crate::workload::sleep_until(self.start).await;
        let index = {
            let mut o = obs.borrow_mut();
            o.roams.push(RoamLog {
                roamer: self.name.clone(),
                ..RoamLog::default()
            });
            o.roams.len() - 1
        };
        let mut token: Option<String> = None;
        let mut relay = self.first;
        let mut hops = self.hops.iter().peekable();
        while now() < end {
            let addr = format!("{}:{WS_PORT}", host(relay));
            let mut ws = match WsClient::handshaken(&addr, &self.name, &["resume"]).await {
                Ok((ws, _)) => ws,
                Err(e) => {
                    trace.here(
                        &self.name,
                        format!("connect to {} failed: {e}", host(relay)),
                    );
                    relay = relay % self.relays + 1;
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
            };
            let first = match &token {
                Some(t) => serde_json::json!({"type": "resume", "token": t}),
                None => serde_json::json!({"type": "subscribe", "notification_types": [TYPE]}),
            };
            trace.here(
                &self.name,
                format!(
                    "on {} ({})",
                    host(relay),
                    if token.is_some() { "resume" } else { "fresh" }
                ),
            );
            if ws.send(&first).await.is_err() {
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
            let leave_at = hops.peek().map_or(end, |h| h.at.min(end));
            let mut pointed = None;
            let lost = self
                .listen(&mut ws, &obs, index, &mut token, &mut pointed, leave_at)
                .await;
            ws.close().await;
            if let Some(why) = lost {
                trace.here(&self.name, format!("lost {}: {why}", host(relay)));
                // A draining relay named where to go (`reconnect`); else the next one.
                relay = pointed.unwrap_or(relay % self.relays + 1);
                tokio::time::sleep(RECONNECT_DELAY).await;
            } else if let Some(hop) = hops.next() {
                trace.here(
                    &self.name,
                    format!("hops to {} after {:?}", host(hop.to), hop.offline),
                );
                tokio::time::sleep(hop.offline).await;
                relay = hop.to;
            }
        }
        Ok(())
    }

    /// Records until `leave_at` (`None`) or until the connection is lost (`Some(why)`);
    /// a `reconnect` sets `pointed` to the first relay it names.
    async fn listen(
        &self,
        ws: &mut WsClient,
        obs: &Shared,
        index: usize,
        token: &mut Option<String>,
        pointed: &mut Option<usize>,
        leave_at: Duration,
    ) -> Option<String> {
        loop {
            let left = leave_at.saturating_sub(now());
            if left.is_zero() {
                return None;
            }
            let message = match tokio::time::timeout(left.min(self.silence_max), ws.recv()).await {
                Err(_) if now() >= leave_at => return None,
                Err(_) => return Some("silent".into()),
                Ok(Received::Closed(code)) => return Some(format!("closed {code:?}")),
                Ok(Received::Message(m)) => m,
            };
            let mut o = obs.borrow_mut();
            let log = &mut o.roams[index];
            match message["type"].as_str() {
                Some("notification") => {
                    if let Some(id) = message["message_id"].as_str() {
                        log.received.push(id.to_string());
                    }
                    if let Some(t) = message["resume_token"].as_str() {
                        *token = Some(t.to_string());
                        log.first_token_at.get_or_insert(now());
                    }
                }
                Some("reconnect") => {
                    if let Some(t) = message["resume_token"].as_str() {
                        *token = Some(t.to_string());
                        log.reconnect_tokens += 1;
                    }
                    *pointed = message["relays"]
                        .as_array()
                        .and_then(|relays| relays.first()?.as_str())
                        .and_then(relay_index);
                }
                Some("resumed") => log.resumes.push((
                    now(),
                    message["recovered"].as_bool().unwrap_or(false),
                    message["reason"].as_str().map(str::to_string),
                    message["replayed"].as_u64().unwrap_or(0),
                )),
                Some("error") => log.errors.push(message.to_string()),
                _ => {}
            }
        }
    }
}

/// Every roaming wallet got each notification published after its first token (and
/// before the publishers stopped) exactly once, unless a resume told it it may not have
/// (`recovered: false`, or a refused token); never a silent gap, never twice. With
/// `expect_gaps` (a retention too short for the hops), at least one resume must say so.
pub fn roaming(obs: &Observations, expect_gaps: bool) -> Vec<String> {
    let mut failures = Vec::new();
    let mut told_any = false;
    for log in &obs.roams {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for id in &log.received {
            *counts.entry(id.as_str()).or_default() += 1;
        }
        let twice: Vec<&str> = counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| *id)
            .collect();
        if !twice.is_empty() {
            failures.push(format!(
                "{} received {} notification(s) more than once: {}",
                log.roamer,
                twice.len(),
                twice.iter().take(8).copied().collect::<Vec<_>>().join(", ")
            ));
        }
        let told = log.resumes.iter().any(|r| !r.1) || !log.errors.is_empty();
        told_any |= told;
        if !expect_gaps && let Some(r) = log.resumes.iter().find(|r| !r.1) {
            failures.push(format!(
                "{} resumed with recovered:false ({}) although its gap was within retention",
                log.roamer,
                r.2.as_deref().unwrap_or("-")
            ));
        }
        let Some(from) = log.first_token_at else {
            failures.push(format!("{} never received a notification", log.roamer));
            continue;
        };
        let got: BTreeSet<&str> = counts.keys().copied().collect();
        let lost: Vec<&str> = obs
            .published
            .iter()
            .filter(|p| p.sent_at > from)
            .map(|p| p.message_id.as_str())
            .filter(|id| !got.contains(id))
            .collect();
        if !lost.is_empty() && !told {
            failures.push(format!(
                "{} silently lost {} notification(s): {}",
                log.roamer,
                lost.len(),
                lost.iter().take(8).copied().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if expect_gaps && !told_any {
        failures.push("no resume reported recovered:false although retention was too short".into());
    }
    failures
}
