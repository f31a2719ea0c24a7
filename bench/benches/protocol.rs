//! Parse of every client message type and encode of every outbound type: the per-message
//! work the relay adds on top of the WebSocket stack.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sdk_relay::protocol::{
    self, Capabilities, Capability, HealthReport, Notification, parse_client_message,
};
use serde_json::value::RawValue;

const TIMESTAMP: u64 = 1_764_000_000;

fn notification_json(data_bytes: usize) -> String {
    format!(
        r#"{{"type":"notification","notification_type":"payment","data":{{"txid":"ab12","pad":"{}"}}}}"#,
        "x".repeat(data_bytes)
    )
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let messages = [
        (
            "handshake",
            r#"{"type":"handshake","client_id":"wallet-1","version":"1.0.0","capabilities":["notifications","publish"],"token":"secret"}"#.to_string(),
        ),
        ("ping", r#"{"type":"ping","id":42}"#.to_string()),
        // Spaces take a ping off the plain path onto serde's short form.
        ("ping_spaced", r#"{"type": "ping", "id": 42}"#.to_string()),
        // Any other field sends it through the full envelope.
        ("ping_extra_field", r#"{"type":"ping","id":42,"client_id":"w"}"#.to_string()),
        (
            "subscribe",
            r#"{"type":"subscribe","notification_types":["payment","block","mempool"]}"#.to_string(),
        ),
        (
            "unsubscribe",
            r#"{"type":"unsubscribe","notification_types":["payment"]}"#.to_string(),
        ),
        ("notification_64B", notification_json(8)),
        ("notification_1MiB", notification_json(1 << 20)),
    ];
    for (name, text) in &messages {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), text, |b, text| {
            b.iter(|| {
                let message = parse_client_message(black_box(text)).expect("valid message");
                black_box(matches!(message, protocol::ClientMessage::Ping { .. }));
            });
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let mut granted = Capabilities::default();
    granted.insert(Capability::Notifications);
    granted.insert(Capability::Publish);
    let ping_id = RawValue::from_string("42".to_string()).expect("valid JSON");
    let health = HealthReport {
        status: "healthy",
        uptime: 3600,
        memory_usage: "128MB".to_string(),
        cpu_usage: "5%".to_string(),
        connections: 1000,
    };
    group.bench_function("handshake_accepted", |b| {
        b.iter(|| protocol::encode_handshake_accepted(black_box("relay-1"), granted, 30, TIMESTAMP))
    });
    group.bench_function("handshake_rejected", |b| {
        b.iter(|| {
            protocol::encode_handshake_rejected(black_box("relay-1"), "bad token", 30, TIMESTAMP)
        })
    });
    group.bench_function("pong", |b| {
        b.iter(|| protocol::encode_pong(Some(black_box(ping_id.get())), TIMESTAMP))
    });
    group.bench_function("error", |b| {
        b.iter(|| protocol::encode_error(black_box("unknown_type"), "unknown message type `x`"))
    });
    group.bench_function("subscriptions", |b| {
        b.iter(|| protocol::encode_subscriptions(black_box(["*", "payment", "block"])))
    });
    group.bench_function("notification_ack", |b| {
        b.iter(|| protocol::encode_notification_ack(black_box("relay-1-9f3a-42"), TIMESTAMP))
    });
    group.bench_function("health", |b| {
        b.iter(|| protocol::encode_health(black_box(&health), TIMESTAMP))
    });
    group.bench_function("state_sync", |b| {
        b.iter(|| {
            protocol::encode_state_sync(
                black_box("relay-1"),
                "signet",
                3600,
                "relay-1-s-7",
                TIMESTAMP,
            )
        })
    });
    for (name, data_bytes) in [("notification_64B", 8), ("notification_1MiB", 1 << 20)] {
        let data = format!(r#"{{"txid":"ab12","pad":"{}"}}"#, "x".repeat(data_bytes));
        let notification = Notification {
            topic: String::new(),
            message_id: "relay-1-9f3a-42".to_string(),
            relay_id: "relay-1".to_string(),
            notification_type: "payment".to_string(),
            data: RawValue::from_string(data).expect("valid JSON"),
            timestamp: TIMESTAMP,
            signature: String::new(),
        };
        group.bench_function(name, |b| b.iter(|| black_box(&notification).encode()));
    }
    group.finish();
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
