//! Membership in NATS mode: each relay keeps its record in a JetStream key-value bucket,
//! renewed every sync interval; the bucket's age limit (three intervals) drops the record
//! of a relay that stopped. Reading the bucket back gives `/relays` and `/sync/status`
//! their members.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{NatsBackbone, connect};
use crate::protocol::peer::SyncType;

/// Records read back from the bucket: the mesh's own bound on known relays.
pub const MEMBERS_MAX: usize = crate::mesh::KNOWN_RELAYS_MAX;
/// Bytes of one record read back (a relay's record is well under a kilobyte).
const RECORD_BYTES_MAX: usize = 4096;
/// Intervals a record lives without renewal.
pub const TTL_INTERVALS: u32 = 3;

/// One relay's record in the bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub relay_id: String,
    pub address: String,
    pub version: String,
    pub uptime: u64,
    /// `healthy`, `degraded` or `unhealthy`, as that relay reported itself.
    pub status: String,
    pub connections: usize,
    /// Unix milliseconds of the renewal.
    pub updated_ms: u64,
}

pub fn ttl(interval: Duration) -> Duration {
    interval * TTL_INTERVALS
}

pub async fn run(backbone: Arc<NatsBackbone>, js: jetstream::Context) {
    let interval = backbone.interval();
    let timeout = Duration::from_secs(backbone.config().publish_timeout_secs);
    let mut store = None;
    loop {
        if store.is_none() {
            let found = tokio::time::timeout(
                timeout,
                connect::ensure_bucket(&js, backbone.config(), ttl(interval)),
            )
            .await;
            match found {
                Ok(Ok(s)) => store = Some(s),
                Ok(Err(error)) => backbone.record_error(format!("membership bucket: {error}")),
                Err(_) => backbone.record_error("membership bucket: timed out".into()),
            }
        }
        if let Some(s) = &store {
            renew(&backbone, s, timeout).await;
        }
        backbone.schedule_next_sync(interval);
        tokio::time::sleep(interval).await;
    }
}

/// Writes this relay's record, then reads every record back.
async fn renew(backbone: &NatsBackbone, store: &kv::Store, timeout: Duration) {
    let record = backbone.own_record();
    let key = connect::token(&record.relay_id);
    let value = serde_json::to_vec(&record).expect("a record serializes");
    let started = backbone.lifecycle.clock().now();
    backbone
        .metrics
        .relay
        .sync_requests
        .get(SyncType::StateSync)
        .increment(1);
    match tokio::time::timeout(timeout, store.put(&key, value.into())).await {
        Ok(Ok(_)) => {
            backbone
                .metrics
                .relay
                .sync_responses
                .get(SyncType::StateSync)
                .increment(1);
            backbone.record_sync(started.elapsed());
        }
        Ok(Err(error)) => return backbone.record_error(format!("membership put: {error}")),
        Err(_) => return backbone.record_error("membership put: timed out".into()),
    }
    match tokio::time::timeout(timeout, read_all(store, &key)).await {
        Ok(Ok(members)) => backbone.set_members(members),
        Ok(Err(error)) => backbone.record_error(format!("membership read: {error}")),
        Err(_) => backbone.record_error("membership read: timed out".into()),
    }
}

/// Every other relay's record (at most `MEMBERS_MAX`).
async fn read_all(store: &kv::Store, own_key: &str) -> anyhow::Result<Vec<Record>> {
    let mut keys = store.keys().await?;
    let mut members = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key?;
        if key == own_key {
            continue;
        }
        if members.len() >= MEMBERS_MAX {
            break;
        }
        let Some(value) = store.get(&key).await? else {
            continue;
        };
        if value.len() > RECORD_BYTES_MAX {
            continue;
        }
        if let Ok(record) = serde_json::from_slice::<Record>(&value) {
            members.push(record);
        }
    }
    Ok(members)
}
