//! The accept loop both listeners share: it never exits on an accept error (for instance
//! out of file descriptors) but backs off and retries, so running out of descriptors
//! degrades service instead of ending it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::rt::{Listener, SharedClock};

/// Accept errors back off between these bounds, doubling each time.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts until `stop` completes, handing each connection to `on_accept`; `on_error`
/// sees each accept failure (to count it) before the loop backs off.
pub async fn accept_loop<L: Listener>(
    listener: &mut L,
    clock: &SharedClock,
    stop: impl Future<Output = ()>,
    mut on_accept: impl FnMut(L::Stream, SocketAddr),
    on_error: impl Fn(&std::io::Error, Duration),
) {
    tokio::pin!(stop);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                on_accept(stream, peer);
            }
            Err(error) => {
                on_error(&error, backoff);
                tokio::select! {
                    biased;
                    () = &mut stop => return,
                    () = clock.sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}
