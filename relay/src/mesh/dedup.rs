//! Which notifications this relay has seen, and the recent ones it keeps for peers that
//! missed them (anti-entropy).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::protocol::Notification;
use crate::protocol::peer::StreamSummary;

/// Message ids remembered for deduplication (oldest forgotten first). Ten times the log,
/// so an id still offered by any peer's log is still remembered here.
pub const DEDUP_IDS_MAX: usize = 100_000;
/// What one remembered id costs beyond its bytes: its `Arc` header, its slot in the set
/// and in the order (rounded up).
pub const DEDUP_ID_OVERHEAD_BYTES: usize = 64;
/// Bytes the dedup cache may hold, counting each id as its length plus
/// `DEDUP_ID_OVERHEAD_BYTES`. Honest ids (`{relay_id}-{boot nonce}-{seq}`, a relay id of
/// at most 64 bytes) cost at most 158 bytes, so 100,000 of them fit (15.8 MB) and the
/// count binds; only ids longer than any relay makes (peers choose them, up to 256
/// bytes) meet this bound first, leaving at least ~78,000 ids, still far more than a
/// log holds.
pub const DEDUP_BYTES_MAX: usize = 24 << 20;
/// Notifications kept for anti-entropy.
pub const LOG_ENTRIES_MAX: usize = 10_000;
/// Default bytes the notification log may hold (`[limits] notification_log_bytes_max`).
pub const LOG_BYTES_MAX: usize = crate::config::NOTIFICATION_LOG_BYTES_MAX_DEFAULT;
/// What one logged notification costs beyond its fields: the JSON envelope it is sent
/// in, the struct, its slot in the queue and in the index (rounded up).
pub const LOG_ENTRY_OVERHEAD_BYTES: usize = 256;
/// Default seconds a notification stays in the log (the anti-entropy and resume window;
/// `[limits] notification_log_retention_secs`).
pub const LOG_RETENTION_SECS: u64 = 3600;
/// Seq ranges carried in one log summary.
pub const SUMMARY_RANGES_MAX: usize = 1024;
/// Ids asked for in one fetch.
pub const FETCH_IDS_MAX: usize = 512;

/// Remembers the most recent ids, at most `capacity` of them and `bytes_max` bytes
/// (each id counted as its length plus `DEDUP_ID_OVERHEAD_BYTES`).
pub struct DedupCache {
    seen: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
    capacity: usize,
    bytes: usize,
    bytes_max: usize,
}

fn id_cost(id: &str) -> usize {
    id.len().saturating_add(DEDUP_ID_OVERHEAD_BYTES)
}

impl DedupCache {
    /// At most `capacity` ids and `DEDUP_BYTES_MAX` bytes.
    pub fn new(capacity: usize) -> Self {
        DedupCache::with_bytes_max(capacity, DEDUP_BYTES_MAX)
    }

    pub fn with_bytes_max(capacity: usize, bytes_max: usize) -> Self {
        DedupCache {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity,
            bytes: 0,
            bytes_max,
        }
    }

    /// Records `id`; true when it was not seen before (a miss).
    pub fn insert(&mut self, id: &str) -> bool {
        self.insert_evicting(id, |_| {})
    }

    /// Records `id`, forgetting the oldest ids while over the count or byte bound (the
    /// newest id is always kept); `evicted` is told each id forgotten. True when `id` was
    /// not seen before (a miss).
    pub fn insert_evicting(&mut self, id: &str, mut evicted: impl FnMut(&str)) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        let cost = id_cost(id);
        while !self.order.is_empty()
            && (self.order.len() >= self.capacity
                || self.bytes.saturating_add(cost) > self.bytes_max)
        {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
                self.bytes -= id_cost(&oldest);
                evicted(&oldest);
            }
        }
        let id: Arc<str> = Arc::from(id);
        self.seen.insert(id.clone());
        self.order.push_back(id);
        self.bytes += cost;
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

    /// The bytes counted against `bytes_max`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A message id as relays make them: `{relay_id}-{boot nonce}-{seq}`; the stream is
/// everything before the last `-`.
pub fn split_message_id(id: &str) -> Option<(&str, u64)> {
    let (stream, seq) = id.rsplit_once('-')?;
    Some((stream, seq.parse().ok()?))
}

/// What a logged notification counts against the log's byte budget: its id (stored
/// twice: in the notification and as the index key), origin relay, type, topic and data, plus
/// `LOG_ENTRY_OVERHEAD_BYTES` for the envelope and bookkeeping.
pub fn log_entry_cost(notification: &Notification) -> usize {
    (2 * notification.message_id.len())
        .saturating_add(notification.relay_id.len())
        .saturating_add(notification.notification_type.len())
        .saturating_add(notification.topic.len())
        .saturating_add(notification.data.get().len())
        .saturating_add(LOG_ENTRY_OVERHEAD_BYTES)
}

/// Recent notifications, by arrival, bounded in count, bytes and age.
pub struct NotificationLog {
    entries: VecDeque<(u64, Arc<Notification>)>,
    by_id: HashMap<String, Arc<Notification>>,
    capacity: usize,
    retention_secs: u64,
    bytes: usize,
    bytes_max: usize,
    /// Ids dropped since `take_evicted` (kept only when a durable store follows the log;
    /// taken at every push, so at most what one push drops plus one expiry).
    evicted: Option<Vec<String>>,
}

impl NotificationLog {
    /// At most `capacity` entries, `bytes_max` bytes (as `log_entry_cost` counts them;
    /// the newest entry is always kept), none older than `retention_secs`.
    pub fn new(capacity: usize, retention_secs: u64, bytes_max: usize) -> Self {
        NotificationLog {
            entries: VecDeque::new(),
            by_id: HashMap::new(),
            capacity,
            retention_secs,
            bytes: 0,
            bytes_max,
            evicted: None,
        }
    }

    /// Records the ids dropped from now on, for `take_evicted`.
    pub fn track_evictions(&mut self) {
        self.evicted.get_or_insert_with(Vec::new);
    }

    /// The ids dropped since the last call (none unless `track_evictions`).
    pub fn take_evicted(&mut self) -> Vec<String> {
        self.evicted
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Logs `notification`, dropping the oldest entries while over the count or byte
    /// bound.
    pub fn push(&mut self, now_unix: u64, notification: Arc<Notification>) {
        self.expire(now_unix);
        let cost = log_entry_cost(&notification);
        while !self.entries.is_empty()
            && (self.entries.len() >= self.capacity
                || self.bytes.saturating_add(cost) > self.bytes_max)
        {
            self.pop_oldest();
        }
        if let Some(replaced) = self
            .by_id
            .insert(notification.message_id.clone(), notification.clone())
        {
            // The same id logged twice (callers dedup first): count it once.
            self.entries.retain(|(_, n)| !Arc::ptr_eq(n, &replaced));
            self.bytes -= log_entry_cost(&replaced);
        }
        self.bytes += cost;
        self.entries.push_back((now_unix, notification));
    }

    /// The bytes counted against `bytes_max`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every logged notification, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<Notification>> {
        self.entries.iter().map(|(_, n)| n)
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
            self.bytes -= log_entry_cost(&n);
            if let Some(evicted) = &mut self.evicted {
                evicted.push(n.message_id.clone());
            }
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

/// The ranges of `sorted` seqs (duplicates allowed): sorted, disjoint, separated by at
/// least one absent seq, covering exactly the seqs given. No arithmetic can overflow, even
/// at `u64::MAX` (peers choose the seqs).
fn to_ranges(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &seq in sorted {
        match ranges.last_mut() {
            // `hi` = u64::MAX: every later (sorted) seq is `hi` again, so it joins.
            Some((_, hi)) if seq <= hi.saturating_add(1) => *hi = (*hi).max(seq),
            _ => ranges.push((seq, seq)),
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(id: &str) -> Arc<Notification> {
        Arc::new(Notification::for_test("r", id, "t", ""))
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
        let mut log = NotificationLog::new(3, 10, LOG_BYTES_MAX);
        for i in 0..5 {
            log.push(100, note(&format!("r-1-{i}")));
        }
        assert_eq!(log.len(), 3);
        assert!(log.get("r-1-1").is_none());
        assert!(log.get("r-1-4").is_some());
        log.push(200, note("r-1-9"));
        assert_eq!(log.len(), 1, "entries older than the retention expire");
    }

    fn sized(id: &str, data_bytes: usize) -> Arc<Notification> {
        let data = format!("\"{}\"", "x".repeat(data_bytes - 2));
        Arc::new(Notification {
            topic: String::new(),
            message_id: id.into(),
            relay_id: "r".into(),
            notification_type: "t".into(),
            data: serde_json::value::RawValue::from_string(data).unwrap(),
            timestamp: 0,
            signature: String::new(),
        })
    }

    // Proves the log drops its oldest entries to stay within its byte budget, whatever
    // the count bound allows, and counts what it drops (here 1 MiB notifications in a
    // 4 MiB log of 10,000 entries).
    #[test]
    fn log_is_bounded_in_bytes_oldest_dropped_first() {
        const MIB: usize = 1 << 20;
        let mut log = NotificationLog::new(LOG_ENTRIES_MAX, 3600, 4 * MIB);
        for i in 0..50 {
            log.push(100, sized(&format!("r-1-{i}"), MIB - 1024));
            assert!(log.bytes() <= 4 * MIB, "{} bytes after {i}", log.bytes());
        }
        assert_eq!(log.len(), 4);
        assert!(log.get("r-1-45").is_none());
        assert!(log.get("r-1-46").is_some() && log.get("r-1-49").is_some());
        let expected: usize = (46..50)
            .map(|i| log_entry_cost(&sized(&format!("r-1-{i}"), MIB - 1024)))
            .sum();
        assert_eq!(log.bytes(), expected, "the count follows pushes and drops");
        // Small entries: once the slack is used, the oldest large one makes room.
        for i in 0..100 {
            log.push(100, note(&format!("s-1-{i}")));
            assert!(log.bytes() <= 4 * MIB);
        }
        assert_eq!(log.len(), 103);
        assert!(log.get("r-1-46").is_none() && log.get("r-1-47").is_some());
        // One entry over the whole budget is kept alone (the newest always is).
        log.push(100, sized("r-1-99", 5 * MIB));
        assert_eq!(log.len(), 1);
        assert!(log.get("r-1-99").is_some());
        // Expiry gives the bytes back.
        log.push(10_000, note("t-1-1"));
        assert_eq!(log.len(), 1);
        assert_eq!(log.bytes(), log_entry_cost(&note("t-1-1")));
    }

    // Proves the dedup cache forgets its oldest ids to stay within its byte budget and
    // reports each one it forgets (the seen index follows these reports).
    #[test]
    fn dedup_is_bounded_in_bytes_oldest_forgotten_first() {
        let id = |i: usize| format!("{i:0>250}-{i}");
        let cost = id(10).len() + DEDUP_ID_OVERHEAD_BYTES;
        let mut cache = DedupCache::with_bytes_max(DEDUP_IDS_MAX, 10 * cost + 10);
        let mut forgotten = Vec::new();
        for i in 0..25 {
            assert!(cache.insert_evicting(&id(i), |old| forgotten.push(old.to_string())));
            assert!(cache.bytes() <= 10 * cost + 10);
        }
        assert_eq!(cache.len(), 10);
        assert_eq!(forgotten, (0..15).map(id).collect::<Vec<_>>());
        assert!(!cache.contains(&id(14)) && cache.contains(&id(15)));
        // A short id frees one long one: bytes, not count, decided.
        assert!(cache.insert_evicting("a-1-1", |old| forgotten.push(old.to_string())));
        assert_eq!(forgotten.last(), Some(&id(15)));
        assert_eq!(cache.len(), 10);
    }

    // Proves the byte budget never binds for honest ids: 100,000 of the longest ids a
    // relay makes (a 64-byte relay id) fit.
    #[test]
    fn honest_ids_meet_the_count_bound_first() {
        let longest = format!("{}-0a0b0c0d-{}", "r".repeat(64), u64::MAX);
        assert!(DEDUP_IDS_MAX * (longest.len() + DEDUP_ID_OVERHEAD_BYTES) <= DEDUP_BYTES_MAX);
    }

    #[test]
    fn summary_finds_the_gap() {
        let mut log = NotificationLog::new(100, 1000, LOG_BYTES_MAX);
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
    }

    // Proves two peer ids with the same stream at seq u64::MAX ("…-18446744073709551615"
    // and "…-018446744073709551615" parse alike) summarize without overflow.
    #[test]
    fn summary_of_seqs_at_u64_max_does_not_overflow() {
        let max = u64::MAX;
        let ids = [
            format!("s-1-{max}"),
            format!("s-1-0{max}"),
            format!("s-1-{}", max - 1),
        ];
        let summary = summarize(ids.iter().map(String::as_str), SUMMARY_RANGES_MAX);
        assert_eq!(summary.len(), 1);
        assert_eq!(summary[0].ranges, [(max - 1, max)]);
    }

    #[test]
    fn message_ids_split_into_stream_and_seq() {
        assert_eq!(
            split_message_id("relay-1-0a0b0c0d-42"),
            Some(("relay-1-0a0b0c0d", 42))
        );
        assert_eq!(split_message_id("nonsense"), None);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// Seqs at the edges of u64 (and some anywhere), so that neighbours and duplicates
        /// near 0 and u64::MAX are common.
        fn seq() -> impl Strategy<Value = u64> {
            prop_oneof![
                0u64..4,
                (u64::MAX - 3)..=u64::MAX,
                (1u64 << 32) - 2..(1u64 << 32) + 2,
                any::<u64>(),
            ]
        }

        /// Checks `ranges` are sorted, disjoint and apart (a gap between two), and cover
        /// exactly the distinct `seqs`.
        fn assert_exact_cover(ranges: &[(u64, u64)], seqs: &[u64]) {
            let distinct: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
            let mut covered: u128 = 0;
            for (i, &(lo, hi)) in ranges.iter().enumerate() {
                assert!(lo <= hi, "{ranges:?}");
                assert!(
                    distinct.contains(&lo) && distinct.contains(&hi),
                    "{ranges:?}"
                );
                if i > 0 {
                    let prev_hi = ranges[i - 1].1;
                    assert!(
                        prev_hi < u64::MAX && lo > prev_hi + 1,
                        "not sorted or not apart: {ranges:?}"
                    );
                }
                covered += u128::from(hi - lo) + 1;
            }
            for seq in &distinct {
                assert!(
                    ranges.iter().any(|&(lo, hi)| lo <= *seq && *seq <= hi),
                    "{seq} not covered by {ranges:?}"
                );
            }
            // Every distinct seq is covered and the ranges hold as many seqs as there are
            // distinct seqs, so they hold nothing else.
            assert_eq!(covered, distinct.len() as u128, "{ranges:?} for {seqs:?}");
        }

        proptest! {
            // Proves summaries of any ids (unsorted, duplicated, at u64 edges, padded with
            // zeros) never panic and cover exactly each stream's seqs.
            #[test]
            fn summaries_cover_exactly_the_ids(
                a in prop::collection::vec(seq(), 0..40),
                b in prop::collection::vec(seq(), 0..40),
                padded in any::<bool>(),
            ) {
                let pad = if padded { "0" } else { "" };
                let ids: Vec<String> = a
                    .iter()
                    .map(|s| format!("a-1-{pad}{s}"))
                    .chain(b.iter().map(|s| format!("b-2-{s}")))
                    .chain(a.iter().map(|s| format!("a-1-{s}")))
                    .collect();
                let summary = summarize(ids.iter().map(String::as_str), usize::MAX);
                let streams: Vec<&str> = summary.iter().map(|s| s.stream.as_str()).collect();
                let mut expected = Vec::new();
                if !a.is_empty() { expected.push("a-1"); }
                if !b.is_empty() { expected.push("b-2"); }
                prop_assert_eq!(streams, expected);
                for stream in &summary {
                    let seqs = if stream.stream == "a-1" { &a } else { &b };
                    assert_exact_cover(&stream.ranges, seqs);
                }
            }

            // Proves a range budget keeps at most that many ranges, the newest of each
            // stream (a suffix of its full summary).
            #[test]
            fn summaries_keep_the_newest_ranges_within_budget(
                seqs in prop::collection::vec(seq(), 0..40),
                ranges_max in 0usize..6,
            ) {
                let ids: Vec<String> = seqs.iter().map(|s| format!("a-1-{s}")).collect();
                let full = summarize(ids.iter().map(String::as_str), usize::MAX);
                let kept = summarize(ids.iter().map(String::as_str), ranges_max);
                let total: usize = kept.iter().map(|s| s.ranges.len()).sum();
                prop_assert!(total <= ranges_max);
                if let (Some(full), Some(kept)) = (full.first(), kept.first()) {
                    prop_assert!(full.ranges.ends_with(&kept.ranges));
                    prop_assert_eq!(kept.ranges.len(), full.ranges.len().min(ranges_max));
                }
            }
        }
    }
}
