//! Membership in NATS mode: each relay keeps its record in a JetStream key-value bucket,
//! renewed every sync interval; the bucket's age limit (three intervals) drops the record
//! of a relay that stopped. Reading the bucket back gives `/relays` and `/sync/status`
//! their members, and this relay the public keys of the others: each record carries its
//! relay's key in a record that relay signed (the mesh's `SignedRecord`), so a relay id
//! is bound to its key as in the mesh (first key proven wins, `mesh.trusted_keys` if set
//! limits who may be bound). Notifications and resume tokens are checked against them.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{NatsBackbone, connect};
use crate::protocol::peer::SyncType;
use crate::protocol::signed::SignedRecord;

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
    /// Its id, key, address, health and `updated_ms`, signed by it.
    pub signed: SignedRecord,
}

impl Record {
    /// The key this record proves for its relay id: its signature verifies, and the
    /// signed fields are the record's own.
    pub fn proven_key(&self) -> Option<crate::identity::PublicKey> {
        let signed = &self.signed;
        if signed.relay_id != self.relay_id
            || signed.address != self.address
            || signed.timestamp_ms != self.updated_ms
        {
            return None;
        }
        signed.verify().ok()
    }
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
                Ok(Ok(s)) => {
                    let _ = backbone.bucket.set(s.clone());
                    store = Some(s);
                }
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
    match tokio::time::timeout(timeout, read_all(backbone, store, &key)).await {
        Ok(Ok(members)) => {
            backbone.set_members(members);
            backbone.save_keys();
        }
        Ok(Err(error)) => backbone.record_error(format!("membership read: {error}")),
        Err(_) => backbone.record_error("membership read: timed out".into()),
    }
}

/// Every other relay's record (at most `MEMBERS_MAX`).
async fn read_all(
    backbone: &NatsBackbone,
    store: &kv::Store,
    own_key: &str,
) -> anyhow::Result<Vec<Record>> {
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
        if let Ok(record) = serde_json::from_slice::<Record>(&value)
            && backbone.learn_key(&record)
        {
            members.push(record);
        }
    }
    Ok(members)
}

/// Looks up one relay's record in the bucket and learns its key (a notification from a
/// relay whose record this relay has not read yet); false when there is none to learn.
pub async fn fetch_key(backbone: &NatsBackbone, relay_id: &str) -> bool {
    let Some(store) = backbone.bucket.get() else {
        return false;
    };
    let timeout = Duration::from_secs(backbone.config().publish_timeout_secs);
    let key = connect::token(relay_id);
    let Ok(Ok(Some(value))) = tokio::time::timeout(timeout, store.get(&key)).await else {
        return false;
    };
    let learned = value.len() <= RECORD_BYTES_MAX
        && serde_json::from_slice::<Record>(&value)
            .is_ok_and(|r| r.relay_id == relay_id && backbone.learn_key(&r));
    backbone.save_keys();
    learned
}
