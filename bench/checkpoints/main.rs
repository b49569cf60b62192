//! Observations beside events: the real HTTP API on the embedded SQLite ledger, events sent at a
//! steady rate (default 10,000/s in batches of 100) once alone and once beside observations at
//! the same rate (`POST /v1/observations`, batches of 100), in the same run on the same machine.
//! Prints the events' request latency p50/p99 in both phases and the ratio (the goal: the events'
//! p99 no more than 20% higher with observations); `--runs` pairs of phases (3 by default), their
//! order alternated from run to run, and the median of the runs' ratios.
//!
//! ```text
//! cargo run --release -p driftless-bench --bin checkpoints -- [--rate N] [--seconds N] [--skus N]
//!     [--sla SECONDS] [--runs N] [--only events|observations]
//! ```
//! The load is open-loop (a request every `batch / rate` seconds whether or not the previous one
//! answered), so a slow hub shows as latency rather than as a lower offered rate. Each phase prints
//! the rate it achieved (items answered with a success over the phase's wall time, last answer
//! included), and the observations' outcomes as the hub judged them: one key in a hundred drifts,
//! and outlives the hop's `latency_sla` (`--sla`, 2 s by default) within the phase, so
//! `handoff_drift` incidents open while the events run. `--only` runs one kind alone (a ceiling).
//! `CHECKPOINTS_MAX_REPLAY` sets the store's `max_replay_events` (default 1M).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../common/log.rs"]
mod bench_log;

use driftless_config::Settings;
use driftless_server::{AppState, Server};
use driftless_store::SqliteStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
auth = "none"
max_pending = 4096

[[systems]]
id = "wms"
role = "wms"

[[systems]]
id = "erp"
role = "erp"

[[systems]]
id = "shop"
role = "storefront"

[[channels]]
id = "shop"
locations = ["L0", "L1", "L2", "L3"]

[[hops]]
from = "wms"
to = "erp"
trigger = "event"
latency_sla = "@SLA@"
direction = "one-way"

[checkpoints]
max_observations_per_second = 1000000

[audit]
chain = ["wms", "erp", "shop"]
"#;

const BATCH: usize = 100;

struct Opts {
    rate: usize,
    seconds: u64,
    skus: usize,
    sla: u64,
    runs: usize,
    only: Option<String>,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        rate: 10_000,
        seconds: 10,
        skus: 10_000,
        sla: 2,
        runs: 3,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{a}: needs a value"))?;
        match a.as_str() {
            "--rate" => o.rate = v.parse()?,
            "--seconds" => o.seconds = v.parse()?,
            "--skus" => o.skus = v.parse()?,
            "--sla" => o.sla = v.parse()?,
            "--runs" => o.runs = v.parse()?,
            "--only" => {
                anyhow::ensure!(
                    v == "events" || v == "observations",
                    "--only: events or observations"
                );
                o.only = Some(v);
            }
            _ => anyhow::bail!("unknown option {a}"),
        }
    }
    anyhow::ensure!(o.rate >= BATCH, "--rate: at least {BATCH}");
    anyhow::ensure!(o.skus >= 1, "--skus: at least 1");
    anyhow::ensure!(o.runs >= 1, "--runs: at least 1");
    Ok(o)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn events_body(n: usize, phase: &str, skus: usize) -> String {
    let evs: Vec<serde_json::Value> = (0..BATCH)
        .map(|i| {
            let k = n * BATCH + i;
            serde_json::json!({
                "id": format!("{phase}-{k}"), "source": "wms",
                "sku": format!("SKU-{:05}", k % skus), "location": format!("L{}", k % 4),
                "occurred_at": "2026-11-27T10:00:00Z", "seq": k,
                "adjust": {"on_hand": 1},
            })
        })
        .collect();
    serde_json::Value::Array(evs).to_string()
}

fn observations_body(n: usize, skus: usize) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let obs: Vec<serde_json::Value> = (0..BATCH)
        .map(|i| {
            let k = n * BATCH + i;
            serde_json::json!({
                "sku": format!("SKU-{:05}", k % skus), "location": format!("L{}", k % 4),
                // `reserved` is what no event here touches, so the hub expects 0: most
                // observations are in line (the common, cheap path) and one in a hundred
                // drifts (the path that reads the sku's history once per key).
                "state": "reserved", "quantity": if k.is_multiple_of(100) { 50 } else { 0 },
                "observed_at": now,
            })
        })
        .collect();
    serde_json::json!({"system": "erp", "observations": obs}).to_string()
}

/// What one paced phase measured.
struct Phase {
    /// Latencies of the requests answered with a success, sorted.
    lat: Vec<Duration>,
    /// Items per second answered with a success, over the phase's wall time.
    achieved: f64,
    /// Occurrences of each counted marker in the answers.
    counts: Vec<usize>,
}

/// Sends `rate` per second in batches for `seconds`, open-loop; returns the request latencies,
/// the achieved rate, and how often each of `markers` occurs in the answers.
async fn paced(
    http: reqwest::Client,
    url: String,
    rate: usize,
    seconds: u64,
    markers: &'static [&'static str],
    body: impl Fn(usize) -> String + Send + 'static,
) -> anyhow::Result<Phase> {
    let start = Instant::now();
    let every = Duration::from_secs_f64(BATCH as f64 / rate as f64);
    let requests = (rate as u64 * seconds) as usize / BATCH;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(requests);
    for n in 0..requests {
        tick.tick().await;
        let (http, url, b) = (http.clone(), url.clone(), body(n));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = http
                .post(&url)
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await?;
            // Overload (503) and rate limiting (429) are answers the hub is allowed to give:
            // counted, not measured.
            let busy = matches!(r.status().as_u16(), 429 | 503);
            anyhow::ensure!(
                busy || r.status().is_success(),
                "{url}: status {}",
                r.status()
            );
            let answer = r.bytes().await?;
            let took = t.elapsed();
            let text = String::from_utf8_lossy(&answer);
            let counts: Vec<usize> = markers.iter().map(|m| text.matches(m).count()).collect();
            anyhow::Ok((!busy).then_some((took, counts)))
        }));
    }
    let mut lat = Vec::with_capacity(tasks.len());
    let mut refused = 0;
    let mut counts = vec![0; markers.len()];
    for t in tasks {
        match t.await?? {
            Some((d, c)) => {
                lat.push(d);
                counts.iter_mut().zip(c).for_each(|(a, b)| *a += b);
            }
            None => refused += 1,
        }
    }
    let wall = start.elapsed().as_secs_f64();
    if refused > 0 {
        println!(
            "  {refused} requests refused with 503/429 (overloaded), left out of the latencies"
        );
    }
    lat.sort_unstable();
    let achieved = (lat.len() * BATCH) as f64 / wall;
    Ok(Phase {
        lat,
        achieved,
        counts,
    })
}

fn line(what: &str, p: &Phase) -> Duration {
    let p99 = percentile(&p.lat, 0.99);
    println!(
        "{what:<34} requests {:>6}  p50 {:>7.2} ms  p99 {:>7.2} ms  achieved {:>7.0}/s",
        p.lat.len(),
        percentile(&p.lat, 0.5).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        p.achieved
    );
    p99
}

const EVENT_MARKERS: &[&str] = &["\"applied\""];
const OBS_MARKERS: &[&str] = &[
    "\"outcome\":\"in_line\"",
    "\"outcome\":\"drifting\"",
    "\"incident\":\"opened\"",
];

/// CPU seconds this process (hub and load generator) has used, from `/proc/self/stat` (utime and
/// stime, in the kernel's 100 ticks a second); 0 where there is no such file.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Prints the cores the process kept busy since `(cpu, wall)`.
fn cores(what: &str, since: (f64, Instant)) {
    let used = cpu_seconds() - since.0;
    println!(
        "  cpu {what}: {:.2} cores (hub and load generator, of the machine's {})",
        used / since.1.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

fn outcomes(p: &Phase) {
    println!(
        "  judged: {} in line, {} drifting, {} handoff_drift incidents opened",
        p.counts[0], p.counts[1], p.counts[2]
    );
}

/// The hub under load and what loads it: one client, the phases' shared parameters.
struct Load {
    http: reqwest::Client,
    base: String,
    rate: usize,
    seconds: u64,
    skus: usize,
}

impl Load {
    /// Events alone for `seconds` (ids tagged `tag`, so every phase's events are new).
    async fn events(&self, tag: &str, seconds: u64) -> anyhow::Result<Phase> {
        let (tag, skus) = (tag.to_owned(), self.skus);
        paced(
            self.http.clone(),
            format!("{}/v1/events", self.base),
            self.rate,
            seconds,
            EVENT_MARKERS,
            move |n| events_body(n, &tag, skus),
        )
        .await
    }

    async fn observations(&self) -> anyhow::Result<Phase> {
        let skus = self.skus;
        paced(
            self.http.clone(),
            format!("{}/v1/observations", self.base),
            self.rate,
            self.seconds,
            OBS_MARKERS,
            move |n| observations_body(n, skus),
        )
        .await
    }

    /// Events and observations at once, each at the full rate: (events, observations).
    async fn beside(&self, tag: &str) -> anyhow::Result<(Phase, Phase)> {
        let (events, observed) = tokio::join!(self.events(tag, self.seconds), self.observations());
        Ok((events?, observed?))
    }
}

/// One run's two phases, in the order given (alternated from run to run, so that neither phase
/// always finds the ledger larger or the machine warmer); returns the events' p99s (alone,
/// beside).
async fn pair(load: &Load, run: usize) -> anyhow::Result<(Duration, Duration)> {
    let alone_first = run.is_multiple_of(2);
    let mut alone = None;
    let mut beside = None;
    for alone_now in [alone_first, !alone_first] {
        let t = (cpu_seconds(), Instant::now());
        if alone_now {
            let p = load.events(&format!("alone{run}"), load.seconds).await?;
            let p99 = line("events alone", &p);
            cores("events alone", t);
            alone = Some((p99, p.counts[0]));
        } else {
            let (events, observed) = load.beside(&format!("beside{run}")).await?;
            let p99 = line("events beside observations", &events);
            line("observations", &observed);
            cores("events and observations", t);
            outcomes(&observed);
            beside = Some((p99, events.counts[0]));
        }
    }
    let (Some((a, applied_alone)), Some((b, applied_beside))) = (alone, beside) else {
        anyhow::bail!("a phase did not run");
    };
    println!(
        "run {}: events applied alone {applied_alone}, beside {applied_beside}; p99 with \
         observations / without: {:.2}",
        run + 1,
        b.as_secs_f64() / a.as_secs_f64().max(1e-9)
    );
    Ok((a, b))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The runs' medians and the median of their ratios (the figure the goal is about).
fn summary(pairs: &[(Duration, Duration)]) {
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|(a, b)| b.as_secs_f64() / a.as_secs_f64().max(1e-9))
        .collect();
    let list = ratios
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "events p99, median of {} runs: alone {:.2} ms, beside observations {:.2} ms",
        pairs.len(),
        median(pairs.iter().map(|p| ms(&p.0)).collect()),
        median(pairs.iter().map(|p| ms(&p.1)).collect()),
    );
    println!(
        "events p99 with observations / without, median of the runs' ratios: {:.2} ({list}; goal \
         <= 1.20)",
        median(ratios)
    );
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `DRIFTLESS_LOG=driftless_store=debug` prints each group commit's phases (where a slow
    // request's time went).
    bench_log::init_from_env("DRIFTLESS_LOG");
    // The hub in a runtime of its own, as `serve` runs it, and the load in another, so the
    // load's tasks (building bodies, reading answers) never queue on the hub's workers: the two
    // share only the machine's cores, as a hub and its senders on one machine would.
    let hub = tokio::runtime::Builder::new_multi_thread()
        .thread_name("hub")
        .enable_all()
        .build()?;
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load")
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let (addr, stop, task) = hub.block_on(start_hub(dir.path(), o.sla))?;
    println!(
        "events {}/s, batches of {BATCH}, {} s per phase, {} skus x 4 locations, {} runs",
        o.rate, o.seconds, o.skus, o.runs
    );
    let r = load_rt.block_on(async {
        let load = Load {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()?,
            base: format!("http://{addr}"),
            rate: o.rate,
            seconds: o.seconds,
            skus: o.skus,
        };
        run(&load, &o).await
    });
    let _ = stop.send(());
    let _ = hub.block_on(task);
    r
}

/// The server's task and what stops it.
type Running = (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// The store's defaults; `CHECKPOINTS_MAX_REPLAY` tries another `max_replay_events` (what a
/// shorter bound on the replay costs the steady load's latency).
fn store_options() -> driftless_store::sqlite::SqliteOptions {
    let defaults = driftless_store::sqlite::SqliteOptions::default();
    driftless_store::sqlite::SqliteOptions {
        max_replay_events: std::env::var("CHECKPOINTS_MAX_REPLAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(defaults.max_replay_events),
        ..defaults
    }
}

/// Opens a fresh ledger in `dir` and serves it on a free port, in the current runtime.
async fn start_hub(dir: &std::path::Path, sla: u64) -> anyhow::Result<Running> {
    let config = CONFIG.replace("@SLA@", &format!("{sla}s"));
    let settings = Settings::parse("bench", &config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = SqliteStore::open_with(
        dir,
        settings.rules.clone(),
        settings.channel_specs(),
        store_options(),
    )
    .await?;
    let server = Server::bind("127.0.0.1:0", AppState::new(settings, Arc::new(store))).await?;
    let addr = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Ok((addr, stop, task))
}

/// The phases `o` asks for, after a warm-up.
async fn run(load: &Load, o: &Opts) -> anyhow::Result<()> {
    // Warm the ledger's cells so every phase finds the same skus cached.
    line("warm-up events", &load.events("warm", 2).await?);
    match o.only.as_deref() {
        Some("observations") => {
            let t = (cpu_seconds(), Instant::now());
            let observed = load.observations().await?;
            line("observations alone", &observed);
            cores("observations alone", t);
            outcomes(&observed);
        }
        Some(_) => {
            let t = (cpu_seconds(), Instant::now());
            line("events alone", &load.events("alone", o.seconds).await?);
            cores("events alone", t);
        }
        None => {
            let mut pairs = Vec::with_capacity(o.runs);
            for run in 0..o.runs {
                pairs.push(pair(load, run).await?);
            }
            summary(&pairs);
        }
    }
    Ok(())
}
