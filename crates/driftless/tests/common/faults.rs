//! Shared by the fault runs of production mode (`pg_faults.rs`, `pg_nats_faults.rs`): a fresh
//! PostgreSQL database per run, `driftless serve` on it as a real process, the clients' events,
//! and the checks after a run (the ledger against an independent oracle, every acknowledged event
//! stored once, the webhook stand-in at the hub's channel quantity, no push applied twice).
//!
//! Included with `#[path = "common/faults.rs"] mod faults;` by the files that need it, so the other
//! test programs do not compile it.

#![allow(dead_code)] // each fault run uses its own subset

use driftless_connectors::standin::{Faults, Mode, StandIn};
use driftless_core::event::RawEvent;
use driftless_core::{Event, Location, MemoryLedger, Rules, Sku, SystemId};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "fault-run-secret";
pub const SKUS: usize = 30;

/// The hubs' configuration: one source (`wms`), one webhook channel pushing to `push_url`.
pub fn config(push_url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
auth = "none"

[[systems]]
id = "wms"
role = "wms"

[[systems]]
id = "shop"
role = "storefront"

[[channels]]
id = "shop"
locations = ["DC1"]
connector = "webhook"
url = "{push_url}"
secret_env = "SHOP_SECRET"
max_attempts = 100
"#
    )
}

/// A webhook stand-in channel that checks [`SECRET`]'s signatures and fails as `faults` says.
pub async fn webhook_standin(faults: Faults) -> StandIn {
    StandIn::start(
        Mode::Webhook {
            secret: SECRET.as_bytes().to_vec(),
        },
        faults,
    )
    .await
    .unwrap()
}

/// The hubs' configuration pushing to `standin`, written in `dir`; its path.
pub fn write_config(dir: &std::path::Path, standin: &StandIn) -> std::path::PathBuf {
    let cfg = dir.join("driftless.toml");
    std::fs::write(&cfg, config(&standin.url("/push"))).unwrap();
    cfg
}

/// `psql` against `url`, or the error it printed.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            sql,
        ])
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The server's URL with another database.
pub fn with_database(url: &str, db: &str) -> String {
    let (head, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{head}/{db}")
}

/// Whether the run must fail rather than skip when a service is missing.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A fresh database, dropped with everything connected to it at the end.
pub struct Database {
    pub admin: String,
    pub name: String,
    pub url: String,
}

impl Database {
    /// A fresh `dl_pg_fault_*` on the server of `DRIFTLESS_TEST_DATABASE_URL` (default
    /// `postgres://postgres@127.0.0.1:5432/postgres`). Without a reachable server: `None` after
    /// one printed line naming `run`, or a failure under `CI=true`.
    pub fn create(run: &str) -> Option<Database> {
        let url = std::env::var("DRIFTLESS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let admin = with_database(&url, "postgres");
        if let Err(e) = psql(&admin, "SELECT 1") {
            assert!(
                !in_ci(),
                "CI=true and PostgreSQL is unreachable at {admin}: {e}"
            );
            let _ = writeln!(
                std::io::stderr(),
                "driftless: {run} skipped: no PostgreSQL at {admin} ({e}); set \
                 DRIFTLESS_TEST_DATABASE_URL or run .ci/run"
            );
            return None;
        }
        // The counter as well as the clock: two tests of one process can start in the same
        // microsecond (it happened in CI), and a name taken twice fails `CREATE DATABASE`.
        static CREATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "dl_pg_fault_{}_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros(),
            CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        psql(&admin, &format!("CREATE DATABASE {name}")).unwrap();
        let url = with_database(&url, &name);
        Some(Database { admin, name, url })
    }

    /// Cuts every connection to the database but `psql`'s own; how many were cut.
    pub fn cut_connections(&self) -> String {
        psql(
            &self.url,
            &format!(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ),
        )
        .unwrap()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// One `driftless serve` on the database (with `env` added); its base URL once it listens.
pub fn serve(
    config: &std::path::Path,
    db: &str,
    data: &std::path::Path,
    env: &[(&str, String)],
) -> (Child, String) {
    let mut cmd = super::common::driftless();
    cmd.args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--database-url", db])
        .env("DRIFTLESS_LOG", "error")
        .env("SHOP_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start driftless");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read address");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, base)
}

/// Event `i` of client `c`: mostly receipts and shipments, now and then a count.
pub fn event(c: usize, i: usize) -> Value {
    let sku = format!("F{:02}", (i * 7 + c) % SKUS);
    let id = format!("c{c}-e{i}");
    let at = format!(
        "2026-11-27T{:02}:{:02}:{:02}Z",
        8 + i % 4,
        (i * 13) % 60,
        c * 10
    );
    if i % 17 == 5 {
        json!({"id": id, "source": "wms", "sku": sku, "location": "DC1", "occurred_at": at,
               "seq": i, "set": {"on_hand": 200 + (i % 50) as i64}})
    } else {
        let q = (i % 9) as i64 - 3;
        json!({"id": id, "source": "wms", "sku": sku, "location": "DC1", "occurred_at": at,
               "seq": i, "adjust": {"on_hand": q, "committed": (i % 3) as i64}})
    }
}

pub fn core_event(v: &Value) -> Event {
    let q = |k: &str| -> Option<Vec<(&'static str, i64)>> {
        v.get(k).map(|m| {
            ["on_hand", "committed"]
                .into_iter()
                .filter_map(|s| m.get(s).and_then(Value::as_i64).map(|n| (s, n)))
                .collect()
        })
    };
    Event::from_raw(&RawEvent {
        id: v["id"].as_str().unwrap(),
        source: "wms",
        sku: v["sku"].as_str().unwrap(),
        location: "DC1",
        occurred_at: v["occurred_at"].as_str().unwrap(),
        seq: v["seq"].as_u64().unwrap(),
        adjust: q("adjust"),
        set: q("set"),
        ..RawEvent::default()
    })
    .unwrap()
}

/// The ledger read through `base` against the oracle (the core's `MemoryLedger` over every
/// acknowledged event): each sku's levels equal, and its history holds every acknowledged id
/// exactly once and nothing else. Returns each sku's channel quantity as the hub shows it.
pub async fn check_ledger(
    http: &reqwest::Client,
    base: &str,
    acked: &[Value],
) -> BTreeMap<String, i64> {
    let rules = Rules {
        systems: [SystemId::parse("wms").unwrap()].into_iter().collect(),
        ..Rules::default()
    };
    let mut oracle = MemoryLedger::new(rules);
    for v in acked {
        oracle.apply(core_event(v));
    }
    let dc1 = Location::parse("DC1").unwrap();
    let mut want_ids: HashMap<String, HashSet<String>> = HashMap::new();
    for v in acked {
        want_ids
            .entry(v["sku"].as_str().unwrap().to_owned())
            .or_default()
            .insert(v["id"].as_str().unwrap().to_owned());
    }
    let mut channel_qty: BTreeMap<String, i64> = BTreeMap::new();
    for (sku, ids) in &want_ids {
        let inv: Value = http
            .get(format!("{base}/v1/inventory/{sku}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let want = oracle.levels(&Sku::parse(sku).unwrap(), &dc1);
        let loc = &inv["locations"][0];
        assert_eq!(
            (loc["on_hand"].as_i64(), loc["committed"].as_i64()),
            (Some(want.on_hand), Some(want.committed)),
            "{sku}: the ledger against the oracle"
        );
        channel_qty.insert(
            sku.clone(),
            inv["channels"][0]["quantity"].as_i64().unwrap(),
        );
        let h: Value = http
            .get(format!("{base}/v1/inventory/{sku}/history?limit=10000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut stored = HashSet::new();
        for e in h["entries"].as_array().unwrap() {
            let id = e["id"].as_str().unwrap().to_owned();
            assert!(stored.insert(id.clone()), "{sku}: {id} stored twice");
        }
        assert_eq!(
            &stored, ids,
            "{sku}: every acknowledged event stored, nothing else"
        );
    }
    channel_qty
}

/// The channel: every sku ends at the hub's quantity once the dispatcher has caught up (bounded:
/// 30 s), and no push was applied twice — per sku each applied push starts from what the one
/// before left (compare-and-set), and no idempotency key was applied twice.
pub async fn check_channel(
    http: &reqwest::Client,
    base: &str,
    standin: &StandIn,
    channel_qty: &BTreeMap<String, i64>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = http
            .get(format!("{base}/v1/channels/shop"))
            .send()
            .await
            .ok();
        let pending = match pending {
            Some(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["pending"].as_i64()),
            None => None,
        };
        let shows: BTreeMap<String, i64> = channel_qty
            .keys()
            .map(|s| (s.clone(), standin.get(s).unwrap_or(i64::MIN)))
            .collect();
        if pending == Some(0) && &shows == channel_qty {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the channel did not catch up: pending {pending:?}, shows {shows:?}, hub {channel_qty:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let l = standin.lock();
    let mut last: HashMap<&str, i64> = HashMap::new();
    let mut keys = HashSet::new();
    for a in &l.applied {
        assert!(keys.insert(a.key.as_str()), "push {} applied twice", a.key);
        assert_eq!(
            a.from,
            last.get(a.sku.as_str()).copied(),
            "{}: {a:?}",
            a.sku
        );
        last.insert(&a.sku, a.to);
    }
    assert!(l.faults > 0, "the stand-in injected faults");
}
