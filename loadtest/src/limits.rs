//! `loadtest limits`: checks that the relay enforces the specification's limits (or
//! those given by flags), each reported as pass or fail with what was seen.
//!
//! Order matters: the rate-limit check comes last and from its own source address
//! (127.0.0.3 towards a loopback relay), so the 429s it provokes touch no other check.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::cli::{Check, LimitsArgs};
use crate::client::{Opener, Role, ramp};
use crate::http::HttpConn;
use crate::target::{HttpTarget, WsTarget};
use crate::workload;
use crate::ws::{self, OpCode, Upgrade, WsConn};

/// Connections opened per second while filling the relay to its connection limit.
const FILL_PER_SEC: u64 = 5000;
/// Pause between attempts while waiting for closed connections to be released, and
/// bound on each close.
const RELEASE_POLL: Duration = Duration::from_millis(50);
/// Source address of the rate-limit flood, towards a loopback relay.
const RATE_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

#[derive(Debug, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct LimitsReport {
    pub passed: bool,
    pub checks: Vec<CheckResult>,
}

impl LimitsReport {
    /// Names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name)
            .collect()
    }
}

impl std::fmt::Display for LimitsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for check in &self.checks {
            let verdict = if check.passed { "PASS" } else { "FAIL" };
            writeln!(f, "{verdict} {}: {}", check.name, check.detail)?;
        }
        let failed = self.failed();
        if failed.is_empty() {
            write!(f, "all {} checks passed", self.checks.len())
        } else {
            write!(f, "failed: {}", failed.join(", "))
        }
    }
}

fn result(name: &'static str, outcome: anyhow::Result<String>) -> CheckResult {
    match outcome {
        Ok(detail) => CheckResult {
            name,
            passed: true,
            detail,
        },
        Err(e) => CheckResult {
            name,
            passed: false,
            detail: format!("{e:#}"),
        },
    }
}

/// Runs the enabled checks in a fixed order.
///
/// # Errors
/// Only a bad target; a failing check is a result, not an error.
pub async fn limits(args: &LimitsArgs) -> anyhow::Result<LimitsReport> {
    let ws_target = WsTarget::resolve(&args.common.ws_url).await?;
    let http_target = HttpTarget::resolve(&args.http_url).await?;
    let opener = Opener {
        target: ws_target,
        baseline: false,
        token: args.common.token.clone(),
        timeout: args.common.timeout(),
    };
    let mut checks = Vec::new();
    if args.enabled(Check::Connections) {
        let outcome = check_connections(&opener, args.ws_connections_max).await;
        checks.push(result("ws_connections_max", outcome));
    }
    if args.enabled(Check::MessageSize) {
        let max = args.ws_message_bytes_max;
        let outcome = check_message_accepted(&opener, max).await;
        checks.push(result("ws_message_bytes_max accepted", outcome));
        let outcome = check_message_refused(&opener, max + 1).await;
        checks.push(result("ws_message_bytes_max + 1 closed with 1009", outcome));
    }
    if args.enabled(Check::BodySize) {
        let outcome = check_body(&http_target, args).await;
        checks.push(result("http_body_bytes_max", outcome));
    }
    if args.enabled(Check::RateLimit) {
        let outcome = check_rate(&http_target, args).await;
        checks.push(result("http_requests_per_minute_max", outcome));
    }
    Ok(LimitsReport {
        passed: checks.iter().all(|c| c.passed),
        checks,
    })
}

/// `max` handshaken connections are held and the next upgrade is refused with 503 and
/// `Retry-After`.
async fn check_connections(opener: &Opener, max: usize) -> anyhow::Result<String> {
    let opener = Arc::new(opener.clone());
    let (held, errors) = ramp(max, FILL_PER_SEC, |index| {
        let opener = opener.clone();
        async move { opener.open(index, None, Role::Subscriber).await }
    })
    .await;
    anyhow::ensure!(
        held.len() == max,
        "only {} of {max} connections were accepted: {:?}",
        held.len(),
        errors.0
    );
    let outcome = match ws::connect(&opener.target, None, opener.timeout).await? {
        Upgrade::Refused {
            status: 503,
            retry_after: Some(retry_after),
        } => Ok(format!(
            "{max} held; connection {} refused with 503, Retry-After: {retry_after}",
            max + 1
        )),
        Upgrade::Refused {
            status,
            retry_after,
        } => Err(anyhow::anyhow!(
            "connection {} answered HTTP {status} (Retry-After: {retry_after:?}); want 503 with Retry-After",
            max + 1
        )),
        Upgrade::Accepted(_) => Err(anyhow::anyhow!(
            "connection {} was accepted with {max} already open",
            max + 1
        )),
    };
    let outcome = outcome?;
    for (_, mut conn) in held {
        let _ = tokio::time::timeout(RELEASE_POLL, conn.writer.close(1000)).await;
    }
    let waited = await_released(&opener).await?;
    Ok(format!(
        "{outcome}; a slot was free again {waited:?} after closing"
    ))
}

/// Waits (bounded by the opener's timeout) until the relay accepts a connection again
/// after the held ones closed, so the next checks do not meet a full relay.
async fn await_released(opener: &Opener) -> anyhow::Result<Duration> {
    let start = tokio::time::Instant::now();
    loop {
        match ws::connect(&opener.target, None, opener.timeout).await? {
            Upgrade::Accepted(_) => return Ok(start.elapsed()),
            Upgrade::Refused { status, .. } if start.elapsed() >= opener.timeout => {
                anyhow::bail!(
                    "closed connections were not released: still HTTP {status} after {:?}",
                    opener.timeout
                );
            }
            Upgrade::Refused { .. } => tokio::time::sleep(RELEASE_POLL).await,
        }
    }
}

/// Publishes a notification of exactly `size` bytes on a fresh publisher connection and
/// returns the relay's first answer to it (or how the connection ended).
async fn publish_sized(opener: &Opener, size: usize) -> anyhow::Result<Answer> {
    let mut conn = opener.open(0, None, Role::Publisher).await?;
    let mut publication = workload::Publication::new(size);
    let frame = publication.frame(0, 0).to_vec();
    conn.writer
        .write_encoded(&frame)
        .await
        .context("sending the message")?;
    tokio::time::timeout(opener.timeout, answer(&mut conn))
        .await
        .with_context(|| format!("no answer within {:?}", opener.timeout))
}

enum Answer {
    Ack,
    /// An `error` message, as received.
    Error(String),
    Closed(Option<u16>),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Ack => write!(f, "notification_ack"),
            Answer::Error(text) => write!(f, "error message {text}"),
            Answer::Closed(Some(code)) => write!(f, "close code {code}"),
            Answer::Closed(None) => write!(f, "connection closed without a close code"),
        }
    }
}

async fn answer(conn: &mut WsConn) -> Answer {
    loop {
        let message = match conn.reader.next().await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => return Answer::Closed(None),
        };
        match message.opcode {
            OpCode::Close => return Answer::Closed(message.close_code()),
            OpCode::Ping => {
                let _ = conn.writer.send_pong(&message.payload).await;
            }
            OpCode::Text => match workload::message_type(&message.payload).as_deref() {
                Some("notification_ack") => return Answer::Ack,
                Some("error") => {
                    return Answer::Error(String::from_utf8_lossy(&message.payload).into_owned());
                }
                _ => {}
            },
            _ => {}
        }
    }
}

async fn check_message_accepted(opener: &Opener, size: usize) -> anyhow::Result<String> {
    match publish_sized(opener, size).await? {
        Answer::Ack => Ok(format!("a {size}-byte notification was acknowledged")),
        other => anyhow::bail!("a {size}-byte notification got {other}; want notification_ack"),
    }
}

async fn check_message_refused(opener: &Opener, size: usize) -> anyhow::Result<String> {
    match publish_sized(opener, size).await? {
        Answer::Closed(Some(1009)) => Ok(format!(
            "a {size}-byte message closed the connection with 1009"
        )),
        other => anyhow::bail!("a {size}-byte message got {other}; want close code 1009"),
    }
}

/// A body one byte over the maximum is answered 413.
async fn check_body(target: &HttpTarget, args: &LimitsArgs) -> anyhow::Result<String> {
    let size = args.http_body_bytes_max + 1;
    let mut conn = HttpConn::open(target, None, args.common.timeout()).await?;
    let head = tokio::time::timeout(
        args.common.timeout(),
        conn.request("POST", &args.body_path, size),
    )
    .await
    .context("no response in time")??;
    anyhow::ensure!(
        head.status == 413,
        "POST {} with a {size}-byte body answered {}; want 413",
        args.body_path,
        head.status
    );
    Ok(format!(
        "POST {} with a {size}-byte body answered 413",
        args.body_path
    ))
}

/// Requests past the per-minute maximum are answered 429 with `Retry-After`, and not
/// much earlier.
async fn check_rate(target: &HttpTarget, args: &LimitsArgs) -> anyhow::Result<String> {
    let max = args.http_requests_per_minute_max;
    // Requests the relay may have counted before ours, and slack for its window.
    let margin = (max / 10).max(10);
    let source = match target.addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => Some(IpAddr::V4(RATE_SOURCE)),
        _ => None,
    };
    let timeout = args.common.timeout();
    let deadline = tokio::time::Instant::now() + timeout * 6;
    let mut conn = HttpConn::open(target, source, timeout).await?;
    for sent in 1..=max + margin {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no 429 after {sent} requests in {:?}",
            timeout * 6
        );
        if conn.closed {
            conn = HttpConn::open(target, source, timeout).await?;
        }
        let head = tokio::time::timeout(timeout, conn.request("GET", &args.rate_path, 0))
            .await
            .context("no response in time")??;
        if head.status != 429 {
            continue;
        }
        let retry_after = head
            .header("retry-after")
            .with_context(|| format!("request {sent} answered 429 without Retry-After"))?
            .to_string();
        anyhow::ensure!(
            sent + margin > max,
            "429 already at request {sent}, well before the maximum of {max}"
        );
        return Ok(format!(
            "request {sent} (maximum {max}/min) answered 429, Retry-After: {retry_after}"
        ));
    }
    anyhow::bail!(
        "{} requests within a minute were all answered without 429",
        max + margin
    )
}
