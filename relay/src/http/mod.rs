//! The HTTP API (port 8091): operators' and orchestrators' view of one relay.
//!
//! This file owns the connection side: the accept loop (backing off on accept errors),
//! the `http_connections_max` cap and the `http_connections_per_address_max` cap (a
//! connection over either is answered 503 and closed, unless it asks for `/health`,
//! `/health/live` or `/health/ready`, which are answered normally so probes never restart a relay whose slots are full),
//! and the per-request pipeline: rate limit, route, method, auth, drain, body size,
//! handler, all under the `http_timeout_secs` deadline, and counted in the metrics.
//! The endpoints themselves are in `handlers`; every error becomes a response in
//! `error`. [`app`] gives the same pipeline without a socket, for tests.

mod auth;
mod error;
mod handlers;
mod limits;
mod openapi;
mod router;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::CONTENT_LENGTH;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::Histogram;

pub use error::ApiError;
pub use handlers::LOG_LIMIT_MAX;
pub use limits::RATE_ADDRESSES_MAX;
pub use openapi::OPENAPI_YAML;

use auth::BasicAuth;
use limits::RateLimiter;
use router::Route;

use crate::conn::tls::{self, ServerTls};
use crate::conn::{AddressPermit, AddressSlots, Permit, Slots};
use crate::dashboard::Dashboard;
use crate::metrics::names::{HTTP_REQUEST_DURATION_SECONDS, HTTP_REQUESTS_TOTAL};
use crate::node::Node;
use crate::rt::Listener;

/// How long a connection refused over the cap may take to receive its 503.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// The `route` label of requests refused because of `http_connections_max`.
const CONNECTION_LIMIT_LABEL: &str = "connection_limit";
/// The `route` label of requests refused because of `http_connections_per_address_max`.
const ADDRESS_LIMIT_LABEL: &str = "address_limit";

/// The HTTP API of one relay: state shared by all its connections, and the pipeline
/// every request goes through.
pub struct Api {
    node: Arc<Node>,
    limiter: RateLimiter,
    auth: BasicAuth,
    /// Open connections being served (at most `http_connections_max`).
    connections: Arc<Slots>,
    /// Connections being told 503 because of the cap (at most `http_connections_max`
    /// too, so a flood cannot pile up refusal tasks).
    refusing: Arc<Slots>,
    /// Connections per client address, served or refused over `http_connections_max`
    /// (at most `http_connections_per_address_max` each).
    by_address: Arc<AddressSlots>,
    /// Connections per client address being refused because that address is at its
    /// cap (as many again), so one address cannot take every refusal slot either.
    refusing_by_address: Arc<AddressSlots>,
    /// Per-route latency histograms, registered at start-up; the last is `unmatched`.
    durations: Vec<(&'static str, Histogram)>,
    /// `GET /dashboard/data`'s history and cached snapshot.
    dashboard: Arc<Dashboard>,
}

/// The API without a socket: `app(node).call(client, request)` runs a request through
/// the whole pipeline (rate limit, route, auth, drain, body size, handler, metrics).
pub fn app(node: Arc<Node>) -> Arc<Api> {
    Arc::new(Api::new(node))
}

impl Api {
    fn new(node: Arc<Node>) -> Self {
        let limits = &node.config.limits;
        let mut labels: Vec<&'static str> = Route::ALL.iter().map(|r| r.label()).collect();
        labels.push(Route::UNMATCHED_LABEL);
        let durations = labels
            .into_iter()
            .map(|label| {
                // Registered up front so dashboards see every endpoint at zero.
                if label != Route::UNMATCHED_LABEL {
                    node.metrics
                        .scoped(|| {
                            metrics::counter!(HTTP_REQUESTS_TOTAL, "route" => label, "status" => "200")
                        })
                        .increment(0);
                }
                let histogram = node
                    .metrics
                    .histogram(HTTP_REQUEST_DURATION_SECONDS, &[("route", label)]);
                (label, histogram)
            })
            .collect();
        let connections_max = limits.http_connections_max;
        Api {
            limiter: RateLimiter::new(limits.http_requests_per_minute_max, RATE_ADDRESSES_MAX),
            auth: BasicAuth::new(&node.config.auth),
            connections: Slots::with_gauge(connections_max, node.metrics.http_connections.clone()),
            refusing: Slots::new(connections_max),
            by_address: AddressSlots::new(limits.http_connections_per_address_max),
            refusing_by_address: AddressSlots::new(limits.http_connections_per_address_max),
            durations,
            dashboard: Arc::new(Dashboard::new(node.clone())),
            node,
        }
    }

    fn record(&self, label: &'static str, status: u16, seconds: f64) {
        let counter = self.node.metrics.scoped(|| {
            metrics::counter!(HTTP_REQUESTS_TOTAL, "route" => label, "status" => status.to_string())
        });
        counter.increment(1);
        if let Some((_, histogram)) = self.durations.iter().find(|(l, _)| *l == label) {
            histogram.record(seconds);
        }
    }
}

/// Serves the HTTP API on `listener` until the task is aborted. It keeps answering
/// while the relay drains, so probes see the 503 instead of a refused connection.
pub async fn serve<L: Listener>(node: Arc<Node>, mut listener: L, tls: Option<Arc<ServerTls>>) {
    let api = app(node);
    let on_accept = |stream, peer: SocketAddr| {
        let Some(address) = api.by_address.try_acquire(peer.ip()) else {
            let refusal = api
                .refusing
                .try_acquire()
                .zip(api.refusing_by_address.try_acquire(peer.ip()));
            if let Some(held) = refusal {
                let refusal = Refusal {
                    api: api.clone(),
                    peer,
                    label: ADDRESS_LIMIT_LABEL,
                    held,
                };
                tokio::spawn(serve_tls(api.clone(), tls.clone(), stream, refusal));
            } else {
                tracing::debug!(%peer, "HTTP connection dropped: its address is at its cap");
            }
            return;
        };
        if let Some(slot) = api.connections.try_acquire() {
            let connection = Connection {
                api: api.clone(),
                peer,
                held: (slot, address),
            };
            tokio::spawn(serve_tls(api.clone(), tls.clone(), stream, connection));
        } else if let Some(slot) = api.refusing.try_acquire() {
            let refusal = Refusal {
                api: api.clone(),
                peer,
                label: CONNECTION_LIMIT_LABEL,
                held: (slot, address),
            };
            tokio::spawn(serve_tls(api.clone(), tls.clone(), stream, refusal));
        } else {
            tracing::debug!(%peer, "HTTP connection dropped: refusals at their cap");
        }
    };
    let on_error = |error: &std::io::Error, backoff: Duration| {
        tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "HTTP accept failed; backing off");
    };
    // No stop: probes keep getting answers (503) while the relay drains, until `run`
    // ends the task.
    let clock = api.node.lifecycle.clock().clone();
    let accepting = crate::conn::accept::accept_loop(
        &mut listener,
        &clock,
        std::future::pending(),
        on_accept,
        on_error,
    );
    // The dashboard's sampler lives as long as the API (both end when `run` aborts it).
    tokio::select! {
        () = accepting => {}
        () = crate::dashboard::run(api.dashboard.clone()) => {}
    }
}

fn http1(timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .auto_date_header(false);
    builder
}

/// Runs the TLS handshake first when `[tls]` is on (in the connection's task), counting
/// it, then `then`.
async fn serve_tls<S: tls::Serve>(
    api: Arc<Api>,
    tls: Option<Arc<ServerTls>>,
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    then: S,
) {
    let counted = |outcome| api.node.metrics.count_tls_handshake("http", outcome);
    tls::serve(tls.as_deref(), stream, counted, then).await;
}

/// A connection under the caps, served.
struct Connection {
    api: Arc<Api>,
    peer: SocketAddr,
    held: (Permit, AddressPermit),
}

impl tls::Serve for Connection {
    fn serve<S>(self, stream: S) -> impl Future<Output = ()> + Send
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        serve_connection(self.api, stream, self.peer, self.held)
    }
}

/// A connection over a cap (`label` says which), refused.
struct Refusal {
    api: Arc<Api>,
    peer: SocketAddr,
    label: &'static str,
    held: (Permit, AddressPermit),
}

impl tls::Serve for Refusal {
    fn serve<S>(self, stream: S) -> impl Future<Output = ()> + Send
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        refuse_connection(self.api, stream, self.peer, self.label, self.held)
    }
}

/// Serves one connection; `_held` (its slot and its address's) is given back at the end.
async fn serve_connection<S>(
    api: Arc<Api>,
    stream: S,
    peer: SocketAddr,
    _held: (Permit, AddressPermit),
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let timeout = Duration::from_secs(api.node.config.limits.http_timeout_secs);
    let service_api = api.clone();
    let service = hyper::service::service_fn(move |request| {
        let api = service_api.clone();
        async move { Ok::<_, Infallible>(api.call(peer.ip(), request).await) }
    });
    if let Err(error) = http1(timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(%error, %peer, "HTTP connection ended with an error");
    }
}

/// Answers one request on a connection over a cap (`label` says which) with 503 and
/// closes; a request for a probe (`/health`, `/health/live`, `/health/ready`) is
/// answered normally instead, so probes see the relay's health and not its connection
/// slots.
async fn refuse_connection<S>(
    api: Arc<Api>,
    stream: S,
    peer: SocketAddr,
    label: &'static str,
    _held: (Permit, AddressPermit),
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let api = api.clone();
        async move {
            if router::find(request.uri().path()).is_some_and(Route::is_probe) {
                return Ok::<_, Infallible>(api.call(peer.ip(), request).await);
            }
            let reason = if label == ADDRESS_LIMIT_LABEL {
                "too many connections from this address"
            } else {
                "connection limit reached"
            };
            let response = ApiError::Unavailable { reason }.into_response();
            api.record(label, response.status().as_u16(), 0.0);
            Ok(response)
        }
    });
    let mut builder = http1(REFUSAL_TIMEOUT);
    builder.keep_alive(false);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, connection).await;
}

impl Api {
    /// One request, from arrival to counted response, bounded by `http_timeout_secs`.
    pub async fn call<B>(&self, client: IpAddr, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        handle(self, client, request).await
    }
}

async fn handle<B>(api: &Api, client: IpAddr, request: Request<B>) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let node = &api.node;
    let clock = node.lifecycle.clock();
    let started = clock.now();
    let route = router::find(request.uri().path());
    let label = route.map_or(Route::UNMATCHED_LABEL, Route::label);
    let deadline = Duration::from_secs(node.config.limits.http_timeout_secs);
    let response = match tokio::time::timeout(deadline, dispatch(api, client, route, request)).await
    {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error.into_response(),
        Err(_) => ApiError::Unavailable {
            reason: "request timed out",
        }
        .into_response(),
    };
    let seconds = clock.now().duration_since(started).as_secs_f64();
    api.record(label, response.status().as_u16(), seconds);
    response
}

async fn dispatch<B>(
    api: &Api,
    client: IpAddr,
    route: Option<Route>,
    request: Request<B>,
) -> handlers::ApiResult
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let node = &api.node;
    api.limiter
        .check(client, node.lifecycle.clock().now())
        .map_err(|retry_after_secs| ApiError::TooManyRequests { retry_after_secs })?;
    let route = route.ok_or(ApiError::NotFound)?;
    router::check_method(route, request.method())?;
    if route.needs_auth() {
        api.auth.check(request.headers())?;
    }
    match route {
        Route::Health => return Ok(handlers::health(node)),
        Route::HealthLive => return Ok(handlers::live(node)),
        Route::HealthReady => return Ok(handlers::ready(node)),
        // Scraped while draining too: a lame duck's drain shows in Prometheus, and its
        // scrape does not fail until the process is gone.
        Route::MetricsPrometheus => return Ok(handlers::prometheus(node)),
        _ => {}
    }
    if node.is_draining() {
        return Err(ApiError::Unavailable {
            reason: "relay shutting down",
        });
    }
    let bytes_max = node.config.limits.http_body_bytes_max;
    check_content_length(&request, bytes_max)?;
    match route {
        Route::Health => Ok(handlers::health(node)),
        Route::HealthLive => Ok(handlers::live(node)),
        Route::HealthReady => Ok(handlers::ready(node)),
        Route::Metrics => Ok(handlers::metrics(node)),
        Route::MetricsPrometheus => Ok(handlers::prometheus(node)),
        Route::Config => handlers::config(node),
        Route::Relays => Ok(handlers::relays(node)),
        Route::SyncStatus => Ok(handlers::sync_status(node)),
        Route::SyncForce => {
            let body = read_body(request.into_body(), bytes_max).await?;
            handlers::sync_force(node, &body)
        }
        Route::Logs => handlers::logs(node, request.uri().query()),
        Route::OpenApi => handlers::openapi(),
        Route::AdminDrain => Ok(handlers::admin_drain(node)),
        Route::Dashboard => Ok(handlers::dashboard_page()),
        Route::DashboardData => Ok(handlers::json_bytes(api.dashboard.data())),
    }
}

/// # Errors
/// `PayloadTooLarge` when the declared length is over the limit, `BadRequest` when it
/// is not a number.
fn check_content_length<B>(request: &Request<B>, bytes_max: usize) -> Result<(), ApiError> {
    let Some(value) = request.headers().get(CONTENT_LENGTH) else {
        return Ok(());
    };
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::BadRequest("invalid Content-Length".into()))?;
    if length > bytes_max as u64 {
        return Err(ApiError::PayloadTooLarge { bytes_max });
    }
    Ok(())
}

/// Reads the whole body, stopping as soon as it passes `bytes_max` (chunked bodies
/// declare no length up front).
async fn read_body<B>(body: B, bytes_max: usize) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, bytes_max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { bytes_max })
        }
        Err(_) => Err(ApiError::BadRequest(
            "the request body could not be read".into(),
        )),
    }
}
