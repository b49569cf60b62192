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
    // Every other system that reports observations, against the hub (DESIGN §7a).
    for r in crate::checkpoint::audit_observed(settings, dir, &empty, at)? {
        if let Some(m) = merged.as_mut() {
            m.skus_compared += r.skus_compared;
            m.drifting += r.drifting;
            m.handoffs.extend(r.handoffs.into_iter().skip(1));
            m.rows.extend(r.rows);
            m.absent
                .extend(r.absent.into_iter().filter(|a| a.system != "hub"));
        }
    }
    let mut report = merged.ok_or_else(|| AuditError::Config("no channel audited".into()))?;
    report
        .rows
        .sort_by(|a, b| (&a.sku, &a.location, &a.handoff).cmp(&(&b.sku, &b.location, &b.handoff)));
    Ok(report)
}

// ---- The hub's own incidents as evidence of a probable cause ----
//
// `audit --live`: the hub's own incidents as evidence of a probable cause (DESIGN §7: "with
// `--live` the hub's own stale and override incidents are evidence too").
//
// A live audit judges what each channel shows against the hub's ledger; the channel's change log
// holds only the observations that differ, so the change-log rules alone cannot see an
// integration that delivered old data, or a system writing a state it is not the source of truth
// for. The hub saw both when they happened and recorded an incident:
//
// - `stale`: a `set` older than the data already in place for the key (a late redelivery): an
//   integration wrote data older than data already written, **`out_of_sequence`**;
// - `override`: a system wrote a state it is not the source of truth for: a value set outside
//   the integration's authority, **`manual_override`**.
//
// Precedence is §7's: the cause rules already put `out_of_sequence` and `manual_override` first
// (direct evidence of who wrote what), and an incident is direct evidence too, so it names the
// cause of a drifting row at a hand-off *from* the hub unless the row's cause is already one of
// those two (the change log came first) or a count problem (`count_variance`). `stale` beats
// `override`, as `out_of_sequence` beats `manual_override`. The cause the files alone gave goes
// beside it (`also`) unless it was `unexplained`.

/// One hub incident, as much of it as the audit needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubIncident {
    /// `stale` or `override`; other kinds are not evidence of a cause and are ignored.
    pub kind: String,
    pub sku: String,
    /// `None`: the sku as a whole.
    pub location: Option<String>,
    pub at: DateTime<Utc>,
}

/// Names the cause of every drifting row the hub's incidents explain: those of a row's sku (and
/// location, when both have one) recorded from `since` up to the report's moment.
pub fn apply_incidents(report: &mut Report, incidents: &[HubIncident], since: DateTime<Utc>) {
    let at = report.at;
    for row in &mut report.rows {
        // Only hand-offs from the hub: `physical->hub` is a count, not an integration.
        if !row.handoff.starts_with("hub->")
            || matches!(
                row.cause.as_str(),
                "count_variance" | "out_of_sequence" | "manual_override"
            )
        {
            continue;
        }
        let applies = |kind: &str| {
            incidents.iter().any(|i| {
                i.kind == kind
                    && i.sku == row.sku
                    && i.at >= since
                    && i.at <= at
                    && match (&i.location, row.location.is_empty()) {
                        (Some(l), false) => *l == row.location,
                        _ => true,
                    }
            })
        };
        let cause = if applies("stale") {
            "out_of_sequence"
        } else if applies("override") {
            "manual_override"
        } else {
            continue;
        };
        let before = std::mem::replace(&mut row.cause, cause.to_owned());
        if before != "unexplained" {
            row.also = Some(before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Row, Values};

    fn row(sku: &str, loc: &str, handoff: &str, cause: &str) -> Row {
        Row {
            sku: sku.into(),
            location: loc.into(),
            baseline: None,
            values: Values::default(),
            expected: Values::default(),
            handoff: handoff.into(),
            cause: cause.into(),
            also: None,
            delta: 5,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn inc(kind: &str, sku: &str, loc: Option<&str>, at: &str) -> HubIncident {
        HubIncident {
            kind: kind.into(),
            sku: sku.into(),
            location: loc.map(Into::into),
            at: t(at),
        }
    }

    #[test]
    fn stale_and_override_incidents_name_the_cause_of_live_rows() {
        let mut r = Report {
            at: t("2026-11-20T12:00:00Z"),
            skus_compared: 6,
            drifting: 6,
            handoffs: vec![],
            rows: vec![
                row("A", "", "hub->shop", "sync_lag"),
                row("B", "", "hub->shop", "unexplained"),
                row("C", "", "hub->shop", "unexplained"),
                row("D", "DC1", "physical->hub", "count_variance"),
                row("E", "", "hub->shop", "manual_override"),
                row("F", "", "hub->shop", "unexplained"),
            ],
            absent: vec![],
            not_counted: 0,
        };
        let since = t("2026-11-13T12:00:00Z");
        let incidents = [
            // A late redelivery of A, and a write outside authority on B.
            inc("stale", "A", Some("DC1"), "2026-11-20T09:00:00Z"),
            inc("override", "B", None, "2026-11-20T10:00:00Z"),
            // Both on C: stale wins, as out_of_sequence precedes manual_override.
            inc("override", "C", None, "2026-11-20T10:00:00Z"),
            inc("stale", "C", None, "2026-11-20T10:30:00Z"),
            // A count problem stays one; the change log's own finding stays.
            inc("stale", "D", Some("DC1"), "2026-11-20T10:00:00Z"),
            inc("stale", "E", None, "2026-11-20T10:00:00Z"),
            // Too old, after the snapshot, or of another kind: no evidence.
            inc("stale", "F", None, "2026-11-01T10:00:00Z"),
            inc("stale", "F", None, "2026-11-20T12:00:01Z"),
            inc("conflict", "F", None, "2026-11-20T10:00:00Z"),
        ];
        apply_incidents(&mut r, &incidents, since);
        let got: Vec<(&str, Option<&str>)> = r
            .rows
            .iter()
            .map(|x| (x.cause.as_str(), x.also.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("out_of_sequence", Some("sync_lag")),
                ("manual_override", None),
                ("out_of_sequence", None),
                ("count_variance", None),
                ("manual_override", None),
                ("unexplained", None),
            ]
        );
    }
}
