//! Where the load goes: `ws[s]://host:port/path` and `http[s]://host:port` addresses,
//! and the connections to them (TLS for `wss://` and `https://`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

/// A WebSocket endpoint, resolved once.
#[derive(Debug, Clone)]
pub struct WsTarget {
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host_header: String,
    /// Path and query of the upgrade request.
    pub path: String,
    /// `wss://`: how to speak TLS to it.
    pub tls: Option<Tls>,
}

/// An HTTP API endpoint, resolved once.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub addr: SocketAddr,
    pub host_header: String,
    /// `https://`: how to speak TLS to it.
    pub tls: Option<Tls>,
}

/// TLS towards one endpoint: whom to trust (a `--ca-file`, else the bundled web roots)
/// and the name its certificate must carry.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

impl Tls {
    /// # Errors
    /// An unreadable or empty CA file, or a host that is not a TLS server name.
    pub fn new(authority: &str, ca_file: Option<&Path>) -> anyhow::Result<Tls> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let certificates = CertificateDer::pem_file_iter(path)
                    .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                    .with_context(|| format!("reading --ca-file {}", path.display()))?;
                anyhow::ensure!(
                    !certificates.is_empty(),
                    "--ca-file {}: no PEM certificate",
                    path.display()
                );
                for certificate in certificates {
                    roots.add(certificate)?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            name: ServerName::try_from(host.to_string())
                .with_context(|| format!("`{host}` is not a TLS server name"))?,
        })
    }
}

/// The two halves of a connection, whatever it runs over.
pub type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
pub type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Opens a TCP connection to `addr` (from `source` when given), then the TLS session
/// when `tls` is given; returns its halves. Callers bound the wait with a timeout.
///
/// # Errors
/// The connection or the TLS handshake (an untrusted certificate among them) failed.
pub async fn open(
    addr: SocketAddr,
    source: Option<IpAddr>,
    tls: Option<&Tls>,
) -> std::io::Result<(ReadHalf, WriteHalf)> {
    let stream = crate::ws::connect_tcp(addr, source).await?;
    match tls {
        None => {
            let (read, write) = stream.into_split();
            Ok((Box::new(read), Box::new(write)))
        }
        Some(tls) => {
            let stream = tls.connector.connect(tls.name.clone(), stream).await?;
            let (read, write) = tokio::io::split(stream);
            Ok((Box::new(read), Box::new(write)))
        }
    }
}

/// Splits `scheme://host:port/path` (or `<scheme>s://`, over TLS) into (`host:port`,
/// `/path`, TLS or not); the port is required.
///
/// # Errors
/// Another scheme or a missing port.
pub fn split_url<'a>(url: &'a str, scheme: &str) -> anyhow::Result<(&'a str, &'a str, bool)> {
    let secure = format!("{scheme}s");
    let (rest, tls) = if let Some(rest) = url.strip_prefix(&format!("{secure}://")) {
        (rest, true)
    } else if let Some(rest) = url.strip_prefix(&format!("{scheme}://")) {
        (rest, false)
    } else {
        bail!("`{url}` must start with {scheme}:// or {secure}://");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let port = authority
        .rsplit_once(':')
        .map(|(_, port)| port)
        .ok_or_else(|| anyhow::anyhow!("`{url}` needs an explicit port"))?;
    if authority.starts_with(':') || port.parse::<u16>().is_err() {
        bail!("`{url}`: bad host or port");
    }
    Ok((authority, path, tls))
}

async fn resolve(authority: &str) -> anyhow::Result<SocketAddr> {
    tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("resolving {authority}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{authority} resolves to no address"))
}

impl WsTarget {
    /// # Errors
    /// A malformed URL, a name that does not resolve, or a bad `ca_file` (used for
    /// `wss://` only).
    pub async fn resolve(url: &str, ca_file: Option<&Path>) -> anyhow::Result<WsTarget> {
        let (authority, path, tls) = split_url(url, "ws")?;
        Ok(WsTarget {
            addr: resolve(authority).await?,
            host_header: authority.to_string(),
            path: path.to_string(),
            tls: tls.then(|| Tls::new(authority, ca_file)).transpose()?,
        })
    }
}

impl HttpTarget {
    /// # Errors
    /// A malformed URL, a name that does not resolve, or a bad `ca_file` (used for
    /// `https://` only).
    pub async fn resolve(url: &str, ca_file: Option<&Path>) -> anyhow::Result<HttpTarget> {
        let (authority, _, tls) = split_url(url, "http")?;
        Ok(HttpTarget {
            addr: resolve(authority).await?,
            host_header: authority.to_string(),
            tls: tls.then(|| Tls::new(authority, ca_file)).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// URLs split into authority and path; malformed ones are refused with a reason.
    #[test]
    fn urls_split_or_are_refused() {
        assert_eq!(
            split_url("ws://127.0.0.1:8090", "ws").unwrap(),
            ("127.0.0.1:8090", "/", false)
        );
        assert_eq!(
            split_url("ws://localhost:8090/ws?x=1", "ws").unwrap(),
            ("localhost:8090", "/ws?x=1", false)
        );
        assert_eq!(split_url("wss://h:1/", "ws").unwrap(), ("h:1", "/", true));
        assert_eq!(
            split_url("https://h:8091", "http").unwrap(),
            ("h:8091", "/", true)
        );
        assert!(split_url("wsss://h:1/", "ws").is_err());
        assert!(split_url("ws://h/", "ws").is_err());
        assert!(split_url("ws://h:99999/", "ws").is_err());
        assert!(split_url("http://h:1", "ws").is_err());
        assert!(split_url("http://h:8091", "http").is_ok());
    }
}
