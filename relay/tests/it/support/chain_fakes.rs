//! A fake Bitcoin Core (JSON-RPC) and a fake Blindbit oracle (HTTP API v1): real hyper
//! servers on 127.0.0.1, replaying the recorded signet responses in `tests/data`, over one
//! chain model that tests reshape (new blocks, reorgs, lag, faults) while the watcher runs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitcoin::hashes::Hash;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sdk_relay::conn::tls::ServerTls;
use sdk_relay::rt::{Listener, Net, TokioNet};
use serde_json::{Value, json};

/// The documented payment in signet block 295125.
pub const PAYMENT_TXID: &str = "93a9b81f81244f8e6be29d8d6b0a9dbe6d6de6d2d4b018001ebf855bc870be88";
pub const PAYMENT_HEIGHT: u32 = 295125;

/// One block as both fakes serve it.
#[derive(Debug, Clone)]
pub struct FakeBlock {
    pub hash: String,
    pub tweaks: Vec<String>,
    /// Blindbit `/utxos` entries: txid, vout, value (sats), scriptpubkey.
    pub utxos: Vec<Value>,
    pub filter_hex: String,
}

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/blindbit-signet")
}

fn read_json(height: u32, file: &str) -> Value {
    let path = data_dir().join(height.to_string()).join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("recorded fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl FakeBlock {
    /// A block as recorded from a real Blindbit (200000, 200001, 295125, 295147).
    pub fn recorded(height: u32) -> FakeBlock {
        let filter = read_json(height, "filter-new-utxos.json");
        let tweaks = read_json(height, "tweaks.json");
        let utxos = read_json(height, "utxos.json");
        FakeBlock {
            hash: filter["block_hash"].as_str().unwrap().to_string(),
            tweaks: serde_json::from_value(tweaks).unwrap(),
            utxos: utxos
                .as_array()
                .cloned()
                .unwrap_or_else(|| panic!("{height}/utxos.json is not an array")),
            filter_hex: filter["data"].as_str().unwrap().to_string(),
        }
    }

    /// A block with no silent-payment transaction; `fork` makes its hash differ.
    pub fn empty(height: u32, fork: u8) -> FakeBlock {
        FakeBlock::with_content(synthetic_hash(height, fork), Vec::new(), Vec::new())
    }

    /// This block's transactions mined again in another block (a reorg): new hash, same
    /// content, a filter rebuilt for the new hash as Blindbit would.
    pub fn moved(&self, height: u32, fork: u8) -> FakeBlock {
        FakeBlock::with_content(
            synthetic_hash(height, fork),
            self.tweaks.clone(),
            self.utxos.clone(),
        )
    }

    fn with_content(hash: String, tweaks: Vec<String>, utxos: Vec<Value>) -> FakeBlock {
        let filter_hex = build_filter(&hash, &utxos);
        FakeBlock {
            hash,
            tweaks,
            utxos,
            filter_hex,
        }
    }
}

fn synthetic_hash(height: u32, fork: u8) -> String {
    format!("00000000{fork:02x}{:054x}", height)
}

/// A BIP158 GCS (M = 784931, P = 19) keyed by the block hash over the x-only keys of the
/// block's taproot outputs, as Blindbit builds its new-UTXO filter.
fn build_filter(hash: &str, utxos: &[Value]) -> String {
    use std::str::FromStr;
    let block_hash = bitcoin::BlockHash::from_str(hash).unwrap();
    let bytes = block_hash.to_byte_array();
    let k0 = u64::from_le_bytes(bytes[0..8].try_into().unwrap());
    let k1 = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    let mut out = Vec::new();
    let mut writer = bitcoin::bip158::GcsFilterWriter::new(&mut out, k0, k1, 784_931, 19);
    for utxo in utxos {
        let script = hex::decode(utxo["scriptpubkey"].as_str().unwrap()).unwrap();
        writer.add_element(&script[2..]);
    }
    writer.finish().unwrap();
    hex::encode(out)
}

/// How a fake source misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Every request answers this HTTP status.
    Status(u16),
    /// Every request hangs (the client's timeout must fire).
    Hang,
}

/// The chain both fakes serve, reshaped by tests.
#[derive(Debug, Default)]
pub struct ChainModel {
    pub blocks: BTreeMap<u32, FakeBlock>,
    /// Blocks above this height are not indexed by Blindbit yet.
    pub blindbit_height: Option<u32>,
    /// Blocks above this height are unknown to Core yet (a Core lagging behind Blindbit).
    pub core_height: Option<u32>,
    /// Blindbit's own view of block hashes where it differs from Core (stale after reorg).
    pub blindbit_hash_override: BTreeMap<u32, String>,
    pub core_fault: Fault,
    pub blindbit_fault: Fault,
    pub core_chain: String,
    /// `user:password` Core requires, if any.
    pub core_auth: Option<String>,
    pub core_requests: u64,
    /// Core RPC calls answered, in order: method and params.
    pub core_calls: Vec<(String, Value)>,
    /// Values (sats) Core reports instead of Blindbit's, by (txid, vout).
    pub core_value_override: BTreeMap<(String, u32), u64>,
    /// Paths Blindbit was asked for, in order (tests bound how many they cause).
    pub blindbit_paths: Vec<String>,
}

impl ChainModel {
    pub fn tip(&self) -> u32 {
        *self.blocks.keys().next_back().unwrap()
    }

    /// Core's tip: the chain's, unless Core is set to lag.
    fn core_tip(&self) -> u32 {
        self.core_height
            .unwrap_or_else(|| self.tip())
            .min(self.tip())
    }

    fn blindbit_tip(&self) -> u32 {
        self.blindbit_height
            .unwrap_or_else(|| self.tip())
            .min(self.tip())
    }
}

pub type Chain = Arc<Mutex<ChainModel>>;

/// A chain of blocks `from..=to`: recorded where a recording exists, empty elsewhere.
pub fn chain(from: u32, to: u32) -> Chain {
    let recorded = [200000, 200001, 295125, 295147];
    let blocks = (from..=to)
        .map(|h| {
            let block = if recorded.contains(&h) {
                FakeBlock::recorded(h)
            } else {
                FakeBlock::empty(h, 0)
            };
            (h, block)
        })
        .collect();
    Arc::new(Mutex::new(ChainModel {
        blocks,
        core_chain: "signet".into(),
        ..ChainModel::default()
    }))
}

/// Both fakes, listening.
pub struct Fakes {
    pub chain: Chain,
    pub core_url: String,
    pub blindbit_url: String,
}

/// Starts the fake Core and the fake Blindbit over `chain`.
pub async fn start(chain: Chain) -> Fakes {
    let core = serve(chain.clone(), Role::Core).await;
    let blindbit = serve(chain.clone(), Role::Blindbit).await;
    Fakes {
        chain,
        core_url: format!("http://{core}"),
        blindbit_url: format!("http://{blindbit}"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Core,
    Blindbit,
}

/// Both fakes over TLS with `tls`'s certificate: `https://` URLs.
pub async fn start_tls(chain: Chain, tls: Arc<ServerTls>) -> Fakes {
    let core = serve_with(chain.clone(), Role::Core, Some(tls.clone())).await;
    let blindbit = serve_with(chain.clone(), Role::Blindbit, Some(tls)).await;
    Fakes {
        chain,
        core_url: format!("https://{core}"),
        blindbit_url: format!("https://{blindbit}"),
    }
}

async fn serve(chain: Chain, role: Role) -> std::net::SocketAddr {
    serve_with(chain, role, None).await
}

async fn serve_with(chain: Chain, role: Role, tls: Option<Arc<ServerTls>>) -> std::net::SocketAddr {
    let mut listener = TokioNet.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (chain, tls) = (chain.clone(), tls.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| handle(chain.clone(), role, req));
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match tls {
                    None => http.serve_connection(TokioIo::new(stream), service).await,
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => http.serve_connection(TokioIo::new(stream), service).await,
                        Err(_) => Ok(()),
                    },
                };
            });
        }
    });
    addr
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(
    chain: Chain,
    role: Role,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let fault = {
        let mut model = chain.lock().unwrap();
        match role {
            Role::Core => {
                model.core_requests += 1;
                model.core_fault
            }
            Role::Blindbit => {
                let path = req.uri().path().to_string();
                model.blindbit_paths.push(path);
                model.blindbit_fault
            }
        }
    };
    match fault {
        Fault::Status(status) => return Ok(reply(status, json!({"error": "fault injected"}))),
        Fault::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Fault::None => {}
    }
    Ok(match role {
        Role::Core => core_reply(&chain, req).await,
        Role::Blindbit => blindbit_reply(&chain, req.uri().path()),
    })
}

async fn core_reply(chain: &Chain, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let call: Value = serde_json::from_slice(&body).unwrap();
    let mut model = chain.lock().unwrap();
    if let Some(expected) = &model.core_auth {
        use base64::Engine;
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(expected)
        );
        if auth.as_deref() != Some(want.as_str()) {
            return reply(401, json!(null));
        }
    }
    let id = call["id"].clone();
    let method = call["method"].as_str().unwrap().to_string();
    model.core_calls.push((method, call["params"].clone()));
    match core_method(&model, call["method"].as_str().unwrap(), &call["params"]) {
        Ok(result) => reply(200, json!({"result": result, "error": null, "id": id})),
        Err((code, message)) => reply(
            500,
            json!({"result": null, "error": {"code": code, "message": message}, "id": id}),
        ),
    }
}

/// A block Core knows (at or below its tip) by hash.
fn find_hash<'a>(model: &'a ChainModel, hash: &str) -> Option<(u32, &'a FakeBlock)> {
    model
        .blocks
        .range(..=model.core_tip())
        .find(|(_, b)| b.hash == hash)
        .map(|(h, b)| (*h, b))
}

fn core_method(model: &ChainModel, method: &str, params: &Value) -> Result<Value, (i64, String)> {
    let tip = model.core_tip();
    let not_found = || (-5, "Block not found".to_string());
    match method {
        "getblockchaininfo" => Ok(json!({
            "chain": model.core_chain, "blocks": tip, "bestblockhash": model.blocks[&tip].hash,
        })),
        "getbestblockhash" => Ok(json!(model.blocks[&tip].hash)),
        "getblockhash" => {
            let height = u32::try_from(params[0].as_u64().unwrap()).unwrap();
            model
                .blocks
                .get(&height)
                .filter(|_| height <= tip)
                .map(|b| json!(b.hash))
                .ok_or((-8, "Block height out of range".into()))
        }
        "getblockheader" => {
            let (height, block) =
                find_hash(model, params[0].as_str().unwrap()).ok_or_else(not_found)?;
            let prev = model
                .blocks
                .get(&(height.wrapping_sub(1)))
                .map(|b| b.hash.clone());
            Ok(json!({
                "hash": block.hash, "height": height, "confirmations": tip - height + 1,
                "previousblockhash": prev,
            }))
        }
        "getblock" => {
            let (height, block) =
                find_hash(model, params[0].as_str().unwrap()).ok_or_else(not_found)?;
            Ok(core_block(height, block, &model.core_value_override))
        }
        other => Err((-32601, format!("Method not found: {other}"))),
    }
}

/// `getblock` verbosity 2, built from the recorded taproot outputs (value in BTC).
fn core_block(height: u32, block: &FakeBlock, overrides: &BTreeMap<(String, u32), u64>) -> Value {
    let mut txs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for utxo in &block.utxos {
        let txid = utxo["txid"].as_str().unwrap().to_string();
        let vout = u32::try_from(utxo["vout"].as_u64().unwrap()).unwrap();
        let sats = overrides
            .get(&(txid, vout))
            .copied()
            .unwrap_or_else(|| utxo["value"].as_u64().unwrap());
        txs.entry(utxo["txid"].as_str().unwrap().to_string())
            .or_default()
            .push(json!({
                "value": sats as f64 / 100_000_000.0,
                "n": utxo["vout"],
                "scriptPubKey": {"hex": utxo["scriptpubkey"], "type": "witness_v1_taproot"},
            }));
    }
    let tx: Vec<Value> = txs
        .into_iter()
        .map(|(txid, vout)| json!({"txid": txid, "vout": vout}))
        .collect();
    json!({"hash": block.hash, "height": height, "tx": tx})
}

fn blindbit_reply(chain: &Chain, path: &str) -> Response<Full<Bytes>> {
    let model = chain.lock().unwrap();
    let indexed = model.blindbit_tip();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let block_at = |h: &str| -> Option<(u32, &FakeBlock)> {
        let h: u32 = h.parse().ok()?;
        (h <= indexed).then(|| model.blocks.get(&h).map(|b| (h, b)))?
    };
    match parts.as_slice() {
        ["info"] => reply(
            200,
            json!({"network": "signet", "height": indexed, "tweaks_only": false}),
        ),
        ["block-height"] => reply(200, json!({"block_height": indexed})),
        ["tweak-index", h] => match block_at(h) {
            Some((_, b)) => reply(200, json!(b.tweaks)),
            None => reply(404, json!({"error": "not indexed"})),
        },
        ["filter", "new-utxos", h] => match block_at(h) {
            Some((h, b)) => {
                let hash = model.blindbit_hash_override.get(&h).unwrap_or(&b.hash);
                reply(
                    200,
                    json!({"block_hash": hash, "block_height": h, "data": b.filter_hex, "filter_type": 4}),
                )
            }
            None => reply(404, json!({"error": "not indexed"})),
        },
        ["utxos", h] => match block_at(h) {
            Some((_, b)) => reply(200, json!(b.utxos)),
            None => reply(404, json!({"error": "not indexed"})),
        },
        _ => reply(404, json!({"error": "no such endpoint"})),
    }
}
