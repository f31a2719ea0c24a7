//! A wallet's position: per origin stream, the seq ranges it is accounted for.
//!
//! Streams are named in tokens by a 6-byte hash of their name (`stream_key`), so a
//! position for fifty relays stays a few hundred bytes whatever their ids are. Two
//! streams of one mesh colliding on 48 bits is about as likely as a 2^-40 event for
//! thousands of streams.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// A stream's name, hashed (`stream_key`).
pub type StreamKey = [u8; 6];

const STREAM_KEY_DOMAIN: &[u8] = b"sdk_relay/resume/stream/v1\0";

/// The key of stream `<relay_id>-<boot nonce>` in positions and tokens.
pub fn stream_key(stream: &str) -> StreamKey {
    let digest = Sha256::new()
        .chain_update(STREAM_KEY_DOMAIN)
        .chain_update(stream.as_bytes())
        .finalize();
    let mut key = [0u8; 6];
    key.copy_from_slice(&digest[..6]);
    key
}

/// Sorted, disjoint, non-adjacent inclusive ranges of seqs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Ranges as given (sorted and disjoint, as a parser checked); adjacent ones merge.
    pub fn from_sorted(ranges: Vec<(u64, u64)>) -> RangeSet {
        let mut set = RangeSet(Vec::with_capacity(ranges.len()));
        for (lo, hi) in ranges {
            set.insert_range(lo, hi);
        }
        set
    }

    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, seq: u64) -> bool {
        let i = self.0.partition_point(|&(lo, _)| lo <= seq);
        i > 0 && self.0[i - 1].1 >= seq
    }

    /// Adds `lo..=hi` (ignored when `lo > hi`), merging what it touches.
    pub fn insert_range(&mut self, lo: u64, hi: u64) {
        if lo > hi {
            return;
        }
        // First range that could touch [lo, hi]: its hi + 1 >= lo.
        let start = self.0.partition_point(|&(_, h)| h.saturating_add(1) < lo);
        // Ranges from `start` whose lo <= hi + 1 touch it.
        let mut end = start;
        let (mut new_lo, mut new_hi) = (lo, hi);
        while end < self.0.len() && self.0[end].0 <= hi.saturating_add(1) {
            new_lo = new_lo.min(self.0[end].0);
            new_hi = new_hi.max(self.0[end].1);
            end += 1;
        }
        self.0.splice(start..end, std::iter::once((new_lo, new_hi)));
    }

    pub fn insert(&mut self, seq: u64) {
        self.insert_range(seq, seq);
    }

    /// Takes `seq` out (splitting the range that holds it).
    pub fn remove(&mut self, seq: u64) {
        let i = self.0.partition_point(|&(lo, _)| lo <= seq);
        if i == 0 || self.0[i - 1].1 < seq {
            return;
        }
        let (lo, hi) = self.0[i - 1];
        let mut parts = Vec::with_capacity(2);
        if lo < seq {
            parts.push((lo, seq - 1));
        }
        if seq < hi {
            parts.push((seq + 1, hi));
        }
        self.0.splice(i - 1..i, parts);
    }

    pub fn union_with(&mut self, other: &RangeSet) {
        for &(lo, hi) in &other.0 {
            self.insert_range(lo, hi);
        }
    }

    /// The seqs of `self` that are not in `other`, by range arithmetic.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        for &(lo, hi) in &self.0 {
            // The part of [lo, hi] not yet known to be covered starts at `next`.
            let mut next = lo;
            let first = other.0.partition_point(|&(_, b)| b < lo);
            for &(a, b) in &other.0[first..] {
                if a > hi {
                    break;
                }
                if a > next {
                    out.push((next, a - 1));
                }
                next = match b.checked_add(1) {
                    Some(after) => next.max(after),
                    None => return RangeSet(out),
                };
                if next > hi {
                    break;
                }
            }
            if next <= hi {
                out.push((next, hi));
            }
        }
        RangeSet(out)
    }

    /// How many seqs of `self` are not in `other`, by range arithmetic (a range of 10^12
    /// seqs costs what a range of one costs).
    pub fn count_not_in(&self, other: &RangeSet) -> u64 {
        let mut missing: u64 = 0;
        for &(lo, hi) in &self.0 {
            let mut covered: u64 = 0;
            for &(a, b) in &other.0 {
                if b < lo || a > hi {
                    continue;
                }
                covered = covered.saturating_add(b.min(hi) - a.max(lo) + 1);
            }
            let total = (hi - lo).saturating_add(1);
            missing = missing.saturating_add(total.saturating_sub(covered));
        }
        missing
    }
}

/// Per stream, the seqs a wallet is accounted for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    streams: BTreeMap<StreamKey, RangeSet>,
}

impl Position {
    pub fn streams(&self) -> impl Iterator<Item = (&StreamKey, &RangeSet)> {
        self.streams.iter()
    }

    pub fn stream(&self, key: &StreamKey) -> Option<&RangeSet> {
        self.streams.get(key)
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    pub fn contains(&self, key: &StreamKey, seq: u64) -> bool {
        self.streams.get(key).is_some_and(|r| r.contains(seq))
    }

    pub fn insert_range(&mut self, key: StreamKey, lo: u64, hi: u64) {
        self.streams.entry(key).or_default().insert_range(lo, hi);
    }

    pub fn insert(&mut self, key: StreamKey, seq: u64) {
        self.insert_range(key, seq, seq);
    }

    pub fn set_stream(&mut self, key: StreamKey, ranges: RangeSet) {
        if !ranges.is_empty() {
            self.streams.insert(key, ranges);
        }
    }

    pub fn union_with(&mut self, other: &Position) {
        for (key, ranges) in &other.streams {
            self.streams.entry(*key).or_default().union_with(ranges);
        }
    }

    /// What `self` names that `other` does not (streams left empty are dropped).
    pub fn minus(&self, other: &Position) -> Position {
        let mut out = Position::default();
        for (key, ranges) in &self.streams {
            let rest = match other.streams.get(key) {
                Some(covered) => ranges.difference(covered),
                None => ranges.clone(),
            };
            out.set_stream(*key, rest);
        }
        out
    }
    /// Takes `seq` of stream `key` out (a stream left empty goes).
    pub fn remove(&mut self, key: &StreamKey, seq: u64) {
        if let Some(ranges) = self.streams.get_mut(key) {
            ranges.remove(seq);
            if ranges.is_empty() {
                self.streams.remove(key);
            }
        }
    }
}

/// The stream key and seq of a message id `<stream>-<seq>`; `None` when it has no
/// numeric seq.
pub fn message_position(message_id: &str) -> Option<(StreamKey, u64)> {
    let (stream, seq) = message_id.rsplit_once('-')?;
    Some((stream_key(stream), seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u64, u64)]) -> RangeSet {
        RangeSet::from_sorted(ranges.to_vec())
    }

    #[test]
    fn a_difference_keeps_exactly_the_seqs_the_other_lacks() {
        let a = set(&[(1, 10), (20, 30), (40, 40)]);
        let b = set(&[(0, 2), (5, 6), (10, 22), (25, 25), (29, 50)]);
        assert_eq!(
            a.difference(&b).ranges(),
            &[(3, 4), (7, 9), (23, 24), (26, 28)]
        );
        assert_eq!(a.difference(&RangeSet::default()), a);
        assert!(a.difference(&a).is_empty());
        assert!(
            set(&[(5, u64::MAX)])
                .difference(&set(&[(0, u64::MAX)]))
                .is_empty()
        );
        assert_eq!(
            set(&[(1, u64::MAX)]).difference(&set(&[(3, 3)])).ranges(),
            &[(1, 2), (4, u64::MAX)]
        );
        // Checked seq by seq over a small universe.
        let (x, y) = (
            set(&[(2, 9), (12, 14), (17, 17)]),
            set(&[(1, 3), (8, 13), (15, 20)]),
        );
        let d = x.difference(&y);
        for seq in 0..25 {
            assert_eq!(
                d.contains(seq),
                x.contains(seq) && !y.contains(seq),
                "seq {seq}"
            );
        }
    }

    #[test]
    fn a_position_minus_another_drops_the_streams_it_covers() {
        let (k1, k2) = (stream_key("a-00000001"), stream_key("b-00000001"));
        let mut skip = Position::default();
        skip.insert_range(k1, 1, 5);
        skip.insert_range(k2, 1, 5);
        let mut routed = Position::default();
        routed.insert_range(k1, 1, 9);
        routed.insert_range(k2, 1, 3);
        let rest = skip.minus(&routed);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest.stream(&k2).unwrap().ranges(), &[(4, 5)]);
        let mut whole = rest.clone();
        whole.union_with(&routed);
        let mut expected = skip.clone();
        expected.union_with(&routed);
        assert_eq!(whole, expected);
    }

    #[test]
    fn removing_a_seq_splits_its_range_and_leaves_the_rest() {
        let mut set = RangeSet::from_sorted(vec![(1, 5), (9, 9)]);
        set.remove(3);
        assert_eq!(set.ranges(), &[(1, 2), (4, 5), (9, 9)]);
        set.remove(1);
        set.remove(5);
        set.remove(9);
        set.remove(7);
        assert_eq!(set.ranges(), &[(2, 2), (4, 4)]);
        let mut position = Position::default();
        let key = stream_key("relay-a-00000001");
        position.insert(key, 4);
        position.remove(&key, 4);
        assert!(position.is_empty());
        assert_eq!(message_position("relay-a-00000001-4"), Some((key, 4)));
        assert_eq!(message_position("relay-a-00000001-s4"), None);
    }

    #[test]
    fn ranges_merge_when_they_touch_and_stay_apart_otherwise() {
        let mut set = RangeSet::default();
        set.insert(5);
        set.insert(7);
        assert_eq!(set.ranges(), &[(5, 5), (7, 7)]);
        set.insert(6);
        assert_eq!(set.ranges(), &[(5, 7)]);
        set.insert_range(1, 3);
        set.insert_range(10, u64::MAX);
        set.insert_range(2, 12);
        assert_eq!(set.ranges(), &[(1, u64::MAX)]);
        assert!(set.contains(u64::MAX) && !set.contains(0));
    }

    #[test]
    fn count_not_in_is_range_arithmetic() {
        let a = RangeSet::from_sorted(vec![(1, 1_000_000_000_000)]);
        let b = RangeSet::from_sorted(vec![(1, 10), (20, 29)]);
        assert_eq!(a.count_not_in(&b), 1_000_000_000_000 - 20);
        assert_eq!(b.count_not_in(&a), 0);
    }

    #[test]
    fn stream_keys_differ_per_stream() {
        assert_ne!(
            stream_key("relay-a-0000002a"),
            stream_key("relay-a-0000002b")
        );
        assert_eq!(stream_key("x"), stream_key("x"));
    }
}
