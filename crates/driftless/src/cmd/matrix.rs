//! `driftless matrix`: the integration matrix from the ledger's own measurements: every documented
//! hop with source lag, push latency and end-to-end p50/p95/p99 against its SLA, bidirectional and
//! undocumented hops flagged. As a table, JSON (the `GET /v1/matrix` shape) or a Graphviz drawing.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    /// Graphviz DOT; `dot -Tsvg` draws it.
    Dot,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML). Without it the shipped example configuration is used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Directory of the embedded SQLite ledger (overrides [server] data_dir).
    #[arg(long)]
    pub data_dir: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let serve_args = super::serve::Args {
        config: args.config.clone(),
        listen: None,
        data_dir: args.data_dir.clone(),
        database_url: None,
        nats_url: None,
        auth: None,
    };
    let settings = super::serve::settings(&serve_args)?;
    let rt = tokio::runtime::Runtime::new()?;
    let m = rt.block_on(async {
        let store = super::ledger::open(&settings, super::ledger::Access::Read).await?;
        let m = driftless_server::channels::matrix(&settings, store.as_ref())
            .await
            .context("reading the ledger's measurements")?;
        store.close().await;
        anyhow::Ok(m)
    })?;
    let text = match args.format {
        Format::Table => driftless_server::matrix::to_table(&m),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&driftless_server::matrix::to_json(&m))?;
            s.push('\n');
            s
        }
        Format::Dot => driftless_server::matrix::to_dot(&m),
    };
    match &args.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}
