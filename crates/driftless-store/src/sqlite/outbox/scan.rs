//! The dispatcher's read of dirty rows (`Outbox::outbox_scan`): the outbox rows held in memory
//! (`marks.rs`) laid over their table copies, each with its `channel_skus` state.

use super::super::SqliteStore;
use super::super::marks::Mark;
use crate::StoreError;
use crate::outbox::*;
use crate::rows::{stored_id, stored_opt_id};
use driftless_core::{Sku, SystemId};
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row, Sqlite};
use std::collections::HashMap;

/// A scan: rows held in memory are newer than their table copies. Read the memory first and the
/// table second; a slice written in between (the generation moves) means start again, because the
/// table may then hold rows the first read did not see as written.
pub(super) async fn scan(store: &SqliteStore, scan: &Scan) -> Result<Vec<OutboxRow>, StoreError> {
    let limit = scan.limit.clamp(1, MAX_SCAN);
    for _ in 0..16 {
        if let Some(rows) = store.scan_once(scan, limit).await? {
            return Ok(rows);
        }
    }
    Err(StoreError::Overloaded)
}

impl SqliteStore {
    /// One attempt at a scan; `None` when a slice of rows was written meanwhile.
    async fn scan_once(
        &self,
        scan: &Scan,
        limit: usize,
    ) -> Result<Option<Vec<OutboxRow>>, StoreError> {
        let channel = scan.channel.as_str();
        let (generation, held): (u64, Vec<(Sku, Mark)>) = {
            let m = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            let held = match &scan.from {
                ScanFrom::After(at, sku) => {
                    m.dirty_after(channel, (*at, sku.as_ref().map_or("", Sku::as_str)), limit)
                }
                ScanFrom::Skus(skus) => skus
                    .iter()
                    .take(limit)
                    .filter_map(|s| m.get(channel, s).cloned().map(|x| (s.clone(), x)))
                    .collect(),
            };
            (m.generation(), held)
        };
        let mut tx = self.read.begin().await?;
        let mut stored: Vec<OutboxRow> = Vec::new();
        // Where the table's part of the answer stops being complete.
        let mut horizon: Option<(i64, Sku)> = None;
        match &scan.from {
            ScanFrom::After(at, sku) => {
                let sql = format!(
                    "SELECT {ROW_COLUMNS} FROM outbox o LEFT JOIN channel_skus s \
                     ON s.channel = o.channel AND s.sku = o.sku \
                     WHERE o.channel = ? AND o.dirty = 1 AND (o.changed_nanos, o.sku) > (?, ?) \
                     ORDER BY o.changed_nanos, o.sku LIMIT (SELECT ?)"
                );
                let mut from = (*at, sku.clone());
                loop {
                    let page = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                        .bind(channel)
                        .bind(from.0)
                        .bind(from.1.as_ref().map_or("", Sku::as_str))
                        .bind(limit as i64)
                        .fetch_all(&mut *tx)
                        .await?;
                    let full = page.len() == limit;
                    for r in &page {
                        stored.push(row_of(r)?);
                    }
                    if let Some(last) = stored.last() {
                        from = (last.changed_nanos, Some(last.sku.clone()));
                    }
                    horizon = if full {
                        from.1.clone().map(|s| (from.0, s))
                    } else {
                        None
                    };
                    // Rows held in memory replace their table copies; keep reading while the
                    // table's part comes out empty but is not exhausted.
                    self.drop_held(channel, &mut stored);
                    if !full || !stored.is_empty() {
                        break;
                    }
                }
            }
            ScanFrom::Skus(skus) => {
                for chunk in skus.chunks(500).take(limit.div_ceil(500)) {
                    let mut q = QueryBuilder::<Sqlite>::new(format!(
                        "SELECT {ROW_COLUMNS} FROM outbox o LEFT JOIN channel_skus s \
                         ON s.channel = o.channel AND s.sku = o.sku WHERE o.channel = "
                    ));
                    q.push_bind(channel).push(" AND o.sku IN (");
                    let mut sep = q.separated(", ");
                    for s in chunk {
                        sep.push_bind(s.as_str());
                    }
                    q.push(")");
                    for r in q.build().fetch_all(&mut *tx).await? {
                        stored.push(row_of(&r)?);
                    }
                }
                self.drop_held(channel, &mut stored);
            }
        }
        let skus: Vec<&Sku> = held.iter().map(|(s, _)| s).collect();
        let states = states_of(&mut tx, channel, &skus).await?;
        tx.commit().await?;
        if self.marks.lock().map(|m| m.generation()).unwrap_or(0) != generation {
            return Ok(None);
        }
        let mut rows = stored;
        for (sku, m) in &held {
            rows.push(row_of_mark(sku, m, states.get(sku.as_str()))?);
        }
        if let ScanFrom::After(..) = &scan.from {
            rows.sort_by(|a, b| (a.changed_nanos, &a.sku).cmp(&(b.changed_nanos, &b.sku)));
            // Each part is complete only up to its own last row when it was cut at `limit`.
            let held_horizon = (held.len() == limit)
                .then(|| held.last().map(|(s, m)| (m.changed_nanos, s.clone())))
                .flatten();
            let cut = match (horizon, held_horizon) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some((t, s)) = cut {
                rows.retain(|r| (r.changed_nanos, &r.sku) <= (t, &s));
            }
            rows.truncate(limit);
        }
        Ok(Some(rows))
    }

    /// Drops table rows whose outbox state is held in memory (the memory is newer).
    fn drop_held(&self, channel: &str, rows: &mut Vec<OutboxRow>) {
        let m = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        rows.retain(|r| {
            Sku::parse(r.sku.clone())
                .map(|s| m.get(channel, &s).is_none())
                .unwrap_or(true)
        });
    }
}

const ROW_COLUMNS: &str = "o.sku, o.version, o.dirty, o.changed_nanos, o.atp, o.source, \
    o.occurred_nanos, o.received_nanos, s.acked_quantity, \
    s.acked_version, s.basis, s.pinned_version, s.pinned_quantity, COALESCE(s.attempts, 0) AS attempts, \
    COALESCE(s.next_attempt_nanos, 0) AS next_attempt_nanos, COALESCE(s.held, 0) AS held, \
    s.dead_version";

/// The columns of `channel_skus` a row needs, for rows whose outbox state is held in memory.
const STATE_COLUMNS: &str = "s.sku, s.acked_quantity, s.acked_version, s.basis, s.pinned_version, \
    s.pinned_quantity, COALESCE(s.attempts, 0) AS attempts, \
    COALESCE(s.next_attempt_nanos, 0) AS next_attempt_nanos, COALESCE(s.held, 0) AS held, \
    s.dead_version";

/// A row whose outbox state is held in memory (see `marks.rs`), with its `channel_skus` state.
fn row_of_mark(
    sku: &Sku,
    m: &Mark,
    state: Option<&sqlx::sqlite::SqliteRow>,
) -> Result<OutboxRow, StoreError> {
    let mut row = OutboxRow {
        sku: sku.clone(),
        version: m.version,
        dirty: m.dirty,
        changed_nanos: m.changed_nanos,
        atp: m.atp,
        acked_quantity: None,
        acked_version: None,
        basis: None,
        pinned: None,
        attempts: 0,
        next_attempt_nanos: 0,
        held: false,
        dead_version: None,
        source: stored_opt_id("source", m.source.clone(), SystemId::parse)?,
        occurred_nanos: m.occurred_nanos,
        received_nanos: m.received_nanos,
    };
    if let Some(r) = state {
        let attempts: i64 = r.try_get("attempts")?;
        row.acked_quantity = r.try_get("acked_quantity")?;
        row.acked_version = r.try_get("acked_version")?;
        row.basis = r.try_get("basis")?;
        row.pinned = r
            .try_get::<Option<i64>, _>("pinned_version")?
            .zip(r.try_get::<Option<i64>, _>("pinned_quantity")?);
        row.attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        row.next_attempt_nanos = r.try_get("next_attempt_nanos")?;
        row.held = r.try_get::<i64, _>("held")? != 0;
        row.dead_version = r.try_get("dead_version")?;
    }
    Ok(row)
}

/// `channel_skus` rows of these skus, by sku.
async fn states_of(
    conn: &mut SqliteConnection,
    channel: &str,
    skus: &[&Sku],
) -> Result<HashMap<String, sqlx::sqlite::SqliteRow>, StoreError> {
    let mut out = HashMap::new();
    for chunk in skus.chunks(500) {
        let list = serde_json::to_string(&chunk.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sql = format!(
            "SELECT {STATE_COLUMNS} FROM json_each(?) AS j CROSS JOIN channel_skus AS s \
             ON s.channel = ? AND s.sku = j.value"
        );
        for r in sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(list)
            .bind(channel)
            .fetch_all(&mut *conn)
            .await?
        {
            out.insert(r.try_get::<String, _>("sku")?, r);
        }
    }
    Ok(out)
}

fn row_of(r: &sqlx::sqlite::SqliteRow) -> Result<OutboxRow, StoreError> {
    let attempts: i64 = r.try_get("attempts")?;
    Ok(OutboxRow {
        sku: stored_id("sku", r.try_get("sku")?, Sku::parse)?,
        version: r.try_get("version")?,
        dirty: r.try_get::<i64, _>("dirty")? != 0,
        changed_nanos: r.try_get("changed_nanos")?,
        atp: r.try_get("atp")?,
        acked_quantity: r.try_get("acked_quantity")?,
        acked_version: r.try_get("acked_version")?,
        basis: r.try_get("basis")?,
        pinned: r
            .try_get::<Option<i64>, _>("pinned_version")?
            .zip(r.try_get::<Option<i64>, _>("pinned_quantity")?),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_nanos: r.try_get("next_attempt_nanos")?,
        held: r.try_get::<i64, _>("held")? != 0,
        dead_version: r.try_get("dead_version")?,
        source: stored_opt_id("source", r.try_get("source")?, SystemId::parse)?,
        occurred_nanos: r.try_get("occurred_nanos")?,
        received_nanos: r.try_get("received_nanos")?,
    })
}
