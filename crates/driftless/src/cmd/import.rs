//! `driftless import`: CSV batch files from systems that only write files, sent to a running hub
//! over its HTTP API. The key column is the idempotency key, so importing the same file again
//! applies nothing twice. The whole file is validated before anything is sent: a file with a bad
//! row changes nothing.

use anyhow::Context;
use driftless_core::event::RawEvent;
use driftless_core::{Event, State};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The system the file comes from (its token must belong to it).
    #[arg(long)]
    pub source: String,
    /// The CSV file: id, sku, location, occurred_at and one or more state columns (on_hand,
    /// committed, reserved, incoming, unavailable); optional seq, kind (adjust|set), uom, reason, ref.
    pub file: PathBuf,
    /// Base URL of the hub.
    #[arg(long, default_value = "http://127.0.0.1:7400")]
    pub url: String,
    /// Environment variable holding the source system's bearer token.
    #[arg(long, default_value = "DRIFTLESS_TOKEN")]
    pub token_env: String,
    /// Column holding the idempotency key.
    #[arg(long, default_value = "id")]
    pub key: String,
    /// Rows without a `kind` column are absolute values (a stock file) instead of deltas.
    #[arg(long)]
    pub set: bool,
    /// Events per request (at most 10,000).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
}

/// At most this many rows; a larger file should be split (or sent as a stream of requests).
const MAX_ROWS: usize = 5_000_000;
/// Problems listed before the rest are only counted.
const MAX_LISTED: usize = 20;

struct Columns {
    key: usize,
    sku: usize,
    location: usize,
    occurred_at: usize,
    seq: Option<usize>,
    kind: Option<usize>,
    uom: Option<usize>,
    reason: Option<usize>,
    reference: Option<usize>,
    states: Vec<(State, usize)>,
}

fn columns(headers: &csv::StringRecord, key: &str, file: &str) -> Result<Columns, String> {
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let need = |name: &str| {
        find(name).ok_or_else(|| {
            format!(
                "{file}:1:1: missing column `{name}` (header has: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let states: Vec<(State, usize)> = State::ALL
        .iter()
        .filter_map(|s| find(s.as_str()).map(|i| (*s, i)))
        .collect();
    if states.is_empty() {
        return Err(format!(
            "{file}:1:1: no state column (need one or more of on_hand, committed, reserved, incoming, unavailable)"
        ));
    }
    Ok(Columns {
        key: need(key)?,
        sku: need("sku")?,
        location: need("location")?,
        occurred_at: need("occurred_at")?,
        seq: find("seq"),
        kind: find("kind"),
        uom: find("uom"),
        reason: find("reason"),
        reference: find("ref"),
        states,
    })
}

/// Reads and validates every row; returns the events or every problem (file:line:column).
fn read(args: &Args) -> anyhow::Result<Result<Vec<Value>, Vec<String>>> {
    let file = args.file.display().to_string();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(&args.file)
        .with_context(|| format!("cannot open {file}"))?;
    let headers = rdr
        .headers()
        .map_err(|e| anyhow::anyhow!("{file}: cannot read the header: {e}"))?
        .clone();
    let cols = match columns(&headers, &args.key, &file) {
        Ok(c) => c,
        Err(e) => return Ok(Err(vec![e])),
    };
    let col_of = |i: usize| i + 1;
    let mut events = Vec::new();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let at = e.position().map_or(line, |p| p.line());
                problems.push(format!("{file}:{at}:1: {e}"));
                if problems.len() > MAX_LISTED * 10 {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        if events.len() + problems.len() >= MAX_ROWS {
            problems.push(format!(
                "{file}:{line}:1: more than {MAX_ROWS} rows; split the file"
            ));
            break;
        }
        let get = |i: usize| record.get(i).unwrap_or("").trim();
        let opt = |i: Option<usize>| i.map(get).filter(|v| !v.is_empty());
        let mut bad = |col: usize, msg: String| {
            problems.push(format!("{file}:{line}:{}: {msg}", col_of(col)))
        };
        let seq = match opt(cols.seq).map(str::parse::<u64>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                bad(
                    cols.seq.unwrap_or(0),
                    format!(
                        "seq must be an unsigned integer, not {:?}",
                        get(cols.seq.unwrap_or(0))
                    ),
                );
                continue;
            }
        };
        let set = match opt(cols.kind) {
            None => args.set,
            Some("adjust") => false,
            Some("set") => true,
            Some(other) => {
                bad(
                    cols.kind.unwrap_or(0),
                    format!("kind must be adjust or set, not {other:?}"),
                );
                continue;
            }
        };
        let mut quantities = Vec::new();
        let mut ok = true;
        for (s, i) in &cols.states {
            let v = get(*i);
            if v.is_empty() {
                continue;
            }
            match v.parse::<i64>() {
                Ok(q) => quantities.push((s.as_str(), q)),
                Err(_) => {
                    bad(
                        *i,
                        format!("{} must be a whole number, not {v:?}", s.as_str()),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
        let raw = RawEvent {
            id: get(cols.key),
            source: &args.source,
            sku: get(cols.sku),
            location: get(cols.location),
            occurred_at: get(cols.occurred_at),
            seq,
            adjust: (!set).then(|| quantities.clone()),
            set: set.then_some(quantities),
            uom: opt(cols.uom),
            reason: opt(cols.reason),
            reference: opt(cols.reference),
        };
        match Event::from_raw(&raw) {
            Ok(e) => {
                if let Some(first) = seen.insert(e.id.to_string(), line) {
                    bad(
                        cols.key,
                        format!("key {:?} already used on line {first}", e.id.as_str()),
                    );
                    continue;
                }
                events.push(driftless_server::wire::event_json(&e));
            }
            Err(e) => {
                let col = match e.field.split('.').next().unwrap_or("") {
                    "id" => cols.key,
                    "sku" => cols.sku,
                    "location" => cols.location,
                    "occurred_at" => cols.occurred_at,
                    "seq" => cols.seq.unwrap_or(0),
                    "uom" => cols.uom.unwrap_or(0),
                    "reason" => cols.reason.unwrap_or(0),
                    "ref" => cols.reference.unwrap_or(0),
                    _ => cols.states[0].1,
                };
                let field = if e.field == "id" {
                    args.key.clone()
                } else {
                    e.field.clone()
                };
                bad(col, format!("{field}: {}", e.message));
            }
        }
    }
    if problems.is_empty() {
        if events.is_empty() {
            return Ok(Err(vec![format!("{file}: no rows")]));
        }
        Ok(Ok(events))
    } else {
        Ok(Err(problems))
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(1..=10_000).contains(&args.batch) {
        anyhow::bail!("--batch must be between 1 and 10000");
    }
    let events = match read(&args)? {
        Ok(e) => e,
        Err(problems) => {
            for p in problems.iter().take(MAX_LISTED) {
                eprintln!("{p}");
            }
            if problems.len() > MAX_LISTED {
                eprintln!("... and {} more", problems.len() - MAX_LISTED);
            }
            eprintln!("nothing was sent");
            return Ok(ExitCode::from(2));
        }
    };
    let token = std::env::var(&args.token_env)
        .ok()
        .filter(|t| !t.is_empty());
    driftless_connectors::http::install_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        let url = format!("{}/v1/events", args.url.trim_end_matches('/'));
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut noteworthy = Vec::new();
        for chunk in events.chunks(args.batch) {
            let mut req = http.post(&url).json(&Value::Array(chunk.to_vec()));
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            // Overload answers 503 with Retry-After: wait and resend the same batch, which is
            // safe because every event carries its idempotency key.
            let resp = loop {
                let r = req
                    .try_clone()
                    .context("request cannot be retried")?
                    .send()
                    .await
                    .with_context(|| format!("sending to {url}"))?;
                if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                    let wait = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1)
                        .min(60);
                    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                    continue;
                }
                break r;
            };
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                let msg = body["error"]["message"].as_str().unwrap_or("no message");
                anyhow::bail!("the hub answered {status}: {msg}");
            }
            for r in body["results"].as_array().into_iter().flatten() {
                let outcome = r["outcome"].as_str().unwrap_or("?").to_owned();
                if matches!(outcome.as_str(), "rejected" | "conflict" | "override")
                    && noteworthy.len() < MAX_LISTED
                {
                    noteworthy.push(format!(
                        "{} {}: {}",
                        r["id"].as_str().unwrap_or("?"),
                        outcome,
                        r["reason"].as_str().unwrap_or("")
                    ));
                }
                *counts.entry(outcome).or_default() += 1;
            }
        }
        let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("{} events: {}", events.len(), summary.join(", "));
        for n in &noteworthy {
            println!("  {n}");
        }
        let refused = ["rejected", "conflict", "override"]
            .iter()
            .map(|k| counts.get(*k).copied().unwrap_or(0))
            .sum::<usize>();
        Ok(if refused > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}
