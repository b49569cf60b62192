//! PostgreSQL ingest benchmark: batched events through two hubs on one PostgreSQL database (each
//! its own store and HTTP server, as two processes would be, in one process for the measurement),
//! with and without JetStream between them, next to (a) a bare `COPY` of the same rows into a
//! table like the hub's `events` (the same primary key and indexes) and (b) the naive design. All
//! on the same server, in the same round; `--runs` rounds (default 3), each on fresh databases,
//! and the medians and the ratios of the medians printed at the end.
//!
//! **The naive design** is what most middleware does with an event: one transaction per event,
//! `INSERT ... ON CONFLICT DO NOTHING` of the event and an upsert of the level, committed before
//! the next event on that connection. Middleware runs it from a pool of workers, so it is measured
//! with as many connections as the hubs get requests in flight (`--clients`, default 8): the same
//! concurrency on both sides is the fair comparison, and PostgreSQL then groups the concurrent
//! commits into shared WAL flushes (far cheaper than one fsync per event). A single worker (one
//! connection, the strictly sequential consumer) is printed beside it for reference. The hubs
//! cannot beat the bare `COPY` of their own rows, so `COPY / naive` is the ceiling of `hubs /
//! naive` on a machine: printed too.
//!
//! ```text
//! cargo run --release -p driftless-bench --bin pg -- [--events N] [--batch N] [--naive N]
//!     [--skus N] [--clients N] [--runs N] [--nats URL]
//! cargo run --release -p driftless-bench --bin pg -- --ready-events N --serve PATH [--runs N]
//! ```
//! The server is `BENCH_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! each round makes its own databases (`dl_pg_bench_*`) and drops them. `--nats` (or
//! `BENCH_NATS_URL`) adds the two hubs with JetStream (a stream of the run's own, deleted after):
//! timed until every event is in the ledger, not until the `202`s, and beside it the ceiling of
//! that path (`bus_copy.rs`): the same events through JetStream into `COPY`, with the outcome and
//! channel messages the path owes, nothing else.
//! `BENCH_LOG` (e.g. `driftless_store=debug`) prints the store's log, with the time of each
//! group's phases.
//!
//! Every measured phase also prints its CPU per event by whom (PostgreSQL, this process, NATS,
//! the rest) and the machine's idle share (`cpu.rs`): it says who spends the time, and with every
//! core busy it is what sets the rate. From it comes the bound printed for the two hubs with
//! JetStream (`bus_bound`).
//!
//! `--ready-events N` measures instead the time from starting a real `driftless serve` (the
//! binary at `--serve`) on a PostgreSQL ledger of N events until `/readyz` answers 200: the
//! ledger is filled by one `INSERT ... SELECT FROM generate_series` into the real schema (made by
//! the hub's own migrations; the events table's indexes dropped during the fill and built again
//! after), with slots, cells and the outbox consistent with the events.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bus_copy;
mod cpu;
#[path = "../common/pg_database.rs"]
mod pg_database;
mod ready;

#[path = "../common/log.rs"]
mod bench_log;

use pg_database::{create, drop_db};

use anyhow::Context;
use driftless_bus::{Bus, BusOptions};
use driftless_config::Settings;
use driftless_server::{AppState, Server};
use driftless_store::{PgOptions, PgStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

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
locations = ["DC1"]
"#;

struct Opts {
    events: usize,
    batch: usize,
    naive: usize,
    skus: usize,
    clients: usize,
    runs: usize,
    nats: Option<String>,
    ready_events: Option<usize>,
    serve: Option<std::path::PathBuf>,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        events: 1_000_000,
        batch: 1000,
        naive: 50_000,
        skus: 10_000,
        clients: 8,
        runs: 3,
        nats: std::env::var("BENCH_NATS_URL").ok(),
        ready_events: None,
        serve: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--nats" => {
                o.nats = Some(v);
                continue;
            }
            "--serve" => {
                o.serve = Some(v.into());
                continue;
            }
            _ => {}
        }
        let v: usize = v
            .parse()
            .with_context(|| format!("{flag} takes a whole number"))?;
        match flag.as_str() {
            "--events" => o.events = v.max(1),
            "--batch" => o.batch = v.clamp(1, 10_000),
            "--naive" => o.naive = v.max(1),
            "--skus" => o.skus = v.max(1),
            "--clients" => o.clients = v.max(1),
            "--runs" => o.runs = v.max(1),
            "--ready-events" => o.ready_events = Some(v.max(1)),
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    Ok(o)
}

/// Event `i`: a unique id, a sku among `skus`, a delta.
struct Ev {
    id: String,
    sku: String,
    at: String,
    at_nanos: i64,
    delta: i64,
}

fn ev(i: usize, skus: usize) -> Ev {
    let secs = (i % 86_400) as i64;
    Ev {
        id: format!("e{i}"),
        sku: format!("SKU-{:06}", (i * 7919) % skus),
        at: format!(
            "2026-11-27T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        ),
        at_nanos: 1_795_737_600_000_000_000 + secs * 1_000_000_000,
        delta: (i % 7) as i64 - 2,
    }
}

/// A hub on `db` (with the JetStream bus when `nats` names a server and a prefix): its base URL
/// and what stops it.
async fn hub(
    db: &str,
    nats: Option<(&str, &str)>,
) -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let settings = Settings::parse("bench", CONFIG).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Knobs to explore the store's and the bus's shape with (the defaults are what `serve` runs).
    let knob = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mut po = PgOptions::default();
    if let Some(n) = knob("BENCH_PG_APPLIERS") {
        po.appliers = n;
    }
    let store: Arc<dyn Store> = Arc::new(
        PgStore::open_with(db, settings.rules.clone(), settings.channel_specs(), po).await?,
    );
    let mut state = AppState::new(settings, store.clone());
    if let Some((url, prefix)) = nats {
        let mut o = BusOptions::new(url);
        o.prefix = prefix.to_owned();
        if let Some(n) = knob("BENCH_BUS_APPLYING") {
            o.max_applying = n;
        }
        if let Some(n) = knob("BENCH_BUS_PARTITIONS") {
            o.partitions = u16::try_from(n).unwrap_or(u16::MAX);
        }
        let b = Bus::connect(
            o,
            store.clone(),
            state.settings.rules.clone(),
            Arc::new(state.settings.channel_specs()),
        )
        .await?;
        b.start_appliers();
        state.bus = Some(b);
    }
    let server = Server::bind("127.0.0.1:0", state).await?;
    let addr = server.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Stopping closes the bus and the store.
    tokio::spawn(server.run_until_stopped(async {
        let _ = rx.await;
    }));
    Ok((format!("http://{addr}"), tx))
}

/// Events through the hubs on database `db`, requests of `batch` spread over them, `clients` in
/// flight. With `until_stored` the clock stops once the ledger holds every event (answers may be
/// `202 accepted` before), else at the last answer.
async fn through_hubs(
    o: &Opts,
    bases: &[String],
    db: &str,
    until_stored: bool,
) -> anyhow::Result<(f64, cpu::Spent)> {
    let bodies: Vec<String> = (0..o.events)
        .collect::<Vec<_>>()
        .chunks(o.batch)
        .map(|c| {
            let items: Vec<String> = c
                .iter()
                .map(|i| {
                    let e = ev(*i, o.skus);
                    format!(
                        r#"{{"id":"{}","source":"wms","sku":"{}","location":"DC1","occurred_at":"{}","adjust":{{"on_hand":{}}}}}"#,
                        e.id, e.sku, e.at, e.delta
                    )
                })
                .collect();
            format!("[{}]", items.join(","))
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(
        bodies.into_iter().enumerate().rev().collect::<Vec<_>>(),
    ));
    let http = reqwest::Client::new();
    let meter = Phase::start(db).await?;
    let mut tasks = Vec::new();
    for _ in 0..o.clients {
        let (http, queue, bases) = (http.clone(), queue.clone(), bases.to_vec());
        tasks.push(tokio::spawn(async move {
            while let Some((n, body)) = queue.lock().ok().and_then(|mut q| q.pop()) {
                let url = format!("{}/v1/events", bases[n % bases.len()]);
                let r = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "status {}", r.status());
                let _ = r.bytes().await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    if until_stored {
        let mut c = PgConnectOptions::from_str(db)?.connect().await?;
        loop {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(&mut c)
                .await?;
            if n as usize >= o.events {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let spent = meter.stop().await?;
    Ok((o.events as f64 / spent.wall, spent))
}

/// The same rows by `COPY` into a table like the hub's `events` (same primary key, same indexes).
async fn bare_copy(o: &Opts, db: &str) -> anyhow::Result<(f64, cpu::Spent)> {
    let mut c = PgConnectOptions::from_str(db)?.connect().await?;
    sqlx::query("CREATE TABLE events_copy (LIKE events INCLUDING ALL)")
        .execute(&mut c)
        .await?;
    let meter = Phase::start(db).await?;
    let mut copy = c
        .copy_in_raw(
            "COPY events_copy (id, fingerprint, source, sku, location, at_nanos, seq, kind, \
             on_hand, received_nanos, outcome, effective, claims) FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(1 << 20);
    for i in 0..o.events {
        buf.push_str(&bus_copy::copy_line(&ev(i, o.skus)));
        if buf.len() > (1 << 20) - 512 {
            copy.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    copy.send(buf.as_bytes()).await?;
    copy.finish().await?;
    let spent = meter.stop().await?;
    Ok((o.events as f64 / spent.wall, spent))
}

/// The naive design: per event, one transaction with an idempotent insert and a level update,
/// `n` events over `conns` connections (workers).
async fn naive(o: &Opts, db: &str, n: usize, conns: usize, table: &str) -> anyhow::Result<f64> {
    let mut c = PgConnectOptions::from_str(db)?.connect().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table}_events (source TEXT, id TEXT, sku TEXT, location TEXT, \
         at_nanos BIGINT, on_hand BIGINT, PRIMARY KEY (source, id)); \
         CREATE TABLE {table}_levels (sku TEXT, location TEXT, on_hand BIGINT NOT NULL, \
         PRIMARY KEY (sku, location));"
    )))
    .execute(&mut c)
    .await?;
    let insert = format!(
        "INSERT INTO {table}_events VALUES ('wms', $1, $2, 'DC1', $3, $4) ON CONFLICT DO NOTHING"
    );
    let level = format!(
        "INSERT INTO {table}_levels VALUES ($1, 'DC1', $2) ON CONFLICT (sku, location) \
         DO UPDATE SET on_hand = {table}_levels.on_hand + EXCLUDED.on_hand"
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (db, next, insert, level) =
            (db.to_owned(), next.clone(), insert.clone(), level.clone());
        let skus = o.skus;
        tasks.push(tokio::spawn(async move {
            let mut c = PgConnectOptions::from_str(&db)?.connect().await?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let e = ev(i, skus);
                let mut tx = c.begin().await?;
                let done = sqlx::query(sqlx::AssertSqlSafe(insert.as_str()))
                    .bind(&e.id)
                    .bind(&e.sku)
                    .bind(e.at_nanos)
                    .bind(e.delta)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 1 {
                    sqlx::query(sqlx::AssertSqlSafe(level.as_str()))
                        .bind(&e.sku)
                        .bind(e.delta)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// A measured phase: the CPU by whom (`cpu.rs`) and the bytes the server wrote to its WAL.
pub(crate) struct Phase {
    cpu: cpu::Meter,
    wal: i64,
    db: String,
}

impl Phase {
    pub(crate) async fn start(db: &str) -> anyhow::Result<Phase> {
        let wal = wal_position(db).await?;
        Ok(Phase {
            cpu: cpu::Meter::start(),
            wal,
            db: db.to_owned(),
        })
    }

    pub(crate) async fn stop(self) -> anyhow::Result<cpu::Spent> {
        let mut spent = self.cpu.stop();
        spent.wal = (wal_position(&self.db).await? - self.wal) as f64;
        Ok(spent)
    }
}

/// Where the server's WAL ends, in bytes: the difference over a phase is what the phase wrote to
/// it (the server's, every database; nothing else runs during a phase).
async fn wal_position(db: &str) -> anyhow::Result<i64> {
    let mut c = PgConnectOptions::from_str(db)?.connect().await?;
    let at: i64 =
        sqlx::query_scalar("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint")
            .fetch_one(&mut c)
            .await?;
    let _ = c.close().await;
    Ok(at)
}

/// One round's figures, events/s, and the CPU each measured phase spent.
#[derive(Default, Clone, Copy)]
struct Round {
    hubs: f64,
    hubs_cpu: cpu::Spent,
    hubs_js: Option<(f64, cpu::Spent)>,
    /// JetStream, `COPY` and the messages the path owes, with nothing else (`bus_copy.rs`).
    bus_copy: Option<(f64, cpu::Spent)>,
    copy: f64,
    copy_cpu: cpu::Spent,
    naive: f64,
    naive_one: f64,
}

async fn round(o: &Opts, url: &str, r: usize) -> anyhow::Result<Round> {
    let mut out = Round::default();
    let name = format!("dl_pg_bench_{}_{r}", std::process::id());
    let db = create(url, &name).await?;
    let result = async {
        let (a, stop_a) = hub(&db, None).await?;
        let (b, stop_b) = hub(&db, None).await?;
        (out.hubs, out.hubs_cpu) = through_hubs(o, &[a, b], &db, false).await?;
        let _ = (stop_a.send(()), stop_b.send(()));
        (out.copy, out.copy_cpu) = bare_copy(o, &db).await?;
        out.naive = naive(o, &db, o.naive, o.clients, "naive").await?;
        out.naive_one = naive(o, &db, (o.naive / 10).max(1), 1, "naive_one").await?;
        anyhow::Ok(())
    }
    .await;
    drop_db(url, &name).await;
    result?;
    if let Some(nats) = &o.nats {
        let name = format!("dl_pg_bench_js_{}_{r}", std::process::id());
        let db = create(url, &name).await?;
        let prefix = format!("dl_pg_bench_{}_{r}", std::process::id());
        let result = async {
            let (a, stop_a) = hub(&db, Some((nats, &prefix))).await?;
            let (b, stop_b) = hub(&db, Some((nats, &prefix))).await?;
            let through = through_hubs(o, &[a, b], &db, true).await?;
            let _ = (stop_a.send(()), stop_b.send(()));
            let ceiling = bus_copy::run(o, &db, nats, &prefix).await?;
            anyhow::Ok((through, ceiling))
        }
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        drop_db(url, &name).await;
        let mut bo = BusOptions::new(nats.as_str());
        bo.prefix = prefix;
        if let Ok(c) = async_nats::connect(nats.as_str()).await {
            let _ = async_nats::jetstream::new(c)
                .delete_stream(bo.stream_name())
                .await;
        }
        let (through, ceiling) = result?;
        out.hubs_js = Some(through);
        out.bus_copy = Some(ceiling);
    }
    Ok(out)
}

/// The most the two hubs with JetStream could reach on this machine if the bus cost them nothing
/// beyond what it costs the ceiling path (JetStream, `COPY` and the messages it owes): every core
/// busy, each event costing the CPU of the hubs without the bus plus the bus's own share, which
/// is the ceiling path's CPU per event less that of the bare `COPY` of the same rows. Optimistic
/// by construction: the second parse of each event and the API's waiting for outcomes are left
/// out.
fn bus_bound(r: &Round, events: usize) -> Option<f64> {
    let (_, bc) = r.bus_copy?;
    let cores = std::thread::available_parallelism().ok()?.get() as f64;
    let bus_us = (bc.per_event_us(events) - r.copy_cpu.per_event_us(events)).max(0.0);
    Some(cores * 1e6 / (r.hubs_cpu.per_event_us(events) + bus_us))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    bench_log::init_from_env("BENCH_LOG");
    let url = std::env::var("BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let rt = tokio::runtime::Runtime::new()?;
    if let Some(n) = o.ready_events {
        return rt.block_on(ready::run(&o, &url, n));
    }
    rt.block_on(async move {
        println!(
            "{} events in requests of {}, {} skus, {} clients; naive over {} events with {} \
             connections (and {} with one); {} rounds",
            o.events,
            o.batch,
            o.skus,
            o.clients,
            o.naive,
            o.clients,
            (o.naive / 10).max(1),
            o.runs
        );
        let mut rounds = Vec::new();
        for r in 0..o.runs {
            let x = round(&o, &url, r).await?;
            println!(
                "round {}: two hubs {:.0}{}, COPY {:.0}, naive {:.0} ({} conns), naive {:.0} (1 conn) \
                 events/s; hubs/COPY {:.2}x, hubs/naive {:.1}x, COPY/naive {:.1}x",
                r + 1,
                x.hubs,
                x.hubs_js
                    .zip(x.bus_copy)
                    .map(|((j, _), (b, _))| format!(", two hubs + JetStream {j:.0}, JetStream + COPY {b:.0}"))
                    .unwrap_or_default(),
                x.copy,
                x.naive,
                o.clients,
                x.naive_one,
                x.hubs / x.copy,
                x.hubs / x.naive,
                x.copy / x.naive,
            );
            println!("  CPU, two hubs:            {}", x.hubs_cpu.line(o.events));
            if let Some(((_, js), (_, bc))) = x.hubs_js.zip(x.bus_copy) {
                println!("  CPU, two hubs + JetStream: {}", js.line(o.events));
                println!("  CPU, JetStream + COPY:     {}", bc.line(o.events));
            }
            println!("  CPU, bare COPY:           {}", x.copy_cpu.line(o.events));
            rounds.push(x);
        }
        let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        let (hubs, copy, slow, one) = (
            m(|r| r.hubs),
            m(|r| r.copy),
            m(|r| r.naive),
            m(|r| r.naive_one),
        );
        println!("medians of {} rounds (events/s):", o.runs);
        println!("  two hubs (HTTP, decide, commit)      {hubs:>10.0}");
        if o.nats.is_some() {
            let js = m(|r| r.hubs_js.map_or(0.0, |(j, _)| j));
            println!("  two hubs + JetStream (until stored)  {js:>10.0}  ({:.2}x COPY, {:.1}x naive)", js / copy, js / slow);
            let bc = m(|r| r.bus_copy.map_or(0.0, |(b, _)| b));
            println!("  JetStream + COPY + its messages      {bc:>10.0}  ({:.2}x COPY; two hubs + JetStream {:.2}x it)", bc / copy, js / bc);
            let bound = median(rounds.iter().map(|r| bus_bound(r, o.events).unwrap_or(0.0)).collect());
            println!(
                "  bound of two hubs + JetStream        {bound:>10.0}  ({:.2}x COPY: every core busy, \
                 each event the hubs' CPU plus the bus's own)",
                bound / copy
            );
        }
        println!("  bare COPY, same table and keys       {copy:>10.0}");
        println!("  naive, {} connections                {slow:>10.0}", o.clients);
        println!("  naive, 1 connection                  {one:>10.0}");
        let us = |f: fn(&Round) -> cpu::Spent| median(rounds.iter().map(|r| f(r).per_event_us(o.events)).collect());
        println!(
            "CPU per event, medians: two hubs {:.1} µs, bare COPY {:.1} µs ({:.1}x)",
            us(|r| r.hubs_cpu),
            us(|r| r.copy_cpu),
            us(|r| r.hubs_cpu) / us(|r| r.copy_cpu)
        );
        let wal = |f: fn(&Round) -> cpu::Spent| median(rounds.iter().map(|r| f(r).wal_per_event(o.events)).collect());
        println!(
            "WAL per event, medians: two hubs {:.0} B, bare COPY {:.0} B ({:.1}x)",
            wal(|r| r.hubs_cpu),
            wal(|r| r.copy_cpu),
            wal(|r| r.hubs_cpu) / wal(|r| r.copy_cpu).max(1.0)
        );
        println!(
            "ratios of the medians: two hubs / COPY = {:.2}x (goal >= 0.5x); two hubs / naive = \
             {:.1}x (goal >= 20x); ceiling COPY / naive = {:.1}x; two hubs / naive on 1 connection \
             = {:.1}x",
            hubs / copy,
            hubs / slow,
            copy / slow,
            hubs / one
        );
        anyhow::Ok(())
    })
}
