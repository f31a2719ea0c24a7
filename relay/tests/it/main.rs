//! The relay's integration tests, as one test binary so the test build links once. Each
//! module is one area; `support` and `http_client` are the helpers they share.

mod chain_bip352;
mod chain_wallets;
mod chain_watcher;
mod chain_websocket;
mod dashboard;
mod discovery;
mod fanout;
mod hostile;
mod http_api;
mod http_limits;
mod lame_duck;
mod limits;
mod mesh;
mod nats;
mod nats_auth;
mod nats_resume;
mod process;
mod prometheus;
mod resume;
mod rolling_restart;
mod tls;
mod trust;
mod websocket;

mod http_client;
mod support;
