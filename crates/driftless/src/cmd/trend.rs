//! `driftless trend`: drift per hand-off over the stored audits of the last days, the degrading
//! hand-off and the repair-or-rebuild reading; as text, an SVG chart, HTML or JSON.

use anyhow::Context;
use chrono::{Duration, Utc};
use driftless_audit::trend::{self, TrendPoint};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Svg,
    Html,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML); its [server] data_dir holds the stored audits.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Where audits are stored (overrides [server] data_dir).
    #[arg(long)]
    pub data_dir: Option<String>,
    /// How many days back to look.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// text (table and reading), svg (the chart), html (chart and reading) or json (the series).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Write here instead of standard output (for svg and html, a chart file).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Rows with cause `manual_override` in a stored report.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match super::audit::settings(args.config.as_deref(), args.data_dir.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let since = Utc::now() - Duration::days(i64::from(args.days));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let records = rt.block_on(async {
        let store = super::ledger::open(&settings, super::ledger::Access::Read).await?;
        let r = store.audits_since(since).await;
        store.close().await;
        r.map_err(anyhow::Error::from)
    })?;
    let points = records
        .iter()
        .map(|r| TrendPoint::of_stored(r.at, r.skus_compared, &r.handoffs, &r.report_json))
        .collect();
    let t = trend::analyze(points);
    let text = match args.format {
        Format::Text => trend::text(&t),
        Format::Svg => trend::svg(&t) + "\n",
        Format::Html => trend::html(&t),
        Format::Json => {
            let v = serde_json::json!({
                "days": args.days,
                "audits": t.points.len(),
                "handoffs": t.handoffs,
                "series": t.points.iter().map(|p| serde_json::json!({
                    "at": p.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "skus_compared": p.skus_compared,
                    "handoffs": p.handoffs.iter().map(|(h, d, u)| serde_json::json!({
                        "handoff": h, "drifting_skus": d, "abs_units": u
                    })).collect::<Vec<_>>(),
                    "manual_overrides": p.manual_overrides,
                })).collect::<Vec<_>>(),
                "degrading": t.degrading.as_ref().map(|(h, s)| serde_json::json!({"handoff": h, "per_day": s})),
                "reading": t.reading.sentence(),
            });
            serde_json::to_string_pretty(&v)? + "\n"
        }
    };
    match &args.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
