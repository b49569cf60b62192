//! The files of `driftless audit`: baseline, snapshots and change logs, as CSV or JSON lines. The
//! readers are reached through `run_files`, their one entry point: the first byte picks the file
//! the input stands for (and JSON lines or CSV), the others are small valid files. Whatever the
//! file holds, the audit answers with a report or located input errors, never a panic.

use driftless_audit::{AuditError, AuditInput, run_files};
use driftless_config::Settings;
use driftless_core::SystemId;
use std::path::PathBuf;

const CONFIG: &str = r#"
[[systems]]
id = "wms"
role = "wms"
[[systems]]
id = "erp"
role = "erp"
[[systems]]
id = "shop"
role = "storefront"

[[units]]
sku = "TEE-*"
unit = "CS"
factor = 12

[[channels]]
id = "shop"
locations = ["DC1", "DC2"]

[[hops]]
from = "wms"
to = "erp"
trigger = "batch"
schedule = "every 24h"
latency_sla = "4h"

[[hops]]
from = "erp"
to = "shop"
trigger = "poll"
schedule = "every 15m"
latency_sla = "30m"

[audit]
chain = ["wms", "erp", "shop"]
threshold_units = 2
threshold_pct = 1.0
integration_actors = ["wms-sync", "erp-connector", "shop-connector", "checkout"]
"#;

const FILES: [(&str, &str); 5] = [
    (
        "baseline",
        "sku,location,quantity\nMUG-1,DC1,100\nTEE-1,DC1,24\n",
    ),
    (
        "wms",
        "sku,location,on_hand,committed\nMUG-1,DC1,100,2\nTEE-1,DC1,2,0\n",
    ),
    ("erp", "sku,location,on_hand\nMUG-1,DC1,100\nTEE-1,DC1,24\n"),
    ("shop", "sku,quantity\nMUG-1,98\nTEE-1,24\n"),
    (
        "shop-changes",
        "sku,location,at,quantity,actor\nMUG-1,DC1,2026-11-20T10:00:00Z,98,checkout\n",
    ),
];

fn main() {
    let dir = std::env::temp_dir().join(format!("driftless-fuzz-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let settings = Settings::parse("fuzz.toml", CONFIG).expect("the fuzz configuration");
    let at = "2026-11-20T12:00:00Z".parse().expect("a time");
    afl::fuzz!(|data: &[u8]| {
        let Some((&pick, content)) = data.split_first() else {
            return;
        };
        let which = usize::from(pick) % FILES.len();
        let jsonl = pick & 0x80 != 0;
        let mut paths: Vec<PathBuf> = Vec::new();
        for (i, (name, text)) in FILES.iter().enumerate() {
            let (path, bytes) = if i == which {
                let ext = if jsonl { "jsonl" } else { "csv" };
                (dir.join(format!("{name}.{ext}")), content)
            } else {
                (dir.join(format!("{name}.csv")), text.as_bytes())
            };
            std::fs::write(&path, bytes).expect("write an input file");
            paths.push(path);
        }
        let input = AuditInput {
            baseline: paths[0].clone(),
            snapshots: vec![
                (SystemId::parse("wms").unwrap(), paths[1].clone()),
                (SystemId::parse("erp").unwrap(), paths[2].clone()),
                (SystemId::parse("shop").unwrap(), paths[3].clone()),
            ],
            changes: vec![(SystemId::parse("shop").unwrap(), paths[4].clone())],
            at,
        };
        match run_files(&settings, &input) {
            Ok(report) => {
                let _ = format!("{report:?}");
            }
            Err(AuditError::Input { errors, total }) => {
                assert!(!errors.is_empty() && errors.len() as u64 <= total);
                for e in &errors {
                    let _ = e.to_string();
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    });
}
