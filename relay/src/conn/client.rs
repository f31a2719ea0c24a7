//! The client side of the WebSocket upgrade, shared by the mesh dialer and by any tool
//! that talks to a relay (tests, the simulator).

use std::future::Future;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;

/// Runs hyper's background connection task on tokio, as the client handshake needs.
pub struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

/// An HTTP/1.1 request asking the relay at `address` (`host:port`) to upgrade to
/// WebSocket.
pub fn upgrade_request(address: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method("GET")
        .uri(format!("http://{address}/"))
        .header("Host", address)
        .header("Upgrade", "websocket")
        .header("Connection", "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(Empty::new())
        .expect("an address that fits a URI and a Host header")
}
