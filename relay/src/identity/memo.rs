//! Signatures known to verify, shared by relays that run in one process.
//!
//! The simulator runs a whole mesh in one process: every relay checks every new version
//! of every membership record, and every notification, so each is verified once per
//! relay, the same Ed25519 computation with the same inputs (the largest cost of a
//! simulated mesh). A
//! verification is a pure function of (key, message, signature): remembering which
//! triples verified gives the same answers with one computation per triple. Production
//! relays (one per process) do not use it.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use super::{PublicKey, Signature};

/// Verified triples remembered at most (32 bytes of digest each, twice: set and order).
pub const VERIFIED_MEMO_MAX: usize = 8192;

/// Digests of (key, signature, message) triples that verified. Only successes are kept:
/// a forgery is checked every time and never takes room. The oldest is forgotten first.
pub struct VerifiedMemo {
    remembered: Mutex<Remembered>,
    max: usize,
}

#[derive(Default)]
struct Remembered {
    digests: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Default for VerifiedMemo {
    fn default() -> VerifiedMemo {
        VerifiedMemo::with_max(VERIFIED_MEMO_MAX)
    }
}

impl VerifiedMemo {
    pub fn new() -> VerifiedMemo {
        VerifiedMemo::default()
    }

    fn with_max(max: usize) -> VerifiedMemo {
        VerifiedMemo {
            remembered: Mutex::default(),
            max,
        }
    }

    /// Whether `signature` is `key`'s signature of `message`, as
    /// [`PublicKey::verifies`] says, computed once per triple while remembered.
    pub fn verifies(&self, key: &PublicKey, message: &[u8], signature: &Signature) -> bool {
        // Key and signature have fixed lengths, so the concatenation is unambiguous.
        let digest: [u8; 32] = Sha256::new()
            .chain_update(key.as_bytes())
            .chain_update(signature.to_bytes())
            .chain_update(message)
            .finalize()
            .into();
        if self.lock().digests.contains(&digest) {
            return true;
        }
        if !key.verifies(message, signature) {
            return false;
        }
        let mut remembered = self.lock();
        if remembered.digests.insert(digest) {
            remembered.order.push_back(digest);
            if remembered.order.len() > self.max
                && let Some(oldest) = remembered.order.pop_front()
            {
                remembered.digests.remove(&oldest);
            }
        }
        true
    }

    /// Triples remembered.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        // A set of digests of verified triples: consistent whatever panicked.
        self.remembered.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    /// The memo answers as a verification does: a genuine signature verifies (and is
    /// remembered), a forged one or one of another message does not (and is not).
    #[test]
    fn answers_as_verification_and_keeps_only_successes() {
        let a = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        let memo = VerifiedMemo::new();
        let signature = a.sign(b"record");
        assert!(memo.verifies(a.public(), b"record", &signature));
        assert!(
            memo.verifies(a.public(), b"record", &signature),
            "remembered"
        );
        assert_eq!(memo.len(), 1);
        assert!(!memo.verifies(a.public(), b"recorD", &signature));
        assert!(!memo.verifies(b.public(), b"record", &signature));
        let forged = Signature::from_bytes(&[0; 64]);
        assert!(!memo.verifies(a.public(), b"record", &forged));
        assert!(
            !memo.verifies(a.public(), b"record", &forged),
            "still refused"
        );
        assert_eq!(memo.len(), 1, "failures are not kept");
    }

    /// At most its bound of triples; the oldest go first.
    #[test]
    fn is_bounded() {
        let a = Identity::from_seed(&[1; 32]);
        let memo = VerifiedMemo::with_max(4);
        let digests = |memo: &VerifiedMemo| memo.lock().order.iter().copied().collect::<Vec<_>>();
        for i in 0u8..4 {
            assert!(memo.verifies(a.public(), &[i], &a.sign(&[i])));
        }
        let first = digests(&memo)[0];
        assert!(memo.verifies(a.public(), &[4], &a.sign(&[4])));
        assert_eq!(memo.len(), 4);
        assert_eq!(memo.lock().digests.len(), 4);
        assert!(!memo.lock().digests.contains(&first), "the oldest went");
        assert_eq!(VerifiedMemo::new().max, VERIFIED_MEMO_MAX);
    }
}
