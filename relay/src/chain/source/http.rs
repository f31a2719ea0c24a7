//! A minimal HTTP/1.1 client over the `Net` seam (HTTPS too, through `conn::tls`): one
//! connection per request, one deadline over the whole exchange (TLS handshake
//! included), a bound on the response body.
//!
//! The chain sources send few, small requests; a pool would add state without benefit,
//! and a fresh connection never inherits a stuck one (turmoil has no retransmission).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;

use super::SourceError;
use crate::conn::tls::ClientTls;
use crate::rt::Net;

/// Where an `http://` or `https://host:port/base` URL points.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// `host:port` to dial.
    pub authority: String,
    /// Path prefix from the URL, without a trailing `/`.
    pub base_path: String,
    /// How to speak TLS to it (`https://`), or `None` (`http://`).
    pub tls: Option<ClientTls>,
}

impl HttpTarget {
    /// Parses `http://host[:port][/path]` (port 80 by default) or `https://…` (port
    /// 443, the server's certificate checked against the bundled web roots; see
    /// [`HttpTarget::with_ca_file`]).
    ///
    /// # Errors
    /// Neither `http://` nor `https://`, or no host.
    pub fn parse(url: &str) -> Result<HttpTarget, SourceError> {
        let (rest, default_port, tls) = match url.strip_prefix("https://") {
            Some(rest) => (rest, 443, Some(tls_client(None)?)),
            None => (
                url.strip_prefix("http://").ok_or_else(|| {
                    SourceError::Config(format!("`{url}` must start with http:// or https://"))
                })?,
                80,
                None,
            ),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            return Err(SourceError::Config(format!("`{url}` has no host")));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:{default_port}")
        };
        let base_path = format!("/{}", path.trim_end_matches('/'));
        let base_path = base_path.trim_end_matches('/').to_string();
        Ok(HttpTarget {
            authority,
            base_path,
            tls,
        })
    }

    /// For an `https://` target, trusts the CA certificates of `ca_file` (a private CA)
    /// instead of the web roots; an `http://` target is left as it is.
    ///
    /// # Errors
    /// The file cannot be read or holds no usable CA certificate.
    pub fn with_ca_file(mut self, ca_file: Option<&std::path::Path>) -> Result<Self, SourceError> {
        if self.tls.is_some() && ca_file.is_some() {
            self.tls = Some(tls_client(ca_file)?);
        }
        Ok(self)
    }
}

fn tls_client(ca_file: Option<&std::path::Path>) -> Result<ClientTls, SourceError> {
    ClientTls::new(ca_file, None).map_err(|e| SourceError::Config(e.to_string()))
}

/// One request: what to send and how long and how much to accept back.
#[derive(Debug, Clone)]
pub struct HttpRequest<'a> {
    pub method: hyper::Method,
    pub path: &'a str,
    pub authorization: Option<String>,
    pub body: Option<Bytes>,
    pub timeout: Duration,
    pub body_bytes_max: usize,
}

/// Sends one request and reads the whole response within `timeout`.
///
/// # Errors
/// Connect failure, timeout, a protocol error, or a body over `body_bytes_max`.
pub async fn send<N: Net>(
    net: &N,
    target: &HttpTarget,
    request: HttpRequest<'_>,
) -> Result<(u16, Bytes), SourceError> {
    let timeout = request.timeout;
    match tokio::time::timeout(timeout, exchange(net, target, request)).await {
        Ok(result) => result,
        Err(_) => Err(SourceError::Timeout {
            addr: target.authority.clone(),
        }),
    }
}

async fn exchange<N: Net>(
    net: &N,
    target: &HttpTarget,
    request: HttpRequest<'_>,
) -> Result<(u16, Bytes), SourceError> {
    let io_error = |e: &dyn std::fmt::Display| SourceError::Io {
        addr: target.authority.clone(),
        message: e.to_string(),
    };
    let stream = crate::conn::tls::dial(net, &target.authority, target.tls.as_ref())
        .await
        .map_err(|e| io_error(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| io_error(&e))?;
    // The connection task ends when `sender` is dropped at the end of this exchange.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let uri = format!("{}{}", target.base_path, request.path);
    let mut builder = Request::builder()
        .method(request.method)
        .uri(uri)
        .header(hyper::header::HOST, &target.authority)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = &request.authorization {
        builder = builder.header(hyper::header::AUTHORIZATION, auth);
    }
    let body = Full::new(request.body.unwrap_or_default());
    let req = builder.body(body).map_err(|e| io_error(&e))?;
    let response = sender.send_request(req).await.map_err(|e| io_error(&e))?;
    let status = response.status().as_u16();
    let limited = Limited::new(response.into_body(), request.body_bytes_max);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| io_error(&e))?
        .to_bytes();
    Ok((status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves URL parsing: default ports, base path kept, trailing slash dropped, https
    // spoken over TLS, other schemes refused.
    #[test]
    fn parses_urls() {
        let t = HttpTarget::parse("http://127.0.0.1:8000/api/").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.base_path.as_str()),
            ("127.0.0.1:8000", "/api")
        );
        let t = HttpTarget::parse("http://core").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.base_path.as_str()),
            ("core:80", "")
        );
        assert!(t.tls.is_none());
        let t = HttpTarget::parse("https://core/rpc").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.base_path.as_str()),
            ("core:443", "/rpc")
        );
        assert!(t.tls.is_some());
        assert!(HttpTarget::parse("ftp://x").is_err());
    }
}
