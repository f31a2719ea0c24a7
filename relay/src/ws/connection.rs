//! One connection after the upgrade: a writer task draining the bounded outbound queue,
//! and the reader running the session, until either side decides to close. A relay's
//! connection is handed to the mesh once its handshake says so.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::WsContext;
use super::session::{Session, SessionEnd};
use crate::conn::codec::{FrameReader, FrameWriter, Role};
use crate::conn::{CLOSE_WRITE_TIMEOUT, CloseReason, Control, Outlet, PeerArrival, Permit};

/// How much the relay reads and discards after deciding to close, so the other side is
/// not reset before it reads the close frame.
const CLOSE_DRAIN_BYTES_MAX: usize = 4 << 20;
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run<S>(node: Arc<WsContext>, io: S, mut slot: Permit)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read_half, write_half) = tokio::io::split(io);
    let control = Arc::new(Control::default());
    control.touch(node.lifecycle.now_ms());
    let (outlet, rx) = Outlet::new(node.config.limits.ws_outbound_queue_max, control.clone());
    let writer = FrameWriter::new(write_half, Role::Server, 0);
    let writer_task = tokio::spawn(crate::conn::write_loop(writer, rx, control.clone()));

    let mut reader = FrameReader::new(
        read_half,
        Role::Server,
        node.config.limits.ws_message_bytes_max,
    );
    let client_id = node.next_client_id();
    let mut session = Session::new(node.clone(), client_id, outlet.clone());
    let end = session.run(&mut reader).await;
    node.hub.leave(client_id);
    drop(session);
    let reason = match end {
        SessionEnd::Closed => finish(&mut reader, &control).await,
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
            finish(&mut reader, &control).await
        }
    };
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT * 2, writer_task).await;
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

/// Reads and discards what the other side still sends after the decision to close (so
/// it reads the close frame rather than a reset); returns the close reason.
async fn finish<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    control: &Control,
) -> CloseReason {
    let reason = control.close_reason().unwrap_or(CloseReason::INTERNAL);
    if !reason.is_abnormal() {
        let _ =
            tokio::time::timeout(CLOSE_DRAIN_TIMEOUT, reader.drain(CLOSE_DRAIN_BYTES_MAX)).await;
    }
    reason
}

/// The size of one connection's reader task state: every connection holds it for its
/// whole life (see the test in `node`).
#[cfg(test)]
pub(crate) fn task_state_bytes(node: Arc<WsContext>) -> usize {
    let (a, _b) = tokio::io::duplex(16);
    let slot = node.slots.try_acquire().expect("a free slot");
    std::mem::size_of_val(&run(node, a, slot))
}
