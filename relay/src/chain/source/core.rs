//! Bitcoin Core JSON-RPC client: basic auth or the cookie file, every call under a deadline.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::http::{HttpRequest, HttpTarget, send};
use super::{
    ChainInfo, CoreBlock, CoreOutput, CoreSource, CoreTx, HeaderInfo, SourceError, btc_to_sats,
};
use crate::rt::Net;

/// A `getblock` verbosity 2 reply can be large; this bounds what one reply may take.
pub const CORE_RESPONSE_BYTES_MAX: usize = 64 << 20;

/// How to authenticate to Core. `Debug` hides the password.
#[derive(Clone)]
pub enum CoreAuth {
    None,
    Basic {
        user: String,
        password: String,
    },
    /// Read at every call: Core rewrites it at each restart.
    Cookie(PathBuf),
}

impl std::fmt::Debug for CoreAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreAuth::None => f.write_str("None"),
            CoreAuth::Basic { user, .. } => {
                write!(f, "Basic({user}, {})", crate::secret::REDACTED)
            }
            CoreAuth::Cookie(path) => write!(f, "Cookie({})", path.display()),
        }
    }
}

impl CoreAuth {
    fn header(&self) -> Result<Option<String>, SourceError> {
        let pair = match self {
            CoreAuth::None => return Ok(None),
            CoreAuth::Basic { user, password } => format!("{user}:{password}"),
            CoreAuth::Cookie(path) => std::fs::read_to_string(path)
                .map_err(|e| {
                    SourceError::Config(format!("cookie file {}: {}", path.display(), e.kind()))
                })?
                .trim()
                .to_string(),
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        Ok(Some(format!("Basic {encoded}")))
    }
}

/// Bitcoin Core over JSON-RPC, dialed through the `Net` seam.
#[derive(Debug)]
pub struct CoreRpc<N: Net> {
    net: N,
    target: HttpTarget,
    auth: CoreAuth,
    timeout: Duration,
    next_id: AtomicU64,
}

#[derive(Deserialize)]
struct RpcReply {
    #[serde(default)]
    result: Value,
    #[serde(default)]
    error: Option<RpcErrorBody>,
}

#[derive(Deserialize)]
struct RpcErrorBody {
    code: i64,
    #[serde(default)]
    message: String,
}

impl<N: Net> CoreRpc<N> {
    /// # Errors
    /// The URL is not `http[s]://host[:port][/path]`.
    pub fn new(net: N, url: &str, auth: CoreAuth, timeout: Duration) -> Result<Self, SourceError> {
        Ok(CoreRpc {
            net,
            target: HttpTarget::parse(url)?,
            auth,
            timeout,
            next_id: AtomicU64::new(1),
        })
    }

    /// From the `[bitcoin_core]` table.
    ///
    /// # Errors
    /// A bad URL or CA file.
    pub fn from_config(
        net: N,
        config: &crate::config::BitcoinCoreConfig,
        timeout: Duration,
    ) -> Result<Self, SourceError> {
        let auth = match (&config.rpc_user, &config.rpc_password, &config.cookie_file) {
            (Some(user), Some(password), _) => CoreAuth::Basic {
                user: user.clone(),
                password: password.clone(),
            },
            (_, _, Some(path)) => CoreAuth::Cookie(path.clone()),
            _ => CoreAuth::None,
        };
        CoreRpc::new(net, &config.url, auth, timeout)?.with_ca_file(config.ca_file.as_deref())
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

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, SourceError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let request = HttpRequest {
            method: hyper::Method::POST,
            path: "/",
            authorization: self.auth.header()?,
            body: Some(Bytes::from(body.to_string())),
            timeout: self.timeout,
            body_bytes_max: CORE_RESPONSE_BYTES_MAX,
        };
        let (status, bytes) = send(&self.net, &self.target, request).await?;
        // Core answers RPC errors with 500 (JSON-RPC 1.0) or 200 (2.0), a body either way.
        let reply: RpcReply = match serde_json::from_slice(&bytes) {
            Ok(reply) => reply,
            Err(_) if status != 200 => return Err(SourceError::Status { status }),
            Err(e) => return Err(SourceError::Decode(format!("{method}: {e}"))),
        };
        if let Some(error) = reply.error {
            return Err(match error.code {
                -8 | -5 => SourceError::NotFound,
                code => SourceError::Rpc {
                    code,
                    message: error.message,
                },
            });
        }
        serde_json::from_value(reply.result)
            .map_err(|e| SourceError::Decode(format!("{method}: {e}")))
    }
}

#[derive(Deserialize)]
struct RawBlock {
    hash: String,
    height: u32,
    tx: Vec<RawTx>,
}

#[derive(Deserialize)]
struct RawTx {
    txid: String,
    vout: Vec<RawOutput>,
}

#[derive(Deserialize)]
struct RawOutput {
    value: f64,
    n: u32,
    #[serde(rename = "scriptPubKey")]
    script_pub_key: RawScript,
}

#[derive(Deserialize)]
struct RawScript {
    hex: String,
}

fn convert_block(raw: RawBlock) -> Result<CoreBlock, SourceError> {
    let mut txs = Vec::with_capacity(raw.tx.len());
    for tx in raw.tx {
        let mut outputs = Vec::with_capacity(tx.vout.len());
        for out in tx.vout {
            let value_sats = btc_to_sats(out.value)
                .ok_or_else(|| SourceError::Decode(format!("bad value {}", out.value)))?;
            outputs.push(CoreOutput {
                n: out.n,
                value_sats,
                script_hex: out.script_pub_key.hex,
            });
        }
        txs.push(CoreTx {
            txid: tx.txid,
            outputs,
        });
    }
    Ok(CoreBlock {
        hash: raw.hash,
        height: raw.height,
        txs,
    })
}

impl<N: Net> CoreSource for CoreRpc<N> {
    async fn blockchain_info(&self) -> Result<ChainInfo, SourceError> {
        self.call("getblockchaininfo", json!([])).await
    }

    async fn best_block_hash(&self) -> Result<String, SourceError> {
        self.call("getbestblockhash", json!([])).await
    }

    async fn block_hash(&self, height: u32) -> Result<String, SourceError> {
        self.call("getblockhash", json!([height])).await
    }

    async fn block_header(&self, hash: &str) -> Result<HeaderInfo, SourceError> {
        self.call("getblockheader", json!([hash, true])).await
    }

    async fn block(&self, hash: &str) -> Result<CoreBlock, SourceError> {
        let raw: RawBlock = self.call("getblock", json!([hash, 2])).await?;
        convert_block(raw)
    }
}
