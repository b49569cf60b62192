//! `driftless audit`: reconcile every system's snapshot with a physical count, attribute the drift
//! to hand-offs and causes, print it (table, JSON, CSV or HTML) and store it for `driftless trend`.
//! Exit status: 0 nothing over threshold, 1 drift over threshold, 2 bad input.

use anyhow::Context;
use chrono::{DateTime, Utc};
use driftless_audit::{AuditInput, Progress, Report, render};
use driftless_config::{Overrides, Settings};
use driftless_core::SystemId;
use driftless_store::AuditRecord;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Html,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML): chain, thresholds, units, channels, snapshot formats.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The physical count: CSV `sku,location,quantity[,unit]` (optional with --live).
    #[arg(long, required_unless_present = "live")]
    pub baseline: Option<PathBuf>,
    /// One snapshot per system of the chain, as SYSTEM=FILE (CSV, or JSON lines for .jsonl).
    #[arg(
        long = "snapshot",
        value_name = "SYSTEM=FILE",
        required_unless_present = "live",
        conflicts_with = "live"
    )]
    pub snapshots: Vec<String>,
    /// Optional change logs, as SYSTEM=FILE: `sku,location,at,quantity,actor[,source_at][,ref]`.
    #[arg(long = "changes", value_name = "SYSTEM=FILE")]
    pub changes: Vec<String>,
    /// When the snapshots were taken (RFC 3339); lag windows are judged against it. Default: now.
    #[arg(long)]
    pub at: Option<String>,
    /// table (summary first, 80 columns), json (DESIGN §13), csv (every row) or html (one
    /// self-contained page with charts).
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the report here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Where audits are stored for `driftless trend` (overrides [server] data_dir).
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Do not store this audit.
    #[arg(long)]
    pub no_history: bool,
    /// Audit the hub itself: its ledger (in the data directory) against what each channel was
    /// last acknowledged to show and what it was last observed showing.
    #[arg(long, conflicts_with = "changes")]
    pub live: bool,
}

fn pairs(list: &[String], what: &str) -> anyhow::Result<Vec<(SystemId, PathBuf)>> {
    list.iter()
        .map(|s| {
            let (sys, file) = s
                .split_once('=')
                .with_context(|| format!("--{what} {s:?}: expected SYSTEM=FILE"))?;
            let id = SystemId::parse(sys.trim())
                .map_err(|e| anyhow::anyhow!("--{what} {s:?}: system id {e}"))?;
            Ok((id, PathBuf::from(file)))
        })
        .collect()
}

pub fn settings(config: Option<&Path>, data_dir: Option<String>) -> anyhow::Result<Settings> {
    let s = Settings::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    s.layer(
        |k| std::env::var(k).ok(),
        &Overrides {
            data_dir,
            ..Overrides::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = match settings(args.config.as_deref(), args.data_dir.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let at: DateTime<Utc> = match &args.at {
        None => Utc::now(),
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                eprintln!("--at {s:?} is not an RFC 3339 time ({e}); e.g. 2026-11-20T12:00:00Z");
                return Ok(ExitCode::from(2));
            }
        },
    };
    if args.live {
        let report = match live::run(&settings, args.baseline.as_deref(), at) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{e:#}");
                eprintln!("audit not run (exit status 2)");
                return Ok(ExitCode::from(2));
            }
        };
        return finish(&args, &settings, &report);
    }
    let input = match (
        pairs(&args.snapshots, "snapshot"),
        pairs(&args.changes, "changes"),
    ) {
        (Ok(snapshots), Ok(changes)) => AuditInput {
            baseline: args.baseline.clone().unwrap_or_default(),
            snapshots,
            changes,
            at,
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e:#}");
            return Ok(ExitCode::from(2));
        }
    };

    let bar = progress_bar();
    let phase = Mutex::new("");
    let on_progress = |p: Progress| {
        let Some(bar) = &bar else { return };
        let mut current = phase.lock().unwrap_or_else(|e| e.into_inner());
        if *current != p.phase {
            *current = p.phase;
            bar.set_message(p.phase);
            bar.set_length(p.total);
            bar.set_style(style(p.phase));
        }
        bar.set_position(p.done);
    };
    let result = driftless_audit::run_files_with(&settings, &input, &on_progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("audit not run: bad input (exit status 2)");
            return Ok(ExitCode::from(2));
        }
    };
    finish(&args, &settings, &report)
}

/// Prints (or writes) the report, stores it, and turns it into the exit status.
fn finish(args: &Args, settings: &Settings, report: &Report) -> anyhow::Result<ExitCode> {
    let report = report.clone();
    let text = match args.format {
        Format::Table => render::table(&report),
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Csv => render::csv(&report),
        Format::Html => render::html(&report),
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an audit failure.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }

    if !args.no_history
        && let Err(e) = store(settings, &report)
    {
        eprintln!("warning: the audit was not stored for trends: {e:#}");
    }
    Ok(if report.drifting == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn style(phase: &str) -> ProgressStyle {
    let template = if phase == "reading" {
        "{msg:8} [{bar:40}] {bytes}/{total_bytes} ({eta})"
    } else {
        "{msg:8} [{bar:40}] {pos}/{len} partitions"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A progress bar on standard error, or none when it is not a terminal (cron, CI, pipes).
fn progress_bar() -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(ProgressBar::with_draw_target(
        Some(0),
        ProgressDrawTarget::stderr(),
    ))
}

/// The summary of a report as stored for trends.
pub fn record(report: &Report) -> anyhow::Result<AuditRecord> {
    Ok(AuditRecord {
        at: report.at,
        skus_compared: i64::try_from(report.skus_compared)?,
        drifting: i64::try_from(report.drifting)?,
        handoffs: report
            .handoffs
            .iter()
            .map(|h| {
                Ok((
                    h.handoff.clone(),
                    i64::try_from(h.drifting_skus)?,
                    i64::try_from(h.abs_units)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?,
        report_json: serde_json::to_string(report)?,
    })
}

fn store(settings: &Settings, report: &Report) -> anyhow::Result<()> {
    let rec = record(report)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = super::ledger::open(settings, super::ledger::Access::Read).await?;
        let r = store.save_audit(&rec).await;
        store.close().await;
        r.map(|_| ()).map_err(anyhow::Error::from)
    })
}

/// `--live`: the hub's own view written out as snapshot files, then the same audit as for files,
/// so one engine (and one set of rules) judges both.
pub mod live {
    use super::*;
    use driftless_audit::live::{TempDir, audit_views};
    use driftless_store::views::write_views;

    /// One audit per channel (each fed by the hub), merged into one report: chain `hub -> channel`,
    /// plus `physical -> hub` when a baseline is given.
    pub fn run(
        settings: &Settings,
        baseline: Option<&Path>,
        at: DateTime<Utc>,
    ) -> anyhow::Result<Report> {
        if settings.channels.is_empty() {
            anyhow::bail!("--live audits the hub's channels, and the configuration declares none");
        }
        let dir = TempDir::new().context("creating a temporary directory")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let store =
                crate::cmd::ledger::open(settings, crate::cmd::ledger::Access::Read).await?;
            let r = write_views(store.as_ref(), &settings.channel_specs(), dir.path(), at).await;
            let incidents = hub_incidents(store.as_ref()).await;
            store.close().await;
            r?;
            incidents
        })
        .and_then(|incidents| {
            let mut report = audit_views(settings, dir.path(), baseline, at)?;
            // The hub's stale and override incidents of the last week are evidence (DESIGN §7).
            driftless_audit::live::apply_incidents(
                &mut report,
                &incidents,
                at - chrono::Duration::days(7),
            );
            Ok(report)
        })
    }

    /// The hub's `stale` and `override` incidents, as evidence for [`driftless_audit::live`].
    pub async fn hub_incidents(
        store: &dyn driftless_store::Store,
    ) -> anyhow::Result<Vec<driftless_audit::live::HubIncident>> {
        let mut out = Vec::new();
        for kind in ["stale", "override"] {
            let filter = driftless_store::IncidentFilter {
                kind: Some(kind.to_owned()),
                limit: 1_000_000,
                ..Default::default()
            };
            for i in store.incidents(&filter).await? {
                if let Some(sku) = i.sku {
                    out.push(driftless_audit::live::HubIncident {
                        kind: i.kind,
                        sku: sku.to_string(),
                        location: i.location.map(|l| l.to_string()),
                        at: i.at,
                    });
                }
            }
        }
        Ok(out)
    }
}
