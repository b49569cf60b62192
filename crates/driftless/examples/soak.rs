//! The kill -9 soak: the real `driftless serve` on a fresh data directory, concurrent clients
//! sending events and resending the same ids until they are acknowledged, and `serve` killed with
//! SIGKILL at random moments and restarted, N times. At the end every acknowledged event must be
//! in the ledger once (none lost, none applied twice) and every level must equal an oracle this
//! program computes from the events it sent, by the fold of DESIGN.md section 2 (not by the hub's
//! core): per (sku, location, state), the newest-positioned `set` plus the `adjust` deltas
//! positioned after it, positions compared as (occurred_at, seq, source, id).
//!
//! ```sh
//! cargo build --release -p driftless --bin driftless --example soak
//! target/release/examples/soak --kills 100          # prints the figures; exit 1 on any loss
//! ```
//!
//! Options: `--kills N` (100), `--clients N` (8), `--skus N` (100), `--seed N`, `--up-ms MIN-MAX`
//! (how long serve runs between kills, 100-1500), `--pace-ms N` (a client's pause between
//! requests, 10), `--bin PATH` (the driftless binary; default: beside this program's folder).
//! `tests/soak.rs` runs it with 5 kills.

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Options {
    pub kills: u32,
    pub clients: usize,
    pub skus: usize,
    pub seed: u64,
    pub up_ms: (u64, u64),
    pub pace_ms: u64,
    pub bin: PathBuf,
}

impl Options {
    pub fn new(bin: PathBuf) -> Options {
        Options {
            kills: 100,
            clients: 8,
            skus: 100,
            seed: 0x50a4_d1f7,
            up_ms: (100, 1500),
            pace_ms: 10,
            bin,
        }
    }
}

/// What a soak found.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub kills: u32,
    pub requests: u64,
    /// Requests resent after a refused connection, a cut one, a timeout or a 503.
    pub resent: u64,
    pub events: u64,
    /// Events acknowledged before at least one later kill.
    pub acknowledged_before_a_kill: u64,
    /// Events whose first acknowledgement was `duplicate`: stored by an attempt whose answer was lost.
    pub answered_duplicate: u64,
    pub lost: u64,
    pub applied_twice: u64,
    /// Ledger entries for ids this program never sent.
    pub unknown: u64,
    pub cells: u64,
    pub cells_differing: u64,
    pub seconds: f64,
}

impl Figures {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.applied_twice == 0 && self.unknown == 0 && self.cells_differing == 0
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "kills (SIGKILL of serve)       {}", self.kills)?;
        writeln!(
            f,
            "requests / resent              {} / {}",
            self.requests, self.resent
        )?;
        writeln!(f, "events acknowledged            {}", self.events)?;
        writeln!(
            f,
            "  acknowledged before a kill   {}",
            self.acknowledged_before_a_kill
        )?;
        writeln!(
            f,
            "  first answer `duplicate`     {}",
            self.answered_duplicate
        )?;
        writeln!(f, "acknowledged events lost       {}", self.lost)?;
        writeln!(f, "events applied twice           {}", self.applied_twice)?;
        writeln!(f, "ledger entries never sent      {}", self.unknown)?;
        writeln!(
            f,
            "cells checked / differing      {} / {}",
            self.cells, self.cells_differing
        )?;
        write!(f, "seconds                        {:.1}", self.seconds)
    }
}

/// SplitMix64: the soak's own generator, so a seed replays the same events.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

const STATES: [&str; 5] = [
    "on_hand",
    "committed",
    "reserved",
    "incoming",
    "unavailable",
];
/// What each sending system may write under the example configuration's `[authority]`.
const WMS_STATES: [&str; 3] = ["on_hand", "committed", "unavailable"];
const ERP_STATES: [&str; 3] = ["reserved", "incoming", "committed"];
/// The example configuration's `TEE-*` case.
const CASE: i64 = 12;

/// One event as sent, and what the oracle needs of it.
#[derive(Debug, Clone)]
struct Sent {
    source: &'static str,
    id: String,
    sku: String,
    location: &'static str,
    /// Seconds since 2026-11-27T00:00:00Z.
    at: u32,
    seq: u64,
    set: bool,
    /// Base-unit quantities by state.
    base: Vec<(&'static str, i64)>,
    json: Value,
}

fn event(rng: &mut Rng, client: usize, n: u64, source: &'static str, skus: usize) -> Sent {
    let k = rng.below(skus as u64);
    let cased = k.is_multiple_of(4);
    let sku = if cased {
        format!("TEE-SOAK-{k}")
    } else {
        format!("SOAK-{k}")
    };
    let location = if rng.below(2) == 0 { "DC1" } else { "DC2" };
    let at = rng.below(86_400) as u32;
    let seq = rng.below(3);
    let set = rng.below(7) == 0;
    let in_cases = cased && rng.below(3) == 0;
    let states = if source == "wms" {
        WMS_STATES
    } else {
        ERP_STATES
    };
    let first = rng.below(3) as usize;
    let mut chosen = vec![states[first]];
    if rng.below(3) == 0 {
        chosen.push(states[(first + 1) % 3]);
    }
    let mut sent_q = serde_json::Map::new();
    let mut base = Vec::new();
    for s in chosen {
        let q = if set {
            rng.range(0, 400)
        } else {
            match rng.range(-6, 5) {
                0 => 1,
                q => q,
            }
        };
        sent_q.insert(s.to_owned(), q.into());
        base.push((s, if in_cases { q * CASE } else { q }));
    }
    let id = format!("soak:{client}:{n}");
    let mut json = json!({
        "id": id, "source": source, "sku": sku, "location": location,
        "occurred_at": format!("2026-11-27T{:02}:{:02}:{:02}Z", at / 3600, at / 60 % 60, at % 60),
        "seq": seq,
    });
    json[if set { "set" } else { "adjust" }] = Value::Object(sent_q);
    if in_cases {
        json["uom"] = "CS".into();
    }
    Sent {
        source,
        id,
        sku,
        location,
        at,
        seq,
        set,
        base,
        json,
    }
}

/// An event's position: (occurred_at, seq, source, id), compared in that order.
type Pos<'a> = (u32, u64, &'a str, &'a str);

fn pos(e: &Sent) -> Pos<'_> {
    (e.at, e.seq, e.source, e.id.as_str())
}

/// The fold of DESIGN.md section 2, from the acknowledged events alone.
fn oracle(events: &[Sent]) -> BTreeMap<(String, &'static str, &'static str), i64> {
    // Newest set per cell.
    let mut newest: HashMap<(&str, &str, &str), (Pos<'_>, i64)> = HashMap::new();
    for e in events.iter().filter(|e| e.set) {
        for (s, q) in &e.base {
            let slot = newest
                .entry((e.sku.as_str(), e.location, *s))
                .or_insert((pos(e), *q));
            if pos(e) > slot.0 {
                *slot = (pos(e), *q);
            }
        }
    }
    let mut levels = BTreeMap::new();
    for ((sku, loc, s), (_, q)) in &newest {
        levels.insert((sku.to_string(), *loc, *s), *q);
    }
    for e in events.iter().filter(|e| !e.set) {
        for (s, q) in &e.base {
            let newer = newest
                .get(&(e.sku.as_str(), e.location, *s))
                .is_none_or(|(p, _)| pos(e) > *p);
            if newer {
                *levels.entry((e.sku.clone(), e.location, *s)).or_insert(0) += q;
            }
        }
    }
    levels
}

/// The running hub: the process and the address it listens on (new after each start).
struct Hub {
    bin: PathBuf,
    config: PathBuf,
    data: PathBuf,
    child: Option<Child>,
    base: Arc<RwLock<String>>,
}

impl Hub {
    fn start(&mut self) -> anyhow::Result<()> {
        let mut child = Command::new(&self.bin)
            .args(["serve", "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .env("DRIFTLESS_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let mut out = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let Some(base) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("serve did not start: {line:?}");
        };
        *self.base.write().unwrap() = base.to_owned();
        // Keep reading what else it prints, so a full pipe never blocks it.
        std::thread::spawn(move || std::io::copy(&mut out.into_inner(), &mut std::io::sink()));
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Shared {
    stop: AtomicBool,
    requests: AtomicU64,
    resent: AtomicU64,
    acked: AtomicU64,
    /// (event, its first acknowledged outcome, the number of kills before the acknowledgement).
    log: Mutex<Vec<(Sent, String, u32)>>,
    kills: AtomicU64,
}

async fn client(
    shared: Arc<Shared>,
    base: Arc<RwLock<String>>,
    index: usize,
    opts: Options,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let mut rng = Rng(opts.seed ^ (index as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let (source, token) = if index.is_multiple_of(2) {
        ("wms", "wms-demo-token")
    } else {
        ("erp", "erp-demo-token")
    };
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let size = 1 + rng.below(4) as usize;
        let batch: Vec<Sent> = (0..size)
            .map(|_| {
                n += 1;
                event(&mut rng, index, n, source, opts.skus)
            })
            .collect();
        let body = if size == 1 {
            batch[0].json.clone()
        } else {
            Value::Array(batch.iter().map(|e| e.json.clone()).collect())
        };
        let body = serde_json::to_vec(&body)?;
        let mut first = true;
        let results = loop {
            if !first {
                shared.resent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20 + rng.below(30))).await;
            }
            first = false;
            shared.requests.fetch_add(1, Ordering::Relaxed);
            let url = format!("{}/v1/events", base.read().unwrap());
            let resp = http
                .post(&url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            let Ok(resp) = resp else { continue };
            let status = resp.status();
            if status.is_server_error() {
                continue;
            }
            let Ok(v) = resp.json::<Value>().await else {
                continue;
            };
            if status != reqwest::StatusCode::OK {
                bail!("the hub answered {status}: {v}");
            }
            break v["results"].as_array().cloned().unwrap_or_default();
        };
        if results.len() != batch.len() {
            bail!("{} results for {} events", results.len(), batch.len());
        }
        let kills = shared.kills.load(Ordering::SeqCst) as u32;
        let mut checked = Vec::with_capacity(batch.len());
        for (e, r) in batch.into_iter().zip(results) {
            if r["id"].as_str() != Some(e.id.as_str()) {
                bail!("results out of order: {r} for {}", e.id);
            }
            let outcome = r["outcome"].as_str().unwrap_or("?").to_owned();
            if !matches!(
                outcome.as_str(),
                "applied" | "duplicate" | "stale" | "covered"
            ) {
                bail!("{} was answered {r}", e.id);
            }
            checked.push((e, outcome, kills));
        }
        shared.log.lock().unwrap().extend(checked);
        shared.acked.fetch_add(size as u64, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(opts.pace_ms)).await;
    }
    Ok(())
}

fn get(url: &str) -> anyhow::Result<(u16, Value)> {
    // A blocking read outside the clients' runtime, by hand: one request per connection.
    let rest = url.strip_prefix("http://").context("an http URL")?;
    let (addr, path) = rest.split_once('/').context("a path")?;
    let mut s = std::net::TcpStream::connect(addr)?;
    use std::io::Write;
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer read-demo-token\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split(' ').nth(1).unwrap_or("0").parse()?;
    let (head, body) = text.split_once("\r\n\r\n").context("an HTTP answer")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Runs the soak and checks the ledger against the oracle.
pub fn run(opts: &Options) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../driftless.example.toml"
    ))?;
    let config = dir.path().join("driftless.toml");
    std::fs::write(
        &config,
        example.replace("listen = \"127.0.0.1:7400\"", "listen = \"127.0.0.1:0\""),
    )?;
    let mut hub = Hub {
        bin: opts.bin.clone(),
        config,
        data: dir.path().join("data"),
        child: None,
        base: Arc::new(RwLock::new(String::new())),
    };
    hub.start()?;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        requests: AtomicU64::new(0),
        resent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        log: Mutex::new(Vec::new()),
        kills: AtomicU64::new(0),
    });
    driftless_connectors::http::install_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let clients: Vec<_> = (0..opts.clients)
        .map(|i| rt.spawn(client(shared.clone(), hub.base.clone(), i, opts.clone())))
        .collect();
    let mut rng = Rng(opts.seed);
    for k in 1..=opts.kills {
        let up = opts.up_ms.0 + rng.below(opts.up_ms.1 - opts.up_ms.0 + 1);
        std::thread::sleep(Duration::from_millis(up));
        if clients.iter().any(|c| c.is_finished()) {
            break; // a client failed: its error is reported below
        }
        hub.kill();
        shared.kills.store(u64::from(k), Ordering::SeqCst);
        hub.start()?;
    }
    std::thread::sleep(Duration::from_millis(300));
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        rt.block_on(c)??;
    }
    drop(rt);

    let log = std::mem::take(&mut *shared.log.lock().unwrap());
    let kills = shared.kills.load(Ordering::SeqCst) as u32;
    let mut f = Figures {
        kills,
        requests: shared.requests.load(Ordering::Relaxed),
        resent: shared.resent.load(Ordering::Relaxed),
        events: log.len() as u64,
        acknowledged_before_a_kill: log.iter().filter(|(_, _, k)| *k < kills).count() as u64,
        answered_duplicate: log.iter().filter(|(_, o, _)| o == "duplicate").count() as u64,
        ..Figures::default()
    };
    // Every acknowledged event is in its sku's history once.
    let base = hub.base.read().unwrap().clone();
    let mut by_sku: BTreeMap<&str, Vec<&Sent>> = BTreeMap::new();
    for (e, _, _) in &log {
        by_sku.entry(e.sku.as_str()).or_default().push(e);
    }
    for (sku, sent) in &by_sku {
        if sent.len() >= 10_000 {
            bail!(
                "{sku} has {} events, more than one history read shows; use more --skus",
                sent.len()
            );
        }
        let (status, v) = get(&format!("{base}/v1/inventory/{sku}/history?limit=10000"))?;
        if status != 200 {
            bail!("history of {sku}: {status} {v}");
        }
        let mut seen: HashMap<(String, String), u32> = HashMap::new();
        for entry in v["entries"].as_array().into_iter().flatten() {
            if matches!(entry["outcome"].as_str(), Some("duplicate" | "conflict")) {
                continue;
            }
            let key = (
                entry["source"].as_str().unwrap_or("").to_owned(),
                entry["id"].as_str().unwrap_or("").to_owned(),
            );
            *seen.entry(key).or_default() += 1;
        }
        for e in sent {
            match seen.remove(&(e.source.to_owned(), e.id.clone())) {
                None => f.lost += 1,
                Some(1) => {}
                Some(_) => f.applied_twice += 1,
            }
        }
        f.unknown += seen.len() as u64;
    }
    // Levels against the oracle.
    let expected = oracle(&log.iter().map(|(e, _, _)| e.clone()).collect::<Vec<_>>());
    for sku in by_sku.keys() {
        let (status, v) = get(&format!("{base}/v1/inventory/{sku}"))?;
        if status != 200 {
            bail!("inventory of {sku}: {status} {v}");
        }
        for loc in ["DC1", "DC2"] {
            let row = v["locations"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["location"] == loc);
            for s in STATES {
                let want = expected
                    .get(&((*sku).to_owned(), loc, s))
                    .copied()
                    .unwrap_or(0);
                let got = row.and_then(|r| r[s].as_i64()).unwrap_or(0);
                f.cells += 1;
                if got != want {
                    f.cells_differing += 1;
                    if f.cells_differing <= 10 {
                        eprintln!("{sku} {loc} {s}: the hub has {got}, the oracle {want}");
                    }
                }
            }
        }
    }
    hub.kill();
    f.seconds = started.elapsed().as_secs_f64();
    Ok(f)
}

#[allow(dead_code)] // used by `main` only
fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: cannot read {v:?}"))
        })
}

#[allow(dead_code)] // the test includes this file for `run`
fn main() -> anyhow::Result<std::process::ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let here = std::env::current_exe()?;
    let default_bin = here
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("driftless"))
        .context("the driftless binary")?;
    let mut o = Options::new(arg(&args, "--bin").unwrap_or(default_bin));
    o.kills = arg(&args, "--kills").unwrap_or(o.kills);
    o.clients = arg(&args, "--clients").unwrap_or(o.clients);
    o.skus = arg(&args, "--skus").unwrap_or(o.skus);
    o.seed = arg(&args, "--seed").unwrap_or(o.seed);
    o.pace_ms = arg(&args, "--pace-ms").unwrap_or(o.pace_ms);
    if let Some(r) = arg::<String>(&args, "--up-ms") {
        let (a, b) = r.split_once('-').context("--up-ms MIN-MAX")?;
        o.up_ms = (a.parse()?, b.parse()?);
        if o.up_ms.1 < o.up_ms.0 {
            bail!("--up-ms: MIN above MAX");
        }
    }
    println!(
        "soak: {} kills, {} clients, {} skus, seed {}, serve up {}-{} ms between kills",
        o.kills, o.clients, o.skus, o.seed, o.up_ms.0, o.up_ms.1
    );
    let f = run(&o)?;
    println!("{f}");
    Ok(if f.ok() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
