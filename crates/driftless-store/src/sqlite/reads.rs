//! The `Store` face of the SQLite backend: reads lay what the writer holds in memory (the overlay
//! of cells, the index tail) over the tables; writes hand the batch to the writer task.

use super::sql::*;
use super::*;
use crate::rows::{stored_id, stored_opt_id};
use crate::{
    AuditRecord, BoxFuture, HistoryEntry, Incident, IncidentFilter, Incoming, LocationLevels,
    Receipt, SkuLevels, Store, StoreError, StoredAudit,
};
use chrono::{DateTime, Utc};
use driftless_core::{EventId, Levels, Location, OrderKey, Position, Sku, State, SystemId};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub(super) fn levels_of(rows: &[SqliteRow]) -> Result<Vec<(String, String, Levels)>, StoreError> {
    let mut out: Vec<(String, String, Levels)> = Vec::new();
    for row in rows {
        let sku: String = row.try_get("sku")?;
        let loc: String = row.try_get("location")?;
        let state: i64 = row.try_get("state")?;
        let value: i64 = row.try_get("value")?;
        let st = usize::try_from(state)
            .ok()
            .and_then(|i| State::ALL.get(i).copied())
            .ok_or_else(|| StoreError::Corrupt(format!("state index {state}")))?;
        match out.last_mut() {
            Some((s, l, lv)) if *s == sku && *l == loc => lv.set(st, value),
            _ => {
                let mut lv = Levels::default();
                lv.set(st, value);
                out.push((sku, loc, lv));
            }
        }
    }
    Ok(out)
}

/// Overlays unwritten levels on stored ones: the overlay is newer wherever it has a location.
pub(super) fn merge_levels(out: &mut Vec<LocationLevels>, fresh: &[(Location, Levels)]) {
    for (loc, lv) in fresh {
        match out.iter_mut().find(|x| &x.location == loc) {
            Some(x) => x.levels = *lv,
            None => out.push(LocationLevels {
                location: loc.clone(),
                levels: *lv,
            }),
        }
    }
    out.sort_by(|a, b| a.location.cmp(&b.location));
}

impl SqliteStore {
    /// The overlay's levels of these skus (read before the table; see `cells::Overlay`).
    pub(crate) fn overlay_of(&self, skus: &[Sku]) -> HashMap<Sku, Vec<(Location, Levels)>> {
        let ov = self.overlay.read().unwrap_or_else(|p| p.into_inner());
        skus.iter()
            .filter_map(|s| ov.get(s).map(|v| (s.clone(), v.clone())))
            .collect()
    }
}

pub(super) fn to_location_levels(
    loc: String,
    levels: Levels,
) -> Result<LocationLevels, StoreError> {
    Ok(LocationLevels {
        location: Location::parse(loc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        levels,
    })
}

impl Store for SqliteStore {
    fn apply(
        &self,
        received_at: DateTime<Utc>,
        batch: Vec<Incoming>,
    ) -> BoxFuture<'_, Result<Vec<Receipt>, StoreError>> {
        Box::pin(async move {
            if self.reader {
                return Err(StoreError::ReadOnly);
            }
            let (reply, rx) = oneshot::channel();
            self.jobs
                .try_send(Job::Apply(Request {
                    received_at,
                    batch,
                    reply,
                }))
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                    mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
                })?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn inventory<'a>(
        &'a self,
        sku: &'a Sku,
    ) -> BoxFuture<'a, Result<Option<Vec<LocationLevels>>, StoreError>> {
        Box::pin(async move {
            // The overlay first, then the table (see `cells::Overlay`).
            let fresh = self.overlay_of(std::slice::from_ref(sku));
            let rows = sqlx::query(
                "SELECT sku, location, state, value FROM cells WHERE sku = ? ORDER BY location, state",
            )
            .bind(sku.to_string())
            .fetch_all(&self.read)
            .await?;
            let mut out: Vec<LocationLevels> = levels_of(&rows)?
                .into_iter()
                .map(|(_, l, lv)| to_location_levels(l, lv))
                .collect::<Result<_, _>>()?;
            if let Some(locs) = fresh.get(sku) {
                merge_levels(&mut out, locs);
            }
            // Locations known only from events that changed nothing (an override held back, a
            // stale count) still show, at zero: the sku has been seen there.
            // The index's tail before its table (see `keys.rs`).
            let mut seen: Vec<String> = self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .of_sku(sku)
                .map(|(l, _)| l.to_string())
                .collect();
            seen.extend(
                sqlx::query_scalar::<_, String>(
                    "SELECT DISTINCT location FROM event_keys WHERE sku = ?",
                )
                .bind(sku.to_string())
                .fetch_all(&self.read)
                .await?,
            );
            seen.sort();
            seen.dedup();
            if out.is_empty() && seen.is_empty() {
                return Ok(None);
            }
            for l in seen {
                if !out.iter().any(|x| x.location.as_str() == l) {
                    out.push(to_location_levels(l, Levels::default())?);
                }
            }
            out.sort_by(|a, b| a.location.cmp(&b.location));
            Ok(Some(out))
        })
    }

    fn inventory_page<'a>(
        &'a self,
        after: Option<&'a Sku>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SkuLevels>, StoreError>> {
        Box::pin(async move {
            let limit = limit.max(1);
            // The overlay's first skus after `after`, then the table's: the page is the first
            // `limit` of both.
            let fresh: BTreeMap<Sku, Vec<(Location, Levels)>> = {
                let ov = self.overlay.read().unwrap_or_else(|p| p.into_inner());
                ov.after(after)
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let mut tx = self.read.begin().await?;
            let stored: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT sku FROM cells WHERE sku > ? ORDER BY sku LIMIT (SELECT ?)",
            )
            .bind(after.map_or_else(String::new, |s| s.to_string()))
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?;
            let mut skus: Vec<String> = stored;
            skus.extend(fresh.keys().map(|k| k.to_string()));
            skus.sort_unstable();
            skus.dedup();
            skus.truncate(limit);
            let list =
                serde_json::to_string(&skus).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let rows = sqlx::query(
                "SELECT c.sku, c.location, c.state, c.value FROM json_each(?) AS j \
                 CROSS JOIN cells AS c ON c.sku = j.value ORDER BY c.sku, c.location, c.state",
            )
            .bind(list)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let mut by_sku: HashMap<String, Vec<LocationLevels>> = HashMap::new();
            for (sku, loc, lv) in levels_of(&rows)? {
                by_sku
                    .entry(sku)
                    .or_default()
                    .push(to_location_levels(loc, lv)?);
            }
            let mut out: Vec<SkuLevels> = Vec::with_capacity(skus.len());
            for s in skus {
                let mut locs = by_sku.remove(&s).unwrap_or_default();
                let sku = Sku::parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if let Some(f) = fresh.get(&sku) {
                    merge_levels(&mut locs, f);
                }
                out.push((sku, locs));
            }
            Ok(out)
        })
    }

    fn history<'a>(
        &'a self,
        sku: &'a Sku,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<HistoryEntry>, StoreError>> {
        Box::pin(async move {
            // The newest `limit` of the index's tail, read before its table (see `keys.rs`).
            let mut held: Vec<(OrderKey, i64)> = self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .of_sku(sku)
                .flat_map(|(_, v)| v.iter().map(|e| (e.key.clone(), e.lsn)))
                .collect();
            held.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            held.truncate(limit);
            let mut rows = sqlx::query(
                "SELECT e.* FROM event_keys x JOIN events e ON e.lsn = x.lsn WHERE x.sku = ? \
                 ORDER BY x.at_nanos DESC, x.seq DESC, x.id DESC LIMIT (SELECT ?)",
            )
            .bind(sku.to_string())
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
            if !held.is_empty() {
                let lsns = serde_json::to_string(&held.iter().map(|(_, l)| *l).collect::<Vec<_>>())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                rows.extend(
                    sqlx::query(
                        "SELECT e.* FROM json_each(?) AS j CROSS JOIN events AS e ON e.lsn = j.value",
                    )
                    .bind(lsns)
                    .fetch_all(&self.read)
                    .await?,
                );
            }
            let mut keyed = rows
                .iter()
                .map(|r| {
                    Ok((
                        order_key_of(r)?,
                        r.try_get::<i64, _>("lsn")?,
                        history_row(r)?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            // An entry written while this read ran is in both halves.
            keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            keyed.dedup_by_key(|(_, lsn, _)| *lsn);
            keyed.truncate(limit);
            Ok(keyed.into_iter().rev().map(|(_, _, h)| h).collect())
        })
    }

    fn event<'a>(
        &'a self,
        source: &'a SystemId,
        id: &'a EventId,
    ) -> BoxFuture<'a, Result<Option<HistoryEntry>, StoreError>> {
        Box::pin(async move {
            // The claiming row through the unique index, else the unclaimed ones through theirs.
            for sql in [
                "SELECT * FROM events WHERE source = ? AND id = ? AND claims = 1",
                "SELECT * FROM events WHERE source = ? AND id = ? AND claims = 0 \
                 ORDER BY lsn DESC LIMIT 1",
            ] {
                let row = sqlx::query(sql)
                    .bind(source.as_str())
                    .bind(id.as_str())
                    .fetch_optional(&self.read)
                    .await?;
                if let Some(r) = row {
                    return Ok(Some(history_row(&r)?));
                }
            }
            Ok(None)
        })
    }

    fn incidents<'a>(
        &'a self,
        f: &'a IncidentFilter,
    ) -> BoxFuture<'a, Result<Vec<Incident>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT * FROM incidents WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR sku = ?2) \
                 AND (?3 IS NULL OR system = ?3) ORDER BY id DESC LIMIT (SELECT ?4)",
            )
            .bind(f.kind.clone())
            .bind(f.sku.clone())
            .bind(f.system.clone())
            .bind(f.limit.max(1) as i64)
            .fetch_all(&self.read)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Incident {
                        kind: r.try_get("kind")?,
                        sku: stored_opt_id("sku", r.try_get("sku")?, Sku::parse)?,
                        location: stored_opt_id(
                            "location",
                            r.try_get("location")?,
                            Location::parse,
                        )?,
                        system: r.try_get("system")?,
                        actor: r.try_get("actor")?,
                        event_id: r.try_get("event_id")?,
                        detail: r.try_get("detail")?,
                        at: from_nanos(r.try_get("at_nanos")?),
                    })
                })
                .collect()
        })
    }

    fn record_incident<'a>(
        &'a self,
        incident: &'a Incident,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // Outside the event path: a short write on the side connection, taken in turn with
            // the ledger writer (the gate), so neither waits on SQLite's busy polling.
            let _turn = self.gate.clone().lock_owned().await;
            let mut conn = self.side().await?.acquire().await?;
            insert_incidents(&mut conn, std::slice::from_ref(incident)).await
        })
    }

    fn save_audit<'a>(&'a self, a: &'a AuditRecord) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(async move {
            let handoffs = serde_json::to_string(&a.handoffs)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let _turn = self.gate.clone().lock_owned().await;
            // Not `side()`: a reader may append an audit, and nothing else.
            let mut conn = self.side_pool().await?.acquire().await?;
            let r = sqlx::query(
                "INSERT INTO audits (at_nanos, skus_compared, drifting, handoffs, report) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(nanos(a.at))
            .bind(a.skus_compared)
            .bind(a.drifting)
            .bind(handoffs)
            .bind(a.report_json.clone())
            .execute(&mut *conn)
            .await;
            Ok(r?.last_insert_rowid())
        })
    }

    fn audits_since(
        &self,
        since: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move {
            let rows =
                sqlx::query("SELECT * FROM audits WHERE at_nanos >= ? ORDER BY at_nanos, id")
                    .bind(nanos(since))
                    .fetch_all(&self.read)
                    .await?;
            rows.iter().map(audit_row).collect()
        })
    }

    fn sku_version<'a>(&'a self, sku: &'a Sku) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            // The index's tail before its table (see `keys.rs`).
            let tail: Vec<i64> = self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .of_sku(sku)
                .flat_map(|(_, v)| v.iter().map(|e| e.lsn))
                .collect();
            let tail =
                serde_json::to_string(&tail).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let sql = format!(
                "SELECT NULLIF(COUNT(*), 0) FROM events WHERE lsn IN \
                 (SELECT lsn FROM event_keys WHERE sku = ? UNION SELECT value FROM json_each(?)) \
                 AND effective = 1 AND outcome IN ({})",
                crate::rows::marking_outcomes()
            );
            let v: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(sku.to_string())
                .bind(tail)
                .fetch_one(&self.read)
                .await?;
            Ok(v)
        })
    }

    fn audits_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredAudit>, StoreError>> {
        Box::pin(async move {
            let rows =
                sqlx::query("SELECT * FROM audits WHERE id < ? ORDER BY id DESC LIMIT (SELECT ?)")
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(limit.min(i64::MAX as usize) as i64)
                    .fetch_all(&self.read)
                    .await?;
            rows.iter()
                .map(|r| {
                    Ok(StoredAudit {
                        id: r.try_get("id")?,
                        record: audit_row(r)?,
                    })
                })
                .collect()
        })
    }

    fn audit(&self, id: i64) -> BoxFuture<'_, Result<Option<StoredAudit>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM audits WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
            row.map(|r| {
                Ok(StoredAudit {
                    id,
                    record: audit_row(&r)?,
                })
            })
            .transpose()
        })
    }

    fn queue_depth(&self) -> Option<usize> {
        Some(self.jobs.max_capacity() - self.jobs.capacity())
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.jobs.is_closed() && !self.reader {
                return Err(StoreError::Closed);
            }
            sqlx::query("SELECT 1").execute(&self.read).await?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Write the waiting cells, so the next start has nothing to replay.
            let (reply, done) = oneshot::channel();
            if self.jobs.send(Job::Flush(reply)).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(30), done).await;
            }
            let handle = self.checkpointer.lock().ok().and_then(|mut h| h.take());
            if let Some(h) = handle {
                h.abort();
                let _ = h.await;
            }
            let handle = self.writer.lock().ok().and_then(|mut h| h.take());
            if let Some(h) = handle {
                // The writer stops once every sender is gone; ours is the last one only if the
                // server has dropped its clones, so bound the wait.
                h.abort();
                let _ = h.await;
            }
            self.read.close().await;
        })
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
    ) -> BoxFuture<'a, Result<HashMap<Sku, Vec<(Location, Levels)>>, StoreError>> {
        Box::pin(super::checkpoints::levels(self, skus))
    }

    fn save_checkpoints<'a>(
        &'a self,
        rows: &'a [(crate::CheckpointRow, Option<Incident>)],
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

fn audit_row(r: &SqliteRow) -> Result<AuditRecord, StoreError> {
    let h: String = r.try_get("handoffs")?;
    Ok(AuditRecord {
        at: from_nanos(r.try_get("at_nanos")?),
        skus_compared: r.try_get("skus_compared")?,
        drifting: r.try_get("drifting")?,
        handoffs: serde_json::from_str(&h)
            .map_err(|e| StoreError::Corrupt(format!("audit handoffs: {e}")))?,
        report_json: r.try_get("report")?,
    })
}

pub(super) fn history_row(r: &SqliteRow) -> Result<HistoryEntry, StoreError> {
    let mut quantities = Vec::new();
    for s in State::ALL {
        let v: Option<i64> = r.try_get(s.as_str())?;
        if let Some(v) = v {
            quantities.push((s.as_str().to_owned(), v));
        }
    }
    let factor: i64 = r.try_get::<Option<i64>, _>("factor")?.unwrap_or(1).max(1);
    let sent = quantities
        .iter()
        .map(|(s, v)| (s.clone(), v / factor))
        .collect();
    let outcome: String = r.try_get("outcome")?;
    let at: i64 = r.try_get("at_nanos")?;
    let seq: i64 = r.try_get("seq")?;
    Ok(HistoryEntry {
        id: r.try_get("id")?,
        sku: stored_id("sku", r.try_get("sku")?, Sku::parse)?,
        source: stored_id("source", r.try_get("source")?, SystemId::parse)?,
        location: stored_id("location", r.try_get("location")?, Location::parse)?,
        occurred_at: Position {
            at_nanos: at,
            seq: seq as u64,
        }
        .occurred_at_rfc3339(),
        seq: seq as u64,
        received_at: from_nanos(r.try_get("received_nanos")?),
        outcome: outcome.parse().map_err(StoreError::Corrupt)?,
        kind: r.try_get("kind")?,
        quantities,
        sent,
        uom: r.try_get("uom")?,
        reason: r.try_get("reason")?,
        reference: r.try_get("ref")?,
        detail: r.try_get("detail")?,
        lsn: r.try_get("lsn")?,
        effective: r.try_get::<i64, _>("effective")? != 0,
    })
}
