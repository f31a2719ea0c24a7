//! A peer's MetricsSync `metrics` object, read straight into the fields a relay keeps.
//!
//! Peers send it every interval; reading it into a `serde_json::Value` tree first cost a
//! map and a string per field at each of them. The rules are the lenient ones of that
//! tree: a field of the wrong type reads as absent, unknown fields are skipped, a repeated
//! field counts as its last occurrence, a `metrics` that is not an object reads as an
//! empty one, and of `linked_peers` only the strings within the relay id bound are kept,
//! at most `LINKS_REPORTED_MAX`.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::peer::relay_id_fits;

/// Linked peers named in one MetricsSync.
pub const LINKS_REPORTED_MAX: usize = 64;

/// What a peer's MetricsSync says, each field as it was found (`None`: absent or not of
/// its type).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerMetrics<'a> {
    pub active_connections: Option<u64>,
    pub notifications_originated: Option<u64>,
    pub notifications_routed: Option<u64>,
    pub anti_entropy_repairs: Option<u64>,
    pub slow_consumer_cuts: Option<u64>,
    pub chain_scanned_height: Option<u64>,
    pub chain_tip_height: Option<u64>,
    pub chain_lag: Option<u64>,
    pub chain_degraded: Option<bool>,
    /// Strings of the `linked_peers` list within the relay id bound, the first
    /// `LINKS_REPORTED_MAX` of them (empty when absent or not a list), borrowed from the
    /// frame unless escaped.
    pub linked_peers: Vec<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for PeerMetrics<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Read::<PeerMetrics<'de>>::deserialize(deserializer)?.0)
    }
}

/// How a JSON value of each shape reads as `Self`: every shape a type does not expect
/// reads as its `Default` (absent), containers skipped unread, as `Value::as_u64` and
/// friends answer `None` for a value of another type.
trait Lenient<'de>: Default {
    fn from_u64(_: u64) -> Self {
        Self::default()
    }
    fn from_bool(_: bool) -> Self {
        Self::default()
    }
    fn from_str(_: &str) -> Self {
        Self::default()
    }
    /// A string borrowed from the frame (not escaped): as `from_str` unless kept.
    fn from_borrowed_str(text: &'de str) -> Self {
        Self::from_str(text)
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Self::default())
    }
}

/// Reads any JSON value as `T` (`Lenient`).
struct Read<T>(T);

impl<'de, T: Lenient<'de>> Deserialize<'de> for Read<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(AnyValue(PhantomData))
            .map(Read)
    }
}

struct AnyValue<T>(PhantomData<T>);

impl<'de, T: Lenient<'de>> Visitor<'de> for AnyValue<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, n: u64) -> Result<T, E> {
        Ok(T::from_u64(n))
    }
    // serde_json reads non-negative integers as u64: an i64 here is negative, no u64.
    fn visit_i64<E>(self, n: i64) -> Result<T, E> {
        Ok(u64::try_from(n).map_or_else(|_| T::default(), T::from_u64))
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_bool<E>(self, b: bool) -> Result<T, E> {
        Ok(T::from_bool(b))
    }
    fn visit_str<E>(self, text: &str) -> Result<T, E> {
        Ok(T::from_str(text))
    }
    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<T, E> {
        Ok(T::from_borrowed_str(text))
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<T, A::Error> {
        T::from_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_map(map)
    }
}

/// A number field: a u64, else absent.
#[derive(Default)]
struct Number(Option<u64>);

impl Lenient<'_> for Number {
    fn from_u64(n: u64) -> Self {
        Number(Some(n))
    }
}

/// A boolean field: a boolean, else absent.
#[derive(Default)]
struct Flag(Option<bool>);

impl Lenient<'_> for Flag {
    fn from_bool(b: bool) -> Self {
        Flag(Some(b))
    }
}

/// One entry of `linked_peers`: a string within the relay id bound, else nothing.
#[derive(Default)]
struct PeerId<'a>(Option<Cow<'a, str>>);

impl<'de> Lenient<'de> for PeerId<'de> {
    fn from_str(id: &str) -> Self {
        PeerId(relay_id_fits(id).then(|| Cow::Owned(id.to_string())))
    }
    fn from_borrowed_str(id: &'de str) -> Self {
        PeerId(relay_id_fits(id).then_some(Cow::Borrowed(id)))
    }
}

/// `linked_peers`: its entries that are relay ids, the first `LINKS_REPORTED_MAX`
/// (the rest read and dropped); anything but a list reads as an empty one.
#[derive(Default)]
struct LinkedPeers<'a>(Vec<Cow<'a, str>>);

impl<'de> Lenient<'de> for LinkedPeers<'de> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        let mut ids = Vec::new();
        while let Some(Read(PeerId(id))) = seq.next_element()? {
            if let Some(id) = id
                && ids.len() < LINKS_REPORTED_MAX
            {
                ids.push(id);
            }
        }
        Ok(LinkedPeers(ids))
    }
}

/// The `metrics` object, field by field (a repeated field: its last occurrence wins);
/// anything but an object reads as an empty one.
impl<'de> Lenient<'de> for PeerMetrics<'de> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut m = PeerMetrics::default();
        while let Some(Read(key)) = map.next_key::<Read<Key>>()? {
            let number = match key {
                Key::ActiveConnections => &mut m.active_connections,
                Key::NotificationsOriginated => &mut m.notifications_originated,
                Key::NotificationsRouted => &mut m.notifications_routed,
                Key::AntiEntropyRepairs => &mut m.anti_entropy_repairs,
                Key::SlowConsumerCuts => &mut m.slow_consumer_cuts,
                Key::ChainScannedHeight => &mut m.chain_scanned_height,
                Key::ChainTipHeight => &mut m.chain_tip_height,
                Key::ChainLag => &mut m.chain_lag,
                Key::ChainDegraded => {
                    m.chain_degraded = map.next_value::<Read<Flag>>()?.0.0;
                    continue;
                }
                Key::LinkedPeers => {
                    m.linked_peers = map.next_value::<Read<LinkedPeers>>()?.0.0;
                    continue;
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *number = map.next_value::<Read<Number>>()?.0.0;
        }
        Ok(m)
    }
}

/// The field names read; anything else is skipped.
#[derive(Default)]
enum Key {
    ActiveConnections,
    NotificationsOriginated,
    NotificationsRouted,
    AntiEntropyRepairs,
    SlowConsumerCuts,
    ChainScannedHeight,
    ChainTipHeight,
    ChainLag,
    ChainDegraded,
    LinkedPeers,
    #[default]
    Other,
}

impl Lenient<'_> for Key {
    fn from_str(name: &str) -> Self {
        match name {
            "active_connections" => Key::ActiveConnections,
            "notifications_originated" => Key::NotificationsOriginated,
            "notifications_routed" => Key::NotificationsRouted,
            "anti_entropy_repairs" => Key::AntiEntropyRepairs,
            "slow_consumer_cuts" => Key::SlowConsumerCuts,
            "chain_scanned_height" => Key::ChainScannedHeight,
            "chain_tip_height" => Key::ChainTipHeight,
            "chain_lag" => Key::ChainLag,
            "chain_degraded" => Key::ChainDegraded,
            "linked_peers" => Key::LinkedPeers,
            _ => Key::Other,
        }
    }
}
