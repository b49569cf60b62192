//! The live audit: the hub judged against what each channel was last acknowledged (or observed)
//! showing, from the views a store writes out as snapshot files
//! (`driftless_store::views::write_views`), so one engine and one set of rules judge both files
//! and the live hub. Used by `audit --live` and by the hub's scheduled self-audit.

use crate::{AuditError, AuditInput, Report};
use chrono::{DateTime, Utc};
use driftless_config::{Role, Settings, SystemSpec};
use driftless_core::SystemId;
use std::path::{Path, PathBuf};

/// A private temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> std::io::Result<TempDir> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            + u128::from(n);
        let p = std::env::temp_dir().join(format!("driftless-live-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p)?;
        Ok(TempDir(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Judges the views `driftless_store::views::write_views` wrote to `dir`: one audit per channel, merged. Blocking
/// (a running hub calls it from `spawn_blocking` after `write_views` with its own store).
pub fn audit_views(
    settings: &Settings,
    dir: &Path,
    baseline: Option<&Path>,
    at: DateTime<Utc>,
) -> Result<Report, AuditError> {
    if settings.channels.is_empty() {
        return Err(AuditError::Config(
            "--live audits the hub's channels, and the configuration declares none".into(),
        ));
    }
    let hub = SystemId::parse("hub").map_err(|e| AuditError::Config(e.to_string()))?;
    let empty = dir.join("no-baseline.csv");
    std::fs::write(&empty, "sku,location,quantity\n").map_err(|error| AuditError::Io {
        file: empty.display().to_string(),
        error,
    })?;
    let mut merged: Option<Report> = None;
    for (i, ch) in settings.channels.iter().enumerate() {
        let id = ch.spec.id.clone();
        let mut s = settings.clone();
        s.systems.retain(|x| x.id != hub && x.id != id);
        s.systems.push(SystemSpec {
            id: hub.clone(),
            role: Role::Wms,
            token_sha256: None,
        });
        s.systems.push(SystemSpec {
            id: id.clone(),
            role: Role::Storefront,
            token_sha256: None,
        });
        s.audit.chain = vec![hub.clone(), id.clone()];
        s.audit.snapshots.clear();
        s.hops.clear();
        // The physical count is judged once, in the first channel's run.
        let base = match baseline {
            Some(b) if i == 0 => b.to_path_buf(),
            _ => empty.clone(),
        };
        let input = AuditInput {
            baseline: base,
            snapshots: vec![
                (hub.clone(), dir.join("hub.csv")),
                (id.clone(), dir.join(format!("{id}.csv"))),
            ],
            changes: vec![(id.clone(), dir.join(format!("{id}-changes.csv")))],
            at,
        };
        let r = crate::run_files(&s, &input)?;
        merged = Some(match merged {
            None => r,
            Some(mut m) => {
                m.skus_compared += r.skus_compared;
                m.drifting += r.drifting;
                m.handoffs.extend(r.handoffs.into_iter().skip(1));
                m.rows.extend(r.rows);
                m.absent
                    .extend(r.absent.into_iter().filter(|a| a.system != "hub"));
                m
            }
        });
    }
    let mut report = merged.ok_or_else(|| AuditError::Config("no channel audited".into()))?;
    report
        .rows
        .sort_by(|a, b| (&a.sku, &a.location, &a.handoff).cmp(&(&b.sku, &b.location, &b.handoff)));
    Ok(report)
}
