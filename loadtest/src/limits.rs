//! `loadtest limits`: checks that the relay enforces the specification's limits (or
//! those given by flags), each reported as pass or fail with what was seen.
//!
//! Every check must be able to fail: each names what it saw and what it wanted, and
//! `tests/limits.rs` runs each against a target that breaks exactly that limit.
//!
//! Order matters: the rate-limit check comes last and, towards a loopback relay, from
//! a source address of its own (see [`rate_source`]), so the 429s it provokes touch no
//! other check and it starts from a full token bucket.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::cli::{Check, LimitsArgs};
use crate::client::{Opener, Role, ramp};
use crate::http::{Head, HttpConn};
use crate::target::{HttpTarget, WsTarget};
use crate::workload;
use crate::ws::{self, OpCode, Upgrade, WsConn};

/// Connections opened per second while filling the relay to its connection limit.
const FILL_PER_SEC: u64 = 5000;
/// Pause between attempts while waiting for closed connections to be released, and
/// bound on each close.
const RELEASE_POLL: Duration = Duration::from_millis(50);
/// Requests the rate check sends past the most a relay may allow, so that a relay
/// allowing more is seen doing it.
const RATE_EXCESS: usize = 10;
/// The rate check gives up (inconclusive) after this many `--timeout-secs`.
const RATE_TIMEOUTS: u32 = 6;

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
    let ca_file = args.common.ca_file.as_deref();
    let ws_target = WsTarget::resolve(&args.common.ws_url, ca_file).await?;
    let http_target = HttpTarget::resolve(&args.http_url, ca_file).await?;
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
    // HTTP requests this run sent from the host's own address (the rate check counts
    // them when it has no address of its own).
    let mut http_requests = 0;
    if args.enabled(Check::BodySize) {
        let outcome = check_body_accepted(&http_target, args).await;
        checks.push(result("http_body_bytes_max accepted", outcome));
        let outcome = check_body_refused(&http_target, args).await;
        checks.push(result("http_body_bytes_max + 1 answered 413", outcome));
        http_requests += 2;
    }
    if args.enabled(Check::RateLimit) {
        let source = rate_source(&http_target);
        let prior = if source.is_some() { 0 } else { http_requests };
        let outcome = check_rate(&http_target, args, source, prior).await;
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
        let source = spread_source(&opener.target, index);
        async move { opener.open(index, source, Role::Subscriber).await }
    })
    .await;
    anyhow::ensure!(
        held.len() == max,
        "only {} of {max} connections were accepted: {:?}",
        held.len(),
        errors.0
    );
    let next = max + 1;
    let outcome = match ws::connect(&opener.target, None, opener.timeout).await? {
        Upgrade::Refused {
            status: 503,
            retry_after,
        } => match retry_after_secs(retry_after.as_deref()) {
            Ok(secs) => Ok(format!(
                "{max} held; connection {next} refused with 503, Retry-After: {secs}"
            )),
            Err(e) => Err(anyhow::anyhow!(
                "connection {next} answered HTTP 503 with {e:#}; want 503 with Retry-After"
            )),
        },
        Upgrade::Refused {
            status,
            retry_after,
        } => Err(anyhow::anyhow!(
            "connection {next} answered HTTP {status} ({}); want 503 with Retry-After",
            retry_after.map_or_else(
                || "no Retry-After".to_string(),
                |v| format!("Retry-After: {v}")
            )
        )),
        Upgrade::Accepted(_) => Err(anyhow::anyhow!(
            "connection {next} was accepted with {max} already open"
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

/// POSTs a body of `size` bytes (spaces: `/sync/force` reads an empty body as "sync
/// everything") on a fresh connection and returns the response head.
async fn post_sized(target: &HttpTarget, args: &LimitsArgs, size: usize) -> anyhow::Result<Head> {
    let timeout = args.common.timeout();
    tokio::time::timeout(timeout, async {
        let mut conn = HttpConn::open(target, None, timeout).await?;
        conn.request("POST", &args.body_path, size).await
    })
    .await
    .with_context(|| {
        format!(
            "POST {} with a {size}-byte body: no response within {timeout:?}",
            args.body_path
        )
    })?
}

/// A body of exactly the maximum is accepted: answered 2xx (the limit is inclusive).
async fn check_body_accepted(target: &HttpTarget, args: &LimitsArgs) -> anyhow::Result<String> {
    let size = args.http_body_bytes_max;
    let status = post_sized(target, args, size).await?.status;
    let path = &args.body_path;
    anyhow::ensure!(
        (200..300).contains(&status),
        "POST {path} with a {size}-byte body (exactly the maximum) answered {status}; want it accepted (2xx)"
    );
    Ok(format!(
        "POST {path} with a {size}-byte body answered {status}"
    ))
}

/// A body one byte over the maximum is answered 413.
async fn check_body_refused(target: &HttpTarget, args: &LimitsArgs) -> anyhow::Result<String> {
    let size = args.http_body_bytes_max + 1;
    let status = post_sized(target, args, size).await?.status;
    let path = &args.body_path;
    anyhow::ensure!(
        status == 413,
        "POST {path} with a {size}-byte body (one byte over the maximum) answered {status}; want 413"
    );
    Ok(format!("POST {path} with a {size}-byte body answered 413"))
}

/// A `Retry-After` in whole seconds (delta-seconds, RFC 9110 §10.2.3).
fn retry_after_secs(value: Option<&str>) -> anyhow::Result<u64> {
    let value = value.context("no Retry-After")?;
    value
        .parse()
        .with_context(|| format!("Retry-After `{value}` is not a number of seconds"))
}

/// Connections held from one source address by the connection check: under the relay's
/// default `ws_connections_per_address_max` (100), so the check meets the total cap,
/// not the per-address one.
const CONNECTIONS_PER_SOURCE: usize = 50;

/// Where connection `index` of the connection check comes from. Towards a loopback relay:
/// 127.4.x.y, [`CONNECTIONS_PER_SOURCE`] connections per address. Elsewhere: the host's
/// address (the relay's per-address cap must then be at least `ws_connections_max`).
fn spread_source(target: &WsTarget, index: usize) -> Option<IpAddr> {
    match target.addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let n = index / CONNECTIONS_PER_SOURCE;
            Some(IpAddr::V4(Ipv4Addr::new(
                127,
                4,
                (n / 250) as u8,
                (n % 250 + 1) as u8,
            )))
        }
        _ => None,
    }
}

/// Where the rate check's requests come from. Towards a loopback relay: an address of
/// 127.3.0.0/16 drawn for this run, so the relay starts it with a full bucket (a second
/// run within the minute, or the other checks, touch other buckets). Elsewhere: the
/// host's address, which must not have sent the relay requests in the last minute
/// beyond the ones this run counts.
fn rate_source(target: &HttpTarget) -> Option<IpAddr> {
    match target.addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos();
            let mix = nanos ^ std::process::id().rotate_left(16);
            let [_, _, c, d] = mix.to_be_bytes();
            // 1..=254: neither a network nor a broadcast-looking address.
            let pick = |byte: u8| byte % 254 + 1;
            Some(IpAddr::V4(Ipv4Addr::new(127, 3, pick(c), pick(d))))
        }
        _ => None,
    }
}

/// The relay keeps one token bucket per client address: a fresh client may burst a
/// whole minute's allowance (`max` requests), then gets a token back every `60 / max`
/// seconds. So, sending as fast as answers come from a fresh address:
/// - each of the first `max` requests (less the `prior` this run already sent from the
///   same address) is allowed: a 429 among them means the limit is lower than `max`;
/// - at most `max + refill` are allowed in all, where `refill` is `⌊elapsed × max /
///   60⌋` for the time the requests took: more means the limit is higher than `max`;
/// - requests are sent until [`RATE_EXCESS`] of them are past that bound, so a relay
///   that allows any more than it may is seen doing it;
/// - every 429 carries `Retry-After` of 1 to 60 seconds (a token refills within a
///   minute).
///
/// Any status other than 429 counts as allowed (the check is about the limiter, not
/// the endpoint), so a server that answers 200 or 503 where 429 is due fails too.
async fn check_rate(
    target: &HttpTarget,
    args: &LimitsArgs,
    source: Option<IpAddr>,
    prior: usize,
) -> anyhow::Result<String> {
    let max = args.http_requests_per_minute_max;
    let per_sec = max as f64 / 60.0;
    let refill = |elapsed: Duration| (elapsed.as_secs_f64() * per_sec).floor() as usize;
    let guaranteed = max.saturating_sub(prior);
    let timeout = args.common.timeout();
    let time_max = timeout * RATE_TIMEOUTS;
    let sent_max = 2 * max + RATE_EXCESS;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut allowed = 0;
    let mut first_429: Option<(usize, u64)> = None;
    let mut sent = 0;
    let mut conn = HttpConn::open(target, source, timeout).await?;
    let start = tokio::time::Instant::now();
    while sent < max + refill(start.elapsed()) + RATE_EXCESS {
        anyhow::ensure!(
            start.elapsed() < time_max && sent < sent_max,
            "inconclusive: {sent} requests in {:.2?} did not outpace the refill of {max}/min \
             (statuses {})",
            start.elapsed(),
            counts(&statuses)
        );
        if conn.closed {
            conn = HttpConn::open(target, source, timeout).await?;
        }
        sent += 1;
        let head = tokio::time::timeout(timeout, conn.request("GET", &args.rate_path, 0))
            .await
            .with_context(|| format!("request {sent}: no response within {timeout:?}"))?
            .with_context(|| format!("request {sent}"))?;
        *statuses.entry(head.status).or_default() += 1;
        if head.status != 429 {
            allowed += 1;
            continue;
        }
        let retry_after = head.header("retry-after");
        let secs = retry_after_secs(retry_after)
            .with_context(|| format!("request {sent} answered 429 without a valid Retry-After"))?;
        anyhow::ensure!(
            (1..=60).contains(&secs),
            "request {sent} answered 429 with Retry-After: {secs}; want 1 to 60 seconds"
        );
        anyhow::ensure!(
            sent > guaranteed,
            "too strict: request {sent} answered 429 (Retry-After: {secs}), yet the first {max} \
             requests of a client in a minute must be allowed{}",
            if prior > 0 {
                format!(" (less the {prior} this run sent before from the same address)")
            } else {
                String::new()
            }
        );
        first_429.get_or_insert((sent, secs));
    }
    let elapsed = start.elapsed();
    let refilled = refill(elapsed);
    anyhow::ensure!(
        allowed <= max + refilled,
        "too permissive: {allowed} of {sent} requests were answered without 429 in {elapsed:.2?} \
         (statuses {}); at most {max} + {refilled} refilled may be",
        counts(&statuses)
    );
    let (first, secs) = first_429.context("no request answered 429")?;
    Ok(format!(
        "{allowed} of {sent} requests allowed in {elapsed:.2?} (maximum {max}/min, {refilled} \
         refilled), the first 429 at request {first} with Retry-After: {secs}; statuses {}",
        counts(&statuses)
    ))
}

/// `200×60 429×10`.
fn counts(statuses: &BTreeMap<u16, usize>) -> String {
    let parts: Vec<String> = statuses
        .iter()
        .map(|(status, n)| format!("{status}×{n}"))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retry-After is whole seconds; anything else is named.
    #[test]
    fn retry_after_is_whole_seconds() {
        assert_eq!(retry_after_secs(Some("5")).unwrap(), 5);
        assert!(retry_after_secs(None).is_err());
        assert!(retry_after_secs(Some("soon")).is_err());
        assert!(retry_after_secs(Some("-1")).is_err());
    }

    /// Towards loopback the rate check has a 127.3.x.y address of its own; elsewhere
    /// the host's.
    #[test]
    fn rate_source_is_loopback_of_its_own() {
        let target = |addr: &str| HttpTarget {
            addr: addr.parse().unwrap(),
            host_header: String::new(),
            tls: None,
        };
        let Some(IpAddr::V4(v4)) = rate_source(&target("127.0.0.1:8091")) else {
            panic!("no loopback source");
        };
        let [a, b, c, d] = v4.octets();
        assert_eq!((a, b), (127, 3));
        assert!(c != 0 && c != 255 && d != 0 && d != 255);
        assert_eq!(rate_source(&target("10.0.0.1:8091")), None);
    }
}
