//! Where the load goes: `ws://host:port/path` and `http://host:port` addresses.

use std::net::SocketAddr;

use anyhow::{Context, bail};

/// A WebSocket endpoint, resolved once.
#[derive(Debug, Clone)]
pub struct WsTarget {
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host_header: String,
    /// Path and query of the upgrade request.
    pub path: String,
}

/// An HTTP API endpoint, resolved once.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    pub addr: SocketAddr,
    pub host_header: String,
}

/// Splits `scheme://host:port/path` into (`host:port`, `/path`); the scheme must be
/// `scheme` and the port is required.
///
/// # Errors
/// Another scheme, a missing port, or TLS.
pub fn split_url<'a>(url: &'a str, scheme: &str) -> anyhow::Result<(&'a str, &'a str)> {
    let Some(rest) = url.strip_prefix(scheme).and_then(|r| r.strip_prefix("://")) else {
        bail!("`{url}` must start with {scheme}:// (TLS is not supported)");
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
    Ok((authority, path))
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
    /// A malformed URL or a name that does not resolve.
    pub async fn resolve(url: &str) -> anyhow::Result<WsTarget> {
        let (authority, path) = split_url(url, "ws")?;
        Ok(WsTarget {
            addr: resolve(authority).await?,
            host_header: authority.to_string(),
            path: path.to_string(),
        })
    }
}

impl HttpTarget {
    /// # Errors
    /// A malformed URL or a name that does not resolve.
    pub async fn resolve(url: &str) -> anyhow::Result<HttpTarget> {
        let (authority, _) = split_url(url, "http")?;
        Ok(HttpTarget {
            addr: resolve(authority).await?,
            host_header: authority.to_string(),
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
            ("127.0.0.1:8090", "/")
        );
        assert_eq!(
            split_url("ws://localhost:8090/ws?x=1", "ws").unwrap(),
            ("localhost:8090", "/ws?x=1")
        );
        assert!(split_url("wss://h:1/", "ws").is_err());
        assert!(split_url("ws://h/", "ws").is_err());
        assert!(split_url("ws://h:99999/", "ws").is_err());
        assert!(split_url("http://h:1", "ws").is_err());
        assert!(split_url("http://h:8091", "http").is_ok());
    }
}
