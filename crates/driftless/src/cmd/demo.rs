//! `driftless demo`: the five-minute tour. Starts the hub on embedded SQLite, a simulated storefront
//! that receives the hub's pushes through the webhook connector (signature, compare-and-set,
//! idempotency keys), and replays a simulated WMS, ERP and storefront's events over HTTP with their
//! own bearer tokens, in accelerated time. A merchandiser edits a few storefront quantities by hand
//! on the way, which the hub notices and overwrites. Then it prints where to look.
//!
//! The events come from `driftless simulate --architecture hub`: the same business, sent to the
//! real server instead of the in-process core.

use crate::cmd::serve;
use anyhow::Context;
use chrono::Utc;
use driftless_config::Settings;
use driftless_connectors::standin::{Faults, Mode, StandIn};
use driftless_server::fanout::FanoutOptions;
use driftless_server::{AppState, Server};
use driftless_sim::{Architecture, Params, SCENARIOS};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The demo's public tokens (the same as in `driftless.example.toml`).
const TOKENS: [(&str, &str); 3] = [
    ("wms", "wms-demo-token"),
    ("erp", "erp-demo-token"),
    ("shop", "shop-demo-token"),
];
const READ_TOKEN: &str = "read-demo-token";
const SECRET_ENV: &str = "DRIFTLESS_DEMO_SHOP_SECRET";
/// Used when the environment does not set one; the demo only listens on loopback by default.
const DEFAULT_SECRET: &str = "demo-webhook-secret";

fn scenario_names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|(n, _)| *n).collect()
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the hub listens.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: String,
    /// The demo's own directory: its configuration and a fresh SQLite ledger each run.
    #[arg(long, default_value = "./driftless-demo")]
    pub data_dir: PathBuf,
    /// Which simulated business to replay.
    #[arg(long, default_value = "everything",
          value_parser = clap::builder::PossibleValuesParser::new(scenario_names()))]
    pub scenario: String,
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub skus: u32,
    /// Simulated days to replay.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=30))]
    pub days: u32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long the replay takes in real time.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Stop after the replay and its summary instead of serving until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The demo's configuration: the simulated catalogue's units and channel, the demo tokens, and a
/// webhook channel pointing at the simulated storefront.
fn config_text(listen: &str, data_dir: &Path, push_url: &str) -> String {
    let mut systems = String::new();
    for (id, token) in TOKENS {
        let role = if id == "shop" { "storefront" } else { id };
        systems.push_str(&format!(
            "[[systems]]\nid = \"{id}\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"   # {token}\n\n",
            sha256_hex(token)
        ));
    }
    let dir = data_dir
        .display()
        .to_string()
        .replace('\\', "/")
        .replace('"', "");
    format!(
        "# Written by `driftless demo`. The tokens are the PUBLIC demo tokens.\n\n\
         [server]\nlisten = \"{listen}\"\ndata_dir = \"{dir}\"\nauth = \"tokens\"\n\
         read_token_sha256 = [\"{read}\"]   # {READ_TOKEN}\n\n\
         {systems}\
         [authority]\non_hand = [\"wms\"]\ncommitted = [\"shop\", \"erp\", \"wms\"]\n\
         reserved = [\"erp\"]\nincoming = [\"erp\"]\nunavailable = [\"wms\"]\n\n\
         [[units]]\nsku = \"CASE-*\"\nunit = \"CS\"\nfactor = 12\n\n\
         [[channels]]\nid = \"shop\"\nlocations = [\"DC1\", \"DC2\"]\nsafety_stock = 0\n\
         allocation = 1.0\npack = 1\non_override = \"overwrite\"\nconnector = \"webhook\"\n\
         url = \"{push_url}\"\nsecret_env = \"{SECRET_ENV}\"\n\n\
         [[channels.rules]]\nsku = \"CASE-*\"\npack = 12\n\n\
         [[locations]]\nid = \"DC1\"\n\n[[locations]]\nid = \"DC2\"\n\n\
         [[hops]]\nfrom = \"wms\"\nto = \"erp\"\ntrigger = \"event\"\nlatency_sla = \"30s\"\n\n\
         [[hops]]\nfrom = \"erp\"\nto = \"shop\"\ntrigger = \"event\"\nlatency_sla = \"5s\"\n\n\
         [audit]\nchain = [\"wms\", \"erp\", \"shop\"]\nthreshold_units = 2\nthreshold_pct = 1.0\n\
         integration_actors = [\"wms\", \"wms-sync\", \"erp-sync\", \"checkout\", \"driftless\"]\n",
        read = sha256_hex(READ_TOKEN),
    )
}

// ----- the simulated WMS, ERP and storefront sending events ----------------------------------------

/// A minimal HTTP/1.1 client: one request per connection, JSON in and out.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut sock = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status in the answer")?;
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}

fn token_for(source: &str) -> &'static str {
    TOKENS
        .iter()
        .find(|(id, _)| *id == source)
        .map_or("", |(_, t)| *t)
}

/// The hub's channel quantity per sku, paged through `GET /v1/inventory`.
async fn hub_quantities(addr: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/inventory?limit=1000&after={a}"),
            None => "/v1/inventory?limit=1000".to_owned(),
        };
        let (status, v) = http(addr, "GET", &path, READ_TOKEN, None).await?;
        anyhow::ensure!(status == 200, "GET {path}: HTTP {status}");
        for item in v["items"].as_array().into_iter().flatten() {
            let sku = item["sku"].as_str().unwrap_or_default().to_owned();
            let q = item["channels"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["channel"] == "shop")
                .and_then(|c| c["quantity"].as_i64());
            if let Some(q) = q {
                out.insert(sku, q);
            }
        }
        match v["next_after"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    Ok(out)
}

fn remove_old_ledger(dir: &Path) -> anyhow::Result<()> {
    // The demo starts from an empty ledger every run, because it replays the same event ids. It
    // only ever removes a ledger it wrote itself (its configuration file marks the directory), so
    // pointing --data-dir at a real deployment's directory cannot wipe it.
    let ledger = dir.join("driftless.sqlite3");
    if ledger.exists() && !dir.join("driftless-demo.toml").exists() {
        anyhow::bail!(
            "{} holds a ledger the demo did not create; choose another --data-dir",
            dir.display()
        );
    }
    for name in [
        "driftless.sqlite3",
        "driftless.sqlite3-wal",
        "driftless.sqlite3-shm",
    ] {
        let p = dir.join(name);
        if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if std::env::var_os("DRIFTLESS_LOG").is_some() {
        serve::init_tracing();
    }
    let mut params = Params::scenario(&args.scenario, Architecture::Hub, args.seed)?;
    params.skus = args.skus as usize;
    params.days = args.days;
    params.validate()?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(demo(args, params))
}

async fn demo(args: Args, params: Params) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    remove_old_ledger(&args.data_dir)?;
    let secret = std::env::var(SECRET_ENV).unwrap_or_else(|_| DEFAULT_SECRET.to_owned());
    // The storefront: the connectors' stand-in webhook receiver (signature, compare-and-set,
    // idempotency keys), without injected faults.
    let shop = StandIn::start(
        Mode::Webhook {
            secret: secret.clone().into_bytes(),
        },
        Faults::none(),
    )
    .await
    .context("starting the simulated storefront")?;
    let push_url = shop.url("/push");

    let text = config_text(&args.listen, &args.data_dir, &push_url);
    let config_path = args.data_dir.join("driftless-demo.toml");
    std::fs::write(&config_path, &text)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let settings = Settings::parse(&config_path.display().to_string(), &text)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = super::ledger::open(&settings, super::ledger::Access::Serve).await?;
    let mut state = AppState::new(settings, store);
    let s2 = secret.clone();
    state.fanout = Arc::new(FanoutOptions {
        env: Arc::new(move |k| {
            if k == SECRET_ENV {
                Some(s2.clone())
            } else {
                std::env::var(k).ok()
            }
        }),
        ..FanoutOptions::default()
    });
    let server = Server::bind(&args.listen, state)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = server.local_addr()?.to_string();
    let signal = driftless_server::shutdown_signal();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        tokio::select! {
            _ = signal => {},
            _ = stop_rx => {},
        }
    };
    let serving = tokio::spawn(server.run_until_stopped(stop));

    println!("driftless demo: open the dashboard at http://{addr}/ (token: {READ_TOKEN})");
    println!("  hub            http://{addr} (API explorer: http://{addr}/api)");
    println!("  configuration  {}", config_path.display());
    println!(
        "  ledger         {}",
        args.data_dir.join("driftless.sqlite3").display()
    );
    println!("  storefront     {push_url} (webhook receiver: signature, compare-and-set)");
    println!(
        "replaying {} days of `{}` ({} skus) from a simulated WMS, ERP and storefront in {} s...",
        params.days, params.scenario, params.skus, args.seconds
    );

    let sim = driftless_sim::simulate(&params)?;
    let mut replay = driftless_sim::replay::Replay::new(&sim.run, Utc::now(), args.seconds);
    let tick = Duration::from_millis(250);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent = 0u64;
    let mut edits = 0u64;
    let mut edit_rng = driftless_sim::rng::Rng::stream(params.seed, "demo-merchandiser");
    let edit_every = (replay.events().len() / 4).max(1);
    while !replay.done() {
        tokio::time::sleep(tick).await;
        let now = Utc::now();
        let mut batch: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        while let Some((e, json)) = replay.next_due(now) {
            batch.entry(e.source.as_str()).or_default().push(json);
            if replay.position().is_multiple_of(edit_every) {
                edits += merchandiser_edit(&addr, &shop, &mut edit_rng).await?;
            }
        }
        for (source, list) in batch {
            let body = Value::Array(list).to_string();
            let (status, v) =
                http(&addr, "POST", "/v1/events", token_for(source), Some(&body)).await?;
            anyhow::ensure!(
                status == 200,
                "POST /v1/events as {source}: HTTP {status}: {v}"
            );
            for r in v["results"].as_array().into_iter().flatten() {
                *outcomes
                    .entry(r["outcome"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
                sent += 1;
            }
        }
    }
    // Let the fan-out catch up, then compare what the storefront shows with the hub.
    let mut matching = (0, 0);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let hub = hub_quantities(&addr).await?;
        let shown = shop.lock().quantities.clone();
        let same = hub.iter().filter(|(k, q)| shown.get(*k) == Some(q)).count();
        matching = (same, hub.len());
        if same == hub.len() {
            break;
        }
    }
    let (applied, conflicts, bad) = {
        let l = shop.lock();
        (l.applied.len(), l.conflicts, l.bad_signatures)
    };
    let list: Vec<String> = outcomes.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("\nsent {sent} events over HTTP: {}", list.join(", "));
    println!(
        "storefront: {applied} pushes applied, {conflicts} refused by compare-and-set, {bad} bad signatures; {edits} hand edits reported"
    );
    println!(
        "storefront shows the hub's channel quantity for {} of {} skus",
        matching.0, matching.1
    );
    let sku = replay
        .events()
        .iter()
        .rev()
        .find(|(_, e)| e.source.as_str() == "wms")
        .map_or("SKU-00001".to_owned(), |(_, e)| e.sku.to_string());
    println!("\nwhere to look (read-only token: {READ_TOKEN}):");
    // The dashboard line only when this build serves one.
    if matches!(
        http(&addr, "GET", "/", READ_TOKEN, None).await,
        Ok((200, _))
    ) {
        println!("  http://{addr}/                          dashboard");
    }
    println!("  curl -H 'Authorization: Bearer {READ_TOKEN}' http://{addr}/v1/inventory/{sku}");
    println!(
        "  curl -H 'Authorization: Bearer {READ_TOKEN}' http://{addr}/v1/inventory/{sku}/history"
    );
    println!(
        "  curl -H 'Authorization: Bearer {READ_TOKEN}' 'http://{addr}/v1/incidents?kind=channel_override'"
    );
    println!("  curl -H 'Authorization: Bearer {READ_TOKEN}' http://{addr}/v1/channels/shop");
    println!("  curl -H 'Authorization: Bearer {READ_TOKEN}' http://{addr}/v1/matrix");
    println!(
        "  driftless simulate --scenario {} --architecture point-to-point   # the same business without the hub",
        params.scenario
    );

    let ok = matching.0 == matching.1;
    if args.exit {
        let _ = stop_tx.send(());
    } else {
        println!("\nserving until Ctrl-C");
    }
    serving.await??;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A person changes one storefront quantity by hand and the storefront reports it to the hub, as a
/// Shopify `inventory_levels/update` webhook would. Returns how many edits were made.
async fn merchandiser_edit(
    addr: &str,
    shop: &StandIn,
    rng: &mut driftless_sim::rng::Rng,
) -> anyhow::Result<u64> {
    let edit = {
        let mut s = shop.lock();
        if s.quantities.is_empty() {
            return Ok(0);
        }
        // In sku order, so a seed picks the same sku every time.
        let mut skus: Vec<(&String, &i64)> = s.quantities.iter().collect();
        skus.sort();
        let i = rng.below(skus.len() as u64) as usize;
        let (sku, cur) = (skus[i].0.clone(), *skus[i].1);
        let v = cur + rng.range(10, 50);
        s.quantities.insert(sku.clone(), v);
        (sku, v)
    };
    let body =
        json!({"observations": [{"sku": edit.0, "quantity": edit.1, "actor": "merch.anna"}]});
    let (status, v) = http(
        addr,
        "POST",
        "/v1/channels/shop/observations",
        token_for("shop"),
        Some(&body.to_string()),
    )
    .await?;
    anyhow::ensure!(status == 200, "POST observations: HTTP {status}: {v}");
    Ok(1)
}
