//! Latency histograms (HDR) and the summaries reports print.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency recorded exactly; longer ones are clamped to it.
const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Latencies in nanoseconds, 3 significant digits.
///
/// A histogram over this range is ~220 KB, one per connection: recorded one at a time,
/// each sample touched a cache line of a different connection's histogram (a cache miss
/// nearly every delivery, ~10 % of the load generator's CPU in `loadtest mesh`). Samples
/// wait in a small buffer and are recorded `PENDING_MAX` at a time.
pub struct Latency {
    histogram: Histogram<u64>,
    pending: Vec<u64>,
}

/// Samples buffered before they are recorded (8 KiB per connection at most).
const PENDING_MAX: usize = 1024;

impl Default for Latency {
    fn default() -> Self {
        Latency {
            histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid bounds"),
            pending: Vec::new(),
        }
    }
}

impl Latency {
    pub fn record(&mut self, latency: Duration) {
        self.record_ns(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn record_ns(&mut self, ns: u64) {
        if self.pending.len() == PENDING_MAX {
            self.flush();
        }
        self.pending.push(ns);
    }

    fn flush(&mut self) {
        record_all(&mut self.histogram, &self.pending);
        self.pending.clear();
    }

    pub fn merge(&mut self, other: &Latency) {
        self.histogram.add(&other.histogram).expect("same bounds");
        record_all(&mut self.histogram, &other.pending);
    }

    pub fn summary(&self) -> LatencySummary {
        let mut whole = self.histogram.clone();
        record_all(&mut whole, &self.pending);
        summarize(&whole)
    }
}

fn record_all(histogram: &mut Histogram<u64>, samples: &[u64]) {
    for &ns in samples {
        histogram.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
    }
}

fn summarize(histogram: &Histogram<u64>) -> LatencySummary {
    let us = |ns: u64| ns as f64 / 1000.0;
    let at = |q: f64| us(histogram.value_at_quantile(q));
    LatencySummary {
        count: histogram.len(),
        p50_us: at(0.50),
        p90_us: at(0.90),
        p99_us: at(0.99),
        p99_9_us: at(0.999),
        max_us: us(histogram.max()),
        mean_us: histogram.mean() / 1000.0,
    }
}

/// Percentiles in microseconds (0 when nothing was recorded).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.0} µs  p90 {:.0} µs  p99 {:.0} µs  p99.9 {:.0} µs  max {:.0} µs  ({} samples)",
            self.p50_us, self.p90_us, self.p99_us, self.p99_9_us, self.max_us, self.count
        )
    }
}

/// The machine's 1-minute load average (other work competing for the cores), if known.
pub fn load_average_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Percentiles of 1..=1000 µs land within the histogram's 0.1 % precision, and
    /// merging two halves gives the same summary as recording all.
    #[test]
    fn percentiles_are_within_precision_and_merge() {
        let (mut all, mut low, mut high) =
            (Latency::default(), Latency::default(), Latency::default());
        for us in 1..=1000_u64 {
            all.record(Duration::from_micros(us));
            if us <= 500 { &mut low } else { &mut high }.record_ns(us * 1000);
        }
        let s = all.summary();
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(s.p50_us, 500.0), "{s:?}");
        assert!(close(s.p90_us, 900.0), "{s:?}");
        assert!(close(s.p99_us, 990.0), "{s:?}");
        assert!(close(s.p99_9_us, 999.0), "{s:?}");
        assert!(close(s.max_us, 1000.0), "{s:?}");
        low.merge(&high);
        assert_eq!(low.summary(), s);
    }

    /// Samples buffered, flushed when the buffer fills, and still waiting all count: a
    /// summary, and a merge of one partly flushed latency into another, equal recording
    /// every sample straight into one histogram.
    #[test]
    fn buffered_samples_all_count() {
        let samples: Vec<u64> = (0..2 * PENDING_MAX as u64 + 7)
            .map(|i| i * 997 % 50_000)
            .collect();
        let mut direct = Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).unwrap();
        let (mut first, mut second) = (Latency::default(), Latency::default());
        for (i, &ns) in samples.iter().enumerate() {
            direct.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
            if i % 3 == 0 { &mut first } else { &mut second }.record_ns(ns);
        }
        let want = summarize(&direct);
        assert_eq!(want.count, samples.len() as u64);
        first.merge(&second);
        assert_eq!(first.summary(), want);
    }

    /// Nothing recorded summarizes to zeros; out-of-range values are clamped, not lost.
    #[test]
    fn empty_and_extreme_latencies() {
        let mut latency = Latency::default();
        assert_eq!(latency.summary().count, 0);
        latency.record(Duration::from_secs(3600));
        latency.record_ns(0);
        assert_eq!(latency.summary().count, 2);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
