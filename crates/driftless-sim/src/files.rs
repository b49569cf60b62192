//! The files `--out DIR` writes, rendered as text by pure functions ([`render`]) and written by
//! [`write_dir`]; [`audit_dir`] audits them (`simulate --evaluate`). The two are the only
//! functions of this crate that touch the file system.
//!
//! Formats are the auditor's (DESIGN section 13): quantities in base units (eaches) for the WMS,
//! the ERP and the baseline, selling packs for the storefront's channel quantity.

use crate::config::LOCATIONS;
use crate::eval::{Evaluation, Reported};
use crate::truth::TruthRow;
use crate::world::{Run, rfc3339};
use crate::{ChangeRow, Outcome, SimError};
use std::fmt::Write;
use std::path::Path;

/// The names written, in order. Nothing else is written.
pub const FILES: [&str; 10] = [
    "driftless.toml",
    "baseline.csv",
    "wms.csv",
    "erp.csv",
    "shop.csv",
    "wms-changes.csv",
    "erp-changes.csv",
    "shop-changes.csv",
    "at.txt",
    "truth.csv",
];

const NLOC: usize = LOCATIONS.len();

/// Quotes a CSV field when it needs it (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn cells(run: &Run, header: &str, value: impl Fn(usize) -> String) -> String {
    let mut s = String::from(header);
    for (sku, name) in run.skus.iter().enumerate() {
        for (l, loc) in LOCATIONS.iter().enumerate() {
            let _ = writeln!(s, "{},{},{}", field(name), loc, value(sku * NLOC + l));
        }
    }
    s
}

/// A change log; the `committed` column only when some row carries it (the ERP's), so the other
/// systems' logs keep the columns they always had.
fn changes(run: &Run, rows: &[ChangeRow]) -> String {
    let with_committed = rows.iter().any(|r| r.committed.is_some());
    let mut s = String::from("sku,location,at,quantity,actor,source_at,ref");
    s.push_str(if with_committed { ",committed\n" } else { "\n" });
    for r in rows {
        let _ = write!(
            s,
            "{},{},{},{},{},{},{}",
            field(&run.skus[r.sku]),
            r.loc.map_or("", |l| LOCATIONS[l]),
            rfc3339(r.at),
            r.qty,
            field(&r.actor),
            r.source_at.map(rfc3339).unwrap_or_default(),
            field(&r.reference)
        );
        if with_committed {
            let _ = write!(
                s,
                ",{}",
                r.committed.map(|c| c.to_string()).unwrap_or_default()
            );
        }
        s.push('\n');
    }
    s
}

/// Every file as `(name, contents)`, in [`FILES`] order.
pub fn render(run: &Run, truth: &[TruthRow]) -> Vec<(&'static str, String)> {
    let mut shop = String::from("sku,quantity\n");
    for (sku, name) in run.skus.iter().enumerate() {
        let _ = writeln!(shop, "{},{}", field(name), run.shop[sku]);
    }
    let mut t = String::from("sku,location,handoff,cause\n");
    for r in truth {
        let _ = writeln!(
            t,
            "{},{},{},{}",
            field(&r.sku),
            field(&r.location),
            r.handoff,
            r.cause
        );
    }
    vec![
        ("driftless.toml", run.config_toml.clone()),
        (
            "baseline.csv",
            cells(run, "sku,location,quantity\n", |c| run.phys[c].to_string()),
        ),
        (
            "wms.csv",
            cells(run, "sku,location,on_hand\n", |c| run.wms[c].to_string()),
        ),
        (
            "erp.csv",
            cells(run, "sku,location,on_hand,committed\n", |c| {
                format!("{},{}", run.erp_on[c], run.erp_com[c])
            }),
        ),
        ("shop.csv", shop),
        ("wms-changes.csv", changes(run, &run.wms_log)),
        ("erp-changes.csv", changes(run, &run.erp_log)),
        ("shop-changes.csv", changes(run, &run.shop_log)),
        ("at.txt", format!("{}\n", rfc3339(run.at))),
        ("truth.csv", t),
    ]
}

/// Writes the rendered files into `dir`, creating it if needed.
pub fn write_dir(dir: &Path, files: &[(&'static str, String)]) -> Result<(), SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::Io(format!("{}: {e}", dir.display())))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .map_err(|e| SimError::Io(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// Runs the auditor on the files written into `dir` (by [`write_dir`]), with the configuration the
/// run used, and scores its report against the run's ground truth.
pub fn audit_dir(outcome: &Outcome, dir: &Path) -> Result<Evaluation, SimError> {
    use chrono::{DateTime, Utc};
    use driftless_core::SystemId;
    let sys = |s: &str| SystemId::parse(s).map_err(|e| SimError::Audit(format!("system {s}: {e}")));
    let at_path = dir.join("at.txt");
    let at_text = std::fs::read_to_string(&at_path)
        .map_err(|e| SimError::Audit(format!("{}: {e}", at_path.display())))?;
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(at_text.trim())
        .map_err(|e| SimError::Audit(format!("at.txt: {e}")))?
        .with_timezone(&Utc);
    let mut snapshots = Vec::new();
    let mut changes = Vec::new();
    for s in ["wms", "erp", "shop"] {
        snapshots.push((sys(s)?, dir.join(format!("{s}.csv"))));
        changes.push((sys(s)?, dir.join(format!("{s}-changes.csv"))));
    }
    let input = driftless_audit::AuditInput {
        baseline: dir.join("baseline.csv"),
        snapshots,
        changes,
        at,
    };
    let report = driftless_audit::run_files(&outcome.run.settings, &input)
        .map_err(|e| SimError::Audit(format!("the auditor refused the simulated files: {e}")))?;
    let reported: Vec<Reported> = report
        .rows
        .iter()
        .map(|r| Reported {
            sku: r.sku.clone(),
            location: r.location.clone(),
            handoff: r.handoff.clone(),
            cause: r.cause.clone(),
        })
        .collect();
    Ok(crate::eval::evaluate(&outcome.truth, &reported))
}
