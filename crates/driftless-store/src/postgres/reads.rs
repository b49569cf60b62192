//! The `Store` face of the PostgreSQL backend: `apply` hands the batch to the appliers (see
//! `writes/`); reads go straight to the tables, which hold everything once it is committed.

use super::errors::db;
use super::records;
use super::{PgStore, Request, from_nanos};
use crate::rows::stored_id;
use crate::{
    AuditRecord, BoxFuture, HistoryEntry, Incident, IncidentFilter, Incoming, LocationLevels,
    Receipt, SkuLevels, Store, StoreError, StoredAudit,
};
use chrono::{DateTime, Utc};
use driftless_core::{EventId, Levels, Location, Position, Sku, State, SystemId};
use sqlx::Row;
use sqlx::postgres::PgRow;
use std::collections::BTreeMap;
use tokio::sync::oneshot;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Every location of the given skus, from one snapshot: the levels of their cells, and zero at
/// locations where only events that changed nothing were stored (the sku was seen there).
async fn levels_of(
    store: &PgStore,
    skus: &[&str],
) -> Result<BTreeMap<String, Vec<LocationLevels>>, StoreError> {
    let mut tx = store.pool.begin().await.map_err(db)?;
    let slots = sqlx::query("SELECT sku, location FROM slots WHERE sku = ANY($1)")
        .bind(skus)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    let cells = sqlx::query("SELECT sku, location, state, value FROM cells WHERE sku = ANY($1)")
        .bind(skus)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    let mut by: BTreeMap<(String, String), Levels> = BTreeMap::new();
    for r in &slots {
        by.entry((
            r.try_get("sku").map_err(db)?,
            r.try_get("location").map_err(db)?,
        ))
        .or_default();
    }
    for r in &cells {
        let state: i16 = r.try_get("state").map_err(db)?;
        let s = usize::try_from(state)
            .ok()
            .and_then(|i| State::ALL.get(i).copied())
            .ok_or_else(|| corrupt(format!("state index {state}")))?;
        by.entry((
            r.try_get("sku").map_err(db)?,
            r.try_get("location").map_err(db)?,
        ))
        .or_default()
        .set(s, r.try_get("value").map_err(db)?);
    }
    let mut out: BTreeMap<String, Vec<LocationLevels>> = BTreeMap::new();
    for ((sku, loc), levels) in by {
        out.entry(sku).or_default().push(LocationLevels {
            location: Location::parse(loc).map_err(corrupt)?,
            levels,
        });
    }
    Ok(out)
}

impl Store for PgStore {
    fn apply(
        &self,
        received_at: DateTime<Utc>,
        batch: Vec<Incoming>,
    ) -> BoxFuture<'_, Result<Vec<Receipt>, StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.enqueue(Request {
                received_at,
                batch,
                reply,
            })?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn inventory<'a>(
        &'a self,
        sku: &'a Sku,
    ) -> BoxFuture<'a, Result<Option<Vec<LocationLevels>>, StoreError>> {
        Box::pin(async move { Ok(levels_of(self, &[sku.as_str()]).await?.remove(sku.as_str())) })
    }

    fn inventory_page<'a>(
        &'a self,
        after: Option<&'a Sku>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SkuLevels>, StoreError>> {
        Box::pin(async move {
            let skus: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT sku FROM cells WHERE sku > $1 ORDER BY sku LIMIT $2",
            )
            .bind(after.map_or("", |s| s.as_str()))
            .bind(limit.max(1) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let refs: Vec<&str> = skus.iter().map(String::as_str).collect();
            let mut levels = levels_of(self, &refs).await?;
            skus.into_iter()
                .map(|s| {
                    let locs = levels.remove(&s).unwrap_or_default();
                    Ok((Sku::parse(s).map_err(corrupt)?, locs))
                })
                .collect()
        })
    }

    fn history<'a>(
        &'a self,
        sku: &'a Sku,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<HistoryEntry>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT * FROM events WHERE sku = $1 \
                 ORDER BY at_nanos DESC, seq DESC, id DESC, lsn DESC LIMIT $2",
            )
            .bind(sku.as_str())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            rows.iter().rev().map(history_row).collect()
        })
    }

    fn event<'a>(
        &'a self,
        source: &'a SystemId,
        id: &'a EventId,
    ) -> BoxFuture<'a, Result<Option<HistoryEntry>, StoreError>> {
        Box::pin(async move {
            // The claiming row, else the newest that did not claim it.
            let row = sqlx::query(
                "SELECT * FROM events WHERE source = $1 AND id = $2 \
                 ORDER BY claims DESC, lsn DESC LIMIT 1",
            )
            .bind(source.as_str())
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
            row.as_ref().map(history_row).transpose()
        })
    }

    fn incidents<'a>(
        &'a self,
        filter: &'a IncidentFilter,
    ) -> BoxFuture<'a, Result<Vec<Incident>, StoreError>> {
        Box::pin(records::incidents(&self.pool, filter))
    }

    fn record_incident<'a>(
        &'a self,
        incident: &'a Incident,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await.map_err(db)?;
            records::insert_incidents(&mut conn, std::slice::from_ref(incident))
                .await
                .map_err(db)
        })
    }

    fn save_audit<'a>(&'a self, audit: &'a AuditRecord) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(records::save_audit(&self.pool, audit))
    }

    fn audits_since(
        &self,
        since: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(records::audits_since(&self.pool, since))
    }

    fn sku_version<'a>(&'a self, sku: &'a Sku) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT NULLIF(COUNT(*), 0) FROM events WHERE sku = $1 AND effective \
                 AND outcome IN ({})",
                crate::rows::marking_outcomes()
            );
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(sku.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(db)
        })
    }

    fn audits_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredAudit>, StoreError>> {
        Box::pin(records::audits_page(&self.pool, before, limit))
    }

    fn audit(&self, id: i64) -> BoxFuture<'_, Result<Option<StoredAudit>, StoreError>> {
        Box::pin(records::audit(&self.pool, id))
    }

    fn queue_depth(&self) -> Option<usize> {
        Some(self.queued())
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.pool.is_closed() {
                return Err(StoreError::Closed);
            }
            sqlx::query("SELECT 1")
                .execute(&self.pool)
                .await
                .map_err(db)?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.stop())
    }

    fn checkpoint_rows<'a>(
        &'a self,
        keys: &'a [(String, String, String, String)],
    ) -> BoxFuture<'a, Result<Vec<crate::CheckpointRow>, StoreError>> {
        Box::pin(super::checkpoints::rows_of(self, keys))
    }

    fn checkpoint_levels<'a>(
        &'a self,
        skus: &'a [Sku],
    ) -> BoxFuture<'a, Result<crate::LiveLevels, StoreError>> {
        Box::pin(super::checkpoints::levels(self, skus))
    }

    fn save_checkpoints<'a>(
        &'a self,
        rows: &'a [(crate::CheckpointRow, Option<crate::Incident>)],
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(super::checkpoints::save(self, rows))
    }

    fn checkpoints<'a>(
        &'a self,
        filter: &'a crate::CheckpointFilter,
    ) -> BoxFuture<'a, Result<Vec<crate::CheckpointRow>, StoreError>> {
        Box::pin(super::checkpoints::page(self, filter))
    }
}

fn history_row(r: &PgRow) -> Result<HistoryEntry, StoreError> {
    let g = |e: sqlx::Error| db(e);
    let mut quantities = Vec::new();
    for s in State::ALL {
        let v: Option<i64> = r.try_get(s.as_str()).map_err(g)?;
        if let Some(v) = v {
            quantities.push((s.as_str().to_owned(), v));
        }
    }
    let factor: i64 = r
        .try_get::<Option<i64>, _>("factor")
        .map_err(g)?
        .unwrap_or(1)
        .max(1);
    let sent = quantities
        .iter()
        .map(|(s, v)| (s.clone(), v / factor))
        .collect();
    let outcome: String = r.try_get("outcome").map_err(g)?;
    let at: i64 = r.try_get("at_nanos").map_err(g)?;
    let seq: i64 = r.try_get("seq").map_err(g)?;
    Ok(HistoryEntry {
        id: r.try_get("id").map_err(g)?,
        sku: stored_id("sku", r.try_get("sku").map_err(g)?, Sku::parse)?,
        source: stored_id("source", r.try_get("source").map_err(g)?, SystemId::parse)?,
        location: stored_id(
            "location",
            r.try_get("location").map_err(g)?,
            Location::parse,
        )?,
        occurred_at: Position {
            at_nanos: at,
            seq: seq as u64,
        }
        .occurred_at_rfc3339(),
        seq: seq as u64,
        received_at: from_nanos(r.try_get("received_nanos").map_err(g)?),
        outcome: outcome.parse().map_err(StoreError::Corrupt)?,
        kind: r.try_get("kind").map_err(g)?,
        quantities,
        sent,
        uom: r.try_get("uom").map_err(g)?,
        reason: r.try_get("reason").map_err(g)?,
        reference: r.try_get("ref").map_err(g)?,
        detail: r.try_get("detail").map_err(g)?,
        lsn: r.try_get("lsn").map_err(g)?,
        effective: r.try_get("effective").map_err(g)?,
    })
}
