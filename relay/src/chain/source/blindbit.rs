//! Blindbit oracle HTTP API v1 client, dialed through the `Net` seam.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::http::{HttpRequest, HttpTarget, send};
use super::{BlindbitInfo, BlindbitSource, BlindbitUtxo, NewUtxoFilter, SourceError};
use crate::rt::Net;

/// Bounds one Blindbit reply (a mainnet block's UTXO list is a few MiB).
pub const BLINDBIT_RESPONSE_BYTES_MAX: usize = 32 << 20;

/// A Blindbit oracle over HTTP.
#[derive(Debug, Clone)]
pub struct BlindbitHttp<N: Net> {
    net: N,
    target: HttpTarget,
    timeout: Duration,
}

#[derive(Deserialize)]
struct HeightReply {
    block_height: u32,
}

#[derive(Deserialize)]
struct FilterReply {
    block_hash: String,
    data: String,
}

impl<N: Net> BlindbitHttp<N> {
    /// # Errors
    /// The URL is not `http[s]://host[:port][/path]`.
    pub fn new(net: N, url: &str, timeout: Duration) -> Result<Self, SourceError> {
        Ok(BlindbitHttp {
            net,
            target: HttpTarget::parse(url)?,
            timeout,
        })
    }

    /// Trusts `ca_file`'s CA certificates for an `https://` URL (see
    /// [`HttpTarget::with_ca_file`]).
    ///
    /// # Errors
    /// The file cannot be read or holds no usable CA certificate.
    pub fn with_ca_file(mut self, ca_file: Option<&std::path::Path>) -> Result<Self, SourceError> {
        self.target = self.target.with_ca_file(ca_file)?;
        Ok(self)
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, SourceError> {
        let request = HttpRequest {
            method: hyper::Method::GET,
            path,
            authorization: None,
            body: None,
            timeout: self.timeout,
            body_bytes_max: BLINDBIT_RESPONSE_BYTES_MAX,
        };
        let (status, bytes) = send(&self.net, &self.target, request).await?;
        match status {
            200 => serde_json::from_slice(&bytes)
                .map_err(|e| SourceError::Decode(format!("{path}: {e}"))),
            404 => Err(SourceError::NotFound),
            status => Err(SourceError::Status { status }),
        }
    }
}

impl<N: Net> BlindbitSource for BlindbitHttp<N> {
    async fn info(&self) -> Result<BlindbitInfo, SourceError> {
        self.get("/info").await
    }

    async fn block_height(&self) -> Result<u32, SourceError> {
        let reply: HeightReply = self.get("/block-height").await?;
        Ok(reply.block_height)
    }

    async fn tweak_index(&self, height: u32) -> Result<Vec<String>, SourceError> {
        // Blindbit may answer `null` for a block without eligible transactions.
        let tweaks: Option<Vec<String>> = self.get(&format!("/tweak-index/{height}")).await?;
        Ok(tweaks.unwrap_or_default())
    }

    async fn new_utxos_filter(&self, height: u32) -> Result<NewUtxoFilter, SourceError> {
        let reply: FilterReply = self.get(&format!("/filter/new-utxos/{height}")).await?;
        let data = hex::decode(&reply.data)
            .map_err(|e| SourceError::Decode(format!("filter data: {e}")))?;
        Ok(NewUtxoFilter {
            block_hash: reply.block_hash,
            data,
        })
    }

    async fn utxos(&self, height: u32) -> Result<Vec<BlindbitUtxo>, SourceError> {
        let utxos: Option<Vec<BlindbitUtxo>> = self.get(&format!("/utxos/{height}")).await?;
        Ok(utxos.unwrap_or_default())
    }
}
