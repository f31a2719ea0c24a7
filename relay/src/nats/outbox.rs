//! Notifications waiting for the stream's acknowledgement, bounded in bytes: while the
//! backbone is slow or down they wait here, oldest first; past the bound a publication is
//! refused at once rather than held without limit.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use crate::routing::Refused;

/// One notification on its way to the stream.
pub struct Pending {
    pub message_id: String,
    pub subject: String,
    /// The notification as peers and wallets receive it (its signature, where relays sign,
    /// travels inside).
    pub payload: Bytes,
    /// Told when the stream stored it (or when it is given up).
    pub stored: Option<oneshot::Sender<Result<(), Refused>>>,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.payload.len() + self.subject.len() + self.message_id.len()
    }
}

pub struct Outbox {
    bytes_max: usize,
    queue: Mutex<Queue>,
    /// Wakes the publisher when the queue goes from empty to not.
    pub ready: Notify,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Pending>,
    bytes: usize,
}

/// What the publisher sends in one round: copies of the first items' wire parts.
pub struct Batch {
    pub items: Vec<(String, String, Bytes)>,
}

impl Outbox {
    pub fn new(bytes_max: usize) -> Outbox {
        Outbox {
            bytes_max,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Every statement leaves the queue consistent, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a publication, or gives it back when it would pass the byte bound.
    pub fn push(&self, pending: Pending) -> Result<(), Pending> {
        let mut queue = self.lock();
        let bytes = pending.bytes();
        if queue.bytes + bytes > self.bytes_max {
            return Err(pending);
        }
        queue.bytes += bytes;
        queue.items.push_back(pending);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// The first `count_max` items, left in place until [`Outbox::stored`] takes them.
    pub fn peek(&self, count_max: usize) -> Batch {
        let queue = self.lock();
        let items = queue
            .items
            .iter()
            .take(count_max)
            .map(|p| (p.message_id.clone(), p.subject.clone(), p.payload.clone()))
            .collect();
        Batch { items }
    }

    /// The first `count` items were stored: they leave, and their publishers are told.
    pub fn stored(&self, count: usize) {
        let mut queue = self.lock();
        for _ in 0..count {
            let Some(mut pending) = queue.items.pop_front() else {
                break;
            };
            queue.bytes -= pending.bytes();
            if let Some(stored) = pending.stored.take() {
                // The wallet may have gone; nothing to tell then.
                let _ = stored.send(Ok(()));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::{Outbox, Pending};

    fn pending(
        id: &str,
        bytes: usize,
    ) -> (
        Pending,
        tokio::sync::oneshot::Receiver<Result<(), crate::routing::Refused>>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let p = Pending {
            message_id: id.into(),
            subject: "s".into(),
            payload: bytes::Bytes::from(vec![b'x'; bytes]),
            stored: Some(tx),
        };
        (p, rx)
    }

    #[test]
    fn refuses_past_its_byte_bound_and_frees_what_was_stored() {
        let outbox = Outbox::new(100);
        let (a, mut a_rx) = pending("a", 40);
        let (b, _b_rx) = pending("b", 40);
        let (c, _) = pending("c", 40);
        assert!(outbox.push(a).is_ok());
        assert!(outbox.push(b).is_ok());
        assert!(outbox.push(c).is_err(), "a third would pass 100 bytes");
        assert_eq!(outbox.peek(10).items.len(), 2);
        assert_eq!(outbox.len(), 2, "peeking leaves items in place");
        outbox.stored(1);
        assert_eq!(a_rx.try_recv().unwrap(), Ok(()));
        assert_eq!(outbox.bytes(), 42);
        let (d, _) = pending("d", 40);
        assert!(outbox.push(d).is_ok(), "room again once stored");
    }
}
