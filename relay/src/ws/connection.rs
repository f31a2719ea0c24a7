//! One client connection after the upgrade: a writer task draining the bounded outbound
//! queue, and the reader running the session, until either side decides to close.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::codec::{FrameKind, FrameReader, FrameWriter, Role, close_payload};
use super::session::Session;
use crate::hub::{ClientControl, CloseReason, Outbound};
use crate::node::{Node, WsSlot};

/// How long the close sequence (last frames, close frame) may take before the socket is
/// dropped anyway.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How much the relay reads and discards after deciding to close, so the client is not
/// reset before it reads the close frame.
const CLOSE_DRAIN_BYTES_MAX: usize = 4 << 20;
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run<S>(node: Arc<Node>, io: S, slot: WsSlot)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read_half, write_half) = tokio::io::split(io);
    let control = Arc::new(ClientControl::default());
    control.touch(node.now_ms());
    let (tx, rx) = mpsc::channel(node.config.limits.ws_outbound_queue_max);
    let writer = FrameWriter::new(write_half, Role::Server, 0);
    let writer_task = tokio::spawn(write_loop(writer, rx, control.clone()));

    let mut reader = FrameReader::new(
        read_half,
        Role::Server,
        node.config.limits.ws_message_bytes_max,
    );
    let client_id = node.next_client_id();
    let mut session = Session::new(node.clone(), client_id, tx, control.clone());
    session.run(&mut reader).await;
    node.hub.leave(client_id);
    drop(session);

    let reason = control.close_reason().unwrap_or(CloseReason::INTERNAL);
    if reason.code != ABNORMAL {
        let _ =
            tokio::time::timeout(CLOSE_DRAIN_TIMEOUT, reader.drain(CLOSE_DRAIN_BYTES_MAX)).await;
    }
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

/// Close code recorded when the client vanished without a close handshake.
pub const ABNORMAL: u16 = CloseReason::LOST.code;

pub(crate) async fn write_loop<W>(
    mut writer: FrameWriter<W>,
    mut rx: mpsc::Receiver<Outbound>,
    control: Arc<ClientControl>,
) where
    W: AsyncWrite + Unpin,
{
    loop {
        let first = tokio::select! {
            biased;
            () = control.closed() => break,
            next = rx.recv() => match next {
                Some(message) => message,
                None => break,
            },
        };
        let batch = write_batch(&mut writer, first, &mut rx);
        tokio::pin!(batch);
        let written = tokio::select! {
            biased;
            result = &mut batch => result.is_ok(),
            () = control.closed() => {
                // Finish the frame in flight (briefly) so the close frame lands on a boundary.
                matches!(tokio::time::timeout(CLOSE_WRITE_TIMEOUT, batch).await, Ok(Ok(())))
            }
        };
        if !written {
            control.close(CloseReason {
                code: ABNORMAL,
                reason: "write failed",
            });
            return;
        }
    }
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, close(&mut writer, &mut rx, &control)).await;
    writer.shutdown().await;
}

/// Writes `first` and whatever else is already queued, as one batch.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    first: Outbound,
    rx: &mut mpsc::Receiver<Outbound>,
) -> std::io::Result<()> {
    push(writer, &first).await?;
    while !writer.batch_full() {
        match rx.try_recv() {
            Ok(message) => push(writer, &message).await?,
            Err(_) => break,
        }
    }
    writer.flush().await
}

async fn push<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    message: &Outbound,
) -> std::io::Result<()> {
    match message {
        Outbound::Text(bytes) => writer.push(FrameKind::Text, bytes).await,
        Outbound::Ping => writer.push(FrameKind::Ping, b"").await,
        Outbound::Pong(payload) => writer.push(FrameKind::Pong, payload).await,
    }
}

/// Sends what is still queued (unless the client is too slow to take it), then the close
/// frame.
async fn close<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    rx: &mut mpsc::Receiver<Outbound>,
    control: &ClientControl,
) -> std::io::Result<()> {
    let reason = control.close_reason().unwrap_or(CloseReason::NORMAL);
    if reason.code == ABNORMAL {
        return Ok(());
    }
    if reason != CloseReason::SLOW_CONSUMER {
        while let Ok(message) = rx.try_recv() {
            push(writer, &message).await?;
        }
    }
    writer
        .push(FrameKind::Close, &close_payload(reason.code, reason.reason))
        .await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    /// Every connection holds these two task states for its whole life: a regression
    /// here (say, a stack buffer in a future) costs memory on every idle connection.
    #[test]
    fn connection_task_state_stays_small() {
        let node = crate::node::Node::new(
            crate::config::Config::default(),
            std::sync::Arc::new(crate::rt::TokioClock),
            crate::rt::SeededRng::new(1),
            crate::logs::LogRing::new(1),
        );
        let (a, _b) = tokio::io::duplex(16);
        let slot = node.try_acquire_ws_slot().unwrap();
        let f = super::run(node.clone(), a, slot);
        assert!(
            std::mem::size_of_val(&f) <= 2048,
            "reader task state: {} bytes",
            std::mem::size_of_val(&f)
        );
        let (c, _d) = tokio::io::duplex(16);
        let (_r, w) = tokio::io::split(c);
        let (_tx, rx) = tokio::sync::mpsc::channel(4);
        let wf = super::write_loop(
            super::FrameWriter::new(w, super::Role::Server, 0),
            rx,
            std::sync::Arc::new(Default::default()),
        );
        assert!(
            std::mem::size_of_val(&wf) <= 1024,
            "writer task state: {} bytes",
            std::mem::size_of_val(&wf)
        );
    }
}
