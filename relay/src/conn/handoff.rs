//! The hand-over of a connection from the wallet server to the mesh: a relay dials the
//! same WebSocket port wallets use, and its handshake asks for capability `relay`. The
//! wallet server stops there and gives the connection to whoever implements
//! [`PeerHandoff`]; it never learns what a peer link does.

use std::future::Future;
use std::pin::Pin;

use tokio::io::AsyncRead;

use super::Outlet;
use super::codec::FrameReader;
use crate::protocol::Handshake;

/// The read side of a handed-over connection, boxed so both owners can name its type;
/// it may borrow the stream (see `conn::halves`) for `'io`.
pub type BoxedRead<'io> = Box<dyn AsyncRead + Send + Unpin + 'io>;

/// A connection whose first message was a handshake with capability `relay`.
pub struct PeerArrival<'a, 'io> {
    pub handshake: Handshake,
    pub reader: &'a mut FrameReader<BoxedRead<'io>>,
    pub outlet: Outlet,
}

/// Takes connections that asked to be peer links.
pub trait PeerHandoff: Send + Sync + 'static {
    /// Answers the handshake and, if the link is accepted, serves it until it closes.
    /// The reason it closed is left in the outlet's control block.
    fn serve<'a>(
        &'a self,
        arrival: PeerArrival<'a, '_>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}
