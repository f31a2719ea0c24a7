//! The WebSocket interface (port 8090): accepting connections, the HTTP upgrade, and one
//! session per client.

pub mod client;
pub mod codec;
mod connection;
mod session;

pub(crate) use connection::write_loop;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::node::Node;
use crate::rt::Listener;

/// Accept errors (e.g. out of file descriptors) back off between these bounds.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Seconds a refused client is told to wait before retrying.
const RETRY_AFTER_SECS: &str = "5";

/// How a frame or a read error ends a connection, if it does: a binary frame, the
/// peer's close, a message over the limit, invalid UTF-8, a protocol violation, or a
/// lost connection. `None` for text, ping and pong, which the caller handles.
pub(crate) fn ending(
    frame: &Result<codec::Incoming, codec::ReadError>,
) -> Option<crate::hub::CloseReason> {
    use crate::hub::CloseReason;
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

/// Accepts WebSocket connections until shutdown. Never exits on accept errors: it backs
/// off and retries, so running out of descriptors degrades service instead of ending it.
pub async fn serve<L: Listener>(node: Arc<Node>, mut listener: L) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            () = node.shutdown_started() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                tokio::spawn(serve_http(node.clone(), stream));
            }
            Err(error) => {
                node.metrics.ws_refused.get("accept_error").increment(1);
                tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "WebSocket accept failed; backing off");
                tokio::select! {
                    biased;
                    () = node.shutdown_started() => return,
                    () = node.clock.sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Serves the HTTP exchange that precedes the upgrade, bounded by the connection timeout.
async fn serve_http<S>(node: Arc<Node>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let timeout = node.config.limits.connection_timeout();
    let service_node = node.clone();
    let service = hyper::service::service_fn(move |request| {
        let node = service_node.clone();
        async move { Ok::<_, Infallible>(upgrade(node, request)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .auto_date_header(false);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    // The exchange ends at the upgrade (the session then runs on its own task) or when
    // the client gives up; a client that stalls is cut off.
    let _ = tokio::time::timeout(timeout, connection).await;
}

fn upgrade(node: Arc<Node>, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        node.metrics.ws_refused.get("bad_upgrade").increment(1);
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "this port speaks WebSocket; connect with a WebSocket client\n",
        );
    }
    if node.is_draining() {
        node.metrics.ws_refused.get("draining").increment(1);
        return unavailable("relay shutting down\n");
    }
    let Some(slot) = node.try_acquire_ws_slot() else {
        node.metrics.ws_refused.get("limit").increment(1);
        tracing::debug!("WebSocket connection refused: ws_connections_max reached");
        return unavailable("connection limit reached\n");
    };
    match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok((response, upgraded)) => {
            node.metrics.ws_accepted.increment(1);
            tokio::spawn(async move {
                match upgraded.await {
                    Ok(ws) => connection::run(node, ws.into_inner(), slot).await,
                    Err(error) => tracing::debug!(%error, "WebSocket upgrade did not complete"),
                }
            });
            response.map(|_| Full::default())
        }
        Err(error) => {
            node.metrics.ws_refused.get("bad_upgrade").increment(1);
            plain(
                StatusCode::BAD_REQUEST,
                &format!("bad WebSocket upgrade: {error}\n"),
            )
        }
    }
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
}

fn unavailable(body: &str) -> Response<Full<Bytes>> {
    let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, body);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}
