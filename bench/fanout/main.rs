//! Fan-out benchmark: events offered at a fixed rate over many skus to a hub with two webhook
//! channels (local stand-ins on 127.0.0.1). Prints p50/p99 from the ledger's acknowledgement of an
//! event to the stand-in applying a push that reflects it, and the coalescing ratio (events per
//! push). Every event sets `on_hand` to a globally increasing number, so a push of quantity `q`
//! reflects every earlier event of that sku with a value up to `q`.
//!
//! `cargo run --release -p driftless-bench --bin fanout -- [events_per_second] [skus] [seconds]
//! [batch_size]` (defaults 10000 100000 10 100). `batch_size` is the channels' pushes per request:
//! 1 is the contract's one sku per request, above 1 the webhook batch shape.
//!
//! With `BENCH_DATABASE_URL` set (a PostgreSQL server; the bench creates and drops its own
//! database `driftless_fanout_bench` there), the hub's ledger is on PostgreSQL instead of the
//! embedded store. `DRIFTLESS_LOG` takes a log filter (`sqlx::query=debug` logs every statement
//! with its time, to count them per text).

/// The allocator the `driftless` binary uses, so the hub is measured as it runs.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../common/pg_database.rs"]
mod pg_database;

#[path = "../common/log.rs"]
mod bench_log;

use driftless_config::Settings;
use driftless_connectors::standin::{Faults, Mode, StandIn};
use driftless_server::fanout::FanoutOptions;
use driftless_server::{AppState, Server};
use driftless_store::{Incoming, PgStore, SqliteStore, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Arrivals = Arc<Mutex<Vec<(String, i64, Instant)>>>;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rate: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let skus: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let secs: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10);
    let batch: u32 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(100);
    driftless_connectors::http::install_provider();
    bench_log::init_from_env("DRIFTLESS_LOG");

    let mut chans = Vec::new();
    let mut arrivals: Vec<Arrivals> = Vec::new();
    for _ in 0..2 {
        let a: Arrivals = Arc::new(Mutex::new(Vec::with_capacity(rate * secs as usize)));
        let rec = a.clone();
        let s = StandIn::start_with(
            Mode::Webhook {
                secret: b"bench".to_vec(),
            },
            Faults::none(),
            Some(Arc::new(move |sku: &str, q: i64| {
                rec.lock().unwrap_or_else(|p| p.into_inner()).push((
                    sku.to_owned(),
                    q,
                    Instant::now(),
                ));
            })),
        )
        .await?;
        chans.push(s);
        arrivals.push(a);
    }
    let text = format!(
        r#"
[server]
auth = "none"
max_pending = 100000
[[systems]]
id = "wms"
role = "wms"
[[systems]]
id = "shop"
role = "storefront"
[[systems]]
id = "market"
role = "marketplace"
[authority]
on_hand = ["wms"]
[[channels]]
id = "shop"
locations = ["DC1"]
connector = "webhook"
url = "{}"
secret_env = "BENCH_SECRET"
batch_size = {batch}
[[channels]]
id = "market"
locations = ["DC1"]
connector = "webhook"
url = "{}"
secret_env = "BENCH_SECRET"
batch_size = {batch}
[[hops]]
from = "wms"
to = "shop"
trigger = "event"
latency_sla = "50ms"
"#,
        chans[0].url("/push"),
        chans[1].url("/push")
    );
    let settings = Settings::parse("bench.toml", &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = tempfile::tempdir()?;
    let pg = std::env::var("BENCH_DATABASE_URL").ok();
    let store: Arc<dyn Store> = match &pg {
        Some(url) => {
            // Left over from a run that did not finish.
            pg_database::drop_db(url, BENCH_DB).await;
            let db = pg_database::create(url, BENCH_DB).await?;
            Arc::new(PgStore::open(&db, settings.rules.clone(), settings.channel_specs()).await?)
        }
        None => Arc::new(
            SqliteStore::open(dir.path(), settings.rules.clone(), settings.channel_specs()).await?,
        ),
    };
    let rules = settings.rules.clone();
    let mut state = AppState::new(settings, store.clone());
    state.fanout = Arc::new(FanoutOptions {
        concurrency: std::env::var("FANOUT_CONCURRENCY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64),
        env: Arc::new(|_| Some("bench".into())),
        enabled: std::env::var_os("FANOUT_OFF").is_none(),
        ..FanoutOptions::default()
    });
    let server = Server::bind("127.0.0.1:0", state).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until_stopped(async {
        let _ = stop_rx.await;
    }));

    // Offer `rate` events per second in 10 ms ticks.
    let per_tick = (rate / 100).max(1);
    let total = rate * secs as usize;
    let mut acks: Vec<(String, i64, Instant)> = Vec::with_capacity(total);
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n: i64 = 0;
    let mut overloaded = 0u64;
    let mut pending = Vec::new();
    while (n as usize) < total {
        tick.tick().await;
        let mut lines = String::new();
        let mut batch_skus = Vec::with_capacity(per_tick);
        for _ in 0..per_tick {
            n += 1;
            let sku = format!("SKU-{:06}", next() as usize % skus);
            lines.push_str(&format!(
                "{{\"id\":\"b-{n}\",\"source\":\"wms\",\"sku\":\"{sku}\",\"location\":\"DC1\",\"occurred_at\":\"2026-11-27T10:00:00Z\",\"seq\":{n},\"set\":{{\"on_hand\":{n}}}}}\n"
            ));
            batch_skus.push((sku, n));
        }
        let (_, events) = driftless_server::wire::parse_body(lines.as_bytes(), true, 100_000)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let batch: Vec<Incoming> = events
            .into_iter()
            .filter_map(|e| rules.prepare(e).ok())
            .map(|p| Incoming::Event(Box::new(p)))
            .collect();
        let store = store.clone();
        // Applied concurrently, as concurrent requests would be: the writer groups them.
        pending.push(tokio::spawn(async move {
            let r = store.apply(chrono::Utc::now(), batch).await;
            (r.is_ok(), Instant::now(), batch_skus)
        }));
        // Collect the acknowledged ones without waiting for the rest.
        let mut i = 0;
        while i < pending.len() {
            if pending[i].is_finished() {
                let (ok, at, skus) = pending.swap_remove(i).await?;
                if ok {
                    acks.extend(skus.into_iter().map(|(s, v)| (s, v, at)));
                } else {
                    overloaded += 1;
                }
            } else {
                i += 1;
            }
        }
    }
    for h in pending {
        let (ok, at, skus) = h.await?;
        if ok {
            acks.extend(skus.into_iter().map(|(s, v)| (s, v, at)));
        } else {
            overloaded += 1;
        }
    }
    let offered_for = start.elapsed();
    // Drain: wait until both channels are quiet (bounded).
    let mut last = (0, 0);
    let mut quiet = 0;
    for _ in 0..1200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = (
            arrivals[0].lock().map(|a| a.len()).unwrap_or(0),
            arrivals[1].lock().map(|a| a.len()).unwrap_or(0),
        );
        quiet = if now == last { quiet + 1 } else { 0 };
        if quiet >= 20 {
            break;
        }
        last = now;
    }
    let _ = stop_tx.send(());
    task.await??;

    println!(
        "offered {} events in {:.1}s ({:.0}/s) over {skus} skus to 2 channels (batch_size {batch}); {overloaded} batches refused",
        acks.len(),
        offered_for.as_secs_f64(),
        acks.len() as f64 / offered_for.as_secs_f64()
    );
    for (c, a) in arrivals.iter().enumerate() {
        let a = a.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_sku: HashMap<&str, Vec<(i64, Instant)>> = HashMap::new();
        for (s, q, t) in a.iter() {
            by_sku.entry(s.as_str()).or_default().push((*q, *t));
        }
        for v in by_sku.values_mut() {
            v.sort_by_key(|x| x.0);
        }
        let mut lat: Vec<f64> = Vec::with_capacity(acks.len());
        let mut missing = 0usize;
        for (s, v, at) in &acks {
            let Some(list) = by_sku.get(s.as_str()) else {
                missing += 1;
                continue;
            };
            let i = list.partition_point(|x| x.0 < *v);
            match list.get(i) {
                Some((_, t)) => lat.push(t.saturating_duration_since(*at).as_secs_f64() * 1e3),
                None => missing += 1,
            }
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        println!(
            "channel {c}: {} pushes for {} events (coalescing ratio {:.2}); ack -> channel p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {missing} events never reflected",
            a.len(),
            acks.len(),
            acks.len() as f64 / a.len().max(1) as f64,
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(f64::NAN),
        );
    }
    for (c, ch) in chans.iter().enumerate() {
        let l = ch.lock();
        println!(
            "channel {c}: {} compare failures, {} requests ({:.1} pushes per request, largest {})",
            l.conflicts,
            l.requests,
            l.applied.len() as f64 / l.requests.max(1) as f64,
            l.largest_batch.max(1)
        );
    }
    drop(chans);
    drop(store);
    if let Some(url) = &pg {
        pg_database::drop_db(url, BENCH_DB).await;
    }
    Ok(())
}

const BENCH_DB: &str = "driftless_fanout_bench";
