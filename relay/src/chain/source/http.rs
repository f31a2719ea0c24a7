//! A minimal HTTP/1.1 client over the `Net` seam: one connection per request, one
//! deadline over the whole exchange, a bound on the response body.
//!
//! The chain sources send few, small requests; a pool would add state without benefit,
//! and a fresh connection never inherits a stuck one (turmoil has no retransmission).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::rt::TokioIo;

use super::SourceError;
use crate::rt::Net;

/// Where an `http://host:port/base` URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to dial.
    pub authority: String,
    /// Path prefix from the URL, without a trailing `/`.
    pub base_path: String,
}

impl HttpTarget {
    /// Parses `http://host[:port][/path]`; the port defaults to 80.
    ///
    /// # Errors
    /// Not an `http://` URL (TLS is not spoken: put the source on a trusted network).
    pub fn parse(url: &str) -> Result<HttpTarget, SourceError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| SourceError::Config(format!("`{url}` must start with http://")))?;
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
            format!("{authority}:80")
        };
        let base_path = format!("/{}", path.trim_end_matches('/'));
        let base_path = base_path.trim_end_matches('/').to_string();
        Ok(HttpTarget {
            authority,
            base_path,
        })
    }
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
    let stream = net
        .connect(&target.authority)
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

    // Proves URL parsing: default port, base path kept, trailing slash dropped, https refused.
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
        assert!(HttpTarget::parse("https://x").is_err());
    }
}
