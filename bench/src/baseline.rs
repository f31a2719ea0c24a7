//! The stack's own ceiling: a WebSocket server on hyper 1 + fastwebsockets alone, with no
//! JSON, no handshake message and no routing. `loadtest run --baseline` drives it with the
//! same workloads as the relay.
//!
//! - [`Mode::Echo`]: every text or binary frame is sent back as it came.
//! - [`Mode::Broadcast`]: a connection whose first text frame is exactly
//!   [`PUBLISHER_HELLO`] is a publisher; every later frame it sends goes to every
//!   connection that is not a publisher. Other connections only receive.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The first text frame that makes a connection a publisher in [`Mode::Broadcast`].
pub const PUBLISHER_HELLO: &[u8] = b"pub";
/// Frames queued for one subscriber; a subscriber that falls this far behind is dropped,
/// as the relay drops a slow consumer.
pub const SUBSCRIBER_QUEUE_FRAMES_MAX: usize = 1024;
/// Largest message accepted (the relay's is 1 MiB; the baseline must not be the limit).
pub const MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What the server does with the frames it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Broadcast,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "echo" => Ok(Mode::Echo),
            "broadcast" => Ok(Mode::Broadcast),
            other => Err(format!("unknown mode `{other}` (echo|broadcast)")),
        }
    }
}

/// The connections that receive broadcasts, each with its bounded queue.
#[derive(Default)]
struct Subscribers {
    next_id: AtomicU64,
    queues: RwLock<BTreeMap<u64, mpsc::Sender<Bytes>>>,
}

impl Subscribers {
    fn join(&self) -> (u64, mpsc::Receiver<Bytes>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE_FRAMES_MAX);
        self.write().insert(id, tx);
        (id, rx)
    }

    fn leave(&self, id: u64) {
        self.write().remove(&id);
    }

    /// Queues `payload` for every subscriber; drops those whose queue is full.
    fn publish(&self, payload: &Bytes) {
        let mut slow = Vec::new();
        {
            let queues = self.queues.read().unwrap_or_else(|p| p.into_inner());
            for (id, tx) in queues.iter() {
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(payload.clone()) {
                    slow.push(*id);
                }
            }
        }
        for id in slow {
            self.leave(id);
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, mpsc::Sender<Bytes>>> {
        self.queues.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Serves WebSocket connections from `listener` in `mode` until `shutdown` completes.
///
/// # Errors
/// None in practice: accept errors are retried after a pause.
pub async fn serve(
    listener: TcpListener,
    mode: Mode,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let subscribers = Arc::new(Subscribers::default());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let subscribers = subscribers.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let subscribers = subscribers.clone();
                async move { accept_upgrade(request, mode, subscribers) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn accept_upgrade(
    mut request: Request<Incoming>,
    mode: Mode,
    subscribers: Arc<Subscribers>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    if !upgrade::is_upgrade_request(&request) {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(response);
    }
    let (response, upgrading) = upgrade::upgrade(&mut request)?;
    tokio::spawn(async move {
        let Ok(mut ws) = upgrading.await else {
            return;
        };
        ws.set_max_message_size(MESSAGE_BYTES_MAX);
        let _ = match mode {
            Mode::Echo => echo(ws).await,
            Mode::Broadcast => broadcast(ws, &subscribers).await,
        };
    });
    Ok(response)
}

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

async fn echo(mut ws: WebSocket<Upgraded>) -> Result<(), WebSocketError> {
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn broadcast(
    mut ws: WebSocket<Upgraded>,
    subscribers: &Subscribers,
) -> Result<(), WebSocketError> {
    // Pings and closes are answered by ending the connection: no obligated writes.
    ws.set_auto_pong(false);
    ws.set_auto_close(false);
    let (id, queue) = subscribers.join();
    let (mut rx, tx) = ws.split(tokio::io::split);
    let writer = tokio::spawn(write_queue(tx, queue));
    let mut publisher = false;
    let result = loop {
        let frame = match rx
            .read_frame::<_, WebSocketError>(&mut |_| async { Ok(()) })
            .await
        {
            Ok(frame) => frame,
            Err(e) => break Err(e),
        };
        match frame.opcode {
            OpCode::Close => break Ok(()),
            OpCode::Text | OpCode::Binary if publisher => {
                subscribers.publish(&Bytes::copy_from_slice(&frame.payload));
            }
            OpCode::Text if &frame.payload[..] == PUBLISHER_HELLO => {
                publisher = true;
                subscribers.leave(id);
            }
            _ => {}
        }
    };
    subscribers.leave(id);
    writer.abort();
    result
}

async fn write_queue(
    mut tx: fastwebsockets::WebSocketWrite<tokio::io::WriteHalf<Upgraded>>,
    mut queue: mpsc::Receiver<Bytes>,
) -> Result<(), WebSocketError> {
    while let Some(payload) = queue.recv().await {
        tx.write_frame(Frame::text(Payload::Borrowed(&payload)))
            .await?;
    }
    Ok(())
}
