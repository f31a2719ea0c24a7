//! Who this relay is: an Ed25519 key pair. Its public key is the relay's identity in the
//! mesh (a relay id is bound to one key), its signatures make notifications and
//! membership records checkable by every relay, and the mesh token is proven with an
//! HMAC-SHA256 over a handshake transcript rather than sent.
//!
//! The secret key lives in a file (`<data_dir>/relay.key` unless `[mesh] key_file` names
//! one): 64 hexadecimal digits (the 32-byte Ed25519 seed) and a newline, mode 0600. It is
//! created on first start from the randomness the seam hands in (the operating system's in
//! production, the seeded generator in simulation, so runs replay).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use hmac::Mac as _;

mod memo;
pub use memo::{VERIFIED_MEMO_MAX, VerifiedMemo};

/// Bytes of an Ed25519 public key.
pub const PUBLIC_KEY_BYTES: usize = 32;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_BYTES: usize = 64;
/// Bytes of an HMAC-SHA256 tag.
pub const MAC_BYTES: usize = 32;
/// The key file's name inside `data_dir` when `[mesh] key_file` is not set.
pub const KEY_FILE_NAME: &str = "relay.key";

/// A relay's public key. Written as 64 lowercase hexadecimal digits; read from hex or
/// standard base64 (44 characters with padding).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Parses hex (64 digits) or standard base64 (with or without padding).
    ///
    /// # Errors
    /// Neither encoding of 32 bytes, or 32 bytes that are not a curve point.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = decode_fixed::<PUBLIC_KEY_BYTES>(text.trim()).ok_or(KeyError::Encoding)?;
        PublicKey::from_bytes(&bytes)
    }

    /// # Errors
    /// 32 bytes that are not an Ed25519 point.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_BYTES]) -> Result<PublicKey, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::NotAPoint)
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_BYTES] {
        self.0.as_bytes()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// Whether `signature` is this key's signature of `message` (strict verification:
    /// no malleable or small-order encodings).
    pub fn verifies(&self, message: &[u8], signature: &Signature) -> bool {
        self.0.verify_strict(message, &signature.0).is_ok()
    }

    /// [`PublicKey::verifies`], through `memo` (signatures already known to verify,
    /// shared by the relays of one process) when given: the same answer either way.
    pub fn verifies_through(
        &self,
        memo: Option<&VerifiedMemo>,
        message: &[u8],
        signature: &Signature,
    ) -> bool {
        match memo {
            Some(memo) => memo.verifies(self, message, signature),
            None => self.verifies(message, signature),
        }
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An Ed25519 signature; on the wire 128 lowercase hexadecimal digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(ed25519_dalek::Signature);

impl Signature {
    /// # Errors
    /// Not 128 hexadecimal digits.
    pub fn parse(text: &str) -> Result<Signature, KeyError> {
        let bytes = decode_hex::<SIGNATURE_BYTES>(text).ok_or(KeyError::Encoding)?;
        Ok(Signature(ed25519_dalek::Signature::from_bytes(&bytes)))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn from_bytes(bytes: &[u8; SIGNATURE_BYTES]) -> Signature {
        Signature(ed25519_dalek::Signature::from_bytes(bytes))
    }

    pub fn to_bytes(&self) -> [u8; SIGNATURE_BYTES] {
        self.0.to_bytes()
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

/// This relay's key pair.
pub struct Identity {
    signing: ed25519_dalek::SigningKey,
    public: PublicKey,
}

impl Identity {
    /// The key pair of a 32-byte Ed25519 seed (the secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Identity {
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = PublicKey(signing.verifying_key());
        Identity { signing, public }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message))
    }

    /// Reads the key file at `path`, or creates it (mode 0600) from `seed` when absent.
    ///
    /// # Errors
    /// The file cannot be read or written, is readable by others than its owner, or does
    /// not hold a key.
    pub fn load_or_create(
        path: &Path,
        seed: impl FnOnce() -> [u8; 32],
    ) -> Result<Identity, KeyFileError> {
        let at = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                check_private(path, &meta)?;
                let text = std::fs::read_to_string(path).map_err(at)?;
                let seed = decode_hex::<32>(text.trim()).ok_or_else(|| KeyFileError::Content {
                    path: path.to_path_buf(),
                })?;
                Ok(Identity::from_seed(&seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(at)?;
                }
                let seed = seed();
                write_private(path, &format!("{}\n", hex::encode(seed))).map_err(at)?;
                Ok(Identity::from_seed(&seed))
            }
            Err(e) => Err(at(e)),
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Where the key file is: `key_file` if set, else `<data_dir>/relay.key`.
pub fn key_path(data_dir: &Path, key_file: Option<&Path>) -> PathBuf {
    key_file.map_or_else(|| data_dir.join(KEY_FILE_NAME), Path::to_path_buf)
}

/// HMAC-SHA256 of `message` under `key`.
pub fn mac(key: &[u8], message: &[u8]) -> [u8; MAC_BYTES] {
    let mut m = <hmac::Hmac<sha2::Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(message);
    m.finalize().into_bytes().into()
}

/// Whether `tag` is the HMAC-SHA256 of `message` under `key`, compared in constant time.
pub fn mac_matches(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    let mut m = <hmac::Hmac<sha2::Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(message);
    m.verify_slice(tag).is_ok()
}

/// Why a key or signature could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not 32 bytes in hex (64 digits) or base64")]
    Encoding,
    #[error("not an Ed25519 public key")]
    NotAPoint,
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:04o}: others may read the relay's secret key; \
         make it private (chmod 600 {path})"
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error("key file {path} does not hold a key (64 hexadecimal digits)")]
    Content { path: PathBuf },
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Mode {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &std::fs::Metadata) -> Result<(), KeyFileError> {
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

fn decode_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    if let Some(bytes) = decode_hex::<N>(text) {
        return Some(bytes);
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(text).ok())
        .and_then(|v| v.try_into().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_key_and_message() {
        let a = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        let s = a.sign(b"hello");
        assert!(a.public().verifies(b"hello", &s));
        assert!(!a.public().verifies(b"hellp", &s));
        assert!(!b.public().verifies(b"hello", &s));
        let back = Signature::parse(&s.to_hex()).unwrap();
        assert!(a.public().verifies(b"hello", &back));
    }

    #[test]
    fn public_keys_read_from_hex_and_base64() {
        let key = *Identity::from_seed(&[3; 32]).public();
        let b64 = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
        assert_eq!(PublicKey::parse(&key.to_hex()).unwrap(), key);
        assert_eq!(PublicKey::parse(&b64).unwrap(), key);
        assert_eq!(PublicKey::parse(b64.trim_end_matches('=')).unwrap(), key);
        assert_eq!(PublicKey::parse("abcd"), Err(KeyError::Encoding));
    }

    #[test]
    fn macs_match_only_under_their_key() {
        let tag = mac(b"token", b"transcript");
        assert!(mac_matches(b"token", b"transcript", &tag));
        assert!(!mac_matches(b"tokem", b"transcript", &tag));
        assert!(!mac_matches(b"token", b"transcripT", &tag));
        assert!(!mac_matches(b"token", b"transcript", &tag[..31]));
    }

    #[test]
    fn the_key_file_is_created_private_then_reread() {
        let dir = std::env::temp_dir().join(format!("sdk_relay-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = key_path(&dir, None);
        let first = Identity::load_or_create(&path, || [9; 32]).unwrap();
        let again = Identity::load_or_create(&path, || [8; 32]).unwrap();
        assert_eq!(first.public(), again.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let refused = Identity::load_or_create(&path, || [8; 32]).unwrap_err();
            assert!(matches!(refused, KeyFileError::Mode { mode: 0o644, .. }));
            assert!(refused.to_string().contains("chmod 600"));
        }
        std::fs::write(&path, "not a key\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(matches!(
            Identity::load_or_create(&path, || [8; 32]),
            Err(KeyFileError::Content { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
