//! Shared helpers of the audit tests: the three-system configuration and a runner over files
//! written to a fresh directory.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use driftless_audit::{AuditError, AuditInput, Report, run_files};
use driftless_config::Settings;
use driftless_core::SystemId;
use std::path::PathBuf;

pub const CONFIG: &str = r#"
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

pub fn at() -> DateTime<Utc> {
    "2026-11-20T12:00:00Z".parse().unwrap()
}

/// A fresh directory for one test's files.
pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("driftless-golden-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Files of one case: `(name, contents)`; `baseline.csv`, `wms.csv`, `erp.csv`, `shop.csv` are
/// the snapshots, `<system>-changes.csv` the change logs.
pub fn audit(name: &str, config: &str, files: &[(&str, &str)]) -> Result<Report, AuditError> {
    let d = dir(name);
    for (f, text) in files {
        std::fs::write(d.join(f), text).unwrap();
    }
    let settings = Settings::parse("driftless.toml", config).unwrap();
    let sys = |s: &str| SystemId::parse(s).unwrap();
    let input = AuditInput {
        baseline: d.join("baseline.csv"),
        snapshots: ["wms", "erp", "shop"]
            .iter()
            .map(|s| (sys(s), d.join(format!("{s}.csv"))))
            .collect(),
        changes: ["wms", "erp", "shop"]
            .iter()
            .filter(|s| files.iter().any(|(f, _)| *f == format!("{s}-changes.csv")))
            .map(|s| (sys(s), d.join(format!("{s}-changes.csv"))))
            .collect(),
        at: at(),
    };
    let r = run_files(&settings, &input);
    // The same audit through the paths only large inputs take (spilled to files, tiny
    // partitions, split again before the join) must give the same report.
    let tuned = driftless_audit::Tuning {
        spill_above: 0,
        part_bytes: 40,
        sub_bytes: 24,
    };
    let t = driftless_audit::run_files_tuned(&settings, &input, &|_| {}, &tuned);
    match (&r, &t) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "spilled and in-memory audits differ"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("spilled and in-memory audits differ: {r:?} vs {t:?}"),
    }
    r
}
