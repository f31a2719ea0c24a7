//! One connection after the upgrade: the reader running the session and the writer
//! draining the bounded outbound queue, side by side in the connection's one task, until
//! either side decides to close. A relay's connection is handed to the mesh once its
//! handshake says so.
//!
//! Why one task and not a reader task plus a writer task: a reply the session queues is
//! written in the same poll that read the request (no wake-up of another task, no hand-off
//! to another thread), and an idle connection holds one task's state instead of two. The
//! order of frames is the queue's, as before; the reader gives the writer a turn when it
//! has many frames buffered (`FrameReader::next`), so replies to pipelined requests are
//! written as they come rather than piling up in the queue.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::WsContext;
use super::session::{Session, SessionEnd};
use crate::conn::codec::{FrameReader, FrameWriter, Role};
use crate::conn::halves::Halves;
use crate::conn::{
    CLOSE_WRITE_TIMEOUT, CloseReason, Control, Outlet, PeerArrival, Permit, queue, within,
};
use crate::hub::ClientId;

/// How much the relay reads and discards after deciding to close, so the other side is
/// not reset before it reads the close frame.
const CLOSE_DRAIN_BYTES_MAX: usize = 4 << 20;
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the connection on `io`; `read_ahead` holds bytes already read from it (what the
/// HTTP exchange read past the upgrade request), the start of the first frames. A boxed
/// slice, not `Bytes`: an async fn's arguments keep room in its state for its whole life.
pub async fn run<S>(node: Arc<WsContext>, io: S, read_ahead: Box<[u8]>, slot: Permit)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // Reader and writer run in this task: they borrow the stream, kept in the task state.
    let io = Halves::new(io);
    let (read_half, write_half) = io.split();
    let limits = &node.config.limits;
    let bound = queue::Bound {
        frames: limits.ws_outbound_queue_max,
        bytes: limits.ws_outbound_queue_bytes_max,
    };
    let (outlet, rx) = Outlet::new(bound);
    let control = outlet.control().clone();
    control.touch(node.lifecycle.now_ms());
    let writer = FrameWriter::new(write_half, Role::Server, 0);
    let reader = FrameReader::with_read_ahead(
        read_half,
        Role::Server,
        node.config.limits.ws_message_bytes_max,
        &read_ahead,
    );
    drop(read_ahead);
    let client_id = node.next_client_id();
    // Both sides in this task, the reader polled first (what it queued is written in the
    // same poll). Pinned here rather than handed to a helper: an async fn's arguments
    // keep their own room in its state, and these two are most of the connection's.
    let wakeups = outlet.clone();
    let reading = read_side(&node, client_id, reader, outlet, &control, slot);
    let writing = crate::conn::write_loop(writer, rx);
    tokio::pin!(reading, writing);
    let side_done = std::future::poll_fn(|cx| {
        // The writer is polled below whatever the reader does: frames the reader queues
        // meanwhile need not wake this task again.
        wakeups.own_poll_begins();
        let step = match reading.as_mut().poll(cx) {
            Poll::Ready(ended) => Poll::Ready(Some(ended)),
            // The writer stopping first (the connection is closing, or a write failed,
            // which closes it) leaves the reader to see the close and end.
            Poll::Pending => writing.as_mut().poll(cx).map(|()| None),
        };
        if wakeups.own_poll_ends() {
            // A frame came after the writer looked: look again.
            cx.waker().wake_by_ref();
        }
        step
    });
    let (ended, written) = match side_done.await {
        Some(ended) => (ended, false),
        None => (reading.await, true),
    };
    drop(wakeups);
    let (reason, slot) = ended;
    if !written {
        // The writer sends what is left and the close frame, in bounded time.
        let _ = within(CLOSE_WRITE_TIMEOUT * 2, writing).await;
    }
    node.metrics
        .ws_closes
        .get(&reason.code.to_string())
        .increment(1);
    if reason == CloseReason::SLOW_CONSUMER {
        tracing::info!(
            client_id,
            "client disconnected: slow consumer (outbound queue full)"
        );
    }
    drop(slot);
}

/// Runs the session (and the mesh's link, for a relay) until the connection is to close;
/// returns why it closed, and the connection's slot (held until the writer is done too).
async fn read_side<R>(
    node: &Arc<WsContext>,
    client_id: ClientId,
    mut reader: FrameReader<R>,
    outlet: Outlet,
    control: &Control,
    mut slot: Permit,
) -> (CloseReason, Permit)
where
    R: AsyncRead + Send + Unpin,
{
    let mut session = Session::new(node.clone(), client_id, outlet.clone());
    let end = session.run(&mut reader).await;
    node.hub.leave(client_id);
    drop(session);
    let reason = match end {
        SessionEnd::Closed => finish(&mut reader, control).await,
        SessionEnd::Peer(handshake) => {
            // A peer link is not a client: the connection gauge counts wallets only.
            slot.set_counted(false);
            let mut reader = reader.boxed();
            let arrival = PeerArrival {
                handshake,
                reader: &mut reader,
                outlet,
            };
            node.peers.serve(arrival).await;
            finish(&mut reader, control).await
        }
    };
    (reason, slot)
}

/// Reads and discards what the other side still sends after the decision to close (so
/// it reads the close frame rather than a reset); returns the close reason.
async fn finish<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    control: &Control,
) -> CloseReason {
    let reason = control.close_reason().unwrap_or(CloseReason::INTERNAL);
    if !reason.is_abnormal() {
        let _ = within(
            CLOSE_DRAIN_TIMEOUT,
            Box::pin(reader.drain(CLOSE_DRAIN_BYTES_MAX)),
        )
        .await;
    }
    reason
}

/// The size of one connection's task state (its reader and its writer): every connection
/// holds it for its whole life (see the test in `node`).
#[cfg(test)]
pub(crate) fn task_state_bytes(node: Arc<WsContext>) -> usize {
    let (a, _b) = tokio::io::duplex(16);
    let slot = node.slots.try_acquire().expect("a free slot");
    std::mem::size_of_val(&run(node, a, Box::default(), slot))
}
