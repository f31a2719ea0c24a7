//! Who the mesh believes: which keys may join (`mesh.trusted_keys`, the mesh token), which
//! key each relay id is bound to, one to one (the first key proven for an id wins, and a
//! key serves one id; kept across restarts through `persist`), and the checks every notification
//! from a peer passes before it is admitted: its id is its origin's and the origin's
//! bound key signed it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::identity::{PublicKey, VerifiedMemo};
use crate::protocol::Notification;
use crate::protocol::signed::{self, NotificationFault};

/// Relay ids bound to a key; past this, new ids are refused (bindings are never
/// evicted, or an attacker could churn one out and rebind it).
pub const BINDINGS_MAX: usize = 4 * super::KNOWN_RELAYS_MAX;

/// Why a peer's claim (a handshake, a record) is refused. `as_str` is the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `mesh.trusted_keys` is set and does not hold the key.
    UntrustedKey,
    /// The relay id is bound to another key.
    KeyMismatch,
    /// The key is bound to another relay id: one key, one relay (or a member could mint
    /// ids and addresses under its key).
    KeyInUse,
    BadSignature,
    BadToken,
    Malformed,
    Timeout,
    /// `BINDINGS_MAX` ids are bound already.
    Full,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UntrustedKey => "untrusted_key",
            Refusal::KeyMismatch => "key_mismatch",
            Refusal::KeyInUse => "key_in_use",
            Refusal::BadSignature => "bad_signature",
            Refusal::BadToken => "bad_token",
            Refusal::Malformed => "malformed",
            Refusal::Timeout => "timeout",
            Refusal::Full => "full",
        }
    }
}

/// Why a peer's notification is dropped before admission. `as_str` is the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unverified {
    Fault(NotificationFault),
    /// No key is bound to its origin yet (anti-entropy fetches it again once one is).
    UnknownOrigin,
}

impl Unverified {
    pub fn as_str(self) -> &'static str {
        match self {
            Unverified::Fault(NotificationFault::BadSignature) => "bad_signature",
            Unverified::Fault(NotificationFault::ForeignId) => "foreign_id",
            Unverified::UnknownOrigin => "unknown_origin",
        }
    }
}

pub struct Trust {
    /// `mesh.trusted_keys`; empty = any key.
    trusted: Vec<PublicKey>,
    /// relay id ↔ key, one to one.
    bindings: Mutex<Bindings>,
    /// Signatures (records, notifications) known to verify, shared with the relays of
    /// the same process (`share_verified`: the simulator's); unset in production.
    verified: std::sync::OnceLock<std::sync::Arc<VerifiedMemo>>,
}

#[derive(Default)]
struct Bindings {
    /// relay id → its key. A BTreeMap: `persist` saves it in order.
    keys: BTreeMap<String, PublicKey>,
    /// key → its relay id.
    ids: HashMap<PublicKey, String>,
    /// Bindings made since start: `persist` writes them again only when this moved.
    made: u64,
}

impl Trust {
    pub fn new(trusted: Vec<PublicKey>, own_id: &str, own_key: PublicKey) -> Trust {
        let mut bindings = Bindings::default();
        bindings.keys.insert(own_id.to_string(), own_key);
        bindings.ids.insert(own_key, own_id.to_string());
        Trust {
            trusted,
            bindings: Mutex::new(bindings),
            verified: std::sync::OnceLock::new(),
        }
    }

    /// Checks membership records and peers' notifications through `memo`, shared with
    /// the other relays of this process: each is then verified once for all of them
    /// rather than once per relay (same answers: a verification is a pure function of
    /// its inputs). Set once, at start; a second call keeps the first memo.
    pub fn share_verified(&self, memo: std::sync::Arc<VerifiedMemo>) {
        let _ = self.verified.set(memo);
    }

    /// The shared memo of verified signatures, if this relay was given one.
    pub fn memo(&self) -> Option<&VerifiedMemo> {
        self.verified.get().map(|memo| &**memo)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bindings> {
        self.bindings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `key` may be a member at all.
    pub fn admits(&self, key: &PublicKey) -> bool {
        self.trusted.is_empty() || self.trusted.contains(key)
    }

    /// Checks a claim that `relay_id` holds `key` (before its proof is checked).
    ///
    /// # Errors
    /// An untrusted key, an id bound to another key, or a key bound to another id.
    pub fn check_claim(&self, relay_id: &str, key: &PublicKey) -> Result<(), Refusal> {
        if !self.admits(key) {
            return Err(Refusal::UntrustedKey);
        }
        let bindings = self.lock();
        match bindings.keys.get(relay_id) {
            Some(bound) if bound != key => return Err(Refusal::KeyMismatch),
            _ => {}
        }
        match bindings.ids.get(key) {
            Some(bound) if bound != relay_id => Err(Refusal::KeyInUse),
            _ => Ok(()),
        }
    }

    /// Binds `relay_id` to `key` once the key is proven (a handshake, a verified record);
    /// the first binding wins.
    ///
    /// # Errors
    /// The id is bound to another key, or the table is full.
    pub fn bind(&self, relay_id: &str, key: &PublicKey) -> Result<(), Refusal> {
        self.check_claim(relay_id, key)?;
        let mut bindings = self.lock();
        if bindings.keys.contains_key(relay_id) {
            return Ok(());
        }
        if bindings.keys.len() >= BINDINGS_MAX {
            return Err(Refusal::Full);
        }
        bindings.keys.insert(relay_id.to_string(), *key);
        bindings.ids.insert(*key, relay_id.to_string());
        bindings.made += 1;
        Ok(())
    }

    /// How many bindings were made since start (own id excluded): unchanged means the
    /// saved bindings are still current.
    pub fn bindings_made(&self) -> u64 {
        self.lock().made
    }

    pub fn key_of(&self, relay_id: &str) -> Option<PublicKey> {
        self.lock().keys.get(relay_id).copied()
    }

    /// Checks a notification from a peer against its origin's bound key.
    ///
    /// # Errors
    /// Why it is not believed.
    pub fn verify(&self, notification: &Notification) -> Result<(), Unverified> {
        let key = self
            .key_of(&notification.relay_id)
            .ok_or(Unverified::UnknownOrigin)?;
        signed::verify_notification_with(notification, &key, self.memo()).map_err(Unverified::Fault)
    }

    /// Every binding, for `persist`.
    pub fn bindings(&self) -> Vec<(String, String)> {
        self.lock()
            .keys
            .iter()
            .map(|(id, key)| (id.clone(), key.to_hex()))
            .collect()
    }

    /// Restores saved bindings (those whose key is no longer trusted are skipped).
    pub fn restore(&self, saved: &[(String, String)]) -> usize {
        saved
            .iter()
            .filter_map(|(id, key)| Some((id, PublicKey::parse(key).ok()?)))
            .filter(|(id, key)| self.bind(id, key).is_ok())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn the_first_key_proven_for_an_id_wins() {
        let own = Identity::from_seed(&[1; 32]);
        let a = Identity::from_seed(&[2; 32]);
        let b = Identity::from_seed(&[3; 32]);
        let trust = Trust::new(Vec::new(), "me", *own.public());
        assert_eq!(trust.bind("me", a.public()), Err(Refusal::KeyMismatch));
        assert_eq!(trust.bind("a", a.public()), Ok(()));
        assert_eq!(trust.bind("a", b.public()), Err(Refusal::KeyMismatch));
        assert_eq!(trust.key_of("a"), Some(*a.public()));
    }

    #[test]
    fn a_key_is_bound_to_one_relay_id() {
        let own = Identity::from_seed(&[1; 32]);
        let a = Identity::from_seed(&[2; 32]);
        let trust = Trust::new(Vec::new(), "me", *own.public());
        assert_eq!(trust.bind("a", a.public()), Ok(()));
        assert_eq!(trust.bind("ghost", a.public()), Err(Refusal::KeyInUse));
        assert_eq!(trust.bind("other-me", own.public()), Err(Refusal::KeyInUse));
        assert_eq!(trust.key_of("ghost"), None);
        assert_eq!(trust.bind("a", a.public()), Ok(()), "the same claim again");
    }

    /// A memo shared through `share_verified` is the one `verify` goes through: the
    /// witness is the genuine notification it remembers; a forged copy is still refused.
    #[test]
    fn a_shared_memo_is_what_verify_goes_through() {
        let own = Identity::from_seed(&[1; 32]);
        let a = Identity::from_seed(&[2; 32]);
        let trust = Trust::new(Vec::new(), "me", *own.public());
        trust.bind("a", a.public()).unwrap();
        let memo = std::sync::Arc::new(VerifiedMemo::new());
        trust.share_verified(memo.clone());
        let mut n = Notification::for_test("a", "a-0000002a-7", "payment", "");
        signed::sign_notification(&a, &mut n);
        assert_eq!(trust.verify(&n), Ok(()));
        assert_eq!(memo.len(), 1, "verified through the shared memo");
        n.notification_type = "other".into();
        assert_eq!(
            trust.verify(&n),
            Err(Unverified::Fault(NotificationFault::BadSignature))
        );
        assert_eq!(memo.len(), 1, "a failure is not remembered");
    }

    /// Only a new binding counts as a change (what `persist` saves again).
    #[test]
    fn only_new_bindings_are_changes() {
        let own = Identity::from_seed(&[1; 32]);
        let a = Identity::from_seed(&[2; 32]);
        let trust = Trust::new(Vec::new(), "me", *own.public());
        assert_eq!(trust.bindings_made(), 0);
        assert_eq!(trust.bind("a", a.public()), Ok(()));
        assert_eq!(trust.bindings_made(), 1);
        assert_eq!(trust.bind("a", a.public()), Ok(()));
        assert_eq!(trust.bind("ghost", a.public()), Err(Refusal::KeyInUse));
        assert_eq!(
            trust.bindings_made(),
            1,
            "a repeat or a refusal changes nothing"
        );
    }

    #[test]
    fn trusted_keys_limit_who_may_bind() {
        let own = Identity::from_seed(&[1; 32]);
        let a = Identity::from_seed(&[2; 32]);
        let b = Identity::from_seed(&[3; 32]);
        let trust = Trust::new(vec![*a.public()], "me", *own.public());
        assert_eq!(trust.bind("a", a.public()), Ok(()));
        assert_eq!(trust.bind("b", b.public()), Err(Refusal::UntrustedKey));
    }
}
