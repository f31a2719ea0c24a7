//! Every metric name the relay exports, in one place. Prometheus conventions: the
//! `sdk_relay_` prefix, base units, `_total` for counters, `_seconds` / `_bytes` units.

// WebSocket
pub const WS_CONNECTIONS: &str = "sdk_relay_ws_connections";
pub const WS_CONNECTIONS_ACCEPTED_TOTAL: &str = "sdk_relay_ws_connections_accepted_total";
/// Label `reason`: `limit`, `draining`, `bad_upgrade`, `accept_error`, `pending_upgrades`,
/// `per_address`.
pub const WS_CONNECTIONS_REFUSED_TOTAL: &str = "sdk_relay_ws_connections_refused_total";
/// Label `outcome`: `accepted`, `rejected`, `timeout`, `protocol_error`.
pub const WS_HANDSHAKES_TOTAL: &str = "sdk_relay_ws_handshakes_total";
/// Label `type`: the message type.
pub const WS_MESSAGES_RECEIVED_TOTAL: &str = "sdk_relay_ws_messages_received_total";
/// Label `type`: the message type.
pub const WS_MESSAGES_SENT_TOTAL: &str = "sdk_relay_ws_messages_sent_total";
pub const WS_RECEIVED_BYTES_TOTAL: &str = "sdk_relay_ws_received_bytes_total";
pub const WS_SENT_BYTES_TOTAL: &str = "sdk_relay_ws_sent_bytes_total";
/// Label `code`: the WebSocket close code.
pub const WS_CLOSES_TOTAL: &str = "sdk_relay_ws_closes_total";
pub const WS_SLOW_CONSUMER_DISCONNECTS_TOTAL: &str = "sdk_relay_ws_slow_consumer_disconnects_total";
pub const WS_ERRORS_SENT_TOTAL: &str = "sdk_relay_ws_errors_sent_total";
/// Messages refused (`rate_limited`) because their connection was over
/// `ws_messages_per_second_max` / `ws_messages_burst_max`.
pub const WS_RATE_LIMITED_TOTAL: &str = "sdk_relay_ws_rate_limited_total";

// HTTP API
/// Labels `route` (the endpoint, `unmatched` for unknown paths, `connection_limit` for
/// connections refused over `http_connections_max`, `address_limit` for those refused
/// over `http_connections_per_address_max`) and `status` (numeric code).
pub const HTTP_REQUESTS_TOTAL: &str = "sdk_relay_http_requests_total";
/// Label `route`. Histogram.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "sdk_relay_http_request_duration_seconds";
pub const HTTP_CONNECTIONS: &str = "sdk_relay_http_connections";

// Mesh
/// Label `health`: `healthy`, `degraded`, `unreachable`.
pub const MESH_PEERS: &str = "sdk_relay_mesh_peers";
pub const MESH_KNOWN_RELAYS: &str = "sdk_relay_mesh_known_relays";
pub const MESH_CONNECTIONS: &str = "sdk_relay_mesh_connections";
pub const MESH_DIAL_ADDRESSES: &str = "sdk_relay_mesh_dial_addresses";
pub const MESH_REJECTED_TOTAL: &str = "sdk_relay_mesh_rejected_total";
/// Label `reason` (`metrics::HANDSHAKE_REFUSALS`).
pub const MESH_HANDSHAKES_REFUSED_TOTAL: &str = "sdk_relay_mesh_handshakes_refused_total";
/// Label `reason` (`metrics::SIGNATURE_FAILURES`).
pub const MESH_SIGNATURES_FAILED_TOTAL: &str = "sdk_relay_mesh_signatures_failed_total";
/// Label `reason` (`metrics::RECORD_REJECTIONS`).
pub const MESH_RECORDS_REJECTED_TOTAL: &str = "sdk_relay_mesh_records_rejected_total";
/// Label `sync_type`.
pub const SYNC_REQUESTS_TOTAL: &str = "sdk_relay_sync_requests_total";
/// Label `sync_type`.
pub const SYNC_RESPONSES_TOTAL: &str = "sdk_relay_sync_responses_total";
/// Label `sync_type`. Sync requests received from peers.
pub const SYNC_REQUESTS_RECEIVED_TOTAL: &str = "sdk_relay_sync_requests_received_total";
/// Label `sync_type`.
pub const SYNC_ERRORS_TOTAL: &str = "sdk_relay_sync_errors_total";
/// Label `sync_type`. Histogram.
pub const SYNC_ROUND_TRIP_SECONDS: &str = "sdk_relay_sync_round_trip_seconds";
pub const DEDUP_HITS_TOTAL: &str = "sdk_relay_dedup_hits_total";
pub const DEDUP_MISSES_TOTAL: &str = "sdk_relay_dedup_misses_total";
pub const NOTIFICATIONS_PUBLISHED_TOTAL: &str = "sdk_relay_notifications_published_total";
pub const NOTIFICATIONS_FORWARDED_TOTAL: &str = "sdk_relay_notifications_forwarded_total";
pub const NOTIFICATIONS_DELIVERED_TOTAL: &str = "sdk_relay_notifications_delivered_total";
pub const ANTI_ENTROPY_REPAIRS_TOTAL: &str = "sdk_relay_anti_entropy_repairs_total";

// Chain watcher
pub const CHAIN_SCANNED_HEIGHT: &str = "sdk_relay_chain_scanned_height";
pub const CHAIN_TIP_HEIGHT: &str = "sdk_relay_chain_tip_height";
pub const CHAIN_PAYMENTS_DETECTED_TOTAL: &str = "sdk_relay_chain_payments_detected_total";
pub const CHAIN_SOURCE_ERRORS_TOTAL: &str = "sdk_relay_chain_source_errors_total";

// Process
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "sdk_relay_process_resident_memory_bytes";
pub const PROCESS_CPU_SECONDS_TOTAL: &str = "sdk_relay_process_cpu_seconds_total";
pub const PROCESS_OPEN_FDS: &str = "sdk_relay_process_open_fds";
pub const UPTIME_SECONDS: &str = "sdk_relay_uptime_seconds";
