//! `driftless demo`: the five-minute tour. Starts the hub on embedded SQLite, a simulated storefront
//! that receives the hub's pushes through the webhook connector (signature, compare-and-set,
//! idempotency keys), and replays a simulated WMS, ERP and storefront's events over HTTP with their
//! own bearer tokens, in accelerated time. A merchandiser edits a few storefront quantities by hand
//! on the way, which the hub notices and overwrites. Then it prints where to look.
//!
//! The events come from `driftless simulate --architecture hub`: the same business, sent to the
//! real server instead of the in-process core.

mod client;

use crate::cmd::serve;
use anyhow::Context;
use chrono::Utc;
use client::{http, hub_quantities, merchandiser_edit, token_for};
use driftless_config::Settings;
use driftless_connectors::standin::{Faults, Mode, StandIn};
use driftless_server::fanout::FanoutOptions;
use driftless_server::{AppState, Server};
use driftless_sim::{Architecture, Params, SCENARIOS};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

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

/// What the demo runs beside the replay: the storefront stand-in and the serving hub.
struct Running {
    addr: String,
    shop: StandIn,
    push_url: String,
    config_path: PathBuf,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// What the replay sent and what came of it.
struct Sent {
    outcomes: BTreeMap<String, u64>,
    events: u64,
    edits: u64,
    /// A sku the WMS wrote last, for the commands printed at the end.
    sku: String,
}

async fn demo(args: Args, params: Params) -> anyhow::Result<ExitCode> {
    let run = start(&args).await?;
    print_intro(&args, &params, &run);
    let sent = replay(&args, &params, &run).await?;
    let matching = await_storefront(&run).await?;
    print_summary(&run, &sent, matching);
    print_where_to_look(&run.addr, &sent.sku, &params.scenario).await;
    let ok = matching.0 == matching.1;
    if args.exit {
        let _ = run.stop_tx.send(());
    } else {
        println!("\nserving until Ctrl-C");
    }
    run.serving.await??;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A fresh ledger, the storefront stand-in, the demo's configuration, and the hub serving it.
async fn start(args: &Args) -> anyhow::Result<Running> {
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
    state.fanout = Arc::new(FanoutOptions {
        env: Arc::new(move |k| {
            if k == SECRET_ENV {
                Some(secret.clone())
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
    Ok(Running {
        addr,
        shop,
        push_url,
        config_path,
        stop_tx,
        serving,
    })
}

fn print_intro(args: &Args, params: &Params, run: &Running) {
    let addr = &run.addr;
    println!("driftless demo: open the dashboard at http://{addr}/ (token: {READ_TOKEN})");
    println!("  hub            http://{addr} (API explorer: http://{addr}/api)");
    println!("  configuration  {}", run.config_path.display());
    println!(
        "  ledger         {}",
        args.data_dir.join("driftless.sqlite3").display()
    );
    println!(
        "  storefront     {} (webhook receiver: signature, compare-and-set)",
        run.push_url
    );
    println!(
        "replaying {} days of `{}` ({} skus) from a simulated WMS, ERP and storefront in {} s...",
        params.days, params.scenario, params.skus, args.seconds
    );
}

/// The simulated systems send their events over HTTP in accelerated time, each with its own
/// token; a merchandiser edits the storefront by hand four times on the way.
async fn replay(args: &Args, params: &Params, run: &Running) -> anyhow::Result<Sent> {
    let sim = driftless_sim::simulate(params)?;
    let mut replay = driftless_sim::replay::Replay::new(&sim.run, Utc::now(), args.seconds);
    let tick = Duration::from_millis(250);
    let mut sent = Sent {
        outcomes: BTreeMap::new(),
        events: 0,
        edits: 0,
        sku: String::new(),
    };
    let mut edit_rng = driftless_sim::rng::Rng::stream(params.seed, "demo-merchandiser");
    let edit_every = (replay.events().len() / 4).max(1);
    while !replay.done() {
        tokio::time::sleep(tick).await;
        let now = Utc::now();
        let mut batch: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        while let Some((e, json)) = replay.next_due(now) {
            batch.entry(e.source.as_str()).or_default().push(json);
            if replay.position().is_multiple_of(edit_every) {
                sent.edits += merchandiser_edit(&run.addr, &run.shop, &mut edit_rng).await?;
            }
        }
        for (source, list) in batch {
            let body = Value::Array(list).to_string();
            let (status, v) = http(
                &run.addr,
                "POST",
                "/v1/events",
                token_for(source),
                Some(&body),
            )
            .await?;
            anyhow::ensure!(
                status == 200,
                "POST /v1/events as {source}: HTTP {status}: {v}"
            );
            for r in v["results"].as_array().into_iter().flatten() {
                *sent
                    .outcomes
                    .entry(r["outcome"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
                sent.events += 1;
            }
        }
    }
    sent.sku = replay
        .events()
        .iter()
        .rev()
        .find(|(_, e)| e.source.as_str() == "wms")
        .map_or("SKU-00001".to_owned(), |(_, e)| e.sku.to_string());
    Ok(sent)
}

/// Lets the fan-out catch up, then says for how many skus (of how many) the storefront shows
/// the hub's channel quantity.
async fn await_storefront(run: &Running) -> anyhow::Result<(usize, usize)> {
    let mut matching = (0, 0);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let hub = hub_quantities(&run.addr).await?;
        let shown = run.shop.lock().quantities.clone();
        let same = hub.iter().filter(|(k, q)| shown.get(*k) == Some(q)).count();
        matching = (same, hub.len());
        if same == hub.len() {
            break;
        }
    }
    Ok(matching)
}

fn print_summary(run: &Running, sent: &Sent, matching: (usize, usize)) {
    let (applied, conflicts, bad) = {
        let l = run.shop.lock();
        (l.applied.len(), l.conflicts, l.bad_signatures)
    };
    let list: Vec<String> = sent
        .outcomes
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "\nsent {} events over HTTP: {}",
        sent.events,
        list.join(", ")
    );
    println!(
        "storefront: {applied} pushes applied, {conflicts} refused by compare-and-set, {bad} bad signatures; {} hand edits reported",
        sent.edits
    );
    println!(
        "storefront shows the hub's channel quantity for {} of {} skus",
        matching.0, matching.1
    );
}

async fn print_where_to_look(addr: &str, sku: &str, scenario: &str) {
    println!("\nwhere to look (read-only token: {READ_TOKEN}):");
    // The dashboard line only when this build serves one.
    if matches!(http(addr, "GET", "/", READ_TOKEN, None).await, Ok((200, _))) {
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
        "  driftless simulate --scenario {scenario} --architecture point-to-point   # the same business without the hub"
    );
}
