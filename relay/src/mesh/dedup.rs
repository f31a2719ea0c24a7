//! Which notifications this relay has seen, and the recent ones it keeps for peers that
//! missed them (anti-entropy).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::protocol::Notification;
use crate::protocol::peer::StreamSummary;

/// Message ids remembered for deduplication (oldest forgotten first). Ten times the log,
/// so an id still offered by any peer's log is still remembered here.
pub const DEDUP_IDS_MAX: usize = 100_000;
/// Notifications kept for anti-entropy.
pub const LOG_ENTRIES_MAX: usize = 10_000;
/// Seconds a notification stays in the log (the anti-entropy retention window).
pub const LOG_RETENTION_SECS: u64 = 3600;
/// Seq ranges carried in one log summary.
pub const SUMMARY_RANGES_MAX: usize = 1024;
/// Ids asked for in one fetch.
pub const FETCH_IDS_MAX: usize = 512;

/// Remembers the most recent `capacity` ids.
pub struct DedupCache {
    seen: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
}

impl DedupCache {
    pub fn new(capacity: usize) -> Self {
        DedupCache {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Records `id`; true when it was not seen before (a miss).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        let id: Arc<str> = Arc::from(id);
        self.seen.insert(id.clone());
        self.order.push_back(id);
        true
    }

    pub fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// Every remembered id, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(|id| &**id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// A message id as relays make them: `{relay_id}-{boot nonce}-{seq}`; the stream is
/// everything before the last `-`.
pub fn split_message_id(id: &str) -> Option<(&str, u64)> {
    let (stream, seq) = id.rsplit_once('-')?;
    Some((stream, seq.parse().ok()?))
}

/// Recent notifications, by arrival, bounded in count and age.
pub struct NotificationLog {
    entries: VecDeque<(u64, Arc<Notification>)>,
    by_id: HashMap<String, Arc<Notification>>,
    capacity: usize,
    retention_secs: u64,
}

impl NotificationLog {
    pub fn new(capacity: usize, retention_secs: u64) -> Self {
        NotificationLog {
            entries: VecDeque::new(),
            by_id: HashMap::new(),
            capacity,
            retention_secs,
        }
    }

    pub fn push(&mut self, now_unix: u64, notification: Arc<Notification>) {
        self.expire(now_unix);
        if self.entries.len() == self.capacity {
            self.pop_oldest();
        }
        self.by_id
            .insert(notification.message_id.clone(), notification.clone());
        self.entries.push_back((now_unix, notification));
    }

    pub fn get(&self, id: &str) -> Option<Arc<Notification>> {
        self.by_id.get(id).cloned()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn expire(&mut self, now_unix: u64) {
        while let Some((at, _)) = self.entries.front() {
            if now_unix.saturating_sub(*at) <= self.retention_secs {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, n)) = self.entries.pop_front() {
            self.by_id.remove(&n.message_id);
        }
    }

    /// Compact description of the log: per origin stream, the seq ranges present.
    pub fn summary(&self) -> Vec<StreamSummary> {
        summarize(
            self.entries.iter().map(|(_, n)| n.message_id.as_str()),
            SUMMARY_RANGES_MAX,
        )
    }
}

/// Per origin stream, the seq ranges of `ids`, keeping the newest ranges of each stream
/// within `ranges_max` in all.
pub fn summarize<'a>(ids: impl Iterator<Item = &'a str>, ranges_max: usize) -> Vec<StreamSummary> {
    let mut seqs: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for id in ids {
        if let Some((stream, seq)) = split_message_id(id) {
            seqs.entry(stream).or_default().push(seq);
        }
    }
    let mut budget = ranges_max;
    let mut out = Vec::new();
    for (stream, mut list) in seqs {
        list.sort_unstable();
        let mut ranges = to_ranges(&list);
        // Keep the newest ranges when over budget.
        let keep = ranges.len().min(budget);
        ranges.drain(..ranges.len() - keep);
        budget -= keep;
        if !ranges.is_empty() {
            out.push(StreamSummary {
                stream: stream.to_string(),
                ranges,
            });
        }
        if budget == 0 {
            break;
        }
    }
    out
}

fn to_ranges(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &seq in sorted {
        match ranges.last_mut() {
            Some((_, hi)) if seq <= *hi + 1 => *hi = (*hi).max(seq),
            _ => ranges.push((seq, seq)),
        }
    }
    ranges
}

/// Ids in a peer's summary that `seen` does not know, at most `FETCH_IDS_MAX`.
pub fn missing_ids(summary: &[StreamSummary], seen: &DedupCache) -> Vec<String> {
    let mut missing = Vec::new();
    for stream in summary {
        for &(lo, hi) in &stream.ranges {
            // A hostile or broken range cannot make us loop for long.
            let hi = hi.min(lo.saturating_add(LOG_ENTRIES_MAX as u64));
            for seq in lo..=hi {
                let id = format!("{}-{seq}", stream.stream);
                if !seen.contains(&id) {
                    missing.push(id);
                    if missing.len() == FETCH_IDS_MAX {
                        return missing;
                    }
                }
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: &str) -> Arc<Notification> {
        Arc::new(Notification {
            message_id: id.into(),
            relay_id: "r".into(),
            notification_type: "t".into(),
            data: serde_json::value::RawValue::from_string("{}".into()).unwrap(),
            timestamp: 0,
        })
    }

    #[test]
    fn dedup_is_bounded_and_forgets_the_oldest() {
        let mut cache = DedupCache::new(2);
        assert!(cache.insert("a"));
        assert!(!cache.insert("a"));
        assert!(cache.insert("b"));
        assert!(cache.insert("c"));
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains("a"));
        assert!(cache.contains("c"));
    }

    #[test]
    fn log_is_bounded_in_count_and_age() {
        let mut log = NotificationLog::new(3, 10);
        for i in 0..5 {
            log.push(100, note(&format!("r-1-{i}")));
        }
        assert_eq!(log.len(), 3);
        assert!(log.get("r-1-1").is_none());
        assert!(log.get("r-1-4").is_some());
        log.push(200, note("r-1-9"));
        assert_eq!(log.len(), 1, "entries older than the retention expire");
    }

    #[test]
    fn summary_and_missing_ids_find_the_gap() {
        let mut log = NotificationLog::new(100, 1000);
        for seq in [1, 2, 3, 7, 8] {
            log.push(0, note(&format!("a-00000001-{seq}")));
        }
        log.push(0, note("b-00000002-5"));
        let summary = log.summary();
        assert_eq!(summary[0].ranges, [(1, 3), (7, 8)]);
        assert_eq!(
            summary[1],
            StreamSummary {
                stream: "b-00000002".into(),
                ranges: vec![(5, 5)]
            }
        );
        let mut seen = DedupCache::new(100);
        for id in [
            "a-00000001-1",
            "a-00000001-2",
            "a-00000001-8",
            "b-00000002-5",
        ] {
            seen.insert(id);
        }
        assert_eq!(
            missing_ids(&summary, &seen),
            ["a-00000001-3", "a-00000001-7"]
        );
    }

    #[test]
    fn message_ids_split_into_stream_and_seq() {
        assert_eq!(
            split_message_id("relay-1-0a0b0c0d-42"),
            Some(("relay-1-0a0b0c0d", 42))
        );
        assert_eq!(split_message_id("nonsense"), None);
    }
}
