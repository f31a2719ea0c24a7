//! A peer's log summary, checked, and what it names that this relay never saw, found in
//! work bounded by the summary's ranges and the ids asked for, never by the ids a range
//! spans: a range (1, 10^12) costs what (1, 1) costs.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::dedup::SUMMARY_RANGES_MAX;
use crate::protocol::peer::StreamSummary;

/// Streams one log summary may name (each holds at least one range when a relay builds
/// it, so no honest summary names more streams than ranges).
pub const SUMMARY_STREAMS_MAX: usize = SUMMARY_RANGES_MAX;
/// Bytes of one stream name in a summary: a relay id (at most 128 bytes, as handshakes
/// bound it), a dash and a boot nonce fit with room to spare.
pub const STREAM_NAME_BYTES_MAX: usize = 256;

/// Why a summary was refused; a peer sending one is cut (1008).
///
/// # Errors
/// More than `SUMMARY_STREAMS_MAX` streams, a stream named twice, a stream name empty or
/// over `STREAM_NAME_BYTES_MAX` bytes, more than `SUMMARY_RANGES_MAX` ranges in all or in
/// one stream, a range with lo > hi, or ranges not sorted and disjoint.
pub fn validate(summary: &[StreamSummary]) -> Result<(), &'static str> {
    if summary.len() > SUMMARY_STREAMS_MAX {
        return Err("too many streams");
    }
    let mut names = HashSet::with_capacity(summary.len());
    let mut total = 0usize;
    for stream in summary {
        if stream.stream.is_empty() || stream.stream.len() > STREAM_NAME_BYTES_MAX {
            return Err("stream name empty or too long");
        }
        if !names.insert(stream.stream.as_str()) {
            return Err("stream named twice");
        }
        total = total.saturating_add(stream.ranges.len());
        if stream.ranges.len() > SUMMARY_RANGES_MAX || total > SUMMARY_RANGES_MAX {
            return Err("too many ranges");
        }
        let mut previous_hi: Option<u64> = None;
        for &(lo, hi) in &stream.ranges {
            if lo > hi {
                return Err("range with lo > hi");
            }
            if previous_hi.is_some_and(|p| p >= lo) {
                return Err("ranges not sorted and disjoint");
            }
            previous_hi = Some(hi);
        }
    }
    Ok(())
}

/// The seqs of the ids the dedup cache holds, per stream, as disjoint ranges (`lo` to
/// `hi`, inclusive). Kept beside the cache, so finding what a summary names and the
/// cache lacks walks ranges, not ids.
#[derive(Default)]
pub struct SeenIndex {
    streams: HashMap<String, BTreeMap<u64, u64>>,
}

/// `{stream}-{seq}` with `seq` written canonically (no sign, no leading zero), so that
/// the id a summary names, formatted back, is exactly this id.
fn canonical(id: &str) -> Option<(&str, u64)> {
    let (stream, digits) = id.rsplit_once('-')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    Some((stream, digits.parse().ok()?))
}

impl SeenIndex {
    /// Notes `id` as seen (ids not of the form `{stream}-{seq}` are not indexed: no
    /// summary can name them).
    pub fn insert(&mut self, id: &str) {
        let Some((stream, seq)) = canonical(id) else {
            return;
        };
        let ranges = match self.streams.get_mut(stream) {
            Some(ranges) => ranges,
            None => self.streams.entry(stream.to_string()).or_default(),
        };
        let mut lo = seq;
        let mut hi = seq;
        if let Some((&a, &b)) = ranges.range(..=seq).next_back() {
            if b >= seq {
                return;
            }
            if b.checked_add(1) == Some(seq) {
                lo = a;
            }
        }
        if let Some(next) = seq.checked_add(1)
            && let Some(b) = ranges.remove(&next)
        {
            hi = b;
        }
        ranges.insert(lo, hi);
    }

    /// Every stream's seen seq ranges (`lo`, `hi`, inclusive).
    pub fn streams(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = (u64, u64)> + '_)> {
        self.streams
            .iter()
            .map(|(stream, ranges)| (stream.as_str(), ranges.iter().map(|(&a, &b)| (a, b))))
    }

    /// Forgets `id` (the dedup cache forgot it).
    pub fn remove(&mut self, id: &str) {
        let Some((stream, seq)) = canonical(id) else {
            return;
        };
        let Some(ranges) = self.streams.get_mut(stream) else {
            return;
        };
        let Some((&a, &b)) = ranges.range(..=seq).next_back() else {
            return;
        };
        if b < seq {
            return;
        }
        ranges.remove(&a);
        if a < seq {
            ranges.insert(a, seq - 1);
        }
        if seq < b {
            ranges.insert(seq + 1, b);
        }
        if ranges.is_empty() {
            self.streams.remove(stream);
        }
    }

    /// Ids a (valid) summary names that are not indexed as seen, in summary order, at
    /// most `considered_max` of them. Costs O((ranges + considered_max) · log n): every
    /// step either yields an id or jumps a whole seen range, and between two seen ranges
    /// lies an id that is yielded.
    pub fn unseen(&self, summary: &[StreamSummary], considered_max: usize) -> Vec<String> {
        let mut out = Vec::new();
        if considered_max == 0 {
            return out;
        }
        let empty = BTreeMap::new();
        for stream in summary {
            let seen = self.streams.get(&stream.stream).unwrap_or(&empty);
            for &(lo, hi) in &stream.ranges {
                let mut cur = lo;
                loop {
                    if cur > hi {
                        break;
                    }
                    // Inside a seen range: jump past it.
                    if let Some((_, &b)) = seen.range(..=cur).next_back()
                        && b >= cur
                    {
                        match b.checked_add(1) {
                            Some(next) => cur = next,
                            None => break,
                        }
                        continue;
                    }
                    // Unseen up to the next seen range (or the end of this one).
                    let gap_end = match cur.checked_add(1).and_then(|n| seen.range(n..).next()) {
                        Some((&a, _)) => hi.min(a - 1),
                        None => hi,
                    };
                    let mut seq = cur;
                    loop {
                        out.push(format!("{}-{seq}", stream.stream));
                        if out.len() == considered_max {
                            return out;
                        }
                        if seq == gap_end {
                            break;
                        }
                        seq += 1;
                    }
                    match gap_end.checked_add(1) {
                        Some(next) => cur = next,
                        None => break,
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::dedup::FETCH_IDS_MAX;

    fn summary(stream: &str, ranges: &[(u64, u64)]) -> Vec<StreamSummary> {
        vec![StreamSummary {
            stream: stream.into(),
            ranges: ranges.to_vec(),
        }]
    }

    #[test]
    fn malformed_summaries_are_refused() {
        assert!(validate(&summary("a-1", &[(1, 3), (5, 9)])).is_ok());
        assert_eq!(
            validate(&summary("a-1", &[(5, 9), (1, 3)])),
            Err("ranges not sorted and disjoint")
        );
        assert_eq!(
            validate(&summary("a-1", &[(1, 5), (5, 9)])),
            Err("ranges not sorted and disjoint")
        );
        assert_eq!(
            validate(&summary("a-1", &[(1, 5), (1, 5)])),
            Err("ranges not sorted and disjoint")
        );
        assert_eq!(
            validate(&summary("a-1", &[(6, 5)])),
            Err("range with lo > hi")
        );
        assert_eq!(
            validate(&summary(&"x".repeat(257), &[(1, 1)])),
            Err("stream name empty or too long")
        );
        assert_eq!(
            validate(&summary("", &[(1, 1)])),
            Err("stream name empty or too long")
        );
        let many: Vec<(u64, u64)> = (0..=SUMMARY_RANGES_MAX as u64)
            .map(|i| (2 * i, 2 * i))
            .collect();
        assert_eq!(validate(&summary("a-1", &many)), Err("too many ranges"));
        let split: Vec<StreamSummary> = (0..2)
            .map(|i| StreamSummary {
                stream: format!("s{i}-1"),
                ranges: many[..SUMMARY_RANGES_MAX / 2 + 1].to_vec(),
            })
            .collect();
        assert_eq!(
            validate(&split),
            Err("too many ranges"),
            "the bound is on all streams together"
        );
        let streams: Vec<StreamSummary> = (0..=SUMMARY_STREAMS_MAX)
            .map(|i| StreamSummary {
                stream: format!("s{i}-1"),
                ranges: vec![],
            })
            .collect();
        assert_eq!(validate(&streams), Err("too many streams"));
        let twice = [summary("a-1", &[(1, 1)]), summary("a-1", &[(3, 3)])].concat();
        assert_eq!(validate(&twice), Err("stream named twice"));
    }

    #[test]
    fn the_index_keeps_disjoint_ranges_through_inserts_and_removals() {
        let mut index = SeenIndex::default();
        for seq in [1, 2, 3, 5, 7, 6, 4] {
            index.insert(&format!("a-1-{seq}"));
        }
        assert_eq!(index.streams["a-1"].iter().collect::<Vec<_>>(), [(&1, &7)]);
        index.remove("a-1-4");
        index.remove("a-1-1");
        assert_eq!(
            index.streams["a-1"].iter().collect::<Vec<_>>(),
            [(&2, &3), (&5, &7)]
        );
        for seq in [2, 3, 5, 6, 7] {
            index.remove(&format!("a-1-{seq}"));
        }
        assert!(index.streams.is_empty());
        // Not canonical: a summary naming seq 7 means "a-1-7", never "a-1-07".
        index.insert("a-1-07");
        index.insert("a-1-+7");
        index.insert("nonsense");
        assert!(index.streams.is_empty());
        index.insert(&format!("a-1-{}", u64::MAX));
        index.insert("a-1-0");
        assert_eq!(
            index.unseen(&summary("a-1", &[(0, 2), (u64::MAX - 1, u64::MAX)]), 10),
            ["a-1-1", "a-1-2", &format!("a-1-{}", u64::MAX - 1)]
        );
    }

    #[test]
    fn unseen_ids_are_found_without_walking_seen_ones() {
        let mut index = SeenIndex::default();
        for seq in 1..=100_000u64 {
            if seq != 50_000 {
                index.insert(&format!("a-1-{seq}"));
            }
        }
        let huge = summary("a-1", &[(1, 1_000_000_000_000)]);
        assert_eq!(
            index.unseen(&huge, 3),
            ["a-1-50000", "a-1-100001", "a-1-100002"]
        );
        assert_eq!(
            index.unseen(&summary("b-1", &[(1, u64::MAX)]), 2),
            ["b-1-1", "b-1-2"]
        );
        // Every other id seen: the gaps are what is asked for.
        let mut index = SeenIndex::default();
        for seq in (0..20u64).step_by(2) {
            index.insert(&format!("a-1-{seq}"));
        }
        assert_eq!(
            index.unseen(&summary("a-1", &[(0, 6)]), 10),
            ["a-1-1", "a-1-3", "a-1-5"]
        );
        // A thousand ranges of a trillion ids each: bounded by what is asked for.
        let ranges: Vec<(u64, u64)> = (0..1024u64)
            .map(|i| (i * 1_000_000_000_000 + 1, (i + 1) * 1_000_000_000_000 - 1))
            .collect();
        assert_eq!(
            index.unseen(&summary("c-1", &ranges), FETCH_IDS_MAX).len(),
            FETCH_IDS_MAX
        );
    }
}
