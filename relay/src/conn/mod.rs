//! The connection layer under both faces of the relay (wallet sessions in `ws`, peer
//! links in `mesh`): the frame codec, the client side of the upgrade, the accept loop,
//! what a connection's writer sends, why a connection closes, the writer loop, the one
//! way to queue a frame ("offer, or cut the connection as a slow consumer"), connection
//! slots, TLS (server and client sides), and the hand-over of a connection from the wallet
//! server to the mesh.
//!
//! Nothing here knows what the frames mean: that is `protocol`'s business.

pub mod accept;
pub mod client;
pub mod codec;
pub mod halves;
mod handoff;
pub mod queue;
mod slots;
pub mod tls;
mod writer;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;

pub use handoff::{BoxedRead, PeerArrival, PeerHandoff};
pub use slots::{AddressPermit, AddressSlots, Permit, Slots};
pub use writer::{CLOSE_WRITE_TIMEOUT, within, write_loop};

/// What a connection's writer sends next.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A text frame, shared by every recipient.
    Text(Bytes),
    /// A WebSocket ping frame (heartbeat).
    Ping,
    /// A WebSocket pong frame answering the other side's ping.
    Pong(Bytes),
}

impl Outbound {
    /// The payload's length: what the frame holds in a queue.
    pub fn len(&self) -> usize {
        match self {
            Outbound::Text(bytes) | Outbound::Pong(bytes) => bytes.len(),
            Outbound::Ping => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the relay closed a connection; its WebSocket close code and reason text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    pub const NORMAL: CloseReason = CloseReason {
        code: 1000,
        reason: "normal closure",
    };
    pub const SHUTDOWN: CloseReason = CloseReason {
        code: 1001,
        reason: "relay shutting down",
    };
    pub const PROTOCOL: CloseReason = CloseReason {
        code: 1002,
        reason: "protocol error",
    };
    pub const BEFORE_HANDSHAKE: CloseReason = CloseReason {
        code: 1002,
        reason: "first message must be a handshake",
    };
    pub const HANDSHAKE_TIMEOUT: CloseReason = CloseReason {
        code: 1002,
        reason: "no handshake in time",
    };
    pub const BINARY: CloseReason = CloseReason {
        code: 1003,
        reason: "binary frames are not supported",
    };
    pub const INVALID_UTF8: CloseReason = CloseReason {
        code: 1007,
        reason: "invalid UTF-8",
    };
    pub const AUTH: CloseReason = CloseReason {
        code: 1008,
        reason: "authentication refused",
    };
    /// A wallet kept sending over its message rate after being told (`rate_limited`).
    pub const RATE_LIMITED: CloseReason = CloseReason {
        code: 1008,
        reason: "rate limit exceeded",
    };
    pub const TOO_BIG: CloseReason = CloseReason {
        code: 1009,
        reason: "message over the size limit",
    };
    pub const INTERNAL: CloseReason = CloseReason {
        code: 1011,
        reason: "internal error",
    };
    /// RFC 6455 1013 "try again later": the other side did not read fast enough.
    pub const SLOW_CONSUMER: CloseReason = CloseReason {
        code: 1013,
        reason: "slow consumer: outbound queue full",
    };
    /// A resume's replay hit its budget: the wallet resumes again with its last token.
    pub const REPLAY_LIMIT: CloseReason = CloseReason {
        code: 1013,
        reason: "replay limit: resume again with the last token",
    };
    pub const IDLE_TIMEOUT: CloseReason = CloseReason {
        code: 1000,
        reason: "connection timed out",
    };
    /// Recorded (never sent) when the other side vanished without a close handshake.
    pub const LOST: CloseReason = CloseReason {
        code: 1006,
        reason: "connection lost",
    };
    /// Recorded (never sent) when the connection's writer could not write.
    pub const WRITE_FAILED: CloseReason = CloseReason {
        code: 1006,
        reason: "write failed",
    };
    /// Recorded (never sent) when a frame was offered after the writer had stopped.
    pub const WRITER_GONE: CloseReason = CloseReason {
        code: 1006,
        reason: "writer gone",
    };

    /// True for the reasons recorded when the socket is already unusable: no close
    /// frame is sent and nothing is drained.
    pub fn is_abnormal(self) -> bool {
        self.code == Self::LOST.code
    }
}

/// How a frame or a read error ends a connection, if it does: a binary frame, the other
/// side's close, a message over the limit, invalid UTF-8, a protocol violation, or a
/// lost connection. `None` for text, ping and pong, which the caller handles.
pub fn ending(frame: &Result<codec::Incoming, codec::ReadError>) -> Option<CloseReason> {
    use codec::{Incoming, ReadError};
    match frame {
        Ok(Incoming::Text(_) | Incoming::Ping(_) | Incoming::Pong) => None,
        Ok(Incoming::Binary) => Some(CloseReason::BINARY),
        Ok(Incoming::Close(_)) => Some(CloseReason::NORMAL),
        Err(ReadError::TooBig(_)) => Some(CloseReason::TOO_BIG),
        Err(ReadError::InvalidUtf8) => Some(CloseReason::INVALID_UTF8),
        Err(ReadError::Protocol(_)) => Some(CloseReason::PROTOCOL),
        Err(ReadError::Eof | ReadError::Io(_)) => Some(CloseReason::LOST),
    }
}

/// Shared between a connection's tasks and whoever sends to it: its outbound queue, how
/// to stop it, and when it was last heard from.
///
/// One allocation per connection, the queue inside it: every message touches the close
/// flag, the queue's flags and its lock, and at a thousand connections each separate
/// block is one more cold cache line per round trip. `repr(C)` keeps those fields first,
/// together, in this order; the rarely touched ones (the `Notify`, the reason) follow.
#[repr(C)]
pub struct Control {
    /// Set (before `kick` is notified) once `closing` holds a reason: what a waiting
    /// `closed` checks on every poll without taking a lock.
    is_closing: AtomicBool,
    /// The outbound queue (`queue::Sender` and `queue::Receiver` reach it through here).
    queue: queue::Shared,
    /// Milliseconds on the relay's monotonic clock when a frame last arrived.
    last_seen_ms: AtomicU64,
    kick: Notify,
    /// `None` while open; why it is closing once someone decided to close it.
    closing: Mutex<Option<CloseReason>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("closing", &self.close_reason())
            .field("last_seen_ms", &self.last_seen_ms())
            .finish_non_exhaustive()
    }
}

impl Control {
    fn new(queue: queue::Shared) -> Control {
        Control {
            is_closing: AtomicBool::new(false),
            queue,
            last_seen_ms: AtomicU64::new(0),
            kick: Notify::new(),
            closing: Mutex::new(None),
        }
    }

    /// Asks the connection to close with `reason`; the first reason given wins. Returns
    /// whether this call decided it.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut closing = self.closing.lock().unwrap_or_else(|p| p.into_inner());
        let first = closing.is_none();
        if first {
            *closing = Some(reason);
            self.is_closing.store(true, Ordering::Release);
        }
        drop(closing);
        self.kick.notify_waiters();
        first
    }

    /// The reason the connection is closing, once one was given.
    pub fn close_reason(&self) -> Option<CloseReason> {
        *self.closing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes once `close` has been called.
    pub fn closed(&self) -> Closed<'_> {
        Closed {
            control: self,
            notified: self.kick.notified(),
            registered: None,
        }
    }

    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_seen_ms(&self) -> u64 {
        self.last_seen_ms.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// What `Control::closed` returns. It is polled beside every read and every write of
    /// a connection, so a poll is kept cheap: once registered with the task's waker, it is
    /// one atomic load (polling the `Notified` again would lock the `Notify`'s list of
    /// waiters every time). `close` sets the flag before it notifies, so the wake-up it
    /// causes finds the flag set; a `close` before the first poll is seen by the flag, one
    /// after `notified()` was called by the `Notified` itself.
    pub struct Closed<'a> {
        control: &'a Control,
        #[pin]
        notified: Notified<'a>,
        // The waker the `Notified` holds, once polled.
        registered: Option<Waker>,
    }
}

impl Future for Closed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.control.is_closing.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let polled = this.notified.poll(cx);
        if polled.is_pending() {
            *this.registered = Some(cx.waker().clone());
        }
        polled
    }
}

/// What offering a frame to a connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Queued,
    /// The queue was full: this offer cut the connection as a slow consumer.
    CutSlow,
    /// Not queued: the connection was already cut as slow, or its writer is gone.
    Dropped,
}

/// The sending side of one connection: its bounded outbound queue, in its control block.
/// Cheap to clone; every sender (the session, the hub's fan-out, the mesh) holds one.
#[derive(Debug, Clone)]
pub struct Outlet {
    tx: queue::Sender,
}

impl Outlet {
    /// A new connection's outlet with room for `bound` (frames and bytes), and the
    /// receiver its writer drains; both reach the connection's `Control`.
    pub fn new(bound: queue::Bound) -> (Outlet, queue::Receiver) {
        let (tx, rx) = queue::bounded(bound);
        (Outlet { tx }, rx)
    }

    /// Queues without waiting. A full queue cuts the connection as a slow consumer
    /// (anti-entropy, or the wallet's own reconnect, then catches it up): delivery never
    /// waits for one connection, so one slow reader neither delays the others nor makes
    /// memory grow.
    pub fn offer(&self, message: Outbound) -> Offered {
        match self.tx.try_send(message) {
            Ok(()) => Offered::Queued,
            Err(queue::Refused::Full) => {
                if self.control().close(CloseReason::SLOW_CONSUMER) {
                    Offered::CutSlow
                } else {
                    Offered::Dropped
                }
            }
            // The connection is already gone; it leaves on its own.
            Err(queue::Refused::Closed) => Offered::Dropped,
        }
    }

    pub fn control(&self) -> &Arc<Control> {
        self.tx.control()
    }

    /// See `queue::Sender::own_poll_begins`.
    pub fn own_poll_begins(&self) {
        self.tx.own_poll_begins();
    }

    /// See `queue::Sender::own_poll_ends`.
    #[must_use = "a true answer means the task must be woken"]
    pub fn own_poll_ends(&self) -> bool {
        self.tx.own_poll_ends()
    }

    pub fn close(&self, reason: CloseReason) -> bool {
        self.control().close(reason)
    }
}

/// Counts of what a delivery to several connections did, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub delivered: usize,
    pub slow_disconnects: usize,
}

impl Delivery {
    /// Adds one offer's outcome.
    pub fn add(&mut self, offered: Offered) {
        match offered {
            Offered::Queued => self.delivered += 1,
            Offered::CutSlow => self.slow_disconnects += 1,
            Offered::Dropped => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct CountingWake(AtomicUsize);

    fn new_control() -> Arc<Control> {
        let (outlet, _rx) = Outlet::new(queue::Bound {
            frames: 1,
            bytes: 1,
        });
        outlet.control().clone()
    }

    impl Wake for CountingWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A registered `closed` is polled without touching the `Notify` (see `Closed`), yet
    /// `close` wakes it and the next poll completes.
    #[test]
    fn closed_wakes_and_completes_once_closed() {
        let control = new_control();
        let wakes = Arc::new(CountingWake(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let closed = control.closed();
        tokio::pin!(closed);
        assert!(closed.as_mut().poll(&mut cx).is_pending());
        assert!(closed.as_mut().poll(&mut cx).is_pending());
        assert!(control.close(CloseReason::NORMAL));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(closed.as_mut().poll(&mut cx).is_ready());
    }

    /// Closed before the first poll, and before `closed` was even called: complete at once.
    #[test]
    fn closed_completes_at_once_after_a_close() {
        let control = new_control();
        let waker = Waker::from(Arc::new(CountingWake(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let early = control.closed();
        tokio::pin!(early);
        control.close(CloseReason::SHUTDOWN);
        assert!(early.as_mut().poll(&mut cx).is_ready());
        let late = control.closed();
        tokio::pin!(late);
        assert!(late.as_mut().poll(&mut cx).is_ready());
        assert_eq!(control.close_reason(), Some(CloseReason::SHUTDOWN));
    }
}
