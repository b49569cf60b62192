//! `--ready-events N`: the time from starting a real `driftless serve` on a PostgreSQL ledger of
//! N events until `/readyz` answers 200 (goal: 3 s at 10M).
//!
//! The ledger is made by the hub's own migrations (a `PgStore` opened once), then filled in
//! PostgreSQL itself: the events table's secondary indexes are dropped, N rows inserted by one
//! `INSERT ... SELECT FROM generate_series` (the same ids, skus, times and deltas as the ingest
//! benchmark's events; a constant fingerprint, since no event is sent again), the indexes built
//! again from their own definitions, and `slots`, `cells` (on hand per sku), `outbox` and
//! `channel_skus` (every sku pushed and acknowledged at its quantity) derived from the events, so
//! the hub starts on a ledger consistent with itself. The database is dropped at the end.

use super::{CONFIG, create, drop_db};
use driftless_config::Settings;
use driftless_store::{PgStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Row};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

pub async fn run(o: &super::Opts, url: &str, n: usize) -> anyhow::Result<()> {
    let Some(serve) = o.serve.clone() else {
        anyhow::bail!("--ready-events needs --serve PATH (a release `driftless` binary)");
    };
    let name = format!("dl_pg_bench_ready_{}", std::process::id());
    let db = create(url, &name).await?;
    let result = async {
        fill(o, &db, n).await?;
        let mut times = Vec::new();
        for r in 0..o.runs {
            let t = start_to_ready(&serve, &db).await?;
            println!(
                "start {}: `driftless serve` to /readyz 200 in {:.0} ms",
                r + 1,
                t.as_secs_f64() * 1e3
            );
            times.push(t.as_secs_f64());
        }
        println!(
            "median start to ready on a ledger of {n} events: {:.0} ms (goal <= 3000 ms)",
            super::median(times) * 1e3
        );
        anyhow::Ok(())
    }
    .await;
    drop_db(url, &name).await;
    result
}

async fn fill(o: &super::Opts, db: &str, n: usize) -> anyhow::Result<()> {
    let settings = Settings::parse("bench", CONFIG).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = PgStore::open(db, settings.rules.clone(), settings.channel_specs()).await?;
    store.close().await;
    let mut c = PgConnectOptions::from_str(db)?.connect().await?;
    let t = Instant::now();
    let indexes: Vec<(String, String)> = sqlx::query(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events' \
         AND indexname <> 'events_pkey'",
    )
    .fetch_all(&mut c)
    .await?
    .into_iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    for (name, _) in &indexes {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
            .execute(&mut c)
            .await?;
    }
    let skus = o.skus as i64;
    sqlx::query(
        "INSERT INTO events (lsn, id, fingerprint, source, sku, location, at_nanos, seq, kind, \
         on_hand, received_nanos, outcome, effective, claims) \
         SELECT g, 'e' || g, decode(repeat('ab', 32), 'hex'), \
         'wms', 'SKU-' || lpad(((g * 7919) % $2)::text, 6, '0'), 'DC1', \
         1795737600000000000 + (g % 86400) * 1000000000, 0, 'adjust', (g % 7) - 2, \
         1795737600000000000 + (g % 86400) * 1000000000, 'applied', TRUE, TRUE \
         FROM generate_series(0::bigint, $1::bigint - 1) AS g",
    )
    .bind(n as i64)
    .bind(skus)
    .execute(&mut c)
    .await?;
    let inserted = t.elapsed();
    for (_, def) in &indexes {
        sqlx::query(sqlx::AssertSqlSafe(def.clone()))
            .execute(&mut c)
            .await?;
    }
    let indexed = t.elapsed();
    sqlx::raw_sql(
        "SELECT setval('events_lsn', (SELECT MAX(lsn) FROM events)); \
         INSERT INTO slots SELECT DISTINCT sku, location FROM events; \
         INSERT INTO cells (sku, location, state, value) \
           SELECT sku, location, 0, SUM(on_hand) FROM events GROUP BY sku, location; \
         INSERT INTO outbox (channel, sku, version, dirty, changed_nanos, atp) \
           SELECT 'shop', sku, COUNT(*), FALSE, 0, SUM(on_hand) FROM events GROUP BY sku; \
         INSERT INTO channel_skus (channel, sku, acked_quantity, acked_version, acked_nanos) \
           SELECT 'shop', sku, GREATEST(SUM(on_hand), 0), COUNT(*), 0 FROM events GROUP BY sku; \
         ANALYZE events; ANALYZE slots; ANALYZE cells; ANALYZE outbox;",
    )
    .execute(&mut c)
    .await?;
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut c)
        .await?;
    println!(
        "filled {n} events in {:.1} s (rows {:.1} s, indexes {:.1} s, the rest {:.1} s); \
         database {:.2} GB",
        t.elapsed().as_secs_f64(),
        inserted.as_secs_f64(),
        (indexed - inserted).as_secs_f64(),
        (t.elapsed() - indexed).as_secs_f64(),
        size as f64 / 1e9
    );
    Ok(())
}

/// Spawns `serve` on `db` and polls `/readyz` every 5 ms from the spawn on; the time until 200.
async fn start_to_ready(serve: &std::path::Path, db: &str) -> anyhow::Result<Duration> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("driftless.toml");
    std::fs::write(&cfg, CONFIG)?;
    let t = Instant::now();
    let mut child = Command::new(serve)
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--database-url", db])
        .env("DRIFTLESS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await??;
    let result = async {
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow::anyhow!("unexpected first line {line:?}"))?
            .to_owned();
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await
                && r.status().as_u16() == 200
            {
                return anyhow::Ok(t.elapsed());
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(120),
                "not ready within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result
}
