//! Ingest benchmark: the real HTTP API on the embedded SQLite ledger against its ceiling, a bare
//! SQLite batched INSERT of the same rows, bare durable commits, a bare HTTP server and the two
//! together (`group_commit.rs`), on the same machine in the same run.
//!
//! ```text
//! cargo run --release -p driftless-bench -- [--events N] [--skus N] [--locations N] [--batch N]
//!     [--single N] [--clients N] [--runs N] [--ledger N [--dir PATH]]
//! ```
//! Prints events/s, request latency p50/p99 and the ratio to the ceiling, with the median of
//! `--runs` runs. With `--ledger N [--dir PATH]`, the flat-ingest comparison instead: the same
//! batched load into an empty ledger and into one of N events (`flat.rs`). Durability is on everywhere (`synchronous = FULL`): an acknowledged event is on
//! disk, as in production. `BENCH_MAX_REPLAY` sets the store's `max_replay_events`.

/// The allocator the `driftless` binary uses, so the hub is measured as it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../common/log.rs"]
mod bench_log;

use anyhow::Context;
use driftless_config::Settings;
use driftless_server::{AppState, Server};
use driftless_store::SqliteStore;
use group_commit::Durable;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, QueryBuilder, Sqlite};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod bare_ledger;
mod flat;
mod group_commit;
#[path = "../common/ledger.rs"]
mod ledger;

struct Opts {
    events: usize,
    skus: usize,
    locations: usize,
    batch: usize,
    single: usize,
    clients: usize,
    runs: usize,
    /// Flat ingest (`flat.rs`): the events of the full ledger, and where it is kept.
    ledger: Option<usize>,
    dir: Option<std::path::PathBuf>,
    /// Only serve the group-commit ceiling on this address (for `bench/single/run.sh`'s wrk).
    serve_group_commit: Option<String>,
}

const USAGE: &str = "usage: driftless-bench [--events N] [--skus N] [--locations N] [--batch N] \
[--single N] [--clients N] [--runs N] [--ledger N [--dir PATH]]
       driftless-bench --serve-group-commit ADDR --dir PATH
  defaults: 1,000,000 events, 100,000 skus, 20 locations, 1,000 a request, 64,000 single events
  from 64 clients, 3 runs; --ledger N compares ingest into an empty ledger and one of N events
  (kept in --dir); --serve-group-commit serves the single-event ceiling of a durable design
  (group_commit.rs) on ADDR over a database in --dir until killed (BENCH_DURABLE=file: to a
  plain file); BENCH_MAX_REPLAY sets the store's max_replay_events";

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        events: 1_000_000,
        skus: 100_000,
        locations: 20,
        batch: 1000,
        single: 64_000,
        clients: 64,
        runs: 3,
        ledger: None,
        dir: None,
        serve_group_commit: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let text = it.next().with_context(|| format!("{flag} needs a value"))?;
        if flag == "--dir" {
            o.dir = Some(text.into());
            continue;
        }
        if flag == "--serve-group-commit" {
            o.serve_group_commit = Some(text.clone());
            continue;
        }
        let v: usize = text
            .parse()
            .with_context(|| format!("{flag} takes a whole number"))?;
        match flag.as_str() {
            "--ledger" => o.ledger = Some(v),
            "--events" => o.events = v,
            "--skus" => o.skus = v,
            "--locations" => o.locations = v,
            "--batch" => o.batch = v.clamp(1, 10_000),
            "--single" => o.single = v,
            "--clients" => o.clients = v.max(1),
            "--runs" => o.runs = v.max(1),
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(o)
}

/// A deterministic event stream: uniform over skus x locations, mostly adjustments, one in fifty a
/// count (`set`), positions increasing (a hundred events a second of `occurred_at`).
struct Row {
    id: String,
    sku: String,
    location: String,
    at: String,
    at_nanos: i64,
    set: bool,
    qty: i64,
}

fn rows(n: usize, skus: usize, locations: usize, prefix: &str) -> Vec<Row> {
    rows_from(0, n, skus, locations, prefix)
}

/// The stream's events `first..first + n` (`first` also seeds the choice of skus): a stream sent
/// after another one, positioned after it, so that it is not a stream of late events.
fn rows_from(first: usize, n: usize, skus: usize, locations: usize, prefix: &str) -> Vec<Row> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ first as u64;
    let base = 1_795_000_000i64; // 2026-11-18
    (first..first + n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = base + (i / 100) as i64;
            let set = x.is_multiple_of(50);
            Row {
                id: format!("{prefix}{i}"),
                sku: format!("SKU-{:06}", x % skus as u64),
                location: format!("L{:02}", (x >> 20) % locations as u64),
                at: chrono::DateTime::from_timestamp(secs, 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
                at_nanos: secs * 1_000_000_000,
                set,
                qty: if set {
                    (x >> 32) as i64 % 500
                } else {
                    (x >> 32) as i64 % 21 - 10
                },
            }
        })
        .collect()
}

fn json(r: &Row) -> serde_json::Value {
    let q = serde_json::json!({"on_hand": r.qty});
    let mut e = serde_json::json!({
        "id": r.id, "source": "wms", "sku": r.sku, "location": r.location, "occurred_at": r.at,
    });
    e[if r.set { "set" } else { "adjust" }] = q;
    e
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
auth = "none"
max_pending = 4096

[[systems]]
id = "wms"
role = "wms"

[[channels]]
id = "shop"
locations = ["L00", "L01", "L02", "L03", "L04", "L05", "L06", "L07", "L08", "L09"]
"#;

struct Measured {
    events_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// One run's line for one measurement.
fn report(run: usize, what: &str, unit: &str, m: &Measured) {
    println!(
        "run {run}: {what} {:>10.0} {unit}/s  request p50 {:>7.1} ms  p99 {:>7.1} ms",
        m.events_per_sec,
        m.p50.as_secs_f64() * 1e3,
        m.p99.as_secs_f64() * 1e3
    );
}

/// Starts a hub on a fresh data directory and returns its base URL and a stopper.
async fn hub(
    dir: &std::path::Path,
) -> anyhow::Result<(
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
)> {
    let settings = Settings::parse("bench", CONFIG).map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = driftless_store::sqlite::SqliteOptions {
        fsync: std::env::var("BENCH_NOFSYNC").is_err(),
        max_dirty_slots: std::env::var("BENCH_MAX_DIRTY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000),
        max_cached_slots: std::env::var("BENCH_MAX_CACHED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000),
        max_replay_events: std::env::var("BENCH_MAX_REPLAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(driftless_store::sqlite::SqliteOptions::default().max_replay_events),
        ..Default::default()
    };
    let store =
        SqliteStore::open_with(dir, settings.rules.clone(), settings.channel_specs(), opts).await?;
    let server = Server::bind("127.0.0.1:0", AppState::new(settings, Arc::new(store))).await?;
    let addr = server.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until_stopped(async {
        let _ = rx.await;
    }));
    Ok((format!("http://{addr}"), tx, task))
}

/// Sends pre-serialised bodies with `concurrency` requests in flight; returns the measurement.
async fn send(
    base: &str,
    bodies: Vec<String>,
    events: usize,
    concurrency: usize,
) -> anyhow::Result<Measured> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let queue = Arc::new(std::sync::Mutex::new(
        bodies.into_iter().rev().collect::<Vec<_>>(),
    ));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let http = http.clone();
        let url = format!("{base}/v1/events");
        let queue = queue.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while let Some(body) = queue.lock().ok().and_then(|mut q| q.pop()) {
                let t = Instant::now();
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "status {}", r.status());
                let _ = r.bytes().await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let wall = start.elapsed();
    lat.sort_unstable();
    Ok(Measured {
        events_per_sec: events as f64 / wall.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    })
}

/// The single-event ceiling: the same client and requests against an HTTP server that reads each
/// body and answers at once, on the same machine. What is left between it and the hub is the
/// hub's own work (parsing, deciding, the durable commit).
async fn bare_http() -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let app = axum::Router::new().route(
        "/v1/events",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let _ = body.len();
            (
                [("content-type", "application/json")],
                r#"{"results":[{"outcome":"applied"}]}"#,
            )
        }),
    );
    spawn_app(app, "127.0.0.1:0").await
}

/// Serves `app` on `addr` in a task of its own; returns its base URL and a stopper.
async fn spawn_app(
    app: axum::Router,
    addr: &str,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok((format!("http://{addr}"), tx))
}

/// A fresh database with the ledger's schema and the ledger's durability settings.
async fn bare_db(dir: &std::path::Path, name: &str) -> anyhow::Result<sqlx::SqliteConnection> {
    // A large page cache and the statement journal in memory, so the ceiling is not slowed by
    // settings the hub does not have.
    open_bare(&dir.join(name), &[("cache_size", "-262144")]).await
}

/// The database at `file` (created when new) with the ledger's schema, WAL, `synchronous = FULL`,
/// the statement journal in memory and `pragmas`.
async fn open_bare(
    file: &std::path::Path,
    pragmas: &[(&'static str, &'static str)],
) -> anyhow::Result<sqlx::SqliteConnection> {
    let mut options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .pragma("temp_store", "memory");
    for (key, value) in pragmas {
        options = options.pragma(*key, *value);
    }
    let mut conn = options.connect().await?;
    for stmt in driftless_store::schema::SQLITE {
        sqlx::query(*stmt).execute(&mut conn).await?;
    }
    Ok(conn)
}

/// The single-event durability ceiling: the same rows into the same table, `clients` rows per
/// durable transaction, one transaction after another. With one request in flight per client, a
/// group commit can hold at most `clients` events, so this is as fast as any ledger that
/// acknowledges only durable events can take them from that many clients on this disk, before
/// HTTP, JSON or the fold.
async fn bare_commits(dir: &std::path::Path, rows: &[Row], clients: usize) -> anyhow::Result<f64> {
    let mut conn = bare_db(dir, "commits.sqlite3").await?;
    let start = Instant::now();
    for chunk in rows.chunks(clients) {
        let mut tx = conn.begin().await?;
        insert_rows(&mut tx, chunk, None).await?;
        tx.commit().await?;
    }
    Ok(rows.len() as f64 / start.elapsed().as_secs_f64())
}

/// One multi-row INSERT of `rows` (at most a thousand) into the ledger's events table, positioned
/// from `first_lsn` when given (else SQLite numbers them).
async fn insert_rows(
    conn: &mut sqlx::SqliteConnection,
    rows: &[Row],
    first_lsn: Option<i64>,
) -> anyhow::Result<()> {
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "INSERT INTO events ({}id, fingerprint, source, sku, location, at_nanos, seq, kind, \
         on_hand, received_nanos, outcome, effective) ",
        if first_lsn.is_some() { "lsn, " } else { "" }
    ));
    q.push_values(rows.iter().enumerate(), |mut b, (i, r)| {
        if let Some(lsn) = first_lsn {
            b.push_bind(lsn + i as i64);
        }
        b.push_bind(r.id.as_str())
            .push_bind([0u8; 32].as_slice())
            .push_bind("wms")
            .push_bind(r.sku.as_str())
            .push_bind(r.location.as_str())
            .push_bind(r.at_nanos)
            .push_bind(0i64)
            .push_bind(if r.set { "set" } else { "adjust" })
            .push_bind(r.qty)
            .push_bind(r.at_nanos)
            .push_bind("applied")
            .push_bind(true);
    });
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// The ceiling: the same rows into the same table with multi-row INSERTs, one transaction per
/// batch, no HTTP, no JSON, no idempotency lookup, no fold.
///
/// With `by_cell`, the events table also carries an index in `(sku, location, position)` order, as
/// a ledger that updates its per-cell index with every insert would (the hub writes that index
/// behind, see `crates/driftless-store/src/keys.rs`): the ceiling of that design.
async fn bare_insert(
    dir: &std::path::Path,
    rows: &[Row],
    batch: usize,
    by_cell: bool,
) -> anyhow::Result<f64> {
    let mut conn = bare_db(dir, "bare.sqlite3").await?;
    if by_cell {
        sqlx::query("CREATE INDEX events_by_cell ON events (sku, location, at_nanos, seq, id)")
            .execute(&mut conn)
            .await?;
    }
    let start = Instant::now();
    for chunk in rows.chunks(batch) {
        let mut tx = conn.begin().await?;
        for part in chunk.chunks(1000) {
            insert_rows(&mut tx, part, None).await?;
        }
        tx.commit().await?;
    }
    Ok(rows.len() as f64 / start.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    // reqwest is built without a default TLS provider (the connectors pick ring); install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    bench_log::init_from_env("DRIFTLESS_LOG");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(addr) = &o.serve_group_commit {
        let dir = o.dir.clone().context("--serve-group-commit needs --dir")?;
        return rt.block_on(async move {
            let durable = match std::env::var("BENCH_DURABLE").as_deref() {
                Ok("file") => Durable::File,
                _ => Durable::Sqlite,
            };
            let (base, _stop) = group_commit::serve(&dir, addr, durable).await?;
            println!("group-commit ceiling serving on {base}");
            std::future::pending::<anyhow::Result<()>>().await
        });
    }
    if let Some(ledger) = o.ledger {
        return rt.block_on(flat::run(&o, ledger, o.dir.as_deref()));
    }
    rt.block_on(async move {
        println!(
            "ingest benchmark: {} events over {} skus x {} locations, {} per request; {} single-event requests from {} clients; {} runs (medians)",
            o.events, o.skus, o.locations, o.batch, o.single, o.clients, o.runs
        );
        let mut batched = Vec::new();
        let mut bare = Vec::new();
        let mut bare_by_cell = Vec::new();
        let mut bare_http_rps = Vec::new();
        let mut bare_commit_rps = Vec::new();
        // SQLite's, then the plain file's.
        let mut group_commit_rps: [Vec<f64>; 2] = Default::default();
        let mut single = Vec::new();
        for run in 0..o.runs {
            let stream = rows(o.events, o.skus, o.locations, &format!("r{run}-"));
            let bodies: Vec<String> = stream
                .chunks(o.batch)
                .map(|c| serde_json::Value::Array(c.iter().map(json).collect()).to_string())
                .collect();

            let dir = tempfile::tempdir()?;
            let (base, stop, task) = hub(dir.path()).await?;
            // A few requests in flight, as several feeds would have: the writer commits them as one.
            let m = send(&base, bodies, o.events, 4).await?;
            report(run, "batched  ", "events", &m);
            batched.push(m);

            let singles = rows(o.single, o.skus, o.locations, &format!("s{run}-"));
            let bodies: Vec<String> = singles.iter().map(|r| json(r).to_string()).collect();
            let m = send(&base, bodies, o.single, o.clients).await?;
            report(run, "single   ", "events", &m);
            single.push(m);
            let _ = stop.send(());
            task.await??;

            let (http_base, http_stop) = bare_http().await?;
            let bodies: Vec<String> = singles.iter().map(|r| json(r).to_string()).collect();
            let m = send(&http_base, bodies, o.single, o.clients).await?;
            report(run, "bare HTTP", "requests", &m);
            bare_http_rps.push(m.events_per_sec);
            let _ = http_stop.send(());

            for (i, (durable, name)) in [(Durable::Sqlite, "SQLite"), (Durable::File, "file")].into_iter().enumerate() {
                let group_dir = tempfile::tempdir()?;
                let (group_base, group_stop) = group_commit::serve(group_dir.path(), "127.0.0.1:0", durable).await?;
                let bodies: Vec<String> = singles.iter().map(|r| json(r).to_string()).collect();
                let m = send(&group_base, bodies, o.single, o.clients).await?;
                report(run, &format!("bare HTTP + group commit ({name})"), "events", &m);
                group_commit_rps[i].push(m.events_per_sec);
                let _ = group_stop.send(());
            }

            let commits_dir = tempfile::tempdir()?;
            let c = bare_commits(commits_dir.path(), &singles, o.clients).await?;
            println!("run {run}: bare SQLite durable commits of {} rows {:>10.0} rows/s", o.clients, c);
            bare_commit_rps.push(c);

            let bare_dir = tempfile::tempdir()?;
            let b = bare_insert(bare_dir.path(), &stream, o.batch, false).await?;
            println!("run {run}: bare SQLite INSERT {:>10.0} rows/s", b);
            let bare_dir = tempfile::tempdir()?;
            let bc = bare_insert(bare_dir.path(), &stream, o.batch, true).await?;
            println!("run {run}: bare SQLite INSERT with a per-cell index {:>10.0} rows/s", bc);
            bare.push(b);
            bare_by_cell.push(bc);
        }
        let med = |v: &[Measured], f: fn(&Measured) -> f64| median(v.iter().map(f).collect());
        let b_eps = med(&batched, |m| m.events_per_sec);
        let bare_rps = median(bare.clone());
        println!();
        println!("| measure | median |");
        println!("|---|---|");
        println!("| batched ingest (HTTP, {} per request, durable) | {:.0} events/s |", o.batch, b_eps);
        println!("| batched request latency p50 / p99 | {:.1} / {:.1} ms |", med(&batched, |m| m.p50.as_secs_f64() * 1e3), med(&batched, |m| m.p99.as_secs_f64() * 1e3));
        println!("| bare SQLite batched INSERT (ceiling) | {:.0} rows/s |", bare_rps);
        println!("| batched / ceiling | {:.2}x |", b_eps / bare_rps);
        let by_cell = median(bare_by_cell.clone());
        println!("| bare INSERT with the per-cell index inline | {:.0} rows/s |", by_cell);
        println!("| batched / that | {:.2}x |", b_eps / by_cell);
        println!("| single-event ingest ({} clients) | {:.0} events/s |", o.clients, med(&single, |m| m.events_per_sec));
        println!("| single-event latency p50 / p99 | {:.1} / {:.1} ms |", med(&single, |m| m.p50.as_secs_f64() * 1e3), med(&single, |m| m.p99.as_secs_f64() * 1e3));
        let http = median(bare_http_rps.clone());
        println!("| bare HTTP round trip, same client and requests (ceiling) | {:.0} requests/s |", http);
        println!("| single-event / that | {:.2}x |", med(&single, |m| m.events_per_sec) / http);
        let commits = median(bare_commit_rps.clone());
        println!("| bare SQLite durable commits of {} rows, one after another (ceiling) | {:.0} rows/s |", o.clients, commits);
        println!("| single-event / that | {:.2}x |", med(&single, |m| m.events_per_sec) / commits);
        for (rates, name) in group_commit_rps.into_iter().zip(["SQLite", "an fdatasync'd file"]) {
            let group = median(rates);
            println!("| bare HTTP answered after a durable group commit to {name} (ceiling) | {:.0} events/s |", group);
            println!("| single-event / that | {:.2}x |", med(&single, |m| m.events_per_sec) / group);
            println!("| that / bare HTTP | {:.2}x |", group / http);
        }
        anyhow::Ok(())
    })
}
