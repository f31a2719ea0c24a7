//! The WebSocket interface (port 8090): accepting connections, the HTTP upgrade, one
//! session per wallet, and the heartbeat and sync broadcasts to wallets. A connection
//! whose handshake asks for capability `relay` is handed over to the mesh (through
//! `conn::PeerHandoff`); this module never learns what a peer link does.

mod broadcast;
mod connection;
mod rate;
mod session;

pub use broadcast::{SyncPayloads, heartbeat, syncs_to_clients};
#[cfg(test)]
pub(crate) use connection::task_state_bytes;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::config::Config;
use crate::conn::tls::{self, ServerTls};
use crate::conn::{AddressPermit, AddressSlots, PeerHandoff, Permit, Slots};
use crate::health::Health;
use crate::hub::{ClientId, Hub};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::routing::Publisher;
use crate::rt::Listener;
use crate::wallets::Wallets;

/// Connections allowed in the pre-upgrade HTTP exchange beyond `ws_connections_max`, so
/// the ones over the limit can still be told 503.
const PENDING_UPGRADES_SLACK: usize = 1024;
/// Seconds a refused client is told to wait before retrying.
const RETRY_AFTER_SECS: &str = "5";
/// Connections being told 503 at once because their address is at
/// `ws_connections_per_address_max` (beyond it they are closed without an answer).
const PER_ADDRESS_REFUSALS_MAX: usize = 256;
/// How long a connection refused over its address's cap may take to receive its 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// What the wallet server needs from the rest of the relay.
pub struct WsContext {
    pub config: Arc<Config>,
    pub lifecycle: Arc<Lifecycle>,
    pub metrics: Arc<Metrics>,
    /// Handshaken wallets and their subscriptions.
    pub hub: Arc<Hub>,
    /// `ws_connections_max` slots, peer links on this port included.
    pub slots: Arc<Slots>,
    /// Where wallets' publications enter the backbone.
    pub publisher: Arc<Publisher>,
    /// Wallets registered with the chain watcher.
    pub wallets: Arc<Wallets>,
    pub health: Arc<Health>,
    /// Takes connections that handshake as relays.
    pub peers: Arc<dyn PeerHandoff>,
    next_client_id: AtomicU64,
}

impl WsContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        hub: Arc<Hub>,
        slots: Arc<Slots>,
        publisher: Arc<Publisher>,
        wallets: Arc<Wallets>,
        health: Arc<Health>,
        peers: Arc<dyn PeerHandoff>,
    ) -> Arc<WsContext> {
        Arc::new(WsContext {
            config,
            lifecycle,
            metrics,
            hub,
            slots,
            publisher,
            wallets,
            health,
            peers,
            next_client_id: AtomicU64::new(1),
        })
    }

    fn next_client_id(&self) -> ClientId {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    fn try_acquire_slot(&self) -> Option<Permit> {
        self.slots.try_acquire()
    }
}

/// Accepts WebSocket connections until shutdown (over TLS, WSS, when `tls` is given).
/// Never exits on accept errors: it backs off and retries, so running out of descriptors
/// degrades service instead of ending it.
pub async fn serve<L: Listener>(
    node: Arc<WsContext>,
    mut listener: L,
    tls: Option<Arc<ServerTls>>,
) {
    // Connections still in the HTTP exchange before the upgrade: bounded, so sockets
    // that never upgrade cannot pile up (each is also cut off after the timeout).
    let pending = Arc::new(tokio::sync::Semaphore::new(
        node.config.limits.ws_connections_max + PENDING_UPGRADES_SLACK,
    ));
    // Connections per client address, from accept to close, so that one address cannot
    // hold every pending or connection slot; refusals over it are bounded in all and per
    // address (as many again), and short.
    let per_address_max = node.config.limits.ws_connections_per_address_max;
    let by_address = AddressSlots::new(per_address_max);
    let refusing = Slots::new(PER_ADDRESS_REFUSALS_MAX);
    let refusing_by_address = AddressSlots::new(per_address_max);
    let on_accept = |stream, peer: std::net::SocketAddr| {
        let Some(address) = by_address.try_acquire(peer.ip()) else {
            node.metrics.ws_refused.get("per_address").increment(1);
            let refusal = refusing
                .try_acquire()
                .zip(refusing_by_address.try_acquire(peer.ip()));
            if let Some(held) = refusal {
                let (node, tls) = (node.clone(), tls.clone());
                tokio::spawn(async move {
                    let counted = |outcome| node.metrics.count_tls_handshake("ws", outcome);
                    tls::serve(tls.as_deref(), stream, counted, Refusal(held)).await;
                });
            }
            return;
        };
        match pending.clone().try_acquire_owned() {
            Ok(permit) => {
                let (node, tls) = (node.clone(), tls.clone());
                tokio::spawn(async move {
                    let counted = |outcome| node.metrics.count_tls_handshake("ws", outcome);
                    let exchange = Exchange {
                        node: node.clone(),
                        address: Arc::new(address),
                    };
                    // The pending permit covers the TLS handshake too.
                    tls::serve(tls.as_deref(), stream, counted, exchange).await;
                    drop(permit);
                });
            }
            Err(_) => node.metrics.ws_refused.get("pending_upgrades").increment(1),
        }
    };
    let on_error = |error: &std::io::Error, backoff: Duration| {
        node.metrics.ws_refused.get("accept_error").increment(1);
        tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "WebSocket accept failed; backing off");
    };
    let clock = node.lifecycle.clock().clone();
    crate::conn::accept::accept_loop(
        &mut listener,
        &clock,
        node.lifecycle.shutdown_started(),
        on_accept,
        on_error,
    )
    .await;
}

/// A connection that came in under the caps: its HTTP exchange, then the upgrade.
struct Exchange {
    node: Arc<WsContext>,
    address: Arc<AddressPermit>,
}

impl tls::Serve for Exchange {
    fn serve<S>(self, stream: S) -> impl Future<Output = ()> + Send
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        serve_http(self.node, stream, self.address)
    }
}

/// A connection over its address's cap: told 503.
struct Refusal((Permit, AddressPermit));

impl tls::Serve for Refusal {
    fn serve<S>(self, stream: S) -> impl Future<Output = ()> + Send
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        refuse_per_address(stream, self.0)
    }
}

/// Serves the HTTP exchange that precedes the upgrade, bounded by the upgrade timeout.
/// `address` (the client address's slot) is held until the connection closes.
async fn serve_http<S>(node: Arc<WsContext>, stream: S, address: Arc<AddressPermit>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let timeout = node.config.limits.upgrade_timeout();
    let service_node = node.clone();
    let service = hyper::service::service_fn(move |request| {
        let (node, address) = (service_node.clone(), address.clone());
        async move { Ok::<_, Infallible>(upgrade::<S>(node, request, address)) }
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

/// Answers 503 with `Retry-After` to the request of a connection whose address is at
/// `ws_connections_per_address_max`, and closes; `_held` is its refusal slots.
async fn refuse_per_address<S>(stream: S, _held: (Permit, AddressPermit))
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(|_request: Request<Incoming>| async {
        Ok::<_, Infallible>(unavailable("too many connections from this address\n"))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIMEOUT)
        .keep_alive(false)
        .auto_date_header(false);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, connection).await;
}

/// Answers the upgrade request; once upgraded, the connection runs on the stream `S` that
/// the HTTP exchange was served on.
fn upgrade<S>(
    node: Arc<WsContext>,
    mut request: Request<Incoming>,
    address: Arc<AddressPermit>,
) -> Response<Full<Bytes>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        node.metrics.ws_refused.get("bad_upgrade").increment(1);
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "this port speaks WebSocket; connect with a WebSocket client\n",
        );
    }
    if node.lifecycle.is_draining() {
        node.metrics.ws_refused.get("draining").increment(1);
        return unavailable("relay shutting down\n");
    }
    let Some(slot) = node.try_acquire_slot() else {
        node.metrics.ws_refused.get("limit").increment(1);
        tracing::debug!("WebSocket connection refused: ws_connections_max reached");
        return unavailable("connection limit reached\n");
    };
    match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok((response, upgraded)) => {
            node.metrics.ws_accepted.increment(1);
            tokio::spawn(async move {
                match upgraded.await {
                    Ok(ws) => match ws.into_inner().into_inner().downcast::<TokioIo<S>>() {
                        // The stream itself, not hyper's boxed wrapper around it: each
                        // read and write of the connection's life skips the layers
                        // (a virtual call, the check for bytes read ahead, two adapters).
                        // What hyper read past the request is the start of the frames.
                        Ok(parts) => {
                            let stream = parts.io.into_inner();
                            let read_ahead = Vec::from(parts.read_buf).into_boxed_slice();
                            connection::run(node, stream, read_ahead, slot).await;
                        }
                        Err(upgraded) => {
                            let stream = TokioIo::new(upgraded);
                            connection::run(node, stream, Box::default(), slot).await;
                        }
                    },
                    Err(error) => tracing::debug!(%error, "WebSocket upgrade did not complete"),
                }
                drop(address);
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
