//! A stream's read and write halves for a reader and a writer that one task polls (a
//! wallet connection, see `ws::connection`).
//!
//! Why not `tokio::io::split`: its halves share the stream through an `Arc`, one more
//! heap block per connection, and at a thousand connections one more cold cache line per
//! round trip. Here the stream stays where its owner keeps it (the connection's task
//! state) and both halves borrow it. The lock is never contended (one task polls both
//! halves, one at a time); it is what lets the halves be `Send` without `unsafe`.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Owns the stream both halves borrow.
pub struct Halves<S> {
    stream: Mutex<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Halves<S> {
    pub fn new(stream: S) -> Self {
        Halves {
            stream: Mutex::new(stream),
        }
    }

    /// The two halves; they may be used from one task or from two, never block each
    /// other for longer than one poll of the stream.
    pub fn split(&self) -> (ReadHalf<'_, S>, WriteHalf<'_, S>) {
        (ReadHalf(&self.stream), WriteHalf(&self.stream))
    }
}

fn lock<S>(stream: &Mutex<S>) -> MutexGuard<'_, S> {
    // A poll that panicked left the stream as it was; the connection ends anyway.
    stream.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads from the borrowed stream.
pub struct ReadHalf<'a, S>(&'a Mutex<S>);

/// Writes to the borrowed stream.
pub struct WriteHalf<'a, S>(&'a Mutex<S>);

impl<S: AsyncRead + Unpin> AsyncRead for ReadHalf<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *lock(self.0)).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteHalf<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *lock(self.0)).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *lock(self.0)).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        lock(self.0).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *lock(self.0)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *lock(self.0)).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// What one half writes goes out on the stream; what comes in is read by the other,
    /// both halves alive and polled from one task.
    #[tokio::test]
    async fn both_halves_work_on_the_one_stream() {
        tokio::time::timeout(std::time::Duration::from_secs(10), exchange())
            .await
            .expect("the exchange completes");
    }

    async fn exchange() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let halves = Halves::new(ours);
        let (mut read, mut write) = halves.split();
        write.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        theirs.write_all(b"pong").await.unwrap();
        read.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        write.shutdown().await.unwrap();
        assert_eq!(theirs.read(&mut got).await.unwrap(), 0, "shut down");
    }
}
