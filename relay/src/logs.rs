//! Recent log records kept in memory for `GET /logs`, fed by the same `tracing`
//! subscriber that writes the process log; and the process log's format (text or JSON
//! lines, each record with the relay id).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::config::LogFormat;
use crate::rt::SharedClock;

/// The process log layer: records written to stderr as `format` says, each carrying
/// `relay_id` (a top-level key in JSON, a leading `relay_id=` in text). Text is coloured
/// only when stderr is a terminal.
pub fn stderr_layer<S>(format: LogFormat, relay_id: &str) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use std::io::IsTerminal as _;
    use tracing_subscriber::fmt;
    let relay_id = relay_id.to_string();
    match format {
        LogFormat::Text => Box::new(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .event_format(WithRelayId {
                    relay_id,
                    json: false,
                    inner: fmt::format(),
                }),
        ),
        LogFormat::Json => Box::new(
            fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .event_format(WithRelayId {
                    relay_id,
                    json: true,
                    inner: fmt::format().json(),
                }),
        ),
    }
}

/// An event format that adds the relay id to what `inner` writes.
struct WithRelayId<F> {
    relay_id: String,
    /// `inner` writes one JSON object: the id goes in as its first key.
    json: bool,
    inner: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithRelayId<F>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if !self.json {
            write!(writer, "relay_id={} ", self.relay_id)?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        let id = serde_json::to_string(&self.relay_id).map_err(|_| std::fmt::Error)?;
        match line.strip_prefix('{') {
            Some(rest) if rest.starts_with('}') => write!(writer, "{{\"relay_id\":{id}{rest}"),
            Some(rest) => write!(writer, "{{\"relay_id\":{id},{rest}"),
            None => writer.write_str(&line),
        }
    }
}

/// Records the ring keeps; older ones are dropped first.
pub const LOG_RECORDS_MAX: usize = 10_000;
/// Longest message kept per record, in bytes.
const MESSAGE_BYTES_MAX: usize = 2048;

#[derive(Debug, Clone, Serialize)]
pub struct LogRecord {
    /// RFC 3339 UTC, e.g. `2024-12-19T10:00:00Z`.
    pub timestamp: String,
    pub level: &'static str,
    pub message: String,
    #[serde(skip)]
    pub severity: Level,
}

/// A bounded ring of recent records, shared by the tracing layer and the HTTP API.
#[derive(Clone)]
pub struct LogRing {
    records: Arc<Mutex<VecDeque<LogRecord>>>,
    capacity: usize,
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        LogRing {
            records: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(1024)))),
            capacity,
        }
    }

    pub fn push(&self, record: LogRecord) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The newest `limit` records at `min_level` or more severe, oldest first.
    pub fn recent(&self, min_level: Level, limit: usize) -> Vec<LogRecord> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let mut picked: Vec<LogRecord> = records
            .iter()
            .rev()
            .filter(|r| r.severity <= min_level)
            .take(limit)
            .cloned()
            .collect();
        picked.reverse();
        picked
    }

    /// A tracing layer that copies every record into this ring.
    pub fn layer(&self, clock: SharedClock) -> RingLayer {
        RingLayer {
            ring: self.clone(),
            clock,
        }
    }
}

pub struct RingLayer {
    ring: LogRing,
    clock: SharedClock,
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = MessageVisitor::default();
        event.record(&mut visitor);
        let level = *event.metadata().level();
        self.ring.push(LogRecord {
            timestamp: rfc3339(self.clock.unix_secs()),
            level: level_name(level),
            message: visitor.message,
            severity: level,
        });
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

#[derive(Default)]
struct MessageVisitor {
    message: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.message.len() >= MESSAGE_BYTES_MAX {
            return;
        }
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let sep = if self.message.is_empty() { "" } else { " " };
            let _ = write!(self.message, "{sep}{}={value:?}", field.name());
        }
        if self.message.len() > MESSAGE_BYTES_MAX {
            let mut end = MESSAGE_BYTES_MAX;
            while !self.message.is_char_boundary(end) {
                end -= 1;
            }
            self.message.truncate(end);
        }
    }
}

/// Formats unix seconds as RFC 3339 UTC (civil-from-days, proleptic Gregorian).
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_734_602_400), "2024-12-19T10:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn ring_is_bounded_and_filters_by_level() {
        let ring = LogRing::new(3);
        for (i, level) in [Level::INFO, Level::DEBUG, Level::WARN, Level::ERROR]
            .into_iter()
            .enumerate()
        {
            ring.push(LogRecord {
                timestamp: String::new(),
                level: level_name(level),
                message: i.to_string(),
                severity: level,
            });
        }
        let all: Vec<String> = ring
            .recent(Level::TRACE, 10)
            .into_iter()
            .map(|r| r.message)
            .collect();
        assert_eq!(all, ["1", "2", "3"]);
        let warn: Vec<String> = ring
            .recent(Level::WARN, 10)
            .into_iter()
            .map(|r| r.message)
            .collect();
        assert_eq!(warn, ["2", "3"]);
        assert_eq!(ring.recent(Level::TRACE, 1)[0].message, "3");
    }
}
