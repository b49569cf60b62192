//! The hub's own view written out as the snapshot files the drift audit reads: `hub.csv` from the
//! inventory, and per channel what it was last acknowledged (or observed) showing and the
//! observations that differ. Written against the traits, so every backend's ledger can be audited
//! live; the judging is `driftless_audit::live`.

use crate::outbox::{Scan, ScanFrom};
use crate::{Store, StoreError};
use chrono::{DateTime, Utc};
use driftless_core::ChannelSpec;
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
        let mut skus: Vec<String> = Vec::new();
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
                skus.push(sku.to_string());
            }
            after = Some(last);
        }
        w.flush()?;
        for ch in channels {
            let id = ch.id.as_str();
            let mut shown: HashMap<String, i64> = HashMap::new();
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
                    field(&d.sku),
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
                    writeln!(w, "{},{q}", field(sku))?;
                }
            }
            w.flush()?;
        }
        Ok::<(), ViewError>(())
    }
    .await
}
