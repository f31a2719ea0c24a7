//! What the dedup cache forgot, remembered per stream as a floor: ids of a stream are
//! numbered in order, so once the cache evicts `<stream>-<seq>`, every id of that stream
//! up to `seq` is old news. A genuine notification replayed after the cache forgot it
//! (its signature still verifies) is refused here instead of being delivered again.

use std::collections::BTreeMap;

use super::dedup::split_message_id;

/// Streams whose floor is remembered (one per relay boot seen); when full, the stream
/// with the lowest floor is forgotten first (its replays reopen, bounded by this table).
pub const FLOOR_STREAMS_MAX: usize = 4096;

#[derive(Default)]
pub struct Floors {
    /// stream → highest evicted seq. A BTreeMap: eviction picks deterministically.
    floors: BTreeMap<String, u64>,
}

impl Floors {
    /// Notes that the dedup cache evicted `id`.
    pub fn evicted(&mut self, id: &str) {
        let Some((stream, seq)) = split_message_id(id) else {
            return;
        };
        if let Some(floor) = self.floors.get_mut(stream) {
            *floor = (*floor).max(seq);
            return;
        }
        if self.floors.len() >= FLOOR_STREAMS_MAX {
            let lowest = self
                .floors
                .iter()
                .min_by_key(|(_, floor)| **floor)
                .map(|(stream, _)| stream.clone());
            if let Some(stream) = lowest {
                self.floors.remove(&stream);
            }
        }
        self.floors.insert(stream.to_string(), seq);
    }

    /// Every stream's floor.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.floors
            .iter()
            .map(|(stream, &floor)| (stream.as_str(), floor))
    }

    /// Whether `id` is at or below its stream's floor: seen once, and forgotten since.
    pub fn is_below(&self, id: &str) -> bool {
        split_message_id(id)
            .is_some_and(|(stream, seq)| self.floors.get(stream).is_some_and(|f| seq <= *f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_up_to_an_evicted_seq_are_below_the_floor() {
        let mut floors = Floors::default();
        floors.evicted("a-00000001-5");
        floors.evicted("a-00000001-3");
        assert!(floors.is_below("a-00000001-5"));
        assert!(floors.is_below("a-00000001-1"));
        assert!(!floors.is_below("a-00000001-6"));
        assert!(!floors.is_below("a-00000002-1"));
        assert!(!floors.is_below("not an id"));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_lowest_floor() {
        let mut floors = Floors::default();
        for i in 0..FLOOR_STREAMS_MAX {
            floors.evicted(&format!("s{i}-00000001-{}", i + 10));
        }
        floors.evicted("new-00000001-1000");
        assert_eq!(floors.floors.len(), FLOOR_STREAMS_MAX);
        assert!(
            !floors.is_below("s0-00000001-1"),
            "the lowest floor was forgotten"
        );
        assert!(floors.is_below("new-00000001-1"));
    }
}
