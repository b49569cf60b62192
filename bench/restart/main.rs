//! Restart benchmark: how long the embedded SQLite ledger takes to be ready after a SIGKILL that
//! left the most the default configuration lets it hold unwritten, next to a clean-stop restart of
//! the same ledger, in the same run.
//!
//! ```text
//! cargo run --release -p driftless-bench --bin restart -- [--ledger N] [--burst N]
//!     [--hot-skus N] [--locations N] [--runs N] [--dir PATH]
//! ```
//! 1. Fills the ledger to `--ledger` events (100k skus x 20 locations, groups of 20,000 straight
//!    through the store, durable commits off: this is set-up, not measured). `--dir` keeps the
//!    ledger for the next invocation, so a 10M-event ledger is built once.
//! 2. Each run: a child process opens the ledger with the default options and sends `--burst`
//!    events over `--hot-skus` x `--locations` slots, says when every event is acknowledged, and
//!    is killed with SIGKILL. The slots are fewer than `max_dirty_slots`, so nothing forces the
//!    cells out before their tail passes half of `max_replay_events` (1M by default); from there
//!    each group writes its share of a round of what is held, so the watermark moves before the
//!    tail reaches the bound. The default burst (1.05M) goes past the bound: the longest replay
//!    the defaults allow (`RESTART_MAX_REPLAY=100000` with `--burst 160000` is the same for a
//!    bound of 100k). The log's "replayed the ledger tail" line gives the events replayed.
//! 3. The parent opens the ledger as `serve` does (`SqliteStore::open`, default options): the time
//!    until it returns is the time until `/readyz` can answer. It checks every acknowledged event
//!    is there, reads the same rows row by row through sqlx (a yardstick for the machine's speed in
//!    the run), closes cleanly and opens again: the clean-stop restart of the same ledger.
//!
//! Prints both with medians of `--runs`. `DRIFTLESS_LOG=driftless_store=info` shows the replay.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../common/ledger.rs"]
mod ledger;

#[path = "../common/log.rs"]
mod bench_log;

use anyhow::Context;
use driftless_config::Settings;
use driftless_store::sqlite::SqliteOptions;
use driftless_store::{Incoming, SqliteStore, Store};
use ledger::ledger_events;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
auth = "none"

[[systems]]
id = "wms"
role = "wms"

[[channels]]
id = "shop"
locations = ["L00", "L01", "L02", "L03", "L04", "L05", "L06", "L07", "L08", "L09"]
"#;

/// Events per `apply` while filling: one group commit each (`max_group_events`).
const FILL_GROUP: usize = 20_000;
/// Skus the fill spreads over (x `--locations`).
const FILL_SKUS: u64 = 100_000;

struct Opts {
    ledger: u64,
    burst: u64,
    hot_skus: u64,
    locations: u64,
    runs: usize,
    dir: Option<PathBuf>,
}

const USAGE: &str = "usage: restart [--ledger N] [--burst N] [--hot-skus N] [--locations N] \
[--runs N] [--dir PATH]
  --ledger N     events in the ledger before the first run (default 2000000)
  --burst N      events sent before each SIGKILL (default 1050000)
  --hot-skus N   skus the burst is spread over (default 4000)
  --locations N  locations per sku, 1-100 (default 20)
  --runs N       runs; medians are printed (default 3)
  --dir PATH     keep the ledger here for the next invocation (default: a temporary directory)
RESTART_MAX_REPLAY=N sets max_replay_events for the burst and the restart (default: the
configuration's default); DRIFTLESS_LOG=driftless_store=info shows the replay.";

/// The options, or `None` when `--help` asked for the usage (printed).
fn parse_args(args: &[String]) -> anyhow::Result<Option<Opts>> {
    let mut o = Opts {
        ledger: 2_000_000,
        burst: 1_050_000,
        hot_skus: 4_000,
        locations: 20,
        runs: 3,
        dir: None,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            return Ok(None);
        }
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n = || -> anyhow::Result<u64> {
            v.parse()
                .with_context(|| format!("{flag} takes a whole number"))
        };
        match flag.as_str() {
            "--ledger" => o.ledger = n()?,
            "--burst" => o.burst = n()?,
            "--hot-skus" => o.hot_skus = n()?.max(1),
            "--locations" => o.locations = n()?.clamp(1, 100),
            "--runs" => o.runs = n()?.max(1) as usize,
            "--dir" => o.dir = Some(PathBuf::from(v)),
            other => anyhow::bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    Ok(Some(o))
}

fn settings() -> anyhow::Result<Settings> {
    Settings::parse("restart-bench", CONFIG).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Events `first..first + n`, uniform over `skus` x `locations`, one in fifty a count, occurring in
/// order (a hundred a second); ids carry `prefix`, so every burst is new to the ledger.
fn events(
    settings: &Settings,
    prefix: &str,
    first: u64,
    n: u64,
    skus: u64,
    locations: u64,
) -> anyhow::Result<Vec<Incoming>> {
    let base = 1_795_000_000i64; // 2026-11-18
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ first;
    (first..first + n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = chrono::DateTime::from_timestamp(base + (i / 100) as i64, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            let set = x.is_multiple_of(50);
            let mut v = serde_json::json!({
                "id": format!("{prefix}{i}"), "source": "wms",
                "sku": format!("SKU-{:06}", x % skus),
                "location": format!("L{:02}", (x >> 20) % locations),
                "occurred_at": at,
            });
            v[if set { "set" } else { "adjust" }] = if set {
                serde_json::json!({"on_hand": (x >> 32) % 500})
            } else {
                serde_json::json!({"on_hand": ((x >> 32) % 21) as i64 - 10})
            };
            let e = driftless_server::wire::parse_event(&v).map_err(|e| anyhow::anyhow!("{e}"))?;
            let p = settings
                .rules
                .prepare(e)
                .map_err(|e| anyhow::anyhow!("{}", e.1.0))?;
            Ok(Incoming::Event(Box::new(p)))
        })
        .collect()
}

/// Sends `events` to `store` in groups of `FILL_GROUP`, two in flight (the writer commits one
/// while the next is built).
async fn send(store: &SqliteStore, events: Vec<Incoming>) -> anyhow::Result<()> {
    let mut groups: Vec<Vec<Incoming>> = Vec::new();
    let mut it = events.into_iter().peekable();
    while it.peek().is_some() {
        groups.push(it.by_ref().take(FILL_GROUP).collect());
    }
    let mut pairs = groups.into_iter();
    loop {
        let (a, b) = (pairs.next(), pairs.next());
        if a.is_none() {
            return Ok(());
        }
        let now = chrono::Utc::now();
        let fa = async {
            match a {
                Some(g) => store.apply(now, g).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let fb = async {
            match b {
                Some(g) => store.apply(now, g).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let (ra, rb) = tokio::join!(fa, fb);
        ra?;
        rb?;
    }
}

/// Brings the ledger to `target` events (set-up: durable commits off, closed cleanly).
async fn fill(dir: &Path, target: u64, locations: u64) -> anyhow::Result<()> {
    let have = ledger_events(dir).await?;
    if have >= target {
        println!("ledger holds {have} events (kept from an earlier run)");
        return Ok(());
    }
    let s = settings()?;
    let opts = SqliteOptions {
        fsync: false,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir, s.rules.clone(), s.channel_specs(), opts).await?;
    let started = Instant::now();
    let mut at = have;
    while at < target {
        let n = (target - at).min(500_000);
        send(&store, events(&s, "f-", at, n, FILL_SKUS, locations)?).await?;
        at += n;
        println!(
            "filled {at} events ({:.0} events/s)",
            (at - have) as f64 / started.elapsed().as_secs_f64()
        );
    }
    store.close().await;
    Ok(())
}

/// The child: opens the ledger with the defaults, sends the burst, says so, and waits to be killed.
async fn child(
    dir: &Path,
    prefix: &str,
    burst: u64,
    hot: u64,
    locations: u64,
) -> anyhow::Result<()> {
    let s = settings()?;
    let first = ledger_events(dir).await?;
    // `RESTART_MAX_REPLAY` tries another `max_replay_events` (the bound on the replay).
    let opts = SqliteOptions {
        max_replay_events: std::env::var("RESTART_MAX_REPLAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(SqliteOptions::default().max_replay_events),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir, s.rules.clone(), s.channel_specs(), opts).await?;
    let evs = events(&s, prefix, first, burst, hot, locations)?;
    let started = Instant::now();
    send(&store, evs).await?;
    // The burst's rate: what a shorter bound costs a hot-set load.
    println!(
        "acknowledged {burst} at {:.0} events/s",
        burst as f64 / started.elapsed().as_secs_f64()
    );
    std::io::stdout().flush()?;
    // Killed here, before the writer's idle moment writes anything behind.
    std::future::pending::<()>().await;
    Ok(())
}

/// Reading the same tail rows (the columns the replay decodes, pages of 20,000) and nothing else,
/// row by row as sqlx reads them, on a connection of its own: what the replay's reading cost
/// before it read each page as one JSON text, and a yardstick for the machine's speed in the run.
async fn bare_tail_read(dir: &Path, after: u64) -> anyhow::Result<Duration> {
    use sqlx::{ConnectOptions, Connection, Row};
    let mut c = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join("driftless.sqlite3"))
        .read_only(true)
        .connect()
        .await?;
    let started = Instant::now();
    let mut at = after as i64;
    loop {
        let rows = sqlx::query(
            "SELECT lsn, id, source, sku, location, at_nanos, seq, received_nanos, kind, outcome, \
             effective, on_hand, committed, reserved, incoming, unavailable \
             FROM events WHERE lsn > ? ORDER BY lsn LIMIT 20000",
        )
        .bind(at)
        .fetch_all(&mut c)
        .await?;
        let Some(last) = rows.last() else { break };
        at = last.try_get("lsn")?;
    }
    let took = started.elapsed();
    c.close().await?;
    Ok(took)
}

/// Opens the ledger as `serve` does and returns how long that took.
async fn open_timed(dir: &Path) -> anyhow::Result<(Duration, SqliteStore)> {
    let s = settings()?;
    let started = Instant::now();
    let store = SqliteStore::open(dir, s.rules.clone(), s.channel_specs()).await?;
    Ok((started.elapsed(), store))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One run's seconds: the open after SIGKILL, after a clean stop, and the bare read of the tail.
struct Timed {
    crash: f64,
    clean: f64,
    read: f64,
}

/// One run: burst in a child, SIGKILL, timed open, check, bare read, clean stop, timed open.
async fn run(o: &Opts, dir: &Path, run: usize) -> anyhow::Result<Timed> {
    let before = ledger_events(dir).await?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--child")
        .arg(dir)
        .arg(format!("k{run}-{}-", std::process::id()))
        .arg(o.burst.to_string())
        .arg(o.hot_skus.to_string())
        .arg(o.locations.to_string())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut line)?;
    anyhow::ensure!(
        line.starts_with("acknowledged"),
        "the burst failed: {line:?}"
    );
    println!("run {run}: {}", line.trim());
    // `Child::kill` is SIGKILL on Unix.
    child.kill()?;
    child.wait()?;
    let (crash, store) = open_timed(dir).await?;
    store.close().await;
    let after = ledger_events(dir).await?;
    anyhow::ensure!(
        after == before + o.burst,
        "acknowledged events lost: {before} + {} != {after}",
        o.burst
    );
    let read = bare_tail_read(dir, before).await?;
    let (clean, store) = open_timed(dir).await?;
    store.close().await;
    println!(
        "run {run}: ledger {after} events, burst {} over {} slots: ready {:.2} s after SIGKILL, \
         {:.2} s after a clean stop; bare read of the burst's rows {:.2} s",
        o.burst,
        o.hot_skus * o.locations,
        crash.as_secs_f64(),
        clean.as_secs_f64(),
        read.as_secs_f64()
    );
    Ok(Timed {
        crash: crash.as_secs_f64(),
        clean: clean.as_secs_f64(),
        read: read.as_secs_f64(),
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    bench_log::init_from_env("DRIFTLESS_LOG");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if args.first().map(String::as_str) == Some("--child") {
        let num = |i: usize| -> anyhow::Result<u64> {
            Ok(args.get(i).context("child argument")?.parse()?)
        };
        let dir = PathBuf::from(args.get(1).context("child dir")?);
        let prefix = args.get(2).context("child prefix")?.clone();
        return rt.block_on(child(&dir, &prefix, num(3)?, num(4)?, num(5)?));
    }
    let Some(o) = parse_args(&args)? else {
        return Ok(());
    };
    rt.block_on(async {
        let tmp = tempfile::tempdir()?;
        let dir = o.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
        println!(
            "restart benchmark: ledger of {} events, bursts of {} over {} skus x {} locations, \
             {} runs",
            o.ledger, o.burst, o.hot_skus, o.locations, o.runs
        );
        fill(&dir, o.ledger, o.locations).await?;
        let mut runs = Vec::new();
        for r in 0..o.runs {
            runs.push(run(&o, &dir, r).await?);
        }
        let med = |f: fn(&Timed) -> f64| median(runs.iter().map(f).collect());
        println!();
        println!("| measure | median |");
        println!("|---|---|");
        println!(
            "| ready after SIGKILL that followed a burst of {} events | {:.2} s |",
            o.burst,
            med(|t| t.crash)
        );
        println!(
            "| ready after a clean stop, same ledger | {:.2} s |",
            med(|t| t.clean)
        );
        println!(
            "| bare row-by-row read of the burst's rows through sqlx | {:.2} s |",
            med(|t| t.read)
        );
        println!(
            "| ready after SIGKILL / bare read | {:.1}x |",
            med(|t| t.crash) / med(|t| t.read)
        );
        anyhow::Ok(())
    })
}
