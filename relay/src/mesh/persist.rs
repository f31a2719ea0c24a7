//! The notification ids a relay has seen, kept in its data directory, so that a restarted
//! relay does not deliver again to its wallets what they already received before it went
//! down (anti-entropy would otherwise fetch the peers' whole logs as "missed").
//!
//! Stored compactly as seq ranges per origin stream, written atomically every sync
//! interval and at shutdown: a crash can repeat at most one interval's notifications.

use std::path::{Path, PathBuf};

use super::dedup::DEDUP_IDS_MAX;
use crate::protocol::peer::StreamSummary;

const SEEN_FILE: &str = "mesh-seen.json";
/// Ranges written; more than the dedup cache could ever need for contiguous streams.
pub const SEEN_RANGES_MAX: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
}

/// Writes the seen ranges (temporary file, then rename).
///
/// # Errors
/// The data directory cannot be created or written.
pub fn save(dir: &Path, seen: &[StreamSummary]) -> Result<(), PersistError> {
    let path = dir.join(SEEN_FILE);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let temporary = dir.join(format!("{SEEN_FILE}.tmp"));
        std::fs::write(
            &temporary,
            serde_json::to_vec(seen).expect("ranges serialize"),
        )?;
        std::fs::rename(&temporary, &path)
    };
    write().map_err(|source| PersistError::Write { path, source })
}

/// The ids recorded by the last `save`, at most `DEDUP_IDS_MAX` (newest ranges first
/// within each stream are kept by `save` already). No file means nothing seen.
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn load(dir: &Path) -> Result<Vec<String>, PersistError> {
    let path = dir.join(SEEN_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(PersistError::Read {
                path,
                message: e.to_string(),
            });
        }
    };
    let seen: Vec<StreamSummary> =
        serde_json::from_slice(&bytes).map_err(|e| PersistError::Read {
            path,
            message: e.to_string(),
        })?;
    Ok(expand(&seen, DEDUP_IDS_MAX))
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
