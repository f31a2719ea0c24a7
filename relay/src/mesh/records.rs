//! Signed membership: each relay signs its own record (id, key, address, health, time)
//! and gossips it in StateSync with the verified records of the relays it knows. A relay
//! learns members and addresses to dial only from records whose signature verifies under
//! a key it admits and whose id is bound to that key; it keeps the newest record of each
//! relay, refuses records from the future, and forgets relays whose record was not
//! refreshed within the membership TTL.

use super::Mesh;
use super::state::{Member, State, evict_members};
use super::trust::Refusal;
use crate::protocol::peer::PeerHealth;
use crate::protocol::signed::{RecordFault, RecordView, SignedRecord};

/// How far ahead of this relay's clock a record's timestamp may be.
pub const RECORD_CLOCK_SKEW_MS: u64 = 30_000;
/// Sync intervals a relay is remembered without a fresh record (or a live link).
pub const MEMBERSHIP_TTL_INTERVALS: u64 = 10;
/// This relay's own record is signed again once it is older than the sync interval
/// divided by this.
const OWN_RECORD_REUSE_DIVISOR: u64 = 2;

impl Mesh {
    fn membership_ttl_ms(&self) -> u64 {
        MEMBERSHIP_TTL_INTERVALS * self.parts.config.sync_interval().as_millis() as u64
    }

    /// This relay's record, signed at most `own_record_reuse_ms` ago: every StateSync
    /// (a request and an answer per peer and interval) carries it, and a record signed a
    /// moment ago says the same (TTL and health are counted in sync intervals). Reusing
    /// it spares a signature per sync here, and a verification per copy at each peer,
    /// which keeps only the newest record of each relay.
    pub(super) fn own_record(&self) -> SignedRecord {
        let now_ms = self.unix_ms();
        let mut own = self.own_record.lock().unwrap_or_else(|p| p.into_inner());
        // Only a record from the recent past: after the clock stepped back, sign anew.
        let fresh = |r: &&SignedRecord| {
            r.timestamp_ms <= now_ms && now_ms - r.timestamp_ms < self.own_record_reuse_ms()
        };
        if let Some(record) = own.as_ref().filter(fresh) {
            return record.clone();
        }
        let record = SignedRecord::sign(
            self.parts.origin.identity(),
            self.relay_id(),
            self.parts.config.advertised_addr(),
            PeerHealth::Healthy,
            now_ms,
        );
        *own = Some(record.clone());
        record
    }

    /// How long a signed own record is reused: half the sync interval.
    fn own_record_reuse_ms(&self) -> u64 {
        self.parts.config.sync_interval().as_millis() as u64 / OWN_RECORD_REUSE_DIVISOR
    }

    /// The verified records this relay holds, the most recent first, `own` first of all,
    /// while they fit `bytes_max` (the first always does).
    pub(super) fn records_to_gossip(&self, bytes_max: usize) -> Vec<SignedRecord> {
        super::sync::leading_within_budget(self.records_to_offer(), |r| r.wire_bytes(), bytes_max)
    }

    /// The records a StateSync may carry, before any byte budget: this relay's own first,
    /// then the verified records it holds, the most recent first, at most
    /// `GOSSIP_RELAYS_MAX` in all.
    pub(super) fn records_to_offer(&self) -> Vec<SignedRecord> {
        let mut records = vec![self.own_record()];
        let state = self.state.lock();
        let mut held: Vec<&SignedRecord> = state
            .members
            .values()
            .filter_map(|m| m.record.as_ref())
            .collect();
        held.sort_by_key(|r| std::cmp::Reverse(r.timestamp_ms));
        records.extend(held.into_iter().take(super::GOSSIP_RELAYS_MAX - 1).cloned());
        records
    }

    /// The records `shown` (a peer's sync request) carried, by relay id, each with the
    /// timestamp of the record this relay holds now (its own record as last signed, or a
    /// member's verified record) when the shown copy is exactly that record: every field
    /// equal. Equality with a record this relay verified is what proves the peer holds a
    /// genuine copy: an older copy, or a forged one (another signature, key, address...),
    /// is not the held record and proves nothing. Of a relay shown twice, a proven copy
    /// is kept.
    pub(super) fn shown_copies<'a>(
        &self,
        shown: &'a [RecordView<'a>],
    ) -> std::collections::HashMap<&'a str, ShownCopy<'a>> {
        let shown = &shown[..shown.len().min(super::KNOWN_RELAYS_MAX)];
        let mut copies = std::collections::HashMap::with_capacity(shown.len());
        // Both locks, the own record's first (nothing takes it while holding the state).
        let own = self.own_record.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.state.lock();
        for copy in shown {
            let held = if copy.relay_id == self.relay_id() {
                own.as_ref()
            } else {
                state
                    .members
                    .get(&*copy.relay_id)
                    .and_then(|m| m.record.as_ref())
            };
            let held_ms = held.filter(|held| copy.is(held)).map(|h| h.timestamp_ms);
            let entry = copies
                .entry(&*copy.relay_id)
                .or_insert(ShownCopy { copy, held_ms });
            if held_ms.is_some() {
                *entry = ShownCopy { copy, held_ms };
            }
        }
        copies
    }

    /// Takes in records a peer gossiped; returns how many were refused.
    pub(super) fn take_records(&self, peer_id: &str, records: &[RecordView<'_>]) -> usize {
        let records = &records[..records.len().min(super::KNOWN_RELAYS_MAX)];
        // Peers re-gossip the same records every interval: one no newer than the record
        // held says nothing new, so its signature is not checked again. One look under
        // the lock for the whole list; usually nothing is left.
        let news: Vec<&RecordView<'_>> = {
            let state = self.state.lock();
            records
                .iter()
                .filter(|r| !holds_as_new(&state, r))
                .collect()
        };
        let mut refused = 0;
        let mut learned = false;
        for record in news {
            // Again for each: an earlier record of this list may be held by now (a peer
            // may repeat one; it is verified once).
            if self.signed_it(record) || holds_as_new(&self.state.lock(), record) {
                continue;
            }
            match self.check_record(record) {
                Ok(Some(())) => learned |= self.hold_record(record),
                Ok(None) => {}
                Err(reason) => {
                    refused += 1;
                    self.parts
                        .metrics
                        .mesh_records_rejected
                        .get(reason)
                        .increment(1);
                    let subject: String = record.relay_id.chars().take(64).collect();
                    tracing::debug!(peer = %peer_id, %subject, reason, "membership record refused");
                }
            }
        }
        let mut state = self.state.lock();
        evict_members(&mut state);
        drop(state);
        if learned {
            self.state.wake.notify_one();
        }
        refused
    }

    /// `Ok(Some)`: a record to hold; `Ok(None)`: a genuine record with nothing new (this
    /// relay's own, or one past the TTL); `Err`: the rejection reason (metrics label).
    fn check_record(&self, record: &RecordView<'_>) -> Result<Option<()>, &'static str> {
        if self.skips_verification() && record.relay_id != self.relay_id() {
            return Ok(Some(()));
        }
        // The timestamp first: a far-future record is refused without the cost of a
        // signature check, which is what a peer flooding such records would buy.
        let now_ms = self.unix_ms();
        if record.timestamp_ms > now_ms + RECORD_CLOCK_SKEW_MS {
            return Err("future_timestamp");
        }
        // The key bound to the id, if any, spares parsing the same key again; the
        // binding is still checked below, after the signature, as for any record.
        let bound = self.trust.key_of(&record.relay_id);
        let key =
            record
                .verify(bound.as_ref(), self.trust.memo())
                .map_err(|fault| match fault {
                    RecordFault::Malformed => "malformed",
                    RecordFault::BadSignature => "bad_signature",
                })?;
        if record.relay_id == self.relay_id() {
            return match self.trust.check_claim(&record.relay_id, &key) {
                Ok(()) => Ok(None),
                Err(refusal) => Err(refusal.as_str()),
            };
        }
        if now_ms.saturating_sub(record.timestamp_ms) > self.membership_ttl_ms() {
            return Ok(None);
        }
        match self.trust.bind(&record.relay_id, &key) {
            Ok(()) => Ok(Some(())),
            Err(Refusal::Full) => Err("full"),
            Err(refusal) => Err(refusal.as_str()),
        }
    }

    /// Whether `record` is this relay's own record exactly as it signed it. Every peer
    /// gossips it back every interval (twice: request and answer), and checking one's own
    /// signature tells nothing; a record that only claims this relay's id still differs
    /// from it and is checked (and refused) as any other.
    fn signed_it(&self, record: &RecordView<'_>) -> bool {
        if record.relay_id != self.relay_id() {
            return false;
        }
        let own = self.own_record.lock().unwrap_or_else(|p| p.into_inner());
        own.as_ref().is_some_and(|own| record.is(own))
    }

    /// Keeps `record` if newer than the one held; returns whether a relay was learned.
    fn hold_record(&self, record: &RecordView<'_>) -> bool {
        let now_ms = self.unix_ms();
        let mut state = self.state.lock();
        let seen_ms = record.timestamp_ms.min(now_ms);
        match state.members.get_mut(&*record.relay_id) {
            Some(member) => {
                if member
                    .record
                    .as_ref()
                    .is_some_and(|held| held.timestamp_ms >= record.timestamp_ms)
                {
                    return false;
                }
                member.address.clear();
                member.address.push_str(&record.address);
                member.last_seen_ms = member.last_seen_ms.max(seen_ms);
                member.record = Some(record.to_record());
                false
            }
            None => {
                state.members.insert(
                    record.relay_id.to_string(),
                    Member {
                        address: record.address.to_string(),
                        version: String::new(),
                        uptime: 0,
                        last_seen_ms: seen_ms,
                        proven: false,
                        left: false,
                        report: None,
                        record: Some(record.to_record()),
                    },
                );
                true
            }
        }
    }

    /// Forgets relays neither linked nor heard from (directly or by a fresh record)
    /// within the membership TTL.
    pub(super) fn expire_members(&self) {
        let deadline_ms = self.unix_ms().saturating_sub(self.membership_ttl_ms());
        let mut state = self.state.lock();
        let stale: Vec<String> = state
            .members
            .iter()
            // The age first: it is a number compare, and members rarely go stale, while
            // the link lookup compares ids (this runs every supervisor tick).
            .filter(|(id, m)| m.last_seen_ms < deadline_ms && !state.links.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            tracing::info!(relay = %id, "membership expired: no fresh record within the TTL");
            state.members.remove(&id);
        }
    }
}

/// A record a peer's request carried (`Mesh::shown_copies`).
pub(super) struct ShownCopy<'a> {
    pub copy: &'a RecordView<'a>,
    /// When the copy is exactly the record held for its relay: that record's timestamp.
    pub held_ms: Option<u64>,
}

impl ShownCopy<'_> {
    /// Whether the peer demonstrably holds `record` or a newer genuine version of it:
    /// the copy it showed is `record` itself (a record this relay verified), or is the
    /// record this relay holds now and at least as new.
    pub fn covers(&self, record: &SignedRecord) -> bool {
        // The number first: usually the parts' record is the held one, already compared.
        self.held_ms
            .is_some_and(|held_ms| held_ms >= record.timestamp_ms)
            || self.copy.is(record)
    }
}

/// Whether a verified record of the same relay, at least as recent, is held.
fn holds_as_new(state: &State, record: &RecordView<'_>) -> bool {
    state
        .members
        .get(&*record.relay_id)
        .and_then(|m| m.record.as_ref())
        .is_some_and(|held| held.timestamp_ms >= record.timestamp_ms)
}

#[cfg(test)]
mod tests {
    /// The record a peer gossips back exactly as this relay signed it is taken as said,
    /// without a signature check; one that differs in anything is checked. The witness:
    /// the held own record is made unverifiable, so only a check could refuse its copy.
    #[tokio::test]
    async fn its_own_record_gossiped_back_is_not_verified_again() {
        let mesh = crate::mesh::testing::mesh("records-test", None);
        let mut own = mesh.own_record();
        own.signature = "00".repeat(64);
        *mesh.own_record.lock().unwrap() = Some(own.clone());
        assert_eq!(mesh.take_records("peer", &[own.view()]), 0);

        let mut claim = own.clone();
        claim.timestamp_ms -= 1;
        assert_eq!(
            mesh.take_records("peer", &[claim.view()]),
            1,
            "a record that only claims this relay's id is checked"
        );
    }

    /// Of the records a peer gossips, only those newer than the one held are verified:
    /// an older or equal copy is dropped unchecked (the witness: a broken signature is not
    /// refused), a newer one with a broken signature is refused and not held, a genuine
    /// newer one replaces the held one; a repeat within one list is verified once.
    #[tokio::test]
    async fn only_records_newer_than_the_held_one_are_verified() {
        use crate::protocol::peer::PeerHealth;
        use crate::protocol::signed::SignedRecord;
        let mesh = crate::mesh::testing::mesh("records-test", None);
        let b = crate::identity::Identity::from_seed(&[9; 32]);
        let now = mesh.unix_ms();
        let record = |ts| SignedRecord::sign(&b, "relay-b", "b:1", PeerHealth::Healthy, ts);
        let forged = |ts| SignedRecord {
            signature: "00".repeat(64),
            ..record(ts)
        };
        let held = |mesh: &crate::mesh::Mesh| {
            mesh.state.lock().members["relay-b"]
                .record
                .as_ref()
                .map(|r| r.timestamp_ms)
        };
        assert_eq!(mesh.take_records("peer", &[record(now - 10).view()]), 0);
        assert_eq!(held(&mesh), Some(now - 10));

        let older = [forged(now - 10), forged(now - 20)];
        let older = [older[0].view(), older[1].view()];
        assert_eq!(mesh.take_records("peer", &older), 0, "not checked");
        assert_eq!(mesh.take_records("peer", &[forged(now - 5).view()]), 1);
        assert_eq!(held(&mesh), Some(now - 10), "a forged record is not held");

        let newer = record(now - 5);
        let copy = forged(now - 5);
        let twice = [newer.view(), copy.view(), newer.view()];
        assert_eq!(
            mesh.take_records("peer", &twice),
            0,
            "the copies are not checked"
        );
        assert_eq!(held(&mesh), Some(now - 5));
    }
}
