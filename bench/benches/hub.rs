//! Local fan-out: `Hub::publish` of one shared frame to 1, 100 and 10,000 subscribers.
//! Only the publish calls are timed; the queues are drained between batches, untimed.

// Timing with `Instant` is this benchmark's purpose; it is outside the relay's seam.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sdk_relay::conn::Outlet;
use sdk_relay::conn::queue::Receiver;
use sdk_relay::hub::Hub;

/// Publishes timed back to back before the queues are drained (the queue capacity).
const BATCH_PUBLISHES_MAX: u64 = 64;

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_publish");
    let frame = Bytes::from(format!(
        r#"{{"type":"notification","notification_type":"payment","data":{{"pad":"{}"}},"timestamp":1764000000,"message_id":"relay-1-9f3a-42","relay_id":"relay-1"}}"#,
        "x".repeat(64)
    ));
    for subscribers in [1_usize, 100, 10_000] {
        let hub = Hub::new();
        let mut queues: Vec<Receiver> = (0..subscribers)
            .map(|id| {
                let (outlet, rx) = Outlet::new(sdk_relay::conn::queue::Bound {
                    frames: BATCH_PUBLISHES_MAX as usize,
                    bytes: usize::MAX,
                });
                hub.join(id as u64, outlet, true, false);
                rx
            })
            .collect();
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(BenchmarkId::from_parameter(subscribers), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(BATCH_PUBLISHES_MAX);
                    let start = Instant::now();
                    for _ in 0..batch {
                        let delivery = hub.publish(black_box("payment"), &frame);
                        debug_assert_eq!(delivery.slow_disconnects, 0);
                        black_box(delivery);
                    }
                    timed += start.elapsed();
                    for queue in &mut queues {
                        while queue.try_recv().is_ok() {}
                    }
                    left -= batch;
                }
                timed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
