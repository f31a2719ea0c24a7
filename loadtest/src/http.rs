//! A minimal HTTP/1.1 client for the limit checks: keep-alive requests, bodies of any
//! size written while the response is read (a server may answer 413 before reading a
//! body), and responses read to the end so the connection can be reused.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::target::HttpTarget;
use crate::target::{ReadHalf, WriteHalf};
use crate::ws::find;

/// Largest response head accepted.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Largest response body read (responses of the checked endpoints are small).
const BODY_BYTES_MAX: usize = 16 << 20;
/// Body bytes written per write call.
const BODY_CHUNK_BYTES: usize = 64 * 1024;

/// A response status line and headers (names lowercased).
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses `HTTP/1.1 200 OK\r\nName: value\r\n...\r\n\r\n`.
///
/// # Errors
/// Not an HTTP/1.x response head.
pub fn parse_head(bytes: &[u8]) -> anyhow::Result<Head> {
    let text = std::str::from_utf8(bytes).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("bad status line `{status_line}`");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("bad status line `{status_line}`");
    }
    let status = code
        .parse()
        .with_context(|| format!("bad status `{code}`"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Head { status, headers })
}

/// `GET path` on a fresh connection; returns the body of a 200 response.
///
/// # Errors
/// Connection failure, timeout, or another status.
pub async fn get_body(
    target: &HttpTarget,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    tokio::time::timeout(timeout, async {
        let mut conn = HttpConn::open(target, None, timeout).await?;
        conn.keep_body = true;
        let head = conn.request("GET", path, 0).await?;
        anyhow::ensure!(head.status == 200, "GET {path} answered {}", head.status);
        Ok(std::mem::take(&mut conn.body))
    })
    .await
    .with_context(|| format!("GET {path} timed out"))?
}

/// One keep-alive connection to the HTTP API.
pub struct HttpConn {
    read: ReadHalf,
    write: Option<WriteHalf>,
    buf: BytesMut,
    host_header: String,
    /// The server said `Connection: close`, or closed.
    pub closed: bool,
    /// Keep the last response body in `body` instead of dropping it.
    keep_body: bool,
    body: Vec<u8>,
}

impl HttpConn {
    /// # Errors
    /// The connection fails or times out.
    pub async fn open(
        target: &HttpTarget,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> anyhow::Result<HttpConn> {
        let opening = crate::target::open(target.addr, source, target.tls.as_ref());
        let (read, write) = tokio::time::timeout(timeout, opening)
            .await
            .context("connect timed out")?
            .with_context(|| format!("connecting to {}", target.addr))?;
        Ok(HttpConn {
            read,
            write: Some(write),
            buf: BytesMut::with_capacity(8 * 1024),
            host_header: target.host_header.clone(),
            closed: false,
            keep_body: false,
            body: Vec::new(),
        })
    }

    /// Sends a request with a body of `body_bytes` spaces (none when 0) and returns the
    /// response head; the body is read and dropped.
    ///
    /// # Errors
    /// I/O errors, a malformed response, or no response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body_bytes: usize,
    ) -> anyhow::Result<Head> {
        let mut write = self.write.take().context("connection already closed")?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {body_bytes}\r\n\r\n",
            self.host_header
        );
        let writing = tokio::spawn(async move {
            write.write_all(head.as_bytes()).await?;
            let chunk = vec![b' '; BODY_CHUNK_BYTES.min(body_bytes)];
            let mut left = body_bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                write.write_all(&chunk[..n]).await?;
                left -= n;
            }
            write.flush().await?;
            Ok::<_, std::io::Error>(write)
        });
        let response = self.read_response().await;
        match response {
            Ok(_) if !self.closed => match writing.await {
                Ok(Ok(write)) => self.write = Some(write),
                _ => self.closed = true,
            },
            _ => {
                writing.abort();
                self.closed = true;
            }
        }
        response
    }

    async fn read_response(&mut self) -> anyhow::Result<Head> {
        let head_len = loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                break end + 4;
            }
            if self.buf.len() > HEAD_BYTES_MAX {
                bail!("response head too long");
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buf[..head_len])?;
        self.buf.advance(head_len);
        if head
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            self.closed = true;
        }
        if head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            self.skip_chunked().await?;
        } else {
            let len: usize = head
                .header("content-length")
                .map(str::parse)
                .transpose()
                .context("bad Content-Length")?
                .unwrap_or(0);
            self.skip(len).await?;
        }
        Ok(head)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        if self.read.read_buf(&mut self.buf).await? == 0 {
            self.closed = true;
            bail!("connection closed before the response ended");
        }
        Ok(())
    }

    async fn skip(&mut self, mut len: usize) -> anyhow::Result<()> {
        if len > BODY_BYTES_MAX {
            bail!("response body of {len} bytes is too long");
        }
        while len > 0 {
            if self.buf.is_empty() {
                self.fill().await?;
            }
            let n = len.min(self.buf.len());
            if self.keep_body {
                self.body.extend_from_slice(&self.buf[..n]);
            }
            self.buf.advance(n);
            len -= n;
        }
        Ok(())
    }

    async fn skip_chunked(&mut self) -> anyhow::Result<()> {
        loop {
            let line_end = loop {
                if let Some(end) = find(&self.buf, b"\r\n") {
                    break end;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[..line_end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .context("bad chunk size")?;
            self.buf.advance(line_end + 2);
            self.skip(size).await?;
            // The CRLF after each chunk (after the last: the empty trailer line).
            let keep = std::mem::replace(&mut self.keep_body, false);
            self.skip(2).await?;
            self.keep_body = keep;
            if size == 0 {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status and headers are read; header names are matched without case.
    #[test]
    fn heads_parse() {
        let head = parse_head(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 60\r\nX: y\r\n\r\n")
            .unwrap();
        assert_eq!(head.status, 429);
        assert_eq!(head.header("retry-after"), Some("60"));
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }
}
