//! TLS for both listeners and for dialing out: rustls with the ring provider (no
//! OpenSSL), over any stream of the `Net` seam.
//!
//! Server side: [`ServerTls`] holds the certificate in force as an `Arc` that a reload
//! replaces whole. Each handshake takes the `Arc` in force when it starts, so a reload
//! never touches a live connection, and a certificate that does not load leaves the old
//! one in force. The handshake runs in the connection's own task (never in the accept
//! loop) under a deadline.
//!
//! Client side: [`ClientTls`] verifies servers against a private CA (`ca_file`) or the
//! bundled web roots, and may present a client certificate.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

pub use tokio_rustls::client::TlsStream as ClientStream;
pub use tokio_rustls::server::TlsStream as ServerStream;

/// Both listeners speak HTTP/1.1 (the WebSocket upgrade is an HTTP/1.1 request).
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A certificate, key or CA file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (leaf first, then its chain).
fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certificates.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certificates)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// Why a server-side handshake failed: the label of its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client did not finish within the deadline.
    Timeout,
    /// The client closed or reset the connection mid-handshake.
    Closed,
    /// The client refused this relay's certificate (it sent a certificate alert).
    Certificate,
    /// Not TLS, or TLS this relay does not speak (versions, ciphers, ALPN).
    Protocol,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 4] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Closed,
        HandshakeFailure::Certificate,
        HandshakeFailure::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Certificate => "certificate",
            HandshakeFailure::Protocol => "protocol",
        }
    }

    fn of(error: &std::io::Error) -> HandshakeFailure {
        use rustls::AlertDescription as Alert;
        let rustls_error = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match rustls_error {
            Some(rustls::Error::AlertReceived(
                Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::CertificateRevoked
                | Alert::UnsupportedCertificate
                | Alert::BadCertificateStatusResponse,
            )) => HandshakeFailure::Certificate,
            Some(_) => HandshakeFailure::Protocol,
            None => match error.kind() {
                std::io::ErrorKind::InvalidData => HandshakeFailure::Protocol,
                _ => HandshakeFailure::Closed,
            },
        }
    }
}

/// Size and modification time of the certificate and key files, to notice a change.
type FileStamp = Option<[(u64, Option<SystemTime>); 2]>;

fn stamp(cert: &Path, key: &Path) -> FileStamp {
    let one = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    Some([one(cert)?, one(key)?])
}

/// The server side of TLS for one relay: the certificate in force, reloadable.
pub struct ServerTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    handshake_timeout: Duration,
    config: RwLock<Arc<rustls::ServerConfig>>,
    /// The files as they were at the last load attempt (good or bad), so a bad file is
    /// reported once, not at every check.
    seen: Mutex<FileStamp>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the certificate chain and key (PEM), checking that they belong together.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a key that does not match the certificate.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        handshake_timeout: Duration,
    ) -> Result<ServerTls, TlsError> {
        let seen = stamp(cert_file, key_file);
        let config = Self::server_config(cert_file, key_file)?;
        Ok(ServerTls {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            handshake_timeout,
            config: RwLock::new(config),
            seen: Mutex::new(seen),
        })
    }

    fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = load_certificates(cert)?;
        let key = load_key(key)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }

    /// Loads the files again; on success new handshakes use the new certificate, on
    /// failure the one in force stays. Live connections are never touched.
    ///
    /// # Errors
    /// Why the files could not be used (the old certificate is still in force).
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.seen.lock().expect("stamp lock") = stamp(&self.cert_file, &self.key_file);
        let config = Self::server_config(&self.cert_file, &self.key_file)?;
        *self.config.write().expect("config lock") = config;
        Ok(())
    }

    /// True when the certificate or key file changed (size or modification time) since
    /// the last load attempt.
    pub fn files_changed(&self) -> bool {
        let now = stamp(&self.cert_file, &self.key_file);
        *self.seen.lock().expect("stamp lock") != now
    }

    /// Runs the server handshake on `stream`, bounded by the handshake timeout.
    ///
    /// # Errors
    /// Why the handshake failed (the metric label).
    pub async fn accept<S>(&self, stream: S) -> Result<ServerStream<S>, HandshakeFailure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.config.read().expect("config lock").clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        match tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(error)) => Err(HandshakeFailure::of(&error)),
            Err(_) => Err(HandshakeFailure::Timeout),
        }
    }
}

/// What a listener does with a connection once it speaks (TLS or not): generic over the
/// stream, so a plaintext connection is served with no TLS layer at all.
pub trait Serve: Send + 'static {
    fn serve<S>(self, stream: S) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static;
}

/// Serves `stream` in the clear when `tls` is `None`; else runs the TLS handshake first
/// (in the caller's task, which is the connection's own, never the accept loop), tells
/// `counted` how it went, and serves the connection only when it succeeded.
pub async fn serve<S, F>(
    tls: Option<&ServerTls>,
    stream: S,
    counted: impl FnOnce(Result<(), HandshakeFailure>),
    then: F,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Serve,
{
    let Some(tls) = tls else {
        return then.serve(stream).await;
    };
    match tls.accept(stream).await {
        Ok(stream) => {
            counted(Ok(()));
            then.serve(stream).await;
        }
        Err(failure) => counted(Err(failure)),
    }
}

/// The client side of TLS: whom to trust, and what certificate to show, if any.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// A client certificate and its key (PEM files).
#[derive(Debug, Clone, Copy)]
pub struct ClientCert<'a> {
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
}

impl ClientTls {
    /// Trusts the CA certificates of `ca_file` (a private CA, or a self-signed peer) when
    /// given, else the bundled web roots (Mozilla's list); presents `client_cert` when
    /// given.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a key that does not match its certificate.
    pub fn new(ca_file: Option<&Path>, client_cert: Option<ClientCert>) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                for certificate in load_certificates(path)? {
                    roots
                        .add(certificate)
                        .map_err(|e| file_error(path, format!("not a usable CA: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match client_cert {
            Some(c) => builder
                .with_client_auth_cert(load_certificates(c.cert_file)?, load_key(c.key_file)?)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// Runs the client handshake on `stream`, checking the server's certificate for
    /// `host` (a name or an IP address). Callers bound the wait with a timeout.
    ///
    /// # Errors
    /// A host that is not a valid server name, or a failed handshake (an untrusted or
    /// mismatched certificate among them).
    pub async fn connect<S>(&self, host: &str, stream: S) -> std::io::Result<ClientStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = server_name(host)?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
    }
}

/// A dialed stream: in the clear, or over TLS when the far side is configured so. The
/// TLS state is boxed so a plaintext stream stays small.
pub enum Dialed<S> {
    Plain(S),
    Tls(Box<ClientStream<S>>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Dialed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Dialed::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Dialed::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Dialed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Dialed::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Dialed::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Dialed::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Dialed::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Dialed::Plain(s) => s.is_write_vectored(),
            Dialed::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Dialed::Plain(s) => Pin::new(s).poll_flush(cx),
            Dialed::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Dialed::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Dialed::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Opens a stream to `address` (`host:port`) through `net`, then runs the TLS client
/// handshake over it when `tls` is given. Callers bound the wait with a timeout.
///
/// # Errors
/// The connection or the TLS handshake failed.
pub async fn dial<N: crate::rt::Net>(
    net: &N,
    address: &str,
    tls: Option<&ClientTls>,
) -> std::io::Result<Dialed<N::Stream>> {
    let stream = net.connect(address).await?;
    match tls {
        None => Ok(Dialed::Plain(stream)),
        Some(tls) => Ok(Dialed::Tls(Box::new(tls.connect(address, stream).await?))),
    }
}

/// The host of `host:port` (IPv6 without its brackets) as a TLS server name.
fn server_name(host_port: &str) -> std::io::Result<ServerName<'static>> {
    let host = host_port
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(host_port, |(host, _)| host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_string()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{host}` is not a TLS server name: {e}"),
        )
    })
}

#[cfg(test)]
mod tests;
