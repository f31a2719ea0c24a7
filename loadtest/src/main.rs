//! `loadtest`: load-tests a running sdk_relay (or mesh, or the baseline server) and
//! checks the limits it must enforce. Every run is bounded in connections, bytes and
//! time, and stops by itself.

// A measurement tool outside the relay's seam: it dials real sockets and reads real time.
#![allow(clippy::disallowed_methods)]

mod cli;
mod client;
mod connections;
mod cpu;
mod http;
mod limits;
mod mesh;
mod progress;
mod run;
mod spread;
mod stats;
mod summarize;
mod target;
mod workload;
mod ws;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: &Cli) -> anyhow::Result<ExitCode> {
    anyhow::ensure!((1..=64).contains(&cli.threads), "--threads must be 1 to 64");
    match &cli.command {
        Command::Limits(args) => args.validate()?,
        Command::Run(args) => args.validate()?,
        Command::Connections(args) => args.validate()?,
        Command::Mesh(args) => args.validate()?,
        Command::Summarize(args) => {
            let mut texts = Vec::new();
            for file in &args.files {
                texts.push(if file == "-" {
                    std::io::read_to_string(std::io::stdin())?
                } else {
                    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
                });
            }
            print(cli.json, &summarize::summarize(&texts)?)?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    // Many connections need many descriptors; the soft limit may be below the hard one.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_io()
        .enable_time()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(async {
        match &cli.command {
            Command::Limits(args) => {
                let report = limits::limits(args).await?;
                print(cli.json, &report)?;
                if !report.passed {
                    eprintln!("loadtest limits: failed: {}", report.failed().join(", "));
                    return Ok(ExitCode::FAILURE);
                }
            }
            Command::Run(args) => print(cli.json, &run::run(args).await?)?,
            Command::Connections(args) => {
                print(cli.json, &connections::connections(args).await?)?;
            }
            Command::Mesh(args) => print(cli.json, &mesh::mesh(args).await?)?,
            Command::Summarize(_) => unreachable!("handled before the runtime starts"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print<T: Serialize + std::fmt::Display>(json: bool, report: &T) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
