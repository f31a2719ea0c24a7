//! The per-connection tasks of a run: pingers, fan-out subscribers and publishers. Each
//! returns what it measured inside the window; counters feed the progress line.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{CLOSE_TIMEOUT, Live, Next, STALL_TIMEOUT, TaskStats, Timeline, Window, next};
use crate::client::ErrorCounts;
use crate::workload::{self, Publication};
use crate::ws::{FrameReader, FrameWriter, Message, OpCode, WsConn};

/// Counts a relay message that is not the expected answer: `error` messages and
/// closes are errors; `health` and the like are ignored.
fn unexpected(message: &Message, errors: &mut ErrorCounts, live: &Live) -> bool {
    let kind = match message.opcode {
        OpCode::Close => format!("closed by the server (code {:?})", message.close_code()),
        OpCode::Text if workload::message_type(&message.payload).as_deref() == Some("error") => {
            let value: serde_json::Value =
                serde_json::from_slice(&message.payload).unwrap_or_default();
            format!("relay error {}", value["code"])
        }
        _ => return false,
    };
    errors.add_kind(&kind);
    live.errors.fetch_add(1, Ordering::Relaxed);
    message.opcode == OpCode::Close
}

async fn close(mut writer: FrameWriter<crate::target::WriteHalf>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.close(1000)).await;
}

pub(super) async fn pinger(
    conn: WsConn,
    frame: Arc<Vec<u8>>,
    in_flight: usize,
    baseline: bool,
    t: Timeline,
    live: Arc<Live>,
) -> TaskStats {
    let WsConn {
        mut reader,
        mut writer,
    } = conn;
    let mut stats = TaskStats::default();
    tokio::time::sleep_until(t.go.into()).await;
    let mut sent = VecDeque::with_capacity(in_flight);
    for _ in 0..in_flight {
        if let Err(e) = writer.write_encoded(&frame).await {
            stats.errors.add(&e.into());
            return stats;
        }
        sent.push_back(Instant::now());
    }
    let stop = tokio::time::sleep_until(t.stop.into());
    tokio::pin!(stop);
    loop {
        let message = match next(&mut reader, stop.as_mut()).await {
            Next::Message(message) => message,
            Next::Stop => break,
            Next::Ended(e) => {
                stats.errors.add(&e);
                live.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        match message.opcode {
            OpCode::Text | OpCode::Binary if baseline || workload::is_pong(&message.payload) => {
                let now = Instant::now();
                let Some(sent_at) = sent.pop_front() else {
                    stats.errors.add_kind("answer without a request");
                    continue;
                };
                if sent_at >= t.measure_from {
                    stats.messages += 1;
                    stats.deliveries += 1;
                    stats.bytes += message.payload.len() as u64;
                    stats.latency.record(now - sent_at);
                    live.messages.fetch_add(1, Ordering::Relaxed);
                }
                if now < t.stop {
                    if let Err(e) = writer.write_encoded(&frame).await {
                        stats.errors.add(&e.into());
                        break;
                    }
                    sent.push_back(now);
                }
            }
            OpCode::Ping => {
                let _ = writer.send_pong(&message.payload).await;
            }
            _ => {
                if unexpected(&message, &mut stats.errors, &live) {
                    break;
                }
            }
        }
    }
    close(writer).await;
    stats
}

pub(super) async fn subscriber(
    conn: WsConn,
    baseline: bool,
    t: Timeline,
    live: Arc<Live>,
    window: Arc<Window>,
) -> TaskStats {
    let WsConn {
        mut reader,
        mut writer,
    } = conn;
    let mut stats = TaskStats::default();
    let measure_from_ns = t.ns(t.measure_from);
    let stop = tokio::time::sleep_until(t.stop.into());
    tokio::pin!(stop);
    loop {
        let message = match next(&mut reader, stop.as_mut()).await {
            Next::Message(message) => message,
            Next::Stop => break,
            Next::Ended(e) => {
                stats.errors.add(&e);
                live.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        match message.opcode {
            OpCode::Text | OpCode::Binary
                if baseline || workload::is_notification(&message.payload) =>
            {
                let now_ns = t.ns(Instant::now());
                let Some((sent_ns, _seq)) = workload::read_publication(&message.payload) else {
                    stats.errors.add_kind("delivery without a send time");
                    continue;
                };
                // Wake a publisher only once the window has room: a wake per delivery
                // would cost the load generator more than the delivery.
                let delivered = window.delivered.fetch_add(1, Ordering::AcqRel) + 1;
                let expected = window.expected.load(Ordering::Acquire);
                if expected.saturating_sub(delivered) < window.deliveries_max {
                    window.progress.notify_one();
                }
                if sent_ns >= measure_from_ns {
                    stats.deliveries += 1;
                    stats.bytes += message.payload.len() as u64;
                    stats.latency.record_ns(now_ns.saturating_sub(sent_ns));
                    live.deliveries.fetch_add(1, Ordering::Relaxed);
                }
            }
            OpCode::Ping => {
                let _ = writer.send_pong(&message.payload).await;
            }
            _ => {
                if unexpected(&message, &mut stats.errors, &live) {
                    break;
                }
            }
        }
    }
    close(writer).await;
    stats
}

pub(super) async fn publisher(
    conn: WsConn,
    size: usize,
    baseline: bool,
    t: Timeline,
    live: Arc<Live>,
    window: Arc<Window>,
) -> TaskStats {
    let WsConn { reader, mut writer } = conn;
    let closing = Arc::new(AtomicBool::new(false));
    let replies = tokio::spawn(read_replies(
        reader,
        baseline,
        t,
        live.clone(),
        closing.clone(),
    ));
    let mut stats = TaskStats::default();
    let mut publication = Publication::new(size);
    tokio::time::sleep_until(t.go.into()).await;
    let mut seq = 0;
    let stop = tokio::time::sleep_until(t.stop.into());
    tokio::pin!(stop);
    'publishing: loop {
        loop {
            let expected = window.expected.load(Ordering::Acquire);
            let delivered = window.delivered.load(Ordering::Acquire);
            if expected.saturating_sub(delivered) < window.deliveries_max {
                break;
            }
            tokio::select! {
                biased;
                () = stop.as_mut() => break 'publishing,
                () = window.progress.notified() => {}
                () = tokio::time::sleep(STALL_TIMEOUT) => {
                    stats.errors.add_kind("fan-out stalled: deliveries missing");
                    live.errors.fetch_add(1, Ordering::Relaxed);
                    // Forget the missing deliveries and go on.
                    window.expected.store(delivered, Ordering::Release);
                }
            }
        }
        let now = Instant::now();
        if now >= t.stop {
            break;
        }
        window
            .expected
            .fetch_add(window.subscribers, Ordering::AcqRel);
        if let Err(e) = writer
            .write_encoded(publication.frame(t.ns(now), seq))
            .await
        {
            stats.errors.add(&e.into());
            live.errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        seq += 1;
        if now >= t.measure_from {
            stats.messages += 1;
            live.messages.fetch_add(1, Ordering::Relaxed);
        }
    }
    closing.store(true, Ordering::Release);
    close(writer).await;
    if let Ok(errors) = replies.await {
        stats.errors.merge(&errors);
    }
    stats
}

/// Reads a publisher's socket until the stop: acks are dropped, errors counted. Once
/// the publisher is `closing`, the server's answering close is no error.
async fn read_replies(
    mut reader: FrameReader<crate::target::ReadHalf>,
    baseline: bool,
    t: Timeline,
    live: Arc<Live>,
    closing: Arc<AtomicBool>,
) -> ErrorCounts {
    let mut errors = ErrorCounts::default();
    let stop = tokio::time::sleep_until(t.stop.into());
    tokio::pin!(stop);
    loop {
        match next(&mut reader, stop.as_mut()).await {
            Next::Message(message) => {
                if closing.load(Ordering::Acquire) && message.opcode == OpCode::Close {
                    break;
                }
                if !baseline && unexpected(&message, &mut errors, &live) {
                    break;
                }
            }
            Next::Stop => break,
            Next::Ended(e) => {
                // The publisher's own close ends the stream after the stop.
                if !closing.load(Ordering::Acquire) {
                    errors.add(&e);
                    live.errors.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
        }
    }
    errors
}
