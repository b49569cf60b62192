//! `driftless serve`: load and layer the configuration, open the ledger, bind, serve until SIGINT or
//! SIGTERM.

use anyhow::Context;
use driftless_config::{Overrides, Settings};
use driftless_server::{AppState, Server};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML). Without it the shipped example configuration is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides [server] listen and DRIFTLESS_LISTEN).
    #[arg(long)]
    pub listen: Option<String>,
    /// Directory of the embedded SQLite ledger (overrides [server] data_dir).
    #[arg(long)]
    pub data_dir: Option<String>,
    /// PostgreSQL ledger URL (production mode).
    #[arg(long)]
    pub database_url: Option<String>,
    /// NATS JetStream URL (production mode).
    #[arg(long)]
    pub nats_url: Option<String>,
    /// "tokens" or "none" (none only on loopback).
    #[arg(long)]
    pub auth: Option<String>,
}

/// Loads the configuration with every layer applied: defaults < file < env < flags.
pub fn settings(args: &Args) -> anyhow::Result<Settings> {
    let s = Settings::load(args.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    s.layer(
        |k| std::env::var(k).ok(),
        &Overrides {
            listen: args.listen.clone(),
            data_dir: args.data_dir.clone(),
            database_url: args.database_url.clone(),
            nats_url: args.nats_url.clone(),
            auth: args.auth.clone(),
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Logs to stderr, filtered by `DRIFTLESS_LOG` (default `info`); `DRIFTLESS_LOG_FORMAT=json` writes
/// one JSON object per line with the current span's fields (a request's `request_id`) in `span`.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DRIFTLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("DRIFTLESS_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        fmt.json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        fmt.try_init()
    };
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    init_tracing();
    let settings = settings(&args)?;
    for w in &settings.warnings {
        tracing::warn!("configuration: {w}");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let store = super::ledger::open(&settings, super::ledger::Access::Serve).await?;
        let listen = settings.server.listen.clone();
        let origin = settings.origin.clone();
        let ledger = super::ledger::describe(&settings);
        let mut state = AppState::new(settings, store);
        state.bus = super::bus::start(&state.settings, state.store.clone()).await?;
        let self_audit = super::self_audit::spawn(state.settings.clone(), state.store.clone());
        let server = Server::bind(&listen, state)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = server.local_addr()?;
        // Installed before announcing the address, so a SIGTERM right after start drains.
        let shutdown = driftless_server::shutdown_signal();
        if args.config.is_none() {
            tracing::warn!(
                "no --config given: using the example configuration with its PUBLIC demo tokens; \
                 copy driftless.example.toml, edit it and pass --config"
            );
        }
        tracing::info!(%addr, config = %origin, %ledger, "driftless is serving");
        // One line on stdout that scripts can wait for.
        println!("listening on http://{addr}");
        server.run_until_stopped(shutdown).await?;
        if let Some(task) = self_audit {
            task.abort();
        }
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}
