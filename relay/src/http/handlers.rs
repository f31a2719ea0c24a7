//! One function per endpoint: read the node, shape the answer of the specification.
//! Inputs arrive already routed, authenticated and size-checked (see `mod.rs`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tracing::Level;

use super::error::ApiError;
use crate::health::HealthStatus;
use crate::node::Node;
use crate::process;
use crate::protocol::peer::{PeerHealth, SyncType};

/// `GET /logs` returns at most this many records per request.
pub const LOG_LIMIT_MAX: usize = 1000;
const LOG_LIMIT_DEFAULT: usize = 100;

pub type ApiResult = Result<Response<Full<Bytes>>, ApiError>;

pub fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// 200 while healthy or degraded, 503 (with `Retry-After`) when unhealthy or draining;
/// `checks` holds the figures the verdict rests on and `reasons` says what is wrong.
pub fn health(node: &Node) -> Response<Full<Bytes>> {
    let status = node.health_status();
    let limits = &node.config.limits;
    let relays = node.relays();
    let peers: Vec<_> = relays.iter().filter(|r| !r.is_self).collect();
    let connected = peers.iter().filter(|r| r.connected).count();
    let mut reasons: Vec<String> = Vec::new();
    if node.is_draining() {
        reasons.push("draining: the relay is shutting down".into());
    }
    if node.ws_connections() >= limits.ws_connections_max {
        reasons.push("ws_connections_max reached: new WebSocket clients are refused".into());
    }
    for peer in peers.iter().filter(|r| r.health != PeerHealth::Healthy) {
        reasons.push(format!(
            "peer {} is {}",
            peer.relay_id,
            peer.health.as_str()
        ));
    }
    let chain = node.chain.status();
    if let Some(why) = &chain.degraded {
        reasons.push(format!("chain: {why}"));
    }
    if status != HealthStatus::Healthy && reasons.is_empty() {
        reasons.push(format!(
            "the relay's own checks report it {}",
            status.as_str()
        ));
    }
    let body = json!({
        "status": status.as_str(),
        "uptime": node.uptime_secs(),
        "version": crate::protocol::VERSION,
        "timestamp": node.unix_secs(),
        "relay_id": node.relay_id(),
        "checks": {
            "draining": node.is_draining(),
            "ws_connections": node.client_connections(),
            "ws_connections_max": limits.ws_connections_max,
            "known_relays": relays.len(),
            "configured_peers": node.config.mesh.peers.len(),
            "connected_peers": connected,
            "mesh_open": node.config.mesh_is_open(),
            "mesh_trust": mesh_trust(&node.config),
        },
        "reasons": reasons,
        "chain": chain_json(&chain),
    });
    if status == HealthStatus::Unhealthy {
        let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            HeaderValue::from(super::error::UNAVAILABLE_RETRY_AFTER_SECS),
        );
        response
    } else {
        json_response(StatusCode::OK, &body)
    }
}

/// What gates the mesh: `open` (any relay may join), `keys` (`mesh.trusted_keys`),
/// `token` (`auth.mesh_token`), or `keys+token`.
fn mesh_trust(config: &crate::config::Config) -> &'static str {
    match (
        config.mesh.trusted_keys.is_empty(),
        config.auth.mesh_token.is_none(),
    ) {
        (true, true) => "open",
        (false, true) => "keys",
        (true, false) => "token",
        (false, false) => "keys+token",
    }
}

/// `GET /health/live`: the process serves requests. Always 200, draining or not.
pub fn live(node: &Node) -> Response<Full<Bytes>> {
    let body = json!({
        "status": "live",
        "relay_id": node.relay_id(),
        "uptime": node.uptime_secs(),
        "timestamp": node.unix_secs(),
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /health/ready`: 200 when the relay accepts work (not draining), its configured
/// chain sources are not degraded and at least `mesh.ready_peers_min` peers are linked;
/// else 503 with `Retry-After` and one entry in `reasons` per unmet condition.
pub fn ready(node: &Node) -> Response<Full<Bytes>> {
    let draining = node.is_draining();
    let chain = node.chain.status();
    let linked = node
        .relays()
        .iter()
        .filter(|r| !r.is_self && r.connected)
        .count();
    let ready_peers_min = node.config.mesh.ready_peers_min;
    let mut reasons: Vec<String> = Vec::new();
    if draining {
        reasons.push("draining: the relay is shutting down".into());
    }
    if let Some(why) = &chain.degraded {
        reasons.push(format!("chain: degraded: {why}"));
    }
    if linked < ready_peers_min {
        reasons.push(format!(
            "peers: {linked} linked, mesh.ready_peers_min is {ready_peers_min}"
        ));
    }
    let ready = reasons.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "relay_id": node.relay_id(),
        "uptime": node.uptime_secs(),
        "timestamp": node.unix_secs(),
        "checks": {
            "draining": draining,
            "chain_degraded": chain.degraded.is_some(),
            "linked_peers": linked,
            "ready_peers_min": ready_peers_min,
        },
        "reasons": reasons,
    });
    if ready {
        json_response(StatusCode::OK, &body)
    } else {
        let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            HeaderValue::from(super::error::UNAVAILABLE_RETRY_AFTER_SECS),
        );
        response
    }
}

/// The specification's JSON metrics; `total_requests` is read back from the same
/// registry Prometheus scrapes.
pub fn metrics(node: &Node) -> Response<Full<Bytes>> {
    let process::ProcessFigures {
        resident_bytes: memory_bytes,
        cpu_percent,
    } = node.process_figures();
    let exposition = node.metrics.exposition();
    let total_requests = exposition.sum(crate::metrics::names::HTTP_REQUESTS_TOTAL) as u64;
    let body = json!({
        "sync_metrics": node.sync_metrics(),
        "system_metrics": {
            "memory_usage": process::format_megabytes(memory_bytes),
            "memory_bytes": memory_bytes,
            "cpu_usage": process::format_percent(cpu_percent),
            "cpu_percent": cpu_percent,
            "active_connections": node.client_connections(),
            "total_requests": total_requests,
            "http_connections": exposition.sum(crate::metrics::names::HTTP_CONNECTIONS) as u64,
            "uptime": node.uptime_secs(),
        },
    });
    json_response(StatusCode::OK, &body)
}

pub fn prometheus(node: &Node) -> Response<Full<Bytes>> {
    node.refresh_sampled_metrics();
    let mut response = Response::new(Full::new(Bytes::from(node.metrics.render())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The effective configuration under its TOML keys, secrets replaced by `***`
/// (`crate::secret::REDACTED`, as in `check-config`); unset secrets stay `null`.
/// `bitcoin_core` and `blindbit` are always objects, as the specification shows them:
/// `{"enabled": false}` when unset, their fields and `"enabled": true` when set (the TOML
/// input has no `enabled` key: a table present is a source enabled).
pub fn config(node: &Node) -> ApiResult {
    let mut value = serde_json::to_value(node.config.redacted())
        .map_err(|e| ApiError::Internal(format!("config does not serialize: {e}")))?;
    if let Some(map) = value.as_object_mut() {
        for source in ["bitcoin_core", "blindbit"] {
            let view = match map.remove(source) {
                Some(serde_json::Value::Object(mut fields)) => {
                    fields.insert("enabled".into(), true.into());
                    serde_json::Value::Object(fields)
                }
                _ => json!({ "enabled": false }),
            };
            map.insert(source.into(), view);
        }
    }
    Ok(json_response(StatusCode::OK, &value))
}

pub fn relays(node: &Node) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &json!({ "relays": node.relays() }))
}

pub fn sync_status(node: &Node) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &json!(node.sync_status()))
}

/// Triggers the requested sync types (all when the body is absent or `{}`).
pub fn sync_force(node: &Node, body: &[u8]) -> ApiResult {
    let types = parse_sync_types(body)?;
    let peers = node.force_sync(&types);
    let body = json!({
        "status": "sync_triggered",
        "sync_types": types,
        "timestamp": node.unix_secs(),
        "peers": peers,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// # Errors
/// `BadRequest` for malformed JSON, a non-object body, or an unknown sync type.
pub fn parse_sync_types(body: &[u8]) -> Result<Vec<SyncType>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SyncType::ALL.to_vec());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))?;
    let Value::Object(object) = value else {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    let Some(requested) = object.get("sync_types") else {
        return Ok(SyncType::ALL.to_vec());
    };
    let Some(names) = requested.as_array() else {
        return Err(ApiError::BadRequest(
            "`sync_types` must be an array of strings".into(),
        ));
    };
    if names.is_empty() {
        return Err(ApiError::BadRequest(
            "`sync_types` must not be empty".into(),
        ));
    }
    let mut types = Vec::with_capacity(SyncType::ALL.len());
    for name in names {
        let name = name.as_str().ok_or_else(|| {
            ApiError::BadRequest("`sync_types` must be an array of strings".into())
        })?;
        let sync_type = SyncType::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown sync type `{name}` (StateSync, HealthSync, MetricsSync)"
            ))
        })?;
        if !types.contains(&sync_type) {
            types.push(sync_type);
        }
    }
    Ok(types)
}

pub fn logs(node: &Node, query: Option<&str>) -> ApiResult {
    let (level, limit) = parse_logs_query(query.unwrap_or(""))?;
    let logs = node.logs.recent(level, limit);
    Ok(json_response(StatusCode::OK, &json!({ "logs": logs })))
}

/// `level` (minimum severity) and `limit` from the query string; other keys are ignored.
///
/// # Errors
/// `BadRequest` naming the parameter when a value is not allowed.
pub fn parse_logs_query(query: &str) -> Result<(Level, usize), ApiError> {
    let mut level = Level::INFO;
    let mut limit = LOG_LIMIT_DEFAULT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "level" => {
                level = match value {
                    "debug" => Level::DEBUG,
                    "info" => Level::INFO,
                    "warn" => Level::WARN,
                    "error" => Level::ERROR,
                    _ => {
                        return Err(ApiError::BadRequest(
                            "`level` must be one of debug, info, warn, error".into(),
                        ));
                    }
                }
            }
            "limit" => {
                limit = Some(value)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .filter(|n| (1..=LOG_LIMIT_MAX).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`limit` must be an integer from 1 to {LOG_LIMIT_MAX}"
                        ))
                    })?;
            }
            _ => {}
        }
    }
    Ok((level, limit))
}

pub fn openapi() -> ApiResult {
    let document = super::openapi::document()?;
    Ok(json_response(StatusCode::OK, document))
}

/// The chain watcher as `/health` reports it: `disabled` without sources, else scanned
/// height, Core tip, Blindbit height, lag, and what is wrong if anything.
fn chain_json(chain: &crate::chain::ChainStatus) -> serde_json::Value {
    let watcher = if !chain.enabled {
        "disabled"
    } else if chain.degraded.is_some() {
        "degraded"
    } else {
        "ok"
    };
    json!({
        "watcher": watcher,
        "scanned_height": chain.scanned_height,
        "core_tip": chain.core_tip,
        "blindbit_height": chain.blindbit_height,
        "lag": chain.lag,
        "degraded": chain.degraded,
        "wallets": chain.wallets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_types_default_to_all_and_reject_unknown_names() {
        assert_eq!(parse_sync_types(b"").unwrap(), SyncType::ALL);
        assert_eq!(parse_sync_types(b" {} ").unwrap(), SyncType::ALL);
        assert_eq!(
            parse_sync_types(br#"{"sync_types":["HealthSync","HealthSync"]}"#).unwrap(),
            [SyncType::HealthSync]
        );
        let unknown = parse_sync_types(br#"{"sync_types":["Bogus"]}"#).unwrap_err();
        assert!(unknown.to_string().contains("Bogus"), "{unknown}");
        assert!(parse_sync_types(b"{").is_err());
        assert!(parse_sync_types(b"[]").is_err());
        assert!(parse_sync_types(br#"{"sync_types":[]}"#).is_err());
    }

    #[test]
    fn logs_query_defaults_and_bounds() {
        assert_eq!(parse_logs_query("").unwrap(), (Level::INFO, 100));
        assert_eq!(
            parse_logs_query("level=warn&limit=1000").unwrap(),
            (Level::WARN, 1000)
        );
        assert!(parse_logs_query("limit=1001").is_err());
        assert!(parse_logs_query("limit=0").is_err());
        assert!(parse_logs_query("limit=x").is_err());
        assert!(parse_logs_query("limit=+5").is_err());
        assert!(parse_logs_query("limit=").is_err());
        assert!(parse_logs_query("level=loud").is_err());
    }
}
