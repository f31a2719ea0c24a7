//! The notification ids a relay has seen, kept in its data directory, so that a restarted
//! relay does not deliver again to its wallets what they already received before it went
//! down (anti-entropy would otherwise fetch the peers' whole logs as "missed").
//!
//! Stored compactly as seq ranges per origin stream, written atomically every sync
//! interval and at shutdown: a crash can repeat at most one interval's notifications.
//! The file holds at most `SEEN_FILE_BYTES_MAX` bytes: what does not fit (the oldest
//! ranges) is left out when saving, and a larger file is refused when loading, unread.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::dedup::DEDUP_IDS_MAX;
use crate::protocol::peer::StreamSummary;

const SEEN_FILE: &str = "mesh-seen.json";
/// Ranges written; more than the dedup cache could ever need for contiguous streams.
pub const SEEN_RANGES_MAX: usize = 65_536;
/// Bytes of the file at most. A range costs at most 44 bytes and a stream's header at
/// most ~300 (names are at most 256 bytes), so a relay's own contiguous streams take a
/// few hundred bytes and 1 MiB still holds ~20,000 ranges of gapped, peer-chosen seqs.
pub const SEEN_FILE_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} is larger than {bytes_max} bytes; not read")]
    TooLarge { path: PathBuf, bytes_max: usize },
}

/// Writes the seen ranges (temporary file, then rename), at most `SEEN_FILE_BYTES_MAX`
/// bytes of them: each stream's newest ranges first (see `within_budget`).
///
/// # Errors
/// The data directory cannot be created or written.
pub fn save(dir: &Path, seen: &[StreamSummary]) -> Result<(), PersistError> {
    let kept = within_budget(seen, SEEN_FILE_BYTES_MAX);
    let bytes = serde_json::to_vec(&kept).expect("ranges serialize");
    debug_assert!(bytes.len() <= SEEN_FILE_BYTES_MAX, "{}", bytes.len());
    write_atomically(dir, SEEN_FILE, &bytes)
}

/// The ids recorded by the last `save`, at most `DEDUP_IDS_MAX` (newest ranges first
/// within each stream are kept by `save` already). No file means nothing seen.
///
/// # Errors
/// The file exists but cannot be read or parsed, or is over `SEEN_FILE_BYTES_MAX` bytes
/// (it is not read past that).
pub fn load(dir: &Path) -> Result<Vec<String>, PersistError> {
    load_within(dir, SEEN_FILE_BYTES_MAX)
}

fn load_within(dir: &Path, bytes_max: usize) -> Result<Vec<String>, PersistError> {
    let seen: Vec<StreamSummary> = read_json(&dir.join(SEEN_FILE), bytes_max)?.unwrap_or_default();
    Ok(expand(&seen, DEDUP_IDS_MAX))
}

/// Reads a JSON file of at most `bytes_max` bytes; `None` when there is no file.
fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes_max: usize,
) -> Result<Option<T>, PersistError> {
    let path = path.to_path_buf();
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(PersistError::Read {
                path,
                message: e.to_string(),
            });
        }
    };
    // One byte more than allowed tells a file over the budget, without reading it all.
    let mut bytes = Vec::new();
    let limit = u64::try_from(bytes_max)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    if let Err(e) = file.take(limit).read_to_end(&mut bytes) {
        return Err(PersistError::Read {
            path,
            message: e.to_string(),
        });
    }
    if bytes.len() > bytes_max {
        return Err(PersistError::TooLarge { path, bytes_max });
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| PersistError::Read {
            path,
            message: e.to_string(),
        })
}

/// Writes `bytes` to `dir/name` atomically (temporary file, then rename).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), PersistError> {
    let path = dir.join(name);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let temporary = dir.join(format!("{name}.tmp"));
        std::fs::write(&temporary, bytes)?;
        std::fs::rename(&temporary, &path)
    };
    write().map_err(|source| PersistError::Write { path, source })
}

const KEYS_FILE: &str = "mesh-keys.json";
/// Bytes of the key bindings file at most: `BINDINGS_MAX` ids and keys fit.
pub const KEYS_FILE_BYTES_MAX: usize = super::trust::BINDINGS_MAX * 512;

/// Writes the relay id → key bindings (`[[id, key hex], …]`), so a restarted relay still
/// refuses a second key for an id it knew.
///
/// # Errors
/// The data directory cannot be created or written.
pub fn save_bindings(dir: &Path, bindings: &[(String, String)]) -> Result<(), PersistError> {
    let bytes = serde_json::to_vec(bindings).expect("bindings serialize");
    write_atomically(dir, KEYS_FILE, &bytes)
}

/// The bindings the last `save_bindings` wrote (none without a file).
///
/// # Errors
/// The file cannot be read or parsed, or is over `KEYS_FILE_BYTES_MAX` bytes.
pub fn load_bindings(dir: &Path) -> Result<Vec<(String, String)>, PersistError> {
    Ok(read_json(&dir.join(KEYS_FILE), KEYS_FILE_BYTES_MAX)?.unwrap_or_default())
}

/// Bytes of `n` written in decimal.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// What `seen` serializes to, within `bytes_max` bytes: streams and ranges are taken in
/// rounds, each stream's newest (last) range in the first round, its next newest in the
/// second, and so on, until one does not fit; kept ranges stay in order. Costs are those
/// of `serde_json`'s compact output, so the result serializes to at most `bytes_max`.
pub fn within_budget(seen: &[StreamSummary], bytes_max: usize) -> Vec<StreamSummary> {
    // `[` and `]`.
    let mut used = 2usize;
    // Per stream: how many of its newest ranges are kept.
    let mut kept = vec![0usize; seen.len()];
    let mut active: Vec<usize> = (0..seen.len())
        .filter(|&i| !seen[i].ranges.is_empty())
        .collect();
    let mut streams_kept = 0usize;
    'rounds: while !active.is_empty() {
        let mut still = Vec::with_capacity(active.len());
        for &i in &active {
            let stream = &seen[i];
            let (lo, hi) = stream.ranges[stream.ranges.len() - 1 - kept[i]];
            // `[lo,hi]`, and a comma unless it is the stream's first range.
            let mut cost = digits(lo) + digits(hi) + 3 + usize::from(kept[i] > 0);
            if kept[i] == 0 {
                // `{"stream":NAME,"ranges":[` … `]}`, and a comma unless first.
                let name = serde_json::to_string(&stream.stream)
                    .expect("strings serialize")
                    .len();
                cost += name + 23 + usize::from(streams_kept > 0);
            }
            if used.saturating_add(cost) > bytes_max {
                break 'rounds;
            }
            used += cost;
            if kept[i] == 0 {
                streams_kept += 1;
            }
            kept[i] += 1;
            if kept[i] < stream.ranges.len() {
                still.push(i);
            }
        }
        active = still;
    }
    seen.iter()
        .zip(kept)
        .filter(|(_, k)| *k > 0)
        .map(|(stream, k)| StreamSummary {
            stream: stream.stream.clone(),
            ranges: stream.ranges[stream.ranges.len() - k..].to_vec(),
        })
        .collect()
}

/// The ids of `seen`'s ranges, in order, at most `ids_max`: a range such as
/// `(0, u64::MAX)` costs at most `ids_max` steps, never 2^64; `lo > hi` is empty.
fn expand(seen: &[StreamSummary], ids_max: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for stream in seen {
        for &(lo, hi) in &stream.ranges {
            let room = ids_max.saturating_sub(ids.len());
            if room == 0 {
                return ids;
            }
            // `RangeInclusive` ends at `u64::MAX` without overflow; `take` bounds it.
            ids.extend(
                (lo..=hi)
                    .take(room)
                    .map(|seq| format!("{}-{seq}", stream.stream)),
            );
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_ranges_survive_a_round_trip() {
        let dir = std::env::temp_dir().join(format!("sdk_relay_persist_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load(&dir).unwrap().is_empty(), "no file: nothing seen");
        let seen = vec![StreamSummary {
            stream: "r1-0000000a".into(),
            ranges: vec![(1, 3), (7, 7)],
        }];
        save(&dir, &seen).unwrap();
        assert_eq!(
            load(&dir).unwrap(),
            [
                "r1-0000000a-1",
                "r1-0000000a-2",
                "r1-0000000a-3",
                "r1-0000000a-7"
            ]
        );
        std::fs::write(dir.join(SEEN_FILE), b"{not json").unwrap();
        assert!(load(&dir).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    // Proves a range (0, u64::MAX) in the file loads DEDUP_IDS_MAX ids, not 2^64.
    #[test]
    fn a_huge_range_loads_a_bounded_number_of_ids() {
        let dir =
            std::env::temp_dir().join(format!("sdk_relay_persist_huge_{}", std::process::id()));
        let seen = vec![StreamSummary {
            stream: "r".into(),
            ranges: vec![(0, u64::MAX), (u64::MAX, u64::MAX)],
        }];
        save(&dir, &seen).unwrap();
        let ids = load(&dir).unwrap();
        assert_eq!(ids.len(), DEDUP_IDS_MAX);
        assert_eq!(ids.last().unwrap(), &format!("r-{}", DEDUP_IDS_MAX - 1));
        std::fs::remove_dir_all(&dir).ok();
    }

    // Proves a seen set far over the budget (3 streams of 65,536 gapped ranges: ~8 MiB
    // of JSON) is saved within SEEN_FILE_BYTES_MAX, keeping each stream's newest ranges,
    // and loads again.
    #[test]
    fn a_huge_seen_set_is_saved_within_the_budget_newest_first() {
        let dir =
            std::env::temp_dir().join(format!("sdk_relay_persist_budget_{}", std::process::id()));
        let seen: Vec<StreamSummary> = (0..3)
            .map(|s| StreamSummary {
                stream: format!("relay-{s}-0a0b0c0d"),
                ranges: (0..SEEN_RANGES_MAX as u64)
                    .map(|i| (1_000_000_000 + 2 * i, 1_000_000_000 + 2 * i))
                    .collect(),
            })
            .collect();
        assert!(serde_json::to_vec(&seen).unwrap().len() > 4 * SEEN_FILE_BYTES_MAX);
        save(&dir, &seen).unwrap();
        let size = std::fs::metadata(dir.join(SEEN_FILE)).unwrap().len() as usize;
        assert!(size <= SEEN_FILE_BYTES_MAX, "{size} bytes");
        assert!(
            size > SEEN_FILE_BYTES_MAX - 64,
            "the budget is used: {size} bytes"
        );
        let ids = load(&dir).unwrap();
        let newest = 1_000_000_000 + 2 * (SEEN_RANGES_MAX as u64 - 1);
        for s in 0..3 {
            assert!(
                ids.contains(&format!("relay-{s}-0a0b0c0d-{newest}")),
                "stream {s} keeps its newest range"
            );
        }
        assert!(
            !ids.contains(&"relay-0-0a0b0c0d-1000000000".to_string()),
            "the oldest ranges are left out"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    // Proves the budget computation is exact: what it keeps serializes to at most the
    // budget, and one byte less keeps less.
    #[test]
    fn the_budget_is_counted_exactly() {
        let seen = vec![
            StreamSummary {
                stream: "a\"b-1".into(),
                ranges: vec![(0, 9), (11, u64::MAX)],
            },
            StreamSummary {
                stream: "c-2".into(),
                ranges: vec![(5, 5)],
            },
            StreamSummary {
                stream: "empty".into(),
                ranges: vec![],
            },
        ];
        let whole = serde_json::to_vec(&seen[..2]).unwrap().len();
        assert_eq!(within_budget(&seen, whole), seen[..2]);
        let less = within_budget(&seen, whole - 1);
        assert_ne!(less, seen[..2]);
        assert!(serde_json::to_vec(&less).unwrap().len() < whole);
        assert_eq!(within_budget(&seen, 2), Vec::<StreamSummary>::new());
    }

    // Proves a file over the budget is refused, not parsed (here a 100 MiB sparse file).
    #[test]
    fn an_oversized_file_is_refused_unread() {
        let dir =
            std::env::temp_dir().join(format!("sdk_relay_persist_big_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::File::create(dir.join(SEEN_FILE)).unwrap();
        file.set_len(100 << 20).unwrap();
        match load(&dir) {
            Err(PersistError::TooLarge { bytes_max, .. }) => {
                assert_eq!(bytes_max, SEEN_FILE_BYTES_MAX);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;
        use crate::mesh::dedup::summarize;

        fn seq() -> impl Strategy<Value = u64> {
            prop_oneof![0u64..4, (u64::MAX - 3)..=u64::MAX, any::<u64>()]
        }

        fn range() -> impl Strategy<Value = (u64, u64)> {
            prop_oneof![
                (seq(), seq()),
                Just((u64::MAX, u64::MAX)),
                Just((0, u64::MAX)),
                Just((u64::MAX, 0)),
            ]
        }

        proptest! {
            // Proves expanding any ranges (u64 edges, lo > hi, (0, u64::MAX)) never panics,
            // yields at most the bound, and only ids inside the ranges, in order.
            #[test]
            fn expansion_is_bounded_and_inside_the_ranges(
                ranges in prop::collection::vec(range(), 0..6),
                ids_max in 0usize..2000,
            ) {
                let seen = vec![StreamSummary { stream: "s-1".into(), ranges: ranges.clone() }];
                let ids = expand(&seen, ids_max);
                prop_assert!(ids.len() <= ids_max);
                let expected: Vec<String> = ranges
                    .iter()
                    .flat_map(|&(lo, hi)| lo..=hi)
                    .take(ids_max)
                    .map(|seq| format!("s-1-{seq}"))
                    .collect();
                prop_assert_eq!(ids, expected);
            }

            // Proves what summarize gives, saved and loaded, is exactly the distinct ids.
            #[test]
            fn saved_summaries_load_as_the_distinct_ids(
                seqs in prop::collection::vec(seq(), 0..30),
            ) {
                let ids: Vec<String> = seqs.iter().map(|s| format!("s-1-{s}")).collect();
                let seen = summarize(ids.iter().map(String::as_str), SEEN_RANGES_MAX);
                prop_assert_eq!(&within_budget(&seen, usize::MAX), &seen);
                let mut loaded = expand(&seen, DEDUP_IDS_MAX);
                loaded.sort();
                let mut distinct = ids.clone();
                distinct.sort();
                distinct.dedup();
                prop_assert_eq!(loaded, distinct);
            }
        }
    }
}
