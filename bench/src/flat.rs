//! Flat ingest: the same batched load into an empty ledger and into one that already holds
//! `--ledger` events, in the same run (`--ledger N [--dir PATH]`, with the ingest benchmark's
//! `--events`, `--skus`, `--locations`, `--batch` and `--runs`).
//!
//! The full ledger is filled once, straight through the store (groups of 20,000, durable commits
//! off: set-up, not measured) over the same skus and locations as the load; `--dir` keeps it for
//! the next invocation. Each run then sends the load over HTTP, `--batch` events a request and four
//! in flight, to a hub on a fresh data directory and to a hub on the full ledger (which grows by
//! the load each run), in turn, alternating which goes first. Prints both rates and their ratio,
//! beside bare SQL (`bare_ledger.rs`) writing the same rows, then only the events' rows (of five
//! times the load), into an empty database and into a copy of the full ledger (taken once, kept
//! beside it, grown by each run).

use crate::bare_ledger::{self, Rows};
use crate::ledger::ledger_events;
use crate::{CONFIG, Measured, Opts, hub, json, median, report, rows_from, send};
use anyhow::Context;
use driftless_config::Settings;
use driftless_store::sqlite::SqliteOptions;
use driftless_store::{Incoming, SqliteStore, Store};
use std::path::Path;
use std::time::Instant;

/// Events per `apply` while filling: one group commit each (`max_group_events`).
const FILL_GROUP: usize = 20_000;
/// Events generated and sent per step of the fill (memory stays bounded).
const FILL_STEP: usize = 500_000;

/// Runs the comparison; `ledger` events in the full ledger, kept in `dir` when given.
pub async fn run(o: &Opts, ledger: usize, dir: Option<&Path>) -> anyhow::Result<()> {
    println!(
        "flat ingest benchmark: {} events over {} skus x {} locations, {} per request, into an \
         empty ledger and into one of {} events; {} runs (medians)",
        o.events, o.skus, o.locations, o.batch, ledger, o.runs
    );
    let tmp = tempfile::tempdir()?;
    let full = dir.unwrap_or(tmp.path());
    let held = fill(full, ledger, o).await?;
    let bare_full = bare_copy(full)?;
    let (mut empty_runs, mut full_runs) = (Vec::new(), Vec::new());
    // Per `Rows`: the empty database's rates and the full copy's.
    let mut bare: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for run in 0..o.runs {
        // Positioned after everything the full ledger holds: new events there, not late ones.
        let first = held + run * o.events;
        let stream = rows_from(
            first,
            o.events,
            o.skus,
            o.locations,
            &format!("flat{first}-"),
        );
        let bodies: Vec<String> = stream
            .chunks(o.batch)
            .map(|c| serde_json::Value::Array(c.iter().map(json).collect()).to_string())
            .collect();
        // Alternating the order, so that neither side always runs on a warmer machine.
        for side in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let fresh = tempfile::tempdir()?;
                let m = load(fresh.path(), bodies.clone(), o.events).await?;
                report(run, "empty ledger", "events", &m);
                empty_runs.push(m);
            } else {
                let m = load(full, bodies.clone(), o.events).await?;
                report(run, "full ledger ", "events", &m);
                full_runs.push(m);
            }
        }
        for what in Rows::ALL {
            // The same events under ids of their own (the copy already holds the first pass's);
            // the events rows alone go so fast that five times the load is written, so that the
            // measure lasts seconds rather than a fraction of one.
            let n = if what == Rows::All {
                o.events
            } else {
                5 * o.events
            };
            let stream = rows_from(
                first,
                n,
                o.skus,
                o.locations,
                &format!("bare{}-{first}-", what as usize),
            );
            let name = what.name();
            for side in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
                if side == 0 {
                    let fresh = tempfile::tempdir()?;
                    let r = bare_ledger::write(&fresh.path().join("bare.sqlite3"), &stream, what)
                        .await?;
                    println!("run {run}: bare SQL, {name}, empty database {r:>10.0} events/s");
                    bare[what as usize].0.push(r);
                } else {
                    let r = bare_ledger::write(&bare_full, &stream, what).await?;
                    println!("run {run}: bare SQL, {name}, full ledger's copy {r:>10.0} events/s");
                    bare[what as usize].1.push(r);
                }
            }
        }
    }
    let med = |v: &[Measured], f: fn(&Measured) -> f64| median(v.iter().map(f).collect());
    let rate = |m: &Measured| m.events_per_sec;
    let (e, f) = (med(&empty_runs, rate), med(&full_runs, rate));
    println!();
    println!("| measure | median |");
    println!("|---|---|");
    println!("| batched ingest into an empty ledger | {e:.0} events/s |");
    println!("| batched ingest into a ledger of {ledger}+ events | {f:.0} events/s |");
    println!(
        "| request p99, empty / full | {:.1} / {:.1} ms |",
        med(&empty_runs, |m| m.p99.as_secs_f64() * 1e3),
        med(&full_runs, |m| m.p99.as_secs_f64() * 1e3)
    );
    println!("| full / empty | {:.2}x |", f / e);
    for (what, (empty, full)) in Rows::ALL.into_iter().zip(bare) {
        let (what, be, bf) = (what.name(), median(empty), median(full));
        println!(
            "| bare SQL, {what}: empty database / the full ledger's copy | {be:.0} / {bf:.0} events/s |"
        );
        println!("| bare SQL, {what}: full / empty | {:.2}x |", bf / be);
    }
    Ok(())
}

/// The bare-SQL copy of the full ledger in `dir`, taken once (the ledger is closed, so the file
/// and its WAL, when there is one, are consistent) and kept: it grows by each run's load, as the
/// hub's ledger does.
fn bare_copy(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let copy = dir.join("bare-ledger.sqlite3");
    if !copy.exists() {
        let started = Instant::now();
        let wal = dir.join("driftless.sqlite3-wal");
        if wal.exists() {
            std::fs::copy(&wal, dir.join("bare-ledger.sqlite3-wal"))?;
        }
        // The main file last and under its name only once whole: a copy cut short is taken again.
        let part = dir.join("bare-ledger.sqlite3.part");
        std::fs::copy(dir.join("driftless.sqlite3"), &part)
            .with_context(|| format!("copying the full ledger to {}", part.display()))?;
        std::fs::rename(&part, &copy)?;
        println!(
            "copied the full ledger for bare SQL in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(copy)
}

/// The load against a hub on `dir`, four requests in flight; the hub is stopped cleanly after.
async fn load(dir: &Path, bodies: Vec<String>, events: usize) -> anyhow::Result<Measured> {
    let (base, stop, task) = hub(dir).await?;
    let m = send(&base, bodies, events, 4).await?;
    let _ = stop.send(());
    task.await??;
    Ok(m)
}

/// Brings the ledger in `dir` to `target` events through the store, durable commits off; returns
/// the events it holds.
async fn fill(dir: &Path, target: usize, o: &Opts) -> anyhow::Result<usize> {
    let have = usize::try_from(ledger_events(dir).await?)?;
    if have >= target {
        println!("full ledger holds {have} events (kept from an earlier run)");
        return Ok(have);
    }
    let s = Settings::parse("bench", CONFIG).map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = SqliteOptions {
        fsync: false,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir, s.rules.clone(), s.channel_specs(), opts).await?;
    let started = Instant::now();
    let mut at = have;
    while at < target {
        let n = (target - at).min(FILL_STEP);
        let step = rows_from(at, n, o.skus, o.locations, &format!("fill{at}-"));
        let mut events = Vec::with_capacity(n);
        for r in &step {
            let e = driftless_server::wire::parse_event(&json(r))
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("a fill event")?;
            let p = s
                .rules
                .prepare(e)
                .map_err(|e| anyhow::anyhow!("{}", e.1.0))?;
            events.push(Incoming::Event(Box::new(p)));
        }
        for group in events.chunks(FILL_GROUP) {
            store.apply(chrono::Utc::now(), group.to_vec()).await?;
        }
        at += n;
        println!(
            "filled {at} events ({:.0} events/s)",
            (at - have) as f64 / started.elapsed().as_secs_f64()
        );
    }
    store.close().await;
    Ok(at)
}
