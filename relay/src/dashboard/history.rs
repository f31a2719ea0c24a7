//! The dashboard's memory: per relay, a ring of (unix ms, notifications routed so far)
//! samples from which the chart's notifications per second are computed.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How often this relay's own total is sampled (peers' totals arrive with their
/// MetricsSync, every `sync.interval`).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// The chart's time span.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Samples kept per relay: the window at `SAMPLE_EVERY`, plus one for the first rate.
pub const SAMPLES_MAX: usize = (5 * 60 / 2) + 1;
/// Relays charted; others (a mesh this large is unusual) still appear in the graph and
/// the table. With `SAMPLES_MAX` samples of 16 bytes, at most ~80 KB in all.
pub const RELAYS_CHARTED_MAX: usize = 32;

/// Samples closer than this to the previous one are not kept (the snapshot samples too).
const SAMPLE_SPACING_MS: u64 = 1000;

#[derive(Default)]
pub(super) struct History {
    by_relay: BTreeMap<String, VecDeque<(u64, u64)>>,
}

impl History {
    /// Adds one sample of `relay`'s total at `at_ms`. Ignored when it is not newer than
    /// the last by `SAMPLE_SPACING_MS`, or when `RELAYS_CHARTED_MAX` others are charted.
    pub fn record(&mut self, relay: &str, at_ms: u64, total: u64) {
        if !self.by_relay.contains_key(relay) {
            if self.by_relay.len() >= RELAYS_CHARTED_MAX {
                return;
            }
            self.by_relay.insert(relay.to_string(), VecDeque::new());
        }
        let Some(ring) = self.by_relay.get_mut(relay) else {
            return;
        };
        if ring
            .back()
            .is_some_and(|(last, _)| at_ms < last + SAMPLE_SPACING_MS)
        {
            return;
        }
        ring.push_back((at_ms, total));
        let oldest = at_ms.saturating_sub(WINDOW.as_millis() as u64);
        // Keep one sample before the window: the first rate inside it needs it.
        while ring.len() > SAMPLES_MAX || ring.get(1).is_some_and(|(t, _)| *t < oldest) {
            ring.pop_front();
        }
    }

    /// Forgets relays that are no longer known (sorted here and looked up by binary
    /// search: every relay samples its peers every few seconds).
    pub fn retain(&mut self, mut known: Vec<&str>) {
        known.sort_unstable();
        self.by_relay
            .retain(|id, _| known.binary_search(&id.as_str()).is_ok());
    }

    /// `relay`'s notifications per second between consecutive samples, stamped with the
    /// later one's time; a total that went down (the relay restarted) starts afresh.
    pub fn rates(&self, relay: &str) -> Vec<(u64, f64)> {
        let Some(ring) = self.by_relay.get(relay) else {
            return Vec::new();
        };
        ring.iter()
            .zip(ring.iter().skip(1))
            .filter(|((_, before), (_, after))| after >= before)
            .map(|((t0, v0), (t1, v1))| {
                let seconds = (t1 - t0) as f64 / 1000.0;
                (*t1, (v1 - v0) as f64 / seconds)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_consecutive_samples() {
        let mut history = History::default();
        history.record("a", 10_000, 0);
        history.record("a", 10_500, 99); // too close: ignored
        history.record("a", 12_000, 20);
        history.record("a", 14_000, 20);
        history.record("a", 16_000, 4); // restarted
        history.record("a", 18_000, 10);
        assert_eq!(
            history.rates("a"),
            vec![(12_000, 10.0), (14_000, 0.0), (18_000, 3.0)]
        );
        assert!(history.rates("b").is_empty());
    }

    #[test]
    fn history_is_bounded_in_samples_time_and_relays() {
        let mut history = History::default();
        for i in 0..10 * SAMPLES_MAX as u64 {
            history.record("a", i * 2000, i);
        }
        let ring = &history.by_relay["a"];
        assert!(ring.len() <= SAMPLES_MAX);
        let newest = ring.back().unwrap().0;
        assert!(ring[1].0 >= newest - WINDOW.as_millis() as u64);
        for i in 0..RELAYS_CHARTED_MAX + 5 {
            history.record(&format!("r{i}"), 0, 0);
        }
        assert_eq!(history.by_relay.len(), RELAYS_CHARTED_MAX);
        history.retain(vec!["a"]);
        assert_eq!(history.by_relay.len(), 1);
    }

    /// The relays still known are kept whatever the order they are named in.
    #[test]
    fn retain_keeps_the_known_relays_in_any_order() {
        let mut history = History::default();
        for id in ["z", "a", "m"] {
            history.record(id, 0, 0);
        }
        history.retain(vec!["z", "q", "a"]);
        let mut kept: Vec<&str> = history.by_relay.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["a", "z"]);
    }
}
