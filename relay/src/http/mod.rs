//! The HTTP API (port 8091).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::node::Node;
use crate::rt::Listener;

pub async fn serve<L: Listener>(node: Arc<Node>, mut listener: L) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = node.shutdown_started() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            node.clock.sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let service_node = node.clone();
            let service = hyper::service::service_fn(move |request| {
                let node = service_node.clone();
                async move { Ok::<_, Infallible>(route(&node, request)) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).auto_date_header(false);
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route<B>(node: &Node, request: Request<B>) -> Response<Full<Bytes>> {
    let (status, body) = match request.uri().path() {
        "/relays" => (
            StatusCode::OK,
            serde_json::json!({ "relays": node.relays() }),
        ),
        "/sync/status" => (
            StatusCode::OK,
            serde_json::to_value(node.sync_status()).unwrap_or_default(),
        ),
        "/metrics" => (
            StatusCode::OK,
            serde_json::json!({ "sync_metrics": node.sync_metrics() }),
        ),
        "/sync/force" => {
            let types = crate::mesh::SyncType::ALL;
            let peers = node.force_sync(&types);
            (
                StatusCode::OK,
                serde_json::json!({"status": "sync_triggered", "sync_types": types, "peers": peers}),
            )
        }
        "/health" => (
            StatusCode::OK,
            serde_json::json!({
                "status": node.health_status().as_str(),
                "uptime": node.uptime_secs(),
                "version": crate::protocol::VERSION,
                "timestamp": node.unix_secs(),
            }),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"code": "not_found", "message": "no such endpoint"}}),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}
