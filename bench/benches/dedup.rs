//! The mesh dedup cache at its production capacity: a miss (a new id, evicting the
//! oldest once full) and a hit (an id seen before, dropped), per notification.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sdk_relay::mesh::dedup::{DEDUP_IDS_MAX, DedupCache};

fn message_id(seq: u64) -> String {
    format!("relay-1-9f3a5c7e-{seq}")
}

fn dedup(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedup");
    let mut cache = DedupCache::new(DEDUP_IDS_MAX);
    for seq in 0..DEDUP_IDS_MAX as u64 {
        cache.insert(&message_id(seq));
    }
    let mut next = DEDUP_IDS_MAX as u64;
    group.bench_function("insert_miss_full", |b| {
        // Fresh ids (made outside the timing) in a full cache: each evicts the oldest.
        b.iter_batched(
            || {
                next += 1;
                message_id(next)
            },
            |id| black_box(cache.insert(black_box(&id))),
            BatchSize::SmallInput,
        );
    });
    let seen = message_id(next);
    group.bench_function("insert_hit", |b| {
        b.iter(|| black_box(cache.insert(black_box(&seen))))
    });
    group.finish();
}

criterion_group!(benches, dedup);
criterion_main!(benches);
