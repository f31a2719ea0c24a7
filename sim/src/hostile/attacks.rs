//! The frames of each attack step, and the hostile host's answers to what relays ask it.

use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use sdk_relay::identity::Identity;
use serde_json::{Value, json};

use super::wire::{self, Signing};
use super::{Agent, Attack};
use crate::workload::ws_addr;

/// Ids pre-claimed ahead of each known stream per step.
const PRE_CLAIM_AHEAD: u64 = 3;
/// Records in one oversized gossip message: more than a relay keeps
/// (`KNOWN_RELAYS_MAX`), each one it must check (a relay spends tens of milliseconds of
/// CPU on one such message).
const BULK_RECORDS: usize = 1100;
/// One oversized-records step in this many carries the bulk records (the others only
/// the records over their bounds): enough to show the bound, without making the
/// scenario the costliest to simulate.
const BULK_EVERY: u64 = 4;
/// Notifications in one flood: more than twice the bound the byzantine scenarios give
/// their relays (`scenario::FLOOD_BOUND`), so a relay that holds to it cuts the link.
pub const FLOOD_FRAMES: u64 = 2 * crate::scenario::FLOOD_BOUND as u64 + 50;
/// Ten years, in milliseconds.
const DECADE_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// The frames of one step of `attack` on the link to `target`.
pub(super) fn frames(
    agent: &Agent,
    attack: Attack,
    target: &str,
    rng: &mut ChaCha8Rng,
) -> Vec<Bytes> {
    let targets = &agent.me.targets;
    match attack {
        Attack::Forge => {
            let victim = &targets[rng.random_range(0..targets.len())];
            forge_as(agent, victim, attack.name(), 3)
        }
        Attack::Replay => replay(agent, rng),
        Attack::PreClaim => pre_claim(agent),
        // The impostor links do most of it (`Agent::impersonate`); on its own link, the
        // hostile host also stamps notifications with the id of the relay it talks to.
        Attack::ClaimId => forge_as(agent, target, attack.name(), 1),
        Attack::FabricatedRecords => vec![state_sync(agent, fabricated(agent))],
        Attack::OversizedRecords => vec![state_sync(agent, oversized(agent))],
        Attack::FarFuture => vec![state_sync(agent, far_future(agent))],
        Attack::HugeSummary => huge_summary(agent, rng),
        Attack::RepeatedSyncs => {
            let frame = state_sync(agent, own_payload(agent));
            vec![frame; 25]
        }
        Attack::FetchFlood => fetch_flood(agent),
        Attack::NotificationFlood => flood(agent),
    }
}

/// `FLOOD_FRAMES` notifications of the hostile host's own stream, fresh ids, each with a
/// signature that is no one's: none is ever delivered, each would cost a check.
fn flood(agent: &Agent) -> Vec<Bytes> {
    let mut k = agent.known.borrow_mut();
    let stream = format!("{}-f100d", agent.name());
    (0..FLOOD_FRAMES)
        .map(|_| {
            k.forged += 1;
            let id = format!("{stream}-{}", k.forged);
            wire::notification(
                &id,
                agent.name(),
                Attack::NotificationFlood.name(),
                Signing::Garbage,
            )
        })
        .collect()
}

/// `count` notifications stamped as `origin`'s, under ids of its streams far ahead of
/// what it issued (or of a made-up stream when none is known yet), in turn unsigned,
/// with a signature that is no one's, signed by the hostile host's own key, and
/// stamped with the hostile host's own id but an id of `origin`'s stream.
pub(super) fn forge_as(agent: &Agent, origin: &str, attack: &str, count: u64) -> Vec<Bytes> {
    let mut k = agent.known.borrow_mut();
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
            match k.forged % 4 {
                0 => wire::notification(&id, origin, attack, Signing::Unsigned),
                1 => wire::notification(&id, origin, attack, Signing::Garbage),
                2 => wire::notification(&id, origin, attack, Signing::By(&agent.identity)),
                _ => wire::notification(&id, agent.name(), attack, Signing::By(&agent.identity)),
            }
        })
        .collect()
}

/// A genuine frame as received, and the same with its data changed.
fn replay(agent: &Agent, rng: &mut ChaCha8Rng) -> Vec<Bytes> {
    let k = agent.known.borrow();
    if k.genuine.is_empty() {
        return Vec::new();
    }
    let genuine = k.genuine[rng.random_range(0..k.genuine.len())].clone();
    let tampered = wire::tampered(&genuine, Attack::Replay.name());
    std::iter::once(genuine).chain(tampered).collect()
}

/// A pre-claimed id, signed by the hostile host's key or not at all.
fn pre_claimed(agent: &Agent, id: &str, origin: &str, seq: u64) -> Bytes {
    let signing = if seq.is_multiple_of(2) {
        Signing::By(&agent.identity)
    } else {
        Signing::Unsigned
    };
    wire::notification(id, origin, Attack::PreClaim.name(), signing)
}

/// The next ids of every known stream, forged, then a StateSync whose log summary
/// names them (so relays fetch them here).
fn pre_claim(agent: &Agent) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut summary = Vec::new();
    let streams: Vec<(String, u64)> = {
        let k = agent.known.borrow();
        k.streams.iter().map(|(s, h)| (s.clone(), *h)).collect()
    };
    for (stream, hi) in streams {
        let origin = wire::stream_origin(&stream).to_string();
        for seq in hi + 1..=hi + PRE_CLAIM_AHEAD {
            let id = format!("{stream}-{seq}");
            if agent.known.borrow_mut().claimed.insert(id.clone()) {
                out.push(pre_claimed(agent, &id, &origin, seq));
            }
        }
        summary.push(json!({"stream": stream, "ranges": [[hi + 1, hi + PRE_CLAIM_AHEAD]]}));
    }
    let mut payload = own_payload(agent);
    payload["log"] = Value::Array(summary);
    out.push(state_sync(agent, payload));
    out
}

/// A StateSync request carrying `payload`.
fn state_sync(agent: &Agent, payload: Value) -> Bytes {
    let id = {
        let mut k = agent.known.borrow_mut();
        k.syncs += 1;
        format!("{}-0-s{}", agent.name(), k.syncs)
    };
    wire::sync("StateSync", agent.name(), &id, &payload)
}

/// A StateSync payload that says only true things about the hostile host itself: its
/// own record, signed now.
fn own_payload(agent: &Agent) -> Value {
    let address = agent.me.address();
    json!({
        "address": address,
        "state": {"uptime": "1", "version": sdk_relay::protocol::VERSION, "network": "signet"},
        "records": [wire::record(&agent.identity, agent.name(), &address, wire::unix_ms())],
        "relays": [wire::listed(agent.name(), &address, wire::unix_secs())],
    })
}

/// A key nobody admits, fresh for each use.
fn stranger(agent: &Agent) -> Identity {
    let n = {
        let mut k = agent.known.borrow_mut();
        k.forged += 1;
        k.forged
    };
    Identity::from_seed(&crate::rt::key_seed(agent.me.seed ^ n.rotate_left(17)))
}

/// Invented relays (under a key nobody admits, and under the hostile host's own), real
/// relays at a host that is not a relay (signed by the hostile host's key, and a
/// genuine record with its address changed), the same in the unsigned `relays` list.
fn fabricated(agent: &Agent) -> Value {
    let now = wire::unix_ms();
    let own = &agent.identity;
    let mut records = vec![
        wire::record(&stranger(agent), "ghost-1", "ghost-1:8090", now),
        wire::record(own, "ghost-2", "intranet:8090", now),
    ];
    let mut listed = vec![wire::listed("ghost-3", "metadata.internal:80", now / 1000)];
    for target in &agent.me.targets {
        records.push(wire::record(own, target, "intranet:22", now));
        listed.push(wire::listed(target, "intranet:22", now / 1000));
    }
    let genuine: Vec<Value> = agent.known.borrow().records.values().cloned().collect();
    for mut record in genuine {
        record["address"] = "intranet:22".into();
        records.push(record);
    }
    with(agent, records, listed)
}

/// An id and an address over their bounds, and every `BULK_EVERY` steps more records
/// than a relay keeps (each with a signature that is not its key's).
fn oversized(agent: &Agent) -> Value {
    let step = {
        let mut k = agent.known.borrow_mut();
        k.oversized_steps += 1;
        k.oversized_steps
    };
    let now = wire::unix_ms();
    let own = &agent.identity;
    let mut records = vec![
        wire::record(own, &"g".repeat(300), "ghost-long-id:8090", now),
        wire::record(
            own,
            "ghost-long-address",
            &format!("{}:8090", "a".repeat(300)),
            now,
        ),
    ];
    let template = wire::record(own, "ghost-bulk", "ghost-bulk:8090", now);
    let bulk = if step % BULK_EVERY == 1 {
        BULK_RECORDS
    } else {
        0
    };
    records.extend((0..bulk).map(|i| {
        let mut record = template.clone();
        record["relay_id"] = format!("ghost-bulk-{i}").into();
        record["address"] = format!("ghost-bulk-{i}:8090").into();
        record
    }));
    with(agent, records, Vec::new())
}

/// Records signed ten years ahead: the hostile host's own, an invented relay's; real
/// relays listed (unsigned) as last seen ten years ahead.
fn far_future(agent: &Agent) -> Value {
    let later = wire::unix_ms() + DECADE_MS;
    let records = vec![
        wire::record(&agent.identity, agent.name(), &agent.me.address(), later),
        wire::record(&stranger(agent), "ghost-future", "ghost-future:8090", later),
    ];
    let listed = agent
        .me
        .targets
        .iter()
        .map(|t| wire::listed(t, &ws_addr(t), later / 1000))
        .chain(std::iter::once(wire::listed(
            "ghost-future",
            "ghost-future:8090",
            later / 1000,
        )))
        .collect();
    with(agent, records, listed)
}

/// The hostile host's own payload with `records` and `listed` added.
fn with(agent: &Agent, records: Vec<Value>, listed: Vec<Value>) -> Value {
    let mut payload = own_payload(agent);
    if let Some(list) = payload["records"].as_array_mut() {
        list.extend(records);
    }
    if let Some(list) = payload["relays"].as_array_mut() {
        list.extend(listed);
    }
    payload
}

/// One of three, in turn: a summary over the stream bound, a valid summary naming every
/// seq of every known stream up to 2^63, a summary in a frame over the size limit.
fn huge_summary(agent: &Agent, rng: &mut ChaCha8Rng) -> Vec<Bytes> {
    let log: Vec<Value> = match rng.random_range(0..3) {
        0 => (0..=sdk_relay::mesh::SUMMARY_STREAMS_MAX)
            .map(|i| json!({"stream": format!("relay-x-{i:08x}"), "ranges": [[1, 1]]}))
            .collect(),
        1 => {
            let k = agent.known.borrow();
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
    let mut payload = own_payload(agent);
    payload["log"] = Value::Array(log);
    vec![state_sync(agent, payload)]
}

/// Fetches of genuine ids repeated thousands of times and of ids nobody issued.
fn fetch_flood(agent: &Agent) -> Vec<Bytes> {
    let k = agent.known.borrow();
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
/// gossip attack the same records it sends itself.
pub(super) fn answer_sync(agent: &Agent, request: &Value) -> Option<Bytes> {
    let sync_type = request["sync_type"].as_str()?;
    let request_id = request["message_id"].as_str()?;
    let attacks = &agent.me.attacks;
    let payload = match sync_type {
        "StateSync" if attacks.contains(&Attack::FabricatedRecords) => fabricated(agent),
        "StateSync" if attacks.contains(&Attack::FarFuture) => far_future(agent),
        "StateSync" => own_payload(agent),
        _ => json!({}),
    };
    Some(wire::sync_response(
        sync_type,
        agent.name(),
        request_id,
        &payload,
    ))
}

/// The answer to a relay's fetch: forgeries under the ids it asked for, when the hostile
/// host pre-claims (it advertised them); nothing otherwise.
pub(super) fn answer_fetch(agent: &Agent, request: &Value) -> Vec<Bytes> {
    if !agent.me.attacks.contains(&Attack::PreClaim) {
        return Vec::new();
    }
    request["message_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .take(16)
        .filter_map(|id| {
            let (stream, seq) = wire::split_id(id)?;
            Some(pre_claimed(agent, id, wire::stream_origin(stream), seq))
        })
        .collect()
}
