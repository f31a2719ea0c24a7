//! A connection's writer task: drains the bounded outbound queue, coalescing whatever is
//! already queued into one write, and ends with the close frame.

use std::future::Future;
use std::time::Duration;

use tokio::io::AsyncWrite;

use super::codec::{FrameKind, FrameWriter, close_payload};
use super::queue::Receiver;
use super::{CloseReason, Control, Outbound};

/// How long the close sequence (last frames, close frame) may take before the socket is
/// dropped anyway.
pub const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes queued frames until the connection closes, then the close frame.
pub async fn write_loop<W>(mut writer: FrameWriter<W>, mut rx: Receiver)
where
    W: AsyncWrite + Unpin,
{
    let control = rx.control().clone();
    // One registration for the connection's life, not one per batch.
    let closed = control.closed();
    tokio::pin!(closed);
    loop {
        let (first, alone) = tokio::select! {
            biased;
            () = &mut closed => break,
            next = rx.recv_noting_alone() => match next {
                Some(taken) => taken,
                None => break,
            },
        };
        let batch = write_batch(&mut writer, &first, alone, &mut rx);
        tokio::pin!(batch);
        let (written, closing) = tokio::select! {
            biased;
            result = &mut batch => (result.is_ok(), false),
            () = &mut closed => {
                // Finish the frame in flight (briefly) so the close frame lands on a boundary.
                let finished = within(CLOSE_WRITE_TIMEOUT, batch).await;
                (matches!(finished, Some(Ok(()))), true)
            }
        };
        if !written {
            control.close(CloseReason::WRITE_FAILED);
            return;
        }
        if closing {
            break;
        }
    }
    // On the heap: the close sequence runs once, at the end, and its room in the state
    // would be held by every idle connection for its whole life.
    Box::pin(async {
        let _ = within(CLOSE_WRITE_TIMEOUT, close(&mut writer, &mut rx, &control)).await;
        writer.shutdown().await;
    })
    .await;
}

/// `future`'s output if it completes within `limit`. The timer is made on the heap when
/// this is first polled: these limits apply while a connection closes, and a timer kept in
/// a connection's state (112 bytes, as `tokio::time::timeout` keeps it) is held by every
/// idle connection for its whole life.
pub async fn within<F: Future>(limit: Duration, future: F) -> Option<F::Output> {
    let deadline = Box::pin(tokio::time::sleep(limit));
    tokio::select! {
        biased;
        output = future => Some(output),
        () = deadline => None,
    }
}

/// Writes `first` and whatever else is already queued, as one batch; `first` alone in the
/// queue when taken is written without one (`write_lone`). `first` is borrowed: an async
/// fn's arguments keep their room in its state, and this state is part of every
/// connection's.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    first: &Outbound,
    alone: bool,
    rx: &mut Receiver,
) -> std::io::Result<()> {
    if alone {
        let (kind, payload) = frame_of(first);
        return writer.write_lone(kind, payload).await;
    }
    push(writer, first).await?;
    // Written as one loop with a flag, not the second frame taken apart: a second `push`
    // await point made this state 80 bytes larger, a 128-byte task cell more per
    // connection (see `node::tests::connection_task_state_stays_small`).
    let mut reserved = false;
    while !writer.batch_full() {
        match rx.try_recv_with_backlog() {
            Ok((message, backlog)) => {
                // A batch is forming: room for all of it at once.
                if !reserved {
                    writer.reserve_batch(backlog.frames + 1, backlog.bytes + message.len());
                    reserved = true;
                }
                push(writer, &message).await?;
            }
            Err(_) => break,
        }
    }
    writer.flush().await
}

/// The kind and payload of the frame that carries `message`.
fn frame_of(message: &Outbound) -> (FrameKind, &[u8]) {
    match message {
        Outbound::Text(bytes) => (FrameKind::Text, bytes),
        Outbound::Ping => (FrameKind::Ping, b""),
        Outbound::Pong(payload) => (FrameKind::Pong, payload),
    }
}

async fn push<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    message: &Outbound,
) -> std::io::Result<()> {
    let (kind, payload) = frame_of(message);
    writer.push(kind, payload).await
}

/// Sends what is still queued (unless the other side is too slow to take it), then the
/// close frame.
async fn close<W: AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    rx: &mut Receiver,
    control: &Control,
) -> std::io::Result<()> {
    let reason = control.close_reason().unwrap_or(CloseReason::NORMAL);
    if reason.is_abnormal() {
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
    use std::time::Duration;

    /// `within` gives the future's output when it is in time, and `None` once the limit
    /// passes first.
    #[tokio::test(start_paused = true)]
    async fn within_answers_in_time_or_not_at_all() {
        let quick = super::within(Duration::from_secs(2), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            7
        });
        assert_eq!(quick.await, Some(7));
        let slow = super::within(
            Duration::from_secs(2),
            tokio::time::sleep(Duration::from_secs(3)),
        );
        assert_eq!(slow.await, None);
    }

    /// Every connection holds its writer task state for its whole life: a regression
    /// here (say, a buffer in the future) costs memory on every idle connection.
    #[test]
    fn writer_task_state_stays_small() {
        let (c, _d) = tokio::io::duplex(16);
        let (_r, w) = tokio::io::split(c);
        let (_tx, rx) = super::super::queue::bounded(super::super::queue::Bound {
            frames: 4,
            bytes: usize::MAX,
        });
        let wf = super::write_loop(
            super::FrameWriter::new(w, super::super::codec::Role::Server, 0),
            rx,
        );
        assert!(
            std::mem::size_of_val(&wf) <= 1024,
            "writer task state: {} bytes",
            std::mem::size_of_val(&wf)
        );
    }
}
