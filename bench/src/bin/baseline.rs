//! The baseline server: hyper 1 + fastwebsockets alone (echo or broadcast), the ceiling
//! the relay's load-test figures are divided by.

// A measurement tool outside the relay's seam: it binds real sockets.
#![allow(clippy::disallowed_methods)]

use anyhow::Context;
use bench::baseline::{self, Mode};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Baseline WebSocket server: hyper 1 + fastwebsockets, no JSON, no routing")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    addr: String,
    /// echo: send every frame back; broadcast: frames from a connection that first sent
    /// the text frame `pub` go to every other connection.
    #[arg(long, default_value = "echo")]
    mode: Mode,
    /// Tokio worker threads (the relay's runtime has one per core).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (1..=64).contains(&args.threads),
        "--threads must be 1 to 64"
    );
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_io()
        .enable_time()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("binding {}", args.addr))?;
        eprintln!(
            "baseline {:?} listening on {}",
            args.mode,
            listener.local_addr()?
        );
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        baseline::serve(listener, args.mode, shutdown).await?;
        Ok(())
    })
}
