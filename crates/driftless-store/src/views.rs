//! The hub's own view written out as the snapshot files the drift audit reads: `hub.csv` from the
//! inventory, and per channel what it was last acknowledged (or observed) showing and the
//! observations that differ. Written against the traits, so every backend's ledger can be audited
//! live; the judging is `driftless_audit::live`.

use crate::outbox::{Scan, ScanFrom};
use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use driftless_core::{ChannelSpec, Sku};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Skus per outbox read.
const BATCH: usize = 500;

/// Why the views could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing a view: {0}")]
    Io(#[from] std::io::Error),
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `hub.csv` (every sku at every location, every state) and per channel `<id>.csv` (what it
/// was last acknowledged to show, or last observed showing when that differs) and
/// `<id>-changes.csv` (the observations that differ, with who made them when known).
pub async fn write_views(
    store: &dyn Store,
    channels: &[ChannelSpec],
    dir: &Path,
    at: DateTime<Utc>,
) -> Result<(), ViewError> {
    async {
        let mut w = BufWriter::new(std::fs::File::create(dir.join("hub.csv"))?);
        writeln!(w, "sku,location,on_hand,committed,reserved,unavailable")?;
        let mut skus: Vec<Sku> = Vec::new();
        let mut after = None;
        loop {
            let page = store.inventory_page(after.as_ref(), 1000).await?;
            let Some((last, _)) = page.last() else { break };
            let last = last.clone();
            for (sku, locs) in &page {
                for l in locs {
                    let v = &l.levels;
                    writeln!(
                        w,
                        "{},{},{},{},{},{}",
                        field(sku.as_str()),
                        field(l.location.as_str()),
                        v.on_hand,
                        v.committed,
                        v.reserved,
                        v.unavailable
                    )?;
                }
                skus.push(sku.clone());
            }
            after = Some(last);
        }
        w.flush()?;
        for ch in channels {
            let id = ch.id.as_str();
            let mut shown: HashMap<Sku, i64> = HashMap::new();
            for chunk in skus.chunks(BATCH) {
                let scan = Scan {
                    channel: id.to_owned(),
                    locations: ch.locations.clone(),
                    from: ScanFrom::Skus(chunk.to_vec()),
                    limit: BATCH,
                };
                for r in store.outbox_scan(&scan).await? {
                    if let Some(q) = r.acked_quantity {
                        shown.insert(r.sku, q);
                    }
                }
            }
            let diverged = store.divergences(id, at, 10_000_000).await?;
            let mut log = BufWriter::new(std::fs::File::create(
                dir.join(format!("{id}-changes.csv")),
            )?);
            writeln!(log, "sku,location,at,quantity,actor")?;
            for d in &diverged {
                shown.insert(d.sku.clone(), d.observed);
                writeln!(
                    log,
                    "{},,{},{},{}",
                    field(d.sku.as_str()),
                    d.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    d.observed,
                    field(d.actor.as_deref().unwrap_or("unknown"))
                )?;
            }
            log.flush()?;
            let mut w = BufWriter::new(std::fs::File::create(dir.join(format!("{id}.csv")))?);
            writeln!(w, "sku,quantity")?;
            for sku in &skus {
                if let Some(q) = shown.get(sku) {
                    writeln!(w, "{},{q}", field(sku.as_str()))?;
                }
            }
            w.flush()?;
        }
        write_observed(store, dir).await?;
        Ok::<(), ViewError>(())
    }
    .await
}

/// One system's latest observations: per `(sku, location)`, a value per state column.
type Observed = std::collections::BTreeMap<(String, String), [Option<i64>; 4]>;

/// Per system that reported location-level observations (`POST /v1/observations`),
/// `observed-<system>.csv`: its latest observation of each `(sku, location)` and state, the
/// snapshot the live audit compares with the hub (DESIGN §7a: every system's latest observations,
/// no files exported). Returns the systems written.
pub async fn write_observed(store: &dyn Store, dir: &Path) -> Result<Vec<String>, ViewError> {
    const STATES: [&str; 4] = ["on_hand", "committed", "reserved", "unavailable"];
    let mut by: std::collections::BTreeMap<String, Observed> = Default::default();
    let mut filter = crate::CheckpointFilter {
        limit: 1000,
        ..Default::default()
    };
    loop {
        let page = store.checkpoints(&filter).await?;
        for r in &page {
            let Some(i) = STATES.iter().position(|s| *s == r.state) else {
                continue;
            };
            if r.location.is_empty() {
                continue;
            }
            by.entry(r.system.to_string())
                .or_default()
                .entry((r.sku.to_string(), r.location.clone()))
                .or_default()[i] = Some(r.quantity);
        }
        let full = page.len() == filter.limit;
        if let Some(r) = page.last() {
            filter.after = Some((
                r.system.to_string(),
                r.sku.to_string(),
                r.location.clone(),
                r.state.clone(),
            ));
        }
        if !full {
            break;
        }
    }
    let mut written = Vec::new();
    for (system, keys) in by {
        // Only the states the system reported become columns, so an absent one is not read as 0.
        let cols: Vec<usize> = (0..STATES.len())
            .filter(|i| keys.values().any(|v| v[*i].is_some()))
            .collect();
        let mut w = BufWriter::new(std::fs::File::create(
            dir.join(format!("observed-{system}.csv")),
        )?);
        let names: Vec<&str> = cols.iter().map(|i| STATES[*i]).collect();
        writeln!(w, "sku,location,{}", names.join(","))?;
        for ((sku, loc), v) in keys {
            let vals: Vec<String> = cols
                .iter()
                .map(|i| v[*i].map(|q| q.to_string()).unwrap_or_default())
                .collect();
            writeln!(w, "{},{},{}", field(&sku), field(&loc), vals.join(","))?;
        }
        w.flush()?;
        written.push(system);
    }
    Ok(written)
}
