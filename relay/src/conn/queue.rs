//! A connection's outbound queue: bounded in frames and in bytes, shared by every sender
//! (the session, the hub's fan-out, the mesh) and drained by the connection's writer.
//!
//! Why not `tokio::sync::mpsc`: its channel allocates its first block of slots (32 frames,
//! well over a kilobyte) when it is made, so every idle connection would hold it for its
//! whole life. Here the frames live in a `VecDeque` that grows only while frames wait and
//! is given back once the writer has drained it: an idle connection holds no slots. The
//! oldest frame has a slot of its own beside it (`Frames`), so a lone reply or delivery,
//! the usual case, is queued and taken without the `VecDeque` allocating and freeing.
//!
//! The queue lives in its connection's `Control` (one allocation per connection, see
//! there): the senders and the writer share that block.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::{Control, Outbound};

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds its maximum.
    Full,
    /// The writer is gone.
    Closed,
}

/// What is still queued: frames, and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    pub frames: usize,
    pub bytes: usize,
}

/// Nothing is queued right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Empty;

/// How much a queue holds at most. The byte bound counts each queued frame's length (a
/// frame shared by many connections counts in each): without it, 1,024 frames of 1 MiB
/// could wait for one slow reader. A frame offered to an empty queue is always taken, so
/// one message of any accepted size fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub frames: usize,
    pub bytes: usize,
}

/// The queue's part of a connection's `Control`. `repr(C)`: the fields every message
/// touches (the two flags, the lock and what it guards) stay together, in this order.
#[repr(C)]
pub(super) struct Shared {
    /// True while the writer's own task polls it (`Sender::own_poll_begins`): a frame
    /// queued meanwhile does not wake the writer (it is about to look, or `own_poll_ends`
    /// tells its task to poll again).
    own_poll: AtomicBool,
    /// A frame was queued since the writer last found the queue empty.
    queued_since_empty: AtomicBool,
    state: Mutex<State>,
}

#[repr(C)]
struct State {
    frames: Frames,
    /// The waiting writer's waker: taken (and woken) when a frame is queued or the last
    /// sender leaves.
    writer: Option<Waker>,
    /// Bytes of the frames queued, and the most they may add up to.
    bytes: usize,
    max: usize,
    bytes_max: usize,
    senders: usize,
    receiver_alive: bool,
}

impl Shared {
    /// An empty queue of at most `bound.frames` frames (at least one) and `bound.bytes`
    /// bytes, with one sender and its receiver.
    pub(super) fn new(bound: Bound) -> Shared {
        Shared {
            own_poll: AtomicBool::new(false),
            queued_since_empty: AtomicBool::new(false),
            state: Mutex::new(State {
                frames: Frames::default(),
                writer: None,
                bytes: 0,
                max: bound.frames.max(1),
                bytes_max: bound.bytes,
                senders: 1,
                receiver_alive: true,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A new queue of at most `bound.frames` frames (at least one) and `bound.bytes` bytes,
/// in a new connection control block.
pub fn bounded(bound: Bound) -> (Sender, Receiver) {
    let control = Arc::new(Control::new(Shared::new(bound)));
    (
        Sender {
            control: control.clone(),
        },
        Receiver { control },
    )
}

/// Queues frames without waiting.
pub struct Sender {
    control: Arc<Control>,
}

impl Sender {
    /// The connection's control block, which holds this queue.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    fn shared(&self) -> &Shared {
        &self.control.queue
    }

    /// Queues `frame` unless the queue is full (in frames or in bytes) or its writer is
    /// gone.
    pub fn try_send(&self, frame: Outbound) -> Result<(), Refused> {
        let mut state = self.shared().lock();
        if !state.receiver_alive {
            return Err(Refused::Closed);
        }
        let bytes = frame.len();
        let over_bytes = !state.frames.is_empty() && state.bytes + bytes > state.bytes_max;
        if state.frames.len() >= state.max || over_bytes {
            return Err(Refused::Full);
        }
        state.bytes += bytes;
        state.frames.push_back(frame);
        // Stored before `own_poll` is read, and `own_poll_ends` clears `own_poll` before it
        // reads this: one of the two sides sees the other, so no frame waits unseen.
        self.shared()
            .queued_since_empty
            .store(true, Ordering::SeqCst);
        let writer = if self.shared().own_poll.load(Ordering::SeqCst) {
            None
        } else {
            state.writer.take()
        };
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    /// For a caller whose task polls the writer itself (the writer shares the reader's
    /// task, see `ws::connection`): until `own_poll_ends`, queued frames do not wake the
    /// writer, so the replies the reader queues just before the writer is polled cost no
    /// extra wake-up of the task (nor a waker taken and registered again, per message).
    pub fn own_poll_begins(&self) {
        self.shared().own_poll.store(true, Ordering::SeqCst);
    }

    /// Ends what `own_poll_begins` started. True when a frame was queued after the writer
    /// last found the queue empty (from another task, or while the writer was busy
    /// writing): the caller must then wake its task, which would otherwise not look again.
    #[must_use = "a true answer means the task must be woken"]
    pub fn own_poll_ends(&self) -> bool {
        self.shared().own_poll.store(false, Ordering::SeqCst);
        self.shared()
            .queued_since_empty
            .swap(false, Ordering::SeqCst)
    }

    /// Frames queued and not yet taken by the writer.
    pub fn len(&self) -> usize {
        self.shared().lock().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most frames the queue holds.
    pub fn max(&self) -> usize {
        self.shared().lock().max
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared().lock().senders += 1;
        Sender {
            control: self.control.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let mut state = self.shared().lock();
        state.senders -= 1;
        let writer = if state.senders == 0 {
            state.writer.take()
        } else {
            None
        };
        drop(state);
        if let Some(writer) = writer {
            writer.wake();
        }
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

/// The writer's end of the queue.
pub struct Receiver {
    control: Arc<Control>,
}

impl Receiver {
    /// The connection's control block, which holds this queue.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    fn shared(&self) -> &Shared {
        &self.control.queue
    }

    /// The oldest queued frame, waiting for one; `None` once every sender is gone and the
    /// queue is empty. Cancel-safe: a frame is only taken in the poll that returns it.
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.recv_noting_alone().await.map(|(frame, _)| frame)
    }

    /// As `recv`, with whether the frame was alone in the queue when taken (read under
    /// the same lock): the writer then writes it without batching.
    pub async fn recv_noting_alone(&mut self) -> Option<(Outbound, bool)> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Outbound, bool)>> {
        let mut state = self.shared().lock();
        if let Some(frame) = take(&mut state) {
            return Poll::Ready(Some((frame, state.frames.is_empty())));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        // Under the lock that queueing takes: a frame queued after this sets it again.
        self.shared()
            .queued_since_empty
            .store(false, Ordering::SeqCst);
        // Registered under the lock that queueing takes: a frame queued after this wakes it.
        match &state.writer {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.writer = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The oldest queued frame, if there is one, with what is still queued behind it
    /// (frames, bytes), read under the same lock.
    pub fn try_recv_with_backlog(&mut self) -> Result<(Outbound, Backlog), Empty> {
        let mut state = self.shared().lock();
        let frame = take(&mut state).ok_or(Empty)?;
        let backlog = Backlog {
            frames: state.frames.len(),
            bytes: state.bytes,
        };
        Ok((frame, backlog))
    }

    /// The oldest queued frame, if there is one.
    pub fn try_recv(&mut self) -> Result<Outbound, Empty> {
        take(&mut self.shared().lock()).ok_or(Empty)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.shared().lock();
        state.receiver_alive = false;
        state.frames = Frames::default();
        state.bytes = 0;
    }
}

/// Takes the oldest frame.
fn take(state: &mut State) -> Option<Outbound> {
    let frame = state.frames.pop_front()?;
    state.bytes -= frame.len();
    Some(frame)
}

/// Queued frames in order: the oldest in a slot of its own while nothing waits behind it,
/// the rest in a `VecDeque` that is given back to the allocator once drained. Boxed: the
/// queue lives in every connection's control block, and an idle connection's block is
/// smaller by the `VecDeque`'s size less a pointer (one allocation size class).
#[derive(Default)]
struct Frames {
    /// When set, older than every frame in `rest`.
    first: Option<Outbound>,
    // The extra allocation is the point (see above): only while frames wait behind `first`.
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Outbound>>>,
}

impl Frames {
    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_none()
    }

    fn push_back(&mut self, frame: Outbound) {
        if self.is_empty() {
            self.first = Some(frame);
        } else {
            self.rest.get_or_insert_default().push_back(frame);
        }
    }

    fn pop_front(&mut self) -> Option<Outbound> {
        if let Some(frame) = self.first.take() {
            return Some(frame);
        }
        let rest = self.rest.as_mut()?;
        let frame = rest.pop_front();
        if rest.is_empty() {
            self.rest = None;
        }
        frame
    }

    /// Room allocated for waiting frames (the first slot aside).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.rest.as_ref().map_or(0, |rest| rest.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frames(frames: usize) -> Bound {
        Bound {
            frames,
            bytes: 1 << 20,
        }
    }

    fn text(s: &'static str) -> Outbound {
        Outbound::Text(Bytes::from_static(s.as_bytes()))
    }

    fn body(frame: Outbound) -> Bytes {
        match frame {
            Outbound::Text(bytes) => bytes,
            other => panic!("not text: {other:?}"),
        }
    }

    /// Each frame taken comes with what is still queued behind it.
    #[test]
    fn a_frame_taken_reports_the_backlog_behind_it() {
        let (tx, mut rx) = bounded(frames(8));
        for frame in ["abc", "de", "f"] {
            tx.try_send(text(frame)).unwrap();
        }
        let (frame, backlog) = rx.try_recv_with_backlog().unwrap();
        assert_eq!(body(frame), "abc");
        assert_eq!(
            backlog,
            Backlog {
                frames: 2,
                bytes: 3
            }
        );
        let (_, backlog) = rx.try_recv_with_backlog().unwrap();
        assert_eq!(
            backlog,
            Backlog {
                frames: 1,
                bytes: 1
            }
        );
        let (_, backlog) = rx.try_recv_with_backlog().unwrap();
        assert_eq!(
            backlog,
            Backlog {
                frames: 0,
                bytes: 0
            }
        );
        assert_eq!(rx.try_recv_with_backlog().unwrap_err(), Empty);
    }

    #[test]
    fn frames_come_out_in_order_and_the_bound_holds() {
        let (tx, mut rx) = bounded(frames(2));
        assert_eq!(tx.try_send(text("a")), Ok(()));
        assert_eq!(tx.try_send(text("b")), Ok(()));
        assert_eq!(tx.try_send(text("c")), Err(Refused::Full));
        assert_eq!(tx.len(), 2);
        assert_eq!(body(rx.try_recv().unwrap()), "a");
        assert_eq!(tx.try_send(text("d")), Ok(()));
        assert_eq!(body(rx.try_recv().unwrap()), "b");
        assert_eq!(body(rx.try_recv().unwrap()), "d");
        assert_eq!(rx.try_recv().unwrap_err(), Empty);
    }

    /// A lone frame, queued and taken, costs the queue no allocation.
    #[test]
    fn a_lone_frame_takes_no_storage() {
        let (tx, mut rx) = bounded(frames(64));
        for round in 0..3 {
            tx.try_send(text("x")).unwrap();
            assert_eq!(tx.shared().lock().frames.capacity(), 0, "round {round}");
            assert_eq!(tx.len(), 1);
            assert_eq!(body(rx.try_recv().unwrap()), "x");
            assert!(tx.is_empty());
        }
    }

    /// Frames queued while the first waits, and after it was taken, come out in order.
    #[test]
    fn the_first_slot_keeps_the_order() {
        let (tx, mut rx) = bounded(frames(64));
        for frame in ["a", "b", "c"] {
            tx.try_send(text(frame)).unwrap();
        }
        assert_eq!(body(rx.try_recv().unwrap()), "a");
        tx.try_send(text("d")).unwrap();
        assert_eq!(body(rx.try_recv().unwrap()), "b");
        tx.try_send(text("e")).unwrap();
        let rest: Vec<Bytes> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(body)
            .collect();
        assert_eq!(rest, ["c", "d", "e"]);
        tx.try_send(text("f")).unwrap();
        assert_eq!(body(rx.try_recv().unwrap()), "f");
    }

    #[test]
    fn a_drained_queue_gives_its_storage_back() {
        let (tx, mut rx) = bounded(frames(64));
        for _ in 0..40 {
            tx.try_send(text("x")).unwrap();
        }
        assert!(tx.shared().lock().frames.capacity() >= 40);
        while rx.try_recv().is_ok() {}
        assert_eq!(tx.shared().lock().frames.capacity(), 0);
    }

    #[test]
    fn a_gone_writer_refuses_and_gone_senders_end_the_writer() {
        let (tx, rx) = bounded(frames(4));
        tx.try_send(text("a")).unwrap();
        drop(rx);
        assert_eq!(tx.try_send(text("b")), Err(Refused::Closed));

        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (tx, mut rx) = bounded(frames(4));
        let other = tx.clone();
        tx.try_send(text("a")).unwrap();
        drop(tx);
        drop(other);
        runtime.block_on(async {
            assert_eq!(body(rx.recv().await.unwrap()), "a");
            assert!(rx.recv().await.is_none());
        });
    }

    #[test]
    fn a_waiting_writer_wakes_for_a_frame() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (tx, mut rx) = bounded(frames(4));
            let writer = tokio::spawn(async move { rx.recv().await.map(body) });
            tokio::task::yield_now().await;
            tx.try_send(text("late")).unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), writer)
                .await
                .expect("woken")
                .unwrap();
            assert_eq!(got.as_deref(), Some(&b"late"[..]));
        });
    }

    /// A waker that counts its wake-ups.
    struct CountingWake(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<CountingWake>, Waker) {
        let count = Arc::new(CountingWake(0.into()));
        (count.clone(), Waker::from(count))
    }

    /// The reader queues a reply and the writer, polled next in the same task, takes it:
    /// no wake-up, and nothing for the task to do again.
    #[test]
    fn frames_queued_before_the_writer_looks_during_its_own_poll_wake_nothing() {
        let (tx, mut rx) = bounded(frames(4));
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        tx.own_poll_begins();
        tx.try_send(text("reply")).unwrap();
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(
            !tx.own_poll_ends(),
            "nothing was queued after the writer looked"
        );
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    }

    /// A frame queued (by another task) after the writer found the queue empty, while its
    /// own task still polls: not woken then, so `own_poll_ends` must say so.
    #[test]
    fn a_frame_queued_after_the_writer_looked_during_its_own_poll_is_reported() {
        let (tx, mut rx) = bounded(frames(4));
        let other = tx.clone();
        let (wakes, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        tx.own_poll_begins();
        assert!(rx.poll_recv(&mut cx).is_pending());
        other.try_send(text("from elsewhere")).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        assert!(tx.own_poll_ends(), "the frame must be reported");
        // Outside an own poll, a frame wakes the waiting writer as usual.
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(Some(_))));
        assert!(rx.poll_recv(&mut cx).is_pending());
        other.try_send(text("later")).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_byte_bound_refuses_what_would_pass_it_but_always_takes_one_frame() {
        let (tx, mut rx) = bounded(Bound {
            frames: 100,
            bytes: 5,
        });
        assert_eq!(tx.try_send(text("abc")), Ok(()));
        assert_eq!(tx.try_send(text("de")), Ok(()));
        assert_eq!(tx.try_send(text("f")), Err(Refused::Full));
        assert_eq!(body(rx.try_recv().unwrap()), "abc");
        assert_eq!(tx.try_send(text("ghi")), Ok(()));
        while rx.try_recv().is_ok() {}
        // Empty: a frame over the whole bound still goes (one message always fits).
        assert_eq!(tx.try_send(text("longer than five")), Ok(()));
        assert_eq!(tx.try_send(text("x")), Err(Refused::Full));
        assert_eq!(body(rx.try_recv().unwrap()), "longer than five");
        assert_eq!(tx.try_send(text("x")), Ok(()));
    }
}
