use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// Binding listeners and dialing peers.
///
/// `main` binds the relay's listeners through this and hands them to `run`; the mesh and
/// the chain sources dial through it. The simulator implements it over turmoil.
pub trait Net: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    type Listener: Listener<Stream = Self::Stream>;

    /// Binds a listener on `addr` (`host:port`).
    fn bind(&self, addr: &str) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// Opens a stream to `addr` (`host:port`). Callers bound the wait with a timeout.
    fn connect(&self, addr: &str) -> impl Future<Output = io::Result<Self::Stream>> + Send;

    /// Every address `name` (`host:port`) resolves to now, as DNS answers it (peer
    /// discovery). Callers bound the wait with a timeout.
    fn resolve(&self, name: &str) -> impl Future<Output = io::Result<Vec<SocketAddr>>> + Send;
}

/// An accepting socket.
pub trait Listener: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;

    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Real sockets through tokio.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioNet;

/// A tokio TCP listener.
#[derive(Debug)]
pub struct TokioListener(tokio::net::TcpListener);

impl TokioListener {
    pub fn new(listener: tokio::net::TcpListener) -> Self {
        TokioListener(listener)
    }
}

impl Net for TokioNet {
    type Stream = tokio::net::TcpStream;
    type Listener = TokioListener;

    #[allow(clippy::disallowed_methods)] // The seam itself.
    async fn bind(&self, addr: &str) -> io::Result<TokioListener> {
        let socket_addr = resolve(addr).await?;
        let socket = if socket_addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(socket_addr)?;
        // somaxconn on this class of machine is 4096; a deep backlog absorbs connection bursts.
        Ok(TokioListener(socket.listen(4096)?))
    }

    #[allow(clippy::disallowed_methods)] // The seam itself.
    async fn connect(&self, addr: &str) -> io::Result<tokio::net::TcpStream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn resolve(&self, name: &str) -> io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host(name).await?.collect())
    }
}

impl Listener for TokioListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(tokio::net::TcpStream, SocketAddr)> {
        let (stream, addr) = self.0.accept().await?;
        stream.set_nodelay(true)?;
        Ok((stream, addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

async fn resolve(addr: &str) -> io::Result<SocketAddr> {
    tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot resolve {addr}"),
        )
    })
}
