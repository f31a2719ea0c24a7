//! The cost mesh trust adds per notification: signing it once at its origin, and on
//! every relay, checking it (id of the origin's stream, Ed25519 signature over the exact
//! bytes) before admission; and checking a membership record.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sdk_relay::identity::Identity;
use sdk_relay::protocol::Notification;
use sdk_relay::protocol::peer::PeerHealth;
use sdk_relay::protocol::signed::{self, SignedRecord};
use serde_json::value::RawValue;

fn notification(data_bytes: usize) -> Notification {
    let data = format!(r#"{{"txid":"ab12","pad":"{}"}}"#, "x".repeat(data_bytes));
    Notification {
        topic: String::new(),
        message_id: "relay-1-0000002a-12345".to_string(),
        relay_id: "relay-1".to_string(),
        notification_type: "payment_detected".to_string(),
        data: RawValue::from_string(data).expect("valid JSON"),
        timestamp: 1_764_000_000,
        signature: String::new(),
    }
}

fn notifications(c: &mut Criterion) {
    let identity = Identity::from_seed(&[7; 32]);
    let key = *identity.public();
    let mut group = c.benchmark_group("notification");
    for (name, bytes) in [
        ("64B", 8),
        ("1KiB", 1024),
        ("64KiB", 64 * 1024),
        ("1MiB", 1 << 20),
    ] {
        let mut n = notification(bytes);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("sign", name), &n.clone(), |b, n| {
            b.iter(|| {
                let mut n = n.clone();
                signed::sign_notification(&identity, black_box(&mut n));
                black_box(n.signature.len())
            });
        });
        signed::sign_notification(&identity, &mut n);
        group.bench_with_input(BenchmarkId::new("verify", name), &n, |b, n| {
            b.iter(|| signed::verify_notification(black_box(n), &key).expect("genuine"));
        });
    }
    group.finish();
}

fn records(c: &mut Criterion) {
    let identity = Identity::from_seed(&[9; 32]);
    let record = SignedRecord::sign(
        &identity,
        "relay-1",
        "relay-1.example:8090",
        PeerHealth::Healthy,
        1_764_000_000_000,
    );
    c.bench_function("record/verify", |b| {
        b.iter(|| black_box(&record).verify().expect("genuine"));
    });
}

criterion_group!(benches, notifications, records);
criterion_main!(benches);
