//! The layouts and test vectors `docs/mesh-protocol.md` publishes: fixed keys, nonces and
//! fields give exactly these bytes, signatures and MACs (Ed25519 is deterministic).

use serde_json::value::RawValue;

use super::*;

const SEED_A: [u8; 32] = [0x11; 32];
const SEED_B: [u8; 32] = [0x22; 32];
const NONCE_D: [u8; NONCE_BYTES] = [0xd0; NONCE_BYTES];
const NONCE_A: [u8; NONCE_BYTES] = [0xa0; NONCE_BYTES];
const TOKEN: &str = "mesh-secret";

const KEY_A: &str = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";
const KEY_B: &str = "a09aa5f47a6759802ff955f8dc2d2a14a5c99d23be97f864127ff9383455a4f0";
const NOTIFICATION_INPUT: &str = "73646b5f72656c61792f6d6573682f6e6f74696669636174696f6e2f763100001272656c61792d612d30303030303032612d37000772656c61792d6100107061796d656e745f6465746563746564000000006581be000000001b7b2274786964223a226162222c22616d6f756e74223a313030307d";
const NOTIFICATION_SIGNATURE: &str = "6a374f418470eed16b2c7f483023ed424dccad80d0e356338b0ecb4953fe5e14527747ba08953f26f0b08c2350f36fff2422feecd340b58d08ab716c35d1fb0c";
const RECORD_INPUT: &str = "73646b5f72656c61792f6d6573682f7265636f72642f763100000772656c61792d61d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737001472656c61792d612e6578616d706c653a3830393000076865616c7468790000018c82ce3000";
const RECORD_SIGNATURE: &str = "10f4c4f7d51a165dd8b732825f365b67bfab736b366ea72b4524e1bfac182fc4c82301877a3268476f5f73acc4f38dc6265f48e5c75d99e9893d8773222bb70d";
const TRANSCRIPT_DIALER: &str = "73646b5f72656c61792f6d6573682f68616e647368616b652f76310044000772656c61792d62a09aa5f47a6759802ff955f8dc2d2a14a5c99d23be97f864127ff9383455a4f0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0001472656c61792d622e6578616d706c653a38303930000772656c61792d61d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0001472656c61792d612e6578616d706c653a38303930";
const ACCEPTOR_SIGNATURE: &str = "5142015bde587346d0b6758c51ea68d1c8515a205d35afa091c2ab9a8b4007664de01a44b5624bb423ac068d09737de990fcf0a1fd5c34bb6fa85abffe4b8f00";
const ACCEPTOR_MAC: &str = "46a2d4211b003524a281031f446645afbaea783f59e70304de240adcb9026dcc";
const DIALER_SIGNATURE: &str = "82b01bd69fa4a65a5d40a5d1e85dbe960deab6ff2f17d6692b99b022cdff076c7e8f62eaf587bc588c3f034af1ba2a79abb6086e60332888ff0656bd7ba84c0e";
const DIALER_MAC: &str = "ae9343d066329a202cd8ecf98472d02b5597c83d0d5c5ca0d80ace1a413ec263";

fn vector_notification() -> Notification {
    Notification {
        topic: String::new(),
        message_id: "relay-a-0000002a-7".into(),
        relay_id: "relay-a".into(),
        notification_type: "payment_detected".into(),
        data: RawValue::from_string(r#"{"txid":"ab","amount":1000}"#.into()).unwrap(),
        timestamp: 1_703_001_600,
        signature: String::new(),
    }
}

fn transcript<'a>(a: &'a PublicKey, b: &'a PublicKey) -> Transcript<'a> {
    Transcript {
        dialer_id: "relay-b",
        dialer_key: b,
        dialer_nonce: &NONCE_D,
        dialer_address: "relay-b.example:8090",
        acceptor_id: "relay-a",
        acceptor_key: a,
        acceptor_nonce: &NONCE_A,
        acceptor_address: "relay-a.example:8090",
    }
}

#[test]
fn keys_match_the_vectors() {
    assert_eq!(Identity::from_seed(&SEED_A).public().to_hex(), KEY_A);
    assert_eq!(Identity::from_seed(&SEED_B).public().to_hex(), KEY_B);
}

#[test]
fn notification_vector() {
    let a = Identity::from_seed(&SEED_A);
    let mut n = vector_notification();
    assert_eq!(hex::encode(notification_input(&n)), NOTIFICATION_INPUT);
    sign_notification(&a, &mut n);
    assert_eq!(n.signature, NOTIFICATION_SIGNATURE);
    assert_eq!(verify_notification(&n, a.public()), Ok(()));
}

#[test]
fn a_changed_byte_or_a_foreign_id_fails_verification() {
    let a = Identity::from_seed(&SEED_A);
    let b = Identity::from_seed(&SEED_B);
    let mut n = vector_notification();
    sign_notification(&a, &mut n);
    assert_eq!(
        verify_notification(&n, b.public()),
        Err(NotificationFault::BadSignature)
    );
    let mut changed = n.clone();
    changed.data = RawValue::from_string(r#"{"txid":"ab","amount":1001}"#.into()).unwrap();
    assert_eq!(
        verify_notification(&changed, a.public()),
        Err(NotificationFault::BadSignature)
    );
    let mut later = n.clone();
    later.timestamp += 1;
    assert_eq!(
        verify_notification(&later, a.public()),
        Err(NotificationFault::BadSignature)
    );
    // relay-a signing an id of relay-b's stream: refused whatever the signature.
    let mut foreign = vector_notification();
    foreign.message_id = "relay-b-0000002a-7".into();
    sign_notification(&a, &mut foreign);
    assert_eq!(
        verify_notification(&foreign, a.public()),
        Err(NotificationFault::ForeignId)
    );
    let mut unsigned = vector_notification();
    unsigned.signature.clear();
    assert_eq!(
        verify_notification(&unsigned, a.public()),
        Err(NotificationFault::BadSignature)
    );
}

#[test]
fn message_ids_name_their_origin() {
    assert_eq!(message_id_origin("relay-a-0000002a-7"), Some("relay-a"));
    assert_eq!(message_id_origin("a-deadbeef-12"), Some("a"));
    assert_eq!(message_id_origin("a-deadbeef-s12"), None);
    assert_eq!(message_id_origin("a-dead-12"), None);
    assert_eq!(message_id_origin("-deadbeef-1"), None);
    assert_eq!(message_id_origin("deadbeef-1"), None);
}

#[test]
fn record_vector() {
    let a = Identity::from_seed(&SEED_A);
    let input = record_input(
        "relay-a",
        a.public(),
        "relay-a.example:8090",
        PeerHealth::Healthy,
        1_703_001_600_000,
    );
    assert_eq!(hex::encode(input), RECORD_INPUT);
    let r = SignedRecord::sign(
        &a,
        "relay-a",
        "relay-a.example:8090",
        PeerHealth::Healthy,
        1_703_001_600_000,
    );
    assert_eq!(r.signature, RECORD_SIGNATURE);
    assert_eq!(r.verify(), Ok(*a.public()));
    let mut moved = r.clone();
    moved.address = "attacker.example:8090".into();
    assert_eq!(moved.verify(), Err(RecordFault::BadSignature));
    let mut fresher = r.clone();
    fresher.timestamp_ms += 1;
    assert_eq!(fresher.verify(), Err(RecordFault::BadSignature));
    let mut long = r;
    long.address = "a".repeat(ADDRESS_BYTES_MAX + 1);
    assert_eq!(long.verify(), Err(RecordFault::Malformed));
}

#[test]
fn handshake_vectors() {
    let a = Identity::from_seed(&SEED_A);
    let b = Identity::from_seed(&SEED_B);
    let t = transcript(a.public(), b.public());
    assert_eq!(hex::encode(t.input(Role::Dialer)), TRANSCRIPT_DIALER);
    let acceptor = t.prove(Role::Acceptor, &a, Some(TOKEN));
    let dialer = t.prove(Role::Dialer, &b, Some(TOKEN));
    assert_eq!(acceptor.signature, ACCEPTOR_SIGNATURE);
    assert_eq!(acceptor.mac.as_deref(), Some(ACCEPTOR_MAC));
    assert_eq!(dialer.signature, DIALER_SIGNATURE);
    assert_eq!(dialer.mac.as_deref(), Some(DIALER_MAC));
    assert_eq!(t.check(Role::Acceptor, &acceptor, Some(TOKEN)), Ok(()));
    assert_eq!(t.check(Role::Dialer, &dialer, Some(TOKEN)), Ok(()));
}

#[test]
fn a_proof_binds_its_role_key_nonces_and_token() {
    let a = Identity::from_seed(&SEED_A);
    let b = Identity::from_seed(&SEED_B);
    let t = transcript(a.public(), b.public());
    let dialer = t.prove(Role::Dialer, &b, Some(TOKEN));
    // Replayed as the other role, under another token, without a MAC, or in another
    // session (a fresh acceptor nonce): refused.
    assert_eq!(
        t.check(Role::Acceptor, &dialer, Some(TOKEN)),
        Err(ProofFault::Signature)
    );
    assert_eq!(
        t.check(Role::Dialer, &dialer, Some("other")),
        Err(ProofFault::Token)
    );
    let bare = Proof {
        mac: None,
        ..dialer.clone()
    };
    assert_eq!(
        t.check(Role::Dialer, &bare, Some(TOKEN)),
        Err(ProofFault::Token)
    );
    assert_eq!(t.check(Role::Dialer, &bare, None), Ok(()));
    let fresh = [0xa1; NONCE_BYTES];
    let next = Transcript {
        acceptor_nonce: &fresh,
        ..t.clone()
    };
    assert_eq!(
        next.check(Role::Dialer, &dialer, Some(TOKEN)),
        Err(ProofFault::Signature)
    );
    // Someone holding the token but not the key: refused.
    let forged = t.prove(Role::Dialer, &a, Some(TOKEN));
    assert_eq!(
        t.check(Role::Dialer, &forged, Some(TOKEN)),
        Err(ProofFault::Signature)
    );
}

// Proves a private notification's topic is signed: moving it to another wallet's topic,
// or making it public (no topic), breaks the signature; a public one signs as before.
#[test]
fn the_topic_of_a_private_notification_is_signed() {
    let a = Identity::from_seed(&SEED_A);
    let mut n = vector_notification();
    n.topic = format!("wallet:{}", "ab".repeat(16));
    sign_notification(&a, &mut n);
    assert_ne!(n.signature, NOTIFICATION_SIGNATURE);
    assert_eq!(verify_notification(&n, a.public()), Ok(()));
    let mut elsewhere = n.clone();
    elsewhere.topic = format!("wallet:{}", "cd".repeat(16));
    let mut public = n.clone();
    public.topic.clear();
    for forged in [elsewhere, public] {
        assert_eq!(
            verify_notification(&forged, a.public()),
            Err(NotificationFault::BadSignature)
        );
    }
}

/// A record read from a frame borrows its text (no allocation per gossiped record) and
/// verifies as the owned record does; an escaped string is copied, not refused.
#[test]
fn a_record_read_from_a_frame_borrows_its_text_and_verifies_the_same() {
    let a = Identity::from_seed(&SEED_A);
    let r = SignedRecord::sign(
        &a,
        "relay-a",
        "relay-a.example:8090",
        PeerHealth::Healthy,
        7,
    );
    let text = serde_json::to_string(&r).unwrap();
    let view: RecordView<'_> = serde_json::from_str(&text).unwrap();
    assert!(matches!(view.relay_id, Cow::Borrowed(_)), "{view:?}");
    assert!(matches!(view.signature, Cow::Borrowed(_)), "{view:?}");
    assert!(view.is(&r));
    assert_eq!(view.to_record(), r);
    assert_eq!(view.verify(None, None), Ok(*a.public()));

    let escaped = text.replace("relay-a.example", "relay-a\\u002eexample");
    let view: RecordView<'_> = serde_json::from_str(&escaped).unwrap();
    assert!(matches!(view.address, Cow::Owned(_)));
    assert_eq!(
        view.verify(None, None),
        Ok(*a.public()),
        "same record once unescaped"
    );

    let mut forged = r.clone();
    forged.timestamp_ms += 1;
    assert!(!forged.view().is(&r));
    assert_eq!(
        forged.view().verify(Some(a.public()), None),
        Err(RecordFault::BadSignature)
    );
}

/// The key bound to a record's id is reused only when the record names that key; a
/// record naming another key is verified under the key it names (and returns it, for the
/// binding check to refuse).
#[test]
fn a_known_key_is_reused_only_for_the_key_a_record_names() {
    let a = Identity::from_seed(&SEED_A);
    let b = Identity::from_seed(&SEED_B);
    let by_b = SignedRecord::sign(
        &b,
        "relay-a",
        "relay-a.example:8090",
        PeerHealth::Healthy,
        9,
    );
    assert_eq!(by_b.view().verify(Some(a.public()), None), Ok(*b.public()));
    // Signed by B but naming A's key: A's key (known or parsed) refuses B's signature.
    let mut claims_a = by_b.clone();
    claims_a.public_key = KEY_A.into();
    assert_eq!(
        claims_a.view().verify(Some(a.public()), None),
        Err(RecordFault::BadSignature)
    );
    assert_eq!(
        claims_a.view().verify(None, None),
        Err(RecordFault::BadSignature)
    );
    let by_a = SignedRecord::sign(
        &a,
        "relay-a",
        "relay-a.example:8090",
        PeerHealth::Healthy,
        9,
    );
    assert_eq!(by_a.view().verify(Some(a.public()), None), Ok(*a.public()));
    assert_eq!(by_a.view().verify(Some(b.public()), None), Ok(*a.public()));
    let mut unreadable = by_a;
    unreadable.public_key = "zz".repeat(32);
    assert_eq!(
        unreadable.view().verify(Some(a.public()), None),
        Err(RecordFault::Malformed)
    );
}

/// Through a memo shared with other relays, a record verifies as without it, and a
/// forged copy of a remembered record (any field changed) is still refused.
#[test]
fn a_shared_memo_refuses_what_verification_refuses() {
    let a = Identity::from_seed(&SEED_A);
    let memo = VerifiedMemo::new();
    let r = SignedRecord::sign(
        &a,
        "relay-a",
        "relay-a.example:8090",
        PeerHealth::Healthy,
        5,
    );
    assert_eq!(r.view().verify(None, Some(&memo)), Ok(*a.public()));
    assert_eq!(
        r.view().verify(Some(a.public()), Some(&memo)),
        Ok(*a.public())
    );
    assert_eq!(memo.len(), 1);
    let mut moved = r.clone();
    moved.address = "attacker.example:8090".into();
    assert_eq!(
        moved.view().verify(None, Some(&memo)),
        Err(RecordFault::BadSignature)
    );
    let mut degraded = r;
    degraded.health = PeerHealth::Degraded;
    assert_eq!(
        degraded.view().verify(None, Some(&memo)),
        Err(RecordFault::BadSignature)
    );
    assert_eq!(memo.len(), 1);
}

/// A notification checked through a shared memo: the genuine one verifies (and is
/// remembered), a changed copy or another key is still refused, a foreign id still
/// refused first.
#[test]
fn a_shared_memo_refuses_a_changed_notification() {
    let a = Identity::from_seed(&SEED_A);
    let b = Identity::from_seed(&SEED_B);
    let memo = VerifiedMemo::new();
    let mut n = vector_notification();
    sign_notification(&a, &mut n);
    assert_eq!(
        verify_notification_with(&n, a.public(), Some(&memo)),
        Ok(())
    );
    assert_eq!(
        verify_notification_with(&n, a.public(), Some(&memo)),
        Ok(())
    );
    assert_eq!(memo.len(), 1);
    assert_eq!(
        verify_notification_with(&n, b.public(), Some(&memo)),
        Err(NotificationFault::BadSignature)
    );
    let mut changed = n.clone();
    changed.data = RawValue::from_string(r#"{"txid":"ab","amount":1001}"#.into()).unwrap();
    assert_eq!(
        verify_notification_with(&changed, a.public(), Some(&memo)),
        Err(NotificationFault::BadSignature)
    );
    let mut foreign = n;
    foreign.message_id = "relay-b-0000002a-7".into();
    assert_eq!(
        verify_notification_with(&foreign, a.public(), Some(&memo)),
        Err(NotificationFault::ForeignId)
    );
}
