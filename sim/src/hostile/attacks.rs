//! The frames of each attack step, and the hostile host's answers to what relays ask it.

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::{Attack, Hostile, Known, wire};
use crate::workload::ws_addr;

/// Ids pre-claimed ahead of each known stream per step.
const PRE_CLAIM_AHEAD: u64 = 3;
/// Records of invented relays in one oversized gossip message: more than a relay keeps
/// (`KNOWN_RELAYS_MAX`).
const BULK_RECORDS: usize = 1500;
/// Ten years, in seconds.
const DECADE_SECS: u64 = 10 * 365 * 24 * 3600;

/// The frames of one step of `attack` on the link to `target`.
pub(super) fn frames(
    me: &Hostile,
    attack: Attack,
    target: &str,
    known: &Known,
    rng: &mut ChaCha8Rng,
) -> Vec<Bytes> {
    match attack {
        Attack::Forge => {
            let victim = &me.targets[rng.random_range(0..me.targets.len())];
            forge_as(victim, attack.name(), known, 2)
        }
        Attack::Replay => replay(known, rng),
        Attack::PreClaim => pre_claim(me, known),
        // The impostor links do it (`Hostile::impersonate`); on its own link, the hostile
        // host also stamps notifications with the id of the relay it talks to.
        Attack::ClaimId => forge_as(target, attack.name(), known, 1),
        Attack::FabricatedRecords => vec![state_sync(me, known, fabricated(me))],
        Attack::OversizedRecords => vec![state_sync(me, known, oversized())],
        Attack::FarFuture => vec![state_sync(me, known, far_future(me))],
        Attack::HugeSummary => huge_summary(me, known, rng),
        Attack::RepeatedSyncs => {
            let frame = state_sync(me, known, own_record(me));
            vec![frame; 25]
        }
        Attack::FetchFlood => fetch_flood(known),
    }
}

/// `count` notifications stamped as `origin`'s, under ids of its streams far ahead of
/// what it issued (or of a made-up stream when none is known yet).
pub(super) fn forge_as(origin: &str, attack: &str, known: &Known, count: u64) -> Vec<Bytes> {
    let mut k = known.borrow_mut();
    let stream = k
        .streams
        .keys()
        .find(|s| wire::stream_origin(s) == origin)
        .cloned()
        .unwrap_or_else(|| format!("{origin}-0badc0de"));
    (0..count)
        .map(|_| {
            k.forged += 1;
            let id = format!("{stream}-{}", 1_000_000 + k.forged);
            wire::notification(&id, origin, attack)
        })
        .collect()
}

/// A genuine frame as received, and the same with its data changed.
fn replay(known: &Known, rng: &mut ChaCha8Rng) -> Vec<Bytes> {
    let k = known.borrow();
    if k.genuine.is_empty() {
        return Vec::new();
    }
    let genuine = k.genuine[rng.random_range(0..k.genuine.len())].clone();
    let tampered = wire::tampered(&genuine, Attack::Replay.name());
    std::iter::once(genuine).chain(tampered).collect()
}

/// The next ids of every known stream, forged, then a StateSync whose log summary
/// names them (so relays fetch them here).
fn pre_claim(me: &Hostile, known: &Known) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut summary = Vec::new();
    {
        let mut k = known.borrow_mut();
        let streams: Vec<(String, u64)> = k.streams.iter().map(|(s, h)| (s.clone(), *h)).collect();
        for (stream, hi) in streams {
            let origin = wire::stream_origin(&stream).to_string();
            for seq in hi + 1..=hi + PRE_CLAIM_AHEAD {
                let id = format!("{stream}-{seq}");
                if k.claimed.insert(id.clone()) {
                    out.push(wire::notification(&id, &origin, Attack::PreClaim.name()));
                }
            }
            summary.push(json!({"stream": stream, "ranges": [[hi + 1, hi + PRE_CLAIM_AHEAD]]}));
        }
    }
    let mut payload = own_record(me);
    payload["log"] = Value::Array(summary);
    out.push(sync_frame(me, known, "StateSync", &payload));
    out
}

/// A StateSync request carrying `payload` (its `address` and `relays` as given).
fn state_sync(me: &Hostile, known: &Known, payload: Value) -> Bytes {
    sync_frame(me, known, "StateSync", &payload)
}

fn sync_frame(me: &Hostile, known: &Known, sync_type: &str, payload: &Value) -> Bytes {
    let id = {
        let mut k = known.borrow_mut();
        k.syncs += 1;
        format!("{}-0-s{}", me.name, k.syncs)
    };
    wire::sync(sync_type, &me.name, &id, payload)
}

/// A StateSync payload that says only true things about the hostile host itself.
fn own_record(me: &Hostile) -> Value {
    json!({
        "address": me.address(),
        "state": {"uptime": "1", "version": sdk_relay::protocol::VERSION, "network": "signet"},
        "relays": [wire::record(&me.name, &me.address(), wire::unix_secs())],
    })
}

/// Invented relays, at invented hosts and at hosts that are not relays; real relays at
/// addresses that are not theirs.
fn fabricated(me: &Hostile) -> Value {
    let now = wire::unix_secs();
    let mut records = vec![
        wire::record("ghost-1", "ghost-1:8090", now),
        wire::record("ghost-2", "intranet:8090", now),
        wire::record("ghost-3", "metadata.internal:80", now),
    ];
    for target in &me.targets {
        records.push(wire::record(target, "intranet:22", now));
    }
    with_records(me, records)
}

/// Ids and addresses over their bounds, and more invented relays than a relay keeps.
fn oversized() -> Value {
    let now = wire::unix_secs();
    let mut records = vec![
        wire::record(&"g".repeat(300), "ghost-long-id:8090", now),
        wire::record(
            "ghost-long-address",
            &format!("{}:8090", "a".repeat(300)),
            now,
        ),
    ];
    records.extend((0..BULK_RECORDS).map(|i| {
        let id = format!("ghost-bulk-{i}");
        wire::record(&id, &format!("{id}:8090"), now)
    }));
    json!({"relays": records})
}

/// Records last seen ten years ahead: an invented relay, and each real one.
fn far_future(me: &Hostile) -> Value {
    let later = wire::unix_secs() + DECADE_SECS;
    let mut records = vec![wire::record("ghost-future", "ghost-future:8090", later)];
    for target in &me.targets {
        records.push(wire::record(target, &ws_addr(target), later));
    }
    with_records(me, records)
}

fn with_records(me: &Hostile, records: Vec<Value>) -> Value {
    let mut payload = own_record(me);
    if let Some(list) = payload["relays"].as_array_mut() {
        list.extend(records);
    }
    payload
}

/// One of three, in turn: a summary over the stream bound, a valid summary naming every
/// seq of every known stream up to 2^63, a summary in a frame over the size limit.
fn huge_summary(me: &Hostile, known: &Known, rng: &mut ChaCha8Rng) -> Vec<Bytes> {
    let log: Vec<Value> = match rng.random_range(0..3) {
        0 => (0..=sdk_relay::mesh::SUMMARY_STREAMS_MAX)
            .map(|i| json!({"stream": format!("relay-x-{i:08x}"), "ranges": [[1, 1]]}))
            .collect(),
        1 => {
            let k = known.borrow();
            let mut log: Vec<Value> = k
                .streams
                .keys()
                .map(|s| json!({"stream": s, "ranges": [[1, 1u64 << 63]]}))
                .collect();
            log.push(json!({"stream": "ghost-0badc0de", "ranges": [[1, 1u64 << 63]]}));
            log
        }
        _ => vec![json!({
            "stream": "ghost-0badc0de",
            "ranges": [[1, 1]],
            "padding": "x".repeat(3 << 20),
        })],
    };
    let mut payload = own_record(me);
    payload["log"] = Value::Array(log);
    vec![state_sync(me, known, payload)]
}

/// Fetches of genuine ids repeated thousands of times and of ids nobody issued.
fn fetch_flood(known: &Known) -> Vec<Bytes> {
    let k = known.borrow();
    let genuine: Vec<String> = k
        .streams
        .iter()
        .flat_map(|(s, hi)| (1..=*hi).take(64).map(move |seq| format!("{s}-{seq}")))
        .collect();
    let mut ids: Vec<String> = genuine.iter().cycle().take(5000).cloned().collect();
    ids.extend((0..5000).map(|i| format!("ghost-0badc0de-{i}")));
    vec![wire::fetch(&ids); 4]
}

/// The answer to a relay's sync request: the hostile host's own record, and in a
/// gossip attack the same fabricated records it sends itself.
pub(super) fn answer_sync(me: &Hostile, request: &Value) -> Option<Bytes> {
    let sync_type = request["sync_type"].as_str()?;
    let request_id = request["message_id"].as_str()?;
    let payload = match sync_type {
        "StateSync" if me.attacks.contains(&Attack::FabricatedRecords) => fabricated(me),
        "StateSync" if me.attacks.contains(&Attack::FarFuture) => far_future(me),
        "StateSync" => own_record(me),
        _ => json!({}),
    };
    Some(wire::sync_response(
        sync_type, &me.name, request_id, &payload,
    ))
}

/// The answer to a relay's fetch: forgeries under the ids it asked for, when the hostile
/// host pre-claims (it advertised them); nothing otherwise.
pub(super) fn answer_fetch(me: &Hostile, request: &Value) -> Vec<Bytes> {
    if !me.attacks.contains(&Attack::PreClaim) {
        return Vec::new();
    }
    request["message_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .take(16)
        .filter_map(|id| {
            let (stream, _) = wire::split_id(id)?;
            Some(wire::notification(
                id,
                wire::stream_origin(stream),
                Attack::PreClaim.name(),
            ))
        })
        .collect()
}
