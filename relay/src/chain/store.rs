//! What survives a restart: where scanning stopped, the recent (height, hash) pairs for
//! reorg detection, and the relay's own payments still inside the reorg window.
//!
//! Written atomically (temporary file, then rename) so a crash leaves the old state or the
//! new one, never half of each.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name inside the data directory.
pub const STATE_FILE: &str = "chain_watcher.json";
const STATE_VERSION: u32 = 1;

/// A payment to a registered wallet, kept while a reorg could still retract it. Saved
/// only when wallet registrations are (`[watcher] persist_wallets`): only then does a
/// wallet id mean the same wallet after a restart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WalletPayment {
    pub wallet: u64,
    #[serde(flatten)]
    pub payment: OwnPayment,
}

/// A payment to the relay's own key, kept while a reorg could still retract it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnPayment {
    pub block_height: u32,
    pub block_hash: String,
    pub txid: String,
    pub vout: u32,
}

/// The watcher's persisted state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    pub version: u32,
    /// The own key's address when saved: a different key must not resume this cursor.
    pub own_address: Option<String>,
    /// Next block of the best chain to scan.
    pub next_height: Option<u32>,
    /// Scanned (height, hash) pairs, oldest first, at most `reorg_depth_max`.
    pub recent: Vec<(u32, String)>,
    pub own_payments: Vec<OwnPayment>,
    #[serde(default)]
    pub wallet_payments: Vec<WalletPayment>,
}

/// The state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a watcher state file: {message}")]
    Corrupt { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the state; `None` when there is none yet.
///
/// # Errors
/// The file exists but cannot be read or parsed.
pub fn load(dir: &Path) -> Result<Option<PersistedState>, StoreError> {
    let path = dir.join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let state: PersistedState = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if state.version != STATE_VERSION {
        return Err(StoreError::Corrupt {
            path,
            message: format!("version {} (expected {STATE_VERSION})", state.version),
        });
    }
    Ok(Some(state))
}

/// Writes the state atomically: temporary file, sync, rename over the old one.
///
/// # Errors
/// The directory cannot be created or the file written.
pub fn save(dir: &Path, state: &PersistedState) -> Result<(), StoreError> {
    let state = PersistedState {
        version: STATE_VERSION,
        ..state.clone()
    };
    let text = serde_json::to_vec_pretty(&state).expect("state serializes");
    write_atomic(dir, STATE_FILE, &text, Access::Public)
}

/// Who may read a file the relay writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The default permissions.
    Public,
    /// The relay's user only (mode 0600): the file holds secrets.
    Private,
}

/// Writes `dir/name` so that a crash leaves the old content or the new, never a mix: a
/// fresh temporary file (created with its final permissions, so a private file is never
/// readable by others, even for a moment), synced, renamed over the old one, and the
/// directory synced so the rename itself survives a power cut.
///
/// # Errors
/// The directory cannot be created or the file written.
pub fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    access: Access,
) -> Result<(), StoreError> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if access == Access::Private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    {
        let mut file = options.open(&tmp).map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Reads `dir/name`, refusing a file over `bytes_max` without reading it; `None` when
/// there is none.
///
/// # Errors
/// The file cannot be read or is too large.
pub fn read_bounded(dir: &Path, name: &str, bytes_max: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let path = dir.join(name);
    let size = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    if size > bytes_max {
        return Err(StoreError::Corrupt {
            path,
            message: format!("{size} bytes, more than the {bytes_max} it can hold"),
        });
    }
    std::fs::read(&path).map(Some).map_err(io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a saved state loads back identical, a missing one is None, garbage is refused.
    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("sdk_relay_store_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), None);
        let state = PersistedState {
            version: STATE_VERSION,
            own_address: Some("tsp1x".into()),
            next_height: Some(10),
            recent: vec![(9, "h9".into())],
            own_payments: vec![OwnPayment {
                block_height: 9,
                block_hash: "h9".into(),
                txid: "t".into(),
                vout: 1,
            }],
            wallet_payments: vec![WalletPayment {
                wallet: 3,
                payment: OwnPayment {
                    block_height: 9,
                    block_hash: "h9".into(),
                    txid: "u".into(),
                    vout: 0,
                },
            }],
        };
        save(&dir, &state).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(state));
        std::fs::write(dir.join(STATE_FILE), "{").unwrap();
        assert!(load(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Proves a private file is written with mode 0600 (a stale temporary file with looser
    // permissions included), replaces the old content, and is refused over its bound.
    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_and_bounded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sdk_relay_private_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret.json.tmp"), "stale").unwrap();
        write_atomic(&dir, "secret.json", b"one", Access::Private).unwrap();
        write_atomic(&dir, "secret.json", b"two", Access::Private).unwrap();
        let mode = std::fs::metadata(dir.join("secret.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read_bounded(&dir, "secret.json", 3).unwrap().unwrap(),
            b"two"
        );
        assert!(read_bounded(&dir, "secret.json", 2).is_err());
        assert_eq!(read_bounded(&dir, "absent.json", 2).unwrap(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
