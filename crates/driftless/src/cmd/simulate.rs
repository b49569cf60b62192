//! `driftless simulate`: run a scenario on point-to-point or on the hub, print drift per system,
//! per hand-off and cause, and oversells; `--out DIR` writes the files to audit; `--evaluate` runs
//! the auditor on those files and scores it against the simulation's ground truth.
//!
//! Exit status: 0 done (with `--evaluate`: and the accuracy goals were met), 1 `--evaluate` missed
//! a goal, 2 bad flags or failure.

use anyhow::Context;
use driftless_sim::seeds::{self, SeedsRow, SeedsTally};
use driftless_sim::{Architecture, Params, SCENARIOS, SimError};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    PointToPoint,
    Hub,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

fn scenario_names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|(n, _)| *n).collect()
}

#[derive(Debug, clap::Args)]
#[command(after_help = scenario_help())]
pub struct Args {
    /// The scenario to run (see the list below); with `--seeds`, every scenario when absent.
    #[arg(long, required_unless_present = "seeds", value_parser = clap::builder::PossibleValuesParser::new(scenario_names()))]
    pub scenario: Option<String>,
    /// How the systems are connected; with `--seeds`, both when absent.
    #[arg(long, value_enum, required_unless_present = "seeds")]
    pub architecture: Option<Arch>,
    /// Seed of the run: the same seed gives the same output, byte for byte.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluate the auditor over a range of seeds (`1..20`, both ends included) in one command:
    /// hand-off and cause accuracy per scenario and architecture, and every miss.
    #[arg(long, value_name = "A..B", value_parser = parse_seeds, requires = "evaluate", conflicts_with_all = ["seed", "out"])]
    pub seeds: Option<(u64, u64)>,
    /// Catalogue size.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub skus: u32,
    /// Days simulated; the snapshot is taken at 09:00 on the day after (a Monday for 7).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=120))]
    pub days: u32,
    /// Write driftless.toml, baseline.csv, <system>.csv, <system>-changes.csv, at.txt and
    /// truth.csv here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `text` for people, `json` for one object with the whole summary.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Audit the output and print precision and recall against the ground truth.
    #[arg(long)]
    pub evaluate: bool,
    /// With `--seeds`: score the live checkpoints instead of the file audit: the checkpoint drill
    /// (hub architecture, systems reporting observations; docs/simulator.md) per seed.
    #[arg(long, requires = "seeds", conflicts_with_all = ["scenario", "architecture", "set"])]
    pub checkpoints: bool,
    /// Tune one cause or rate, e.g. `--set poll_every_min=5 --set retry_rate=0.5`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

fn scenario_help() -> String {
    let mut s = String::from("Scenarios:\n");
    for (n, d) in SCENARIOS {
        s.push_str(&format!("  {n:<20} {d}\n"));
    }
    s.push_str("\nSettings for --set (see docs/simulator.md):\n");
    for chunk in driftless_sim::scenario::SETTINGS.chunks(6) {
        s.push_str(&format!("  {}\n", chunk.join(", ")));
    }
    s
}

/// `A..B` (both included) or a single seed `A`.
fn parse_seeds(s: &str) -> Result<(u64, u64), String> {
    let n = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{x}` is not a seed (a whole number)"))
    };
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (n(a)?, n(b.trim_start_matches('='))?),
        None => (n(s)?, n(s)?),
    };
    if a > b {
        return Err(format!(
            "{a}..{b}: the first seed must not be above the last"
        ));
    }
    if b - a >= 10_000 {
        return Err(format!("{a}..{b}: at most 10,000 seeds in one command"));
    }
    Ok((a, b))
}

fn architecture(a: Arch) -> Architecture {
    match a {
        Arch::PointToPoint => Architecture::PointToPoint,
        Arch::Hub => Architecture::Hub,
    }
}

/// The parameters the flags describe.
pub fn params(args: &Args) -> Result<Params, SimError> {
    let scenario = args.scenario.as_deref().unwrap_or(SCENARIOS[0].0);
    let arch = architecture(args.architecture.unwrap_or(Arch::PointToPoint));
    params_for(args, scenario, arch, args.seed)
}

/// The parameters of one run: the flags' size and settings, for this scenario, architecture and
/// seed.
fn params_for(
    args: &Args,
    scenario: &str,
    arch: Architecture,
    seed: u64,
) -> Result<Params, SimError> {
    let mut p = Params::scenario(scenario, arch, seed)?;
    p.skus = args.skus as usize;
    p.days = args.days;
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| SimError::Invalid(format!("--set {kv:?}: expected KEY=VALUE")))?;
        p.set(k.trim(), v.trim())?;
    }
    p.validate()?;
    Ok(p)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let (true, Some(seeds)) = (args.checkpoints, args.seeds) {
        return super::drill::run(seeds, args.skus as usize, args.format == Format::Json);
    }
    if let Some(seeds) = args.seeds {
        return run_seeds(&args, seeds);
    }
    let p = match params(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut outcome = driftless_sim::simulate(&p)?;
    let files = outcome.files();
    // The auditor reads files, so an evaluation without --out uses a private temporary directory.
    let temp = (args.evaluate && args.out.is_none()).then(temp_dir);
    let dir = args.out.clone().or_else(|| temp.clone());
    if let Some(dir) = &dir {
        driftless_sim::files::write_dir(dir, &files)?;
    }
    let mut met = true;
    if args.evaluate {
        let result = dir
            .as_deref()
            .context("no directory to audit")
            .and_then(|d| Ok(driftless_sim::files::audit_dir(&outcome, d)?));
        if let Some(t) = &temp {
            let _ = std::fs::remove_dir_all(t);
        }
        let e = result?;
        met = seeds::met(&e);
        outcome.summary.evaluation = Some(e);
    }
    match args.format {
        Format::Json => println!("{}", serde_json::to_string(&outcome.summary)?),
        Format::Text => {
            print!("{}", driftless_sim::summary::render_text(&outcome.summary));
            let other = match args.architecture {
                Some(Arch::Hub) => "point-to-point",
                _ => "hub",
            };
            println!(
                "\nthe same business on the other architecture: driftless simulate --scenario {} --architecture {other} --seed {}",
                p.scenario, args.seed
            );
            if let Some(out) = &args.out {
                println!(
                    "\nwrote {} files to {}; audit them with:\n  cd {} && driftless audit --config driftless.toml --baseline baseline.csv \\\n    --snapshot wms=wms.csv --snapshot erp=erp.csv --snapshot shop=shop.csv \\\n    --changes wms=wms-changes.csv --changes erp=erp-changes.csv --changes shop=shop-changes.csv \\\n    --at \"$(cat at.txt)\"",
                    files.len(),
                    out.display(),
                    out.display()
                );
            }
            if args.evaluate && !met {
                println!("{}", seeds::goal_missed_text());
            }
        }
    }
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("driftless-simulate-{}-{nanos}", std::process::id()))
}

/// `--seeds A..B --evaluate`: every scenario and architecture asked for (all when not given), each
/// seed simulated, written to a private temporary directory, audited and scored; the scores are
/// summed per scenario and architecture.
fn run_seeds(args: &Args, (first, last): (u64, u64)) -> anyhow::Result<ExitCode> {
    let scenarios: Vec<&str> = match &args.scenario {
        Some(s) => vec![s.as_str()],
        None => scenario_names(),
    };
    let archs: Vec<Architecture> = match args.architecture {
        Some(a) => vec![architecture(a)],
        None => vec![Architecture::PointToPoint, Architecture::Hub],
    };
    let mut rows = Vec::new();
    for scenario in &scenarios {
        for &arch in &archs {
            let mut tally = SeedsTally::default();
            for seed in first..=last {
                let p = match params_for(args, scenario, arch, seed) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return Ok(ExitCode::from(2));
                    }
                };
                let outcome = driftless_sim::simulate(&p)?;
                let dir = temp_dir();
                let result = driftless_sim::files::write_dir(&dir, &outcome.files())
                    .and_then(|()| driftless_sim::files::audit_dir(&outcome, &dir));
                let _ = std::fs::remove_dir_all(&dir);
                tally.add(seed, result?);
            }
            rows.push(tally.finish(scenario, arch, (first, last)));
        }
    }
    let met = rows.iter().all(|r| r.met);
    match args.format {
        Format::Json => {
            let v: Vec<serde_json::Value> = rows.iter().map(SeedsRow::to_json).collect();
            println!("{}", serde_json::to_string(&v)?);
        }
        Format::Text => print!("{}", seeds::render(&rows, args.skus, args.days)),
    }
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
