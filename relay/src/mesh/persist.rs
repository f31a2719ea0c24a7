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
    let mut ids = Vec::new();
    for stream in &seen {
        for &(lo, hi) in &stream.ranges {
            for seq in lo..=hi {
                if ids.len() == DEDUP_IDS_MAX {
                    return Ok(ids);
                }
                ids.push(format!("{}-{seq}", stream.stream));
            }
        }
    }
    Ok(ids)
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
}
