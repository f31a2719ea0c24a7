//! How much one resume may replay, whatever the backbone: the same bound in frames and
//! bytes, and the same words for a replay that stopped short.

/// Bytes of notifications one resume replays at most; past it the wallet is told
/// `recovered: false` (`replay_limit`) and closed, and resumes again with the last token
/// it received to get the rest.
pub const REPLAY_BYTES_MAX: usize = 8 << 20;

/// `resumed.reason` when notifications the wallet missed are no longer kept.
pub const REASON_EVICTED: &str = "evicted";
/// `resumed.reason` when the replay hit its budget.
pub const REASON_LIMIT: &str = "replay_limit";

/// What one replay may still send: half the wallet's outbound queue, in frames and in
/// bytes (bytes at most `REPLAY_BYTES_MAX`), so live notifications still find room.
#[derive(Debug)]
pub struct ReplayBudget {
    frames_max: usize,
    bytes_max: usize,
    frames: usize,
    bytes: usize,
}

impl ReplayBudget {
    /// The budget of a wallet whose queue holds `queue_frames_max` frames and
    /// `queue_bytes_max` bytes.
    pub fn new(queue_frames_max: usize, queue_bytes_max: usize) -> ReplayBudget {
        ReplayBudget {
            frames_max: queue_frames_max / 2,
            bytes_max: REPLAY_BYTES_MAX.min(queue_bytes_max / 2),
            frames: 0,
            bytes: 0,
        }
    }

    /// Whether a notification of `frame_len` bytes may still be replayed; the first
    /// always may, however large.
    pub fn has_room(&self, frame_len: usize) -> bool {
        self.frames == 0
            || (self.bytes + frame_len <= self.bytes_max && self.frames < self.frames_max)
    }

    /// Counts a frame of `frame_bytes` as replayed.
    pub fn spend(&mut self, frame_bytes: usize) {
        self.frames += 1;
        self.bytes += frame_bytes;
    }

    /// Frames replayed so far.
    pub fn frames(&self) -> usize {
        self.frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_half_the_queue_and_the_first_frame_always_fits() {
        let mut budget = ReplayBudget::new(4, 100);
        assert!(budget.has_room(1_000), "the first frame, however large");
        budget.spend(1_000);
        assert!(!budget.has_room(1), "past half the queue's bytes");

        let mut budget = ReplayBudget::new(4, 1 << 40);
        budget.spend(10);
        assert!(budget.has_room(10));
        budget.spend(10);
        assert!(!budget.has_room(10), "half the queue's frames");
        assert_eq!(budget.frames(), 2);

        let mut budget = ReplayBudget::new(1 << 20, 1 << 40);
        budget.spend(REPLAY_BYTES_MAX - 10);
        assert!(
            budget.has_room(10) && !budget.has_room(11),
            "bytes at most REPLAY_BYTES_MAX"
        );
    }
}
