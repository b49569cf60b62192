//! `driftless import`: CSV batch files from systems that only write files, sent to a running hub
//! over its HTTP API. The key column is the idempotency key, so importing the same file again
//! applies nothing twice. The whole file is validated before anything is sent: a file with a bad
//! row changes nothing.

use anyhow::Context;
use driftless_connectors::file::batch::{BatchOptions, MAX_LISTED, read_batch};
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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(1..=10_000).contains(&args.batch) {
        anyhow::bail!("--batch must be between 1 and 10000");
    }
    let opts = BatchOptions {
        source: &args.source,
        key: &args.key,
        set: args.set,
    };
    let read = read_batch(&args.file, &opts, driftless_server::wire::event_json);
    let events = match read.map_err(|e| anyhow::anyhow!(e))? {
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
