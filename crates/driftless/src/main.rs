//! The `driftless` command: a thin layer of argument parsing and wiring over the library crates.
//!
//! Exit status: 0 success (and, for `audit`, nothing over threshold), 1 drift over threshold,
//! 2 bad input or failure.

mod cmd;

/// mimalloc: the hub allocates many small, short-lived strings per event, and glibc's allocator
/// took ~15% of ingest CPU in profiles.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "driftless",
    version,
    about = "Stops inventory counts drifting between WMS, ERP and storefronts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub: HTTP API, ledger and fan-out.
    Serve(cmd::serve::Args),
    /// The five-minute tour: hub, simulated WMS/ERP and storefront, and where to look.
    Demo(cmd::demo::Args),
    /// Send a CSV batch file of a system's events to a running hub (re-importing applies nothing twice).
    Import(cmd::import::Args),
    /// Validate a configuration file and explain each error with its line and a fix.
    CheckConfig(cmd::check_config::Args),
    /// Print the SHA-256 of a bearer token, for the configuration file.
    TokenHash(cmd::check_config::TokenArgs),
    /// Compare every system's snapshot with a physical count and attribute the drift.
    Audit(cmd::audit::Args),
    /// Drift per hand-off over time from stored audits.
    Trend(cmd::trend::Args),
    /// Simulate the six causes of drift on point-to-point or on the hub.
    Simulate(cmd::simulate::Args),
    /// The integration matrix: measured latency per hop against its SLA (table, JSON or DOT).
    Matrix(cmd::matrix::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => cmd::serve::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::CheckConfig(a) => cmd::check_config::run(a),
        Command::TokenHash(a) => cmd::check_config::token_hash(a),
        Command::Audit(a) => cmd::audit::run(a),
        Command::Trend(a) => cmd::trend::run(a),
        Command::Simulate(a) => cmd::simulate::run(a),
        Command::Matrix(a) => cmd::matrix::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
