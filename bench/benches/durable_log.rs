//! What the durable notification log costs per notification: one group commit of 256
//! notifications to redb (synced) divided by 256, and the bytes on disk per notification;
//! and what a resume token costs to issue (an Ed25519 signature over a 50-stream position).

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sdk_relay::identity::Identity;
use sdk_relay::logstore::{Batch, LogStore, RedbStore, Stored};
use sdk_relay::protocol::Notification;
use sdk_relay::resume::{Issuer, Position, stream_key};

const BATCH: usize = 256;

fn notification(seq: u64) -> Arc<Notification> {
    Arc::new(Notification {
        topic: String::new(),
        message_id: format!("relay-bench-0000abcd-{seq}"),
        relay_id: "relay-bench".into(),
        notification_type: "payment_detected".into(),
        data: serde_json::value::RawValue::from_string(format!(
            "{{\"txid\":\"{}\",\"amount\":{seq}}}",
            "ab".repeat(32)
        ))
        .unwrap(),
        timestamp: 1_700_000_000,
        signature: "cd".repeat(64),
    })
}

fn log_writes(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("sdk_relay_bench_log_{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let store = RedbStore::open(&dir).unwrap();
    let mut seq = 0u64;
    let mut group = c.benchmark_group("durable_log");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.bench_function("group_commit_256", |b| {
        b.iter(|| {
            let mut batch = Batch::default();
            for _ in 0..BATCH {
                seq += 1;
                batch.puts.push(Stored {
                    order: seq,
                    arrived: 1_700_000_000,
                    notification: notification(seq),
                });
                // The log keeps a bounded window: evict as many as it adds.
                if seq > 10_000 {
                    batch
                        .deletes
                        .push(format!("relay-bench-0000abcd-{}", seq - 10_000));
                }
            }
            store.commit(&batch).unwrap();
        })
    });
    group.finish();
    let held = store.load().unwrap().len() as u64;
    println!(
        "durable_log: {} bytes on disk for {held} notifications ({} bytes each; data {} bytes)",
        store.size_bytes(),
        store.size_bytes() / held.max(1),
        notification(1).data.get().len()
    );
    drop(store);
    std::fs::remove_dir_all(&dir).ok();
}

fn token_issue(c: &mut Criterion) {
    let issuer = Issuer::new("relay-bench", Arc::new(Identity::from_seed(&[7; 32])));
    let mut position = Position::default();
    for i in 0..50 {
        position.insert_range(stream_key(&format!("relay-{i}-0000abcd")), 1, 100_000 + i);
    }
    c.bench_function("resume_token_issue_50_streams", |b| {
        b.iter(|| issuer.issue(["payment_detected"], &position, 1_700_000_000))
    });
}

criterion_group!(benches, log_writes, token_issue);
criterion_main!(benches);
