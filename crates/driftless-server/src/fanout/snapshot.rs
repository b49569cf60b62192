//! File channels: instead of pushing, write a snapshot of every sku's channel quantity on the
//! channel's schedule and mark the outbox rows it covers as delivered.

use chrono::Utc;
use driftless_core::{ChannelSpec, Sku};
use driftless_store::Store;
use driftless_store::outbox::{AckedPush, PushRecord, PushSample, Scan, ScanFrom};
use std::sync::Arc;
use tokio::sync::watch;

/// The file connector: on its schedule, write every sku's channel quantity and mark the outbox rows
/// read before the snapshot clean (a change after that read stays dirty for the next one).
pub(super) async fn snapshot_loop(
    spec: ChannelSpec,
    store: Arc<dyn Store>,
    sink: driftless_connectors::file::FileSink,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = snapshot_once(&spec, store.as_ref(), &sink).await {
            tracing::warn!(channel = spec.id.as_str(), error = %e, "writing the snapshot failed");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(sink.every) => {}
        }
    }
}

pub async fn snapshot_once(
    spec: &ChannelSpec,
    store: &dyn Store,
    sink: &driftless_connectors::file::FileSink,
) -> Result<usize, SnapshotError> {
    let channel = spec.id.as_str().to_owned();
    // 1. What is dirty now (bounded pages).
    let mut dirty = Vec::new();
    let mut cursor = (i64::MIN, None);
    loop {
        let page = store
            .outbox_scan(&Scan {
                channel: channel.clone(),
                locations: spec.locations.clone(),
                from: ScanFrom::After(cursor.0, cursor.1.clone()),
                limit: driftless_store::outbox::MAX_SCAN,
            })
            .await?;
        let Some(last) = page.last() else { break };
        cursor = (last.changed_nanos, Some(last.sku.clone()));
        let n = page.len();
        dirty.extend(page);
        if n < driftless_store::outbox::MAX_SCAN {
            break;
        }
    }
    // 2. Every sku's quantity, after that read.
    let mut rows = Vec::new();
    let mut after: Option<Sku> = None;
    loop {
        let page = store.inventory_page(after.as_ref(), 1000).await?;
        let n = page.len();
        for (sku, locs) in page {
            let atp: i64 = locs
                .iter()
                .filter(|l| spec.feeds_from(&l.location))
                .map(|l| l.levels.available())
                .fold(0, i64::saturating_add);
            rows.push((sku.to_string(), spec.quantity(&sku, atp)));
            after = Some(sku);
        }
        if n < 1000 {
            break;
        }
    }
    let bytes = driftless_connectors::file::transform::csv(&rows);
    let path = sink.clone();
    tokio::task::spawn_blocking(move || path.write(&bytes))
        .await
        .map_err(|e| SnapshotError::Write(e.to_string()))?
        .map_err(|e| SnapshotError::Write(format!("{}: {e}", sink.path.display())))?;
    // 3. Those rows are now delivered.
    let at = Utc::now();
    let acked: Vec<PushRecord> = dirty
        .into_iter()
        .map(|r| {
            let q = spec.quantity(&r.sku, r.atp);
            PushRecord::Acked(AckedPush {
                sample: PushSample {
                    channel: channel.clone(),
                    source: r.source.clone(),
                    occurred_nanos: r.occurred_nanos,
                    received_nanos: r.received_nanos,
                    changed_nanos: r.changed_nanos,
                    acked_nanos: at.timestamp_nanos_opt().unwrap_or(i64::MAX),
                },
                sku: r.sku,
                version: r.version,
                quantity: q,
                at,
            })
        })
        .collect();
    for chunk in acked.chunks(2000) {
        store.outbox_record(&channel, chunk).await?;
    }
    Ok(rows.len())
}

/// Why a snapshot was not written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] driftless_store::StoreError),
    #[error("{0}")]
    Write(String),
}
