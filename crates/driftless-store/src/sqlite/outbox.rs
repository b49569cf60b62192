//! The SQLite side of fan-out ([`crate::Outbox`]): dirty rows read with the outbox rows held in
//! memory (`marks.rs`) laid over their table copies, push records, backoff, dead letters, holds,
//! observations and the push log.
//!
//! Every write here runs in a `BEGIN IMMEDIATE` transaction on a connection of its own, so it queues
//! behind the ledger writer (which also begins immediately) instead of invalidating its snapshot.

use super::marks::Mark;
use super::sql::insert_incidents;
use super::{SqliteStore, from_nanos, nanos};
use crate::outbox::*;
use crate::rows::{stored_id, stored_opt_id};
use crate::{BoxFuture, StoreError};
use chrono::{DateTime, Utc};
use driftless_core::{Sku, SystemId};
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{QueryBuilder, Row, Sqlite};
use std::collections::HashMap;

/// Push log rows kept per channel for the matrix and "last push".
const PUSH_LOG_KEEP: i64 = 100_000;

impl SqliteStore {
    /// The connection for this module's writes (and outside incidents), opened on first use;
    /// none for a reader.
    pub(crate) async fn side(&self) -> Result<&SqlitePool, StoreError> {
        if self.reader {
            return Err(StoreError::ReadOnly);
        }
        self.side_pool().await
    }

    /// The side connection, for a reader too (see `save_audit`).
    pub(crate) async fn side_pool(&self) -> Result<&SqlitePool, StoreError> {
        self.side
            .get_or_try_init(|| async {
                // NORMAL, not FULL: a push record lost to a power cut only makes the dispatcher
                // repeat that push with the same idempotency key, which the channel recognises.
                let opts = (*self.read.connect_options())
                    .clone()
                    .read_only(false)
                    .pragma("query_only", "0")
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts)
                    .await
            })
            .await
            .map_err(StoreError::from)
    }
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

/// A write transaction taken in turn with the ledger writer (see `SqliteStore::gate`).
struct WriteTx {
    tx: sqlx::Transaction<'static, Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl WriteTx {
    /// Commits and hands back the turn, so what follows the commit in memory (the marks) still
    /// happens before the ledger writer's next transaction.
    async fn commit_holding(self) -> Result<tokio::sync::OwnedMutexGuard<()>, StoreError> {
        self.tx.commit().await?;
        Ok(self._turn)
    }

    async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

async fn immediate(store: &SqliteStore) -> Result<WriteTx, StoreError> {
    let pool = store.side().await?;
    let turn = store.gate.clone().lock_owned().await;
    Ok(WriteTx {
        tx: pool.begin_with("BEGIN IMMEDIATE").await?,
        _turn: turn,
    })
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

/// The sweep's read of divergences past the SLA, through `channel_skus_diverged`.
const DIVERGENCES: &str = "SELECT sku, observed_quantity, acked_quantity, diverged_nanos, \
    observed_actor FROM channel_skus WHERE channel = ? AND diverged_nanos IS NOT NULL \
    AND diverged_nanos <= ? AND held = 0 AND observed_quantity IS NOT NULL \
    ORDER BY diverged_nanos LIMIT (SELECT ?)";

impl Outbox for SqliteStore {
    fn outbox_changes(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.changes.subscribe()
    }

    fn outbox_scan<'a>(
        &'a self,
        scan: &'a Scan,
    ) -> BoxFuture<'a, Result<Vec<OutboxRow>, StoreError>> {
        Box::pin(async move {
            let limit = scan.limit.clamp(1, MAX_SCAN);
            // Rows held in memory are newer than their table copies. Read the memory first and
            // the table second; a slice written in between (the generation moves) means start
            // again, because the table may then hold rows the first read did not see as written.
            for _ in 0..16 {
                if let Some(rows) = self.scan_once(scan, limit).await? {
                    return Ok(rows);
                }
            }
            Err(StoreError::Overloaded)
        })
    }

    fn outbox_record<'a>(
        &'a self,
        channel: &'a str,
        records: &'a [PushRecord],
    ) -> BoxFuture<'a, Result<Vec<Sku>, StoreError>> {
        Box::pin(async move {
            let mut again = Vec::new();
            if records.is_empty() {
                return Ok(again);
            }
            // What the rows held in memory (see `marks.rs`) must learn once this commits.
            let mut acks: Vec<(&Sku, i64)> = Vec::new();
            let mut redirty: Vec<&Sku> = Vec::new();
            let mut tx = immediate(self).await?;
            let now = nanos(Utc::now());
            // Runs of acknowledgements (the hot path) are written with multi-row statements;
            // order with the other records is kept.
            let mut acked: Vec<&PushRecord> = Vec::new();
            for r in records {
                if !matches!(r, PushRecord::Acked { .. }) && !acked.is_empty() {
                    again.extend(write_acked(&mut tx, channel, &acked).await?);
                    acked.clear();
                }
                match r {
                    PushRecord::Acked { sku, version, .. } => {
                        acks.push((sku, *version));
                        acked.push(r);
                        continue;
                    }
                    PushRecord::Failed {
                        sku,
                        version,
                        pinned,
                        attempts,
                        next_attempt,
                        error,
                        dead,
                    } => {
                        sqlx::query(
                            "INSERT INTO channel_skus (channel, sku, attempts, next_attempt_nanos, \
                             last_error, last_error_nanos, dead_version, pinned_version, pinned_quantity) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                             ON CONFLICT (channel, sku) DO UPDATE SET attempts = ?3, \
                             next_attempt_nanos = ?4, last_error = ?5, last_error_nanos = ?6, \
                             dead_version = ?7, pinned_version = ?8, pinned_quantity = ?9",
                        )
                        .bind(channel)
                        .bind(sku.as_str())
                        .bind(i64::from(*attempts))
                        .bind(nanos(*next_attempt))
                        .bind(error)
                        .bind(now)
                        .bind(dead.as_ref().map(|_| *version))
                        .bind(pinned.map(|p| p.0))
                        .bind(pinned.map(|p| p.1))
                        .execute(&mut *tx)
                        .await?;
                        if let Some(i) = dead {
                            insert_incidents(&mut tx, std::slice::from_ref(i)).await?;
                        }
                    }
                    PushRecord::Rebased {
                        sku,
                        basis,
                        hold,
                        incident,
                    } => {
                        sqlx::query(
                            "INSERT INTO channel_skus (channel, sku, basis, held, attempts, \
                             next_attempt_nanos, diverged_nanos) VALUES (?1, ?2, ?3, ?4, 0, 0, NULL) \
                             ON CONFLICT (channel, sku) DO UPDATE SET basis = ?3, held = ?4, \
                             attempts = 0, next_attempt_nanos = 0, diverged_nanos = NULL, \
                             pinned_version = NULL, pinned_quantity = NULL",
                        )
                        .bind(channel)
                        .bind(sku.as_str())
                        .bind(basis)
                        .bind(i64::from(*hold))
                        .execute(&mut *tx)
                        .await?;
                        if !*hold {
                            mark_dirty(&mut tx, channel, Some(sku.as_str()), now).await?;
                            redirty.push(sku);
                        }
                        insert_incidents(&mut tx, std::slice::from_ref(incident)).await?;
                    }
                    PushRecord::Refused {
                        sku,
                        version,
                        basis,
                        attempts,
                        next_attempt,
                        error,
                        dead,
                    } => {
                        // Nothing is in doubt: the channel answered and applied nothing.
                        sqlx::query(
                            "INSERT INTO channel_skus (channel, sku, basis, attempts, \
                             next_attempt_nanos, last_error, last_error_nanos, dead_version) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                             ON CONFLICT (channel, sku) DO UPDATE SET basis = ?3, attempts = ?4, \
                             next_attempt_nanos = ?5, last_error = ?6, last_error_nanos = ?7, \
                             dead_version = ?8, pinned_version = NULL, pinned_quantity = NULL",
                        )
                        .bind(channel)
                        .bind(sku.as_str())
                        .bind(basis)
                        .bind(i64::from(*attempts))
                        .bind(nanos(*next_attempt))
                        .bind(error)
                        .bind(now)
                        .bind(dead.as_ref().map(|_| *version))
                        .execute(&mut *tx)
                        .await?;
                        if let Some(i) = dead {
                            insert_incidents(&mut tx, std::slice::from_ref(i)).await?;
                        }
                    }
                }
            }
            if !acked.is_empty() {
                again.extend(write_acked(&mut tx, channel, &acked).await?);
            }
            let _turn = tx.commit_holding().await?;
            {
                let mut m = self.marks.lock().unwrap_or_else(|p| p.into_inner());
                for sku in redirty {
                    m.redirty(channel, Some(sku), now);
                }
                // A row held in memory answers for itself whether it is still dirty.
                let mut held_again: Vec<Sku> = Vec::new();
                let mut held: std::collections::HashSet<&Sku> = Default::default();
                for (sku, version) in acks {
                    if let Some(still) = m.acked(channel, sku, version) {
                        held.insert(sku);
                        if still {
                            held_again.push(sku.clone());
                        }
                    }
                }
                again.retain(|s| !held.contains(s));
                again.extend(held_again);
            }
            self.changes.marked(now);
            Ok(again)
        })
    }

    fn channel_status<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<ChannelStatus, StoreError>> {
        Box::pin(async move {
            let mut tx = self.read.begin().await?;
            // Rows held in memory count as they are there, their table copies not at all.
            let (held, held_dirty) = {
                let m = self.marks.lock().unwrap_or_else(|p| p.into_inner());
                let held: Vec<String> = m.skus_of(channel).map(|s| s.to_string()).collect();
                (held, m.dirty_count(channel) as i64)
            };
            let list =
                serde_json::to_string(&held).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let stored: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM outbox WHERE channel = ? AND dirty = 1 \
                 AND sku NOT IN (SELECT value FROM json_each(?))",
            )
            .bind(channel)
            .bind(list)
            .fetch_one(&mut *tx)
            .await?;
            let pending = stored + held_dirty;
            let held = sqlx::query_scalar::<_, String>(
                "SELECT sku FROM channel_skus WHERE channel = ? AND held = 1 ORDER BY sku LIMIT 1000",
            )
            .bind(channel)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|s| stored_id("sku", s, Sku::parse))
            .collect::<Result<Vec<_>, _>>()?;
            let dead = sqlx::query(
                "SELECT sku, dead_version, attempts, last_error, last_error_nanos FROM channel_skus \
                 WHERE channel = ? AND dead_version IS NOT NULL ORDER BY sku LIMIT 1000",
            )
            .bind(channel)
            .fetch_all(&mut *tx)
            .await?;
            let dead_letters = dead
                .iter()
                .map(|r| {
                    Ok(DeadLetter {
                        sku: stored_id("sku", r.try_get(0)?, Sku::parse)?,
                        version: r.try_get(1)?,
                        attempts: u32::try_from(r.try_get::<i64, _>(2)?).unwrap_or(u32::MAX),
                        error: r.try_get(3)?,
                        at: r.try_get::<Option<i64>, _>(4)?.map(from_nanos),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let errs = sqlx::query(
                "SELECT sku, attempts, last_error, last_error_nanos, next_attempt_nanos \
                 FROM channel_skus WHERE channel = ? AND dead_version IS NULL AND attempts > 0 \
                 AND last_error IS NOT NULL ORDER BY last_error_nanos DESC LIMIT 100",
            )
            .bind(channel)
            .fetch_all(&mut *tx)
            .await?;
            let errors = errs
                .iter()
                .map(|r| {
                    Ok(PushError {
                        sku: stored_id("sku", r.try_get(0)?, Sku::parse)?,
                        attempts: u32::try_from(r.try_get::<i64, _>(1)?).unwrap_or(u32::MAX),
                        error: r.try_get(2)?,
                        at: from_nanos(r.try_get::<Option<i64>, _>(3)?.unwrap_or(0)),
                        next_attempt: from_nanos(r.try_get(4)?),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let last = sqlx::query(
                "SELECT sku, quantity, version, acked_nanos FROM push_log WHERE channel = ? \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(channel)
            .fetch_optional(&mut *tx)
            .await?;
            let last_push = match last {
                Some(r) => Some(LastPush {
                    sku: stored_id("sku", r.try_get(0)?, Sku::parse)?,
                    quantity: r.try_get(1)?,
                    version: r.try_get(2)?,
                    at: from_nanos(r.try_get(3)?),
                }),
                None => None,
            };
            tx.commit().await?;
            Ok(ChannelStatus {
                pending,
                held,
                dead_letters,
                errors,
                last_push,
            })
        })
    }

    fn outbox_hold<'a>(
        &'a self,
        channel: &'a str,
        sku: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = immediate(self).await?;
            // The dispatcher reads `held` with every row it scans, so a held sku is skipped from
            // its next scan on; a push already in flight finishes (its answer is still recorded).
            sqlx::query(
                "INSERT INTO channel_skus (channel, sku, held) VALUES (?1, ?2, 1) \
                 ON CONFLICT (channel, sku) DO UPDATE SET held = 1",
            )
            .bind(channel)
            .bind(sku)
            .execute(&mut *tx)
            .await?;
            let _turn = tx.commit_holding().await?;
            self.changes.marked(WAKE_ONLY);
            Ok(())
        })
    }

    fn outbox_replay<'a>(
        &'a self,
        channel: &'a str,
        sku: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut tx = immediate(self).await?;
            let now = nanos(Utc::now());
            let skus: Vec<String> = sqlx::query_scalar(
                "SELECT sku FROM channel_skus WHERE channel = ?1 AND (?2 IS NULL OR sku = ?2) \
                 AND (dead_version IS NOT NULL OR held = 1)",
            )
            .bind(channel)
            .bind(sku)
            .fetch_all(&mut *tx)
            .await?;
            for s in &skus {
                sqlx::query(
                    "UPDATE channel_skus SET dead_version = NULL, held = 0, attempts = 0, \
                     next_attempt_nanos = 0 WHERE channel = ? AND sku = ?",
                )
                .bind(channel)
                .bind(s)
                .execute(&mut *tx)
                .await?;
                mark_dirty(&mut tx, channel, Some(s), now).await?;
            }
            let _turn = tx.commit_holding().await?;
            {
                let mut m = self.marks.lock().unwrap_or_else(|p| p.into_inner());
                for s in &skus {
                    if let Ok(sku) = Sku::parse(s.clone()) {
                        m.redirty(channel, Some(&sku), now);
                    }
                }
            }
            self.changes.marked(now);
            Ok(skus.len() as u64)
        })
    }

    fn observe<'a>(
        &'a self,
        channel: &'a str,
        sku: &'a str,
        quantity: i64,
        actor: Option<&'a str>,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Observed, StoreError>> {
        Box::pin(async move {
            let mut tx = immediate(self).await?;
            let t = nanos(at);
            // The divergence clock starts at the first differing observation and stops when the
            // channel agrees again or a new push is acknowledged; an observation made before the
            // last acknowledgement says nothing about it. An observation older than the one held
            // (a report that arrived late) changes nothing.
            sqlx::query(
                "INSERT INTO channel_skus (channel, sku, observed_quantity, observed_nanos, observed_actor, \
                 diverged_nanos) VALUES (?1, ?2, ?3, ?4, ?5, ?4) \
                 ON CONFLICT (channel, sku) DO UPDATE SET observed_quantity = ?3, observed_nanos = ?4, \
                 observed_actor = ?5, diverged_nanos = CASE \
                   WHEN acked_nanos IS NOT NULL AND ?4 < acked_nanos THEN diverged_nanos \
                   WHEN acked_quantity IS NOT NULL AND acked_quantity = ?3 THEN NULL \
                   WHEN diverged_nanos IS NULL THEN ?4 ELSE diverged_nanos END \
                 WHERE observed_nanos IS NULL OR ?4 >= observed_nanos",
            )
            .bind(channel)
            .bind(sku)
            .bind(quantity)
            .bind(t)
            .bind(actor)
            .execute(&mut *tx)
            .await?;
            let r = sqlx::query(
                "SELECT acked_quantity, diverged_nanos FROM channel_skus WHERE channel = ? AND sku = ?",
            )
            .bind(channel)
            .bind(sku)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Observed {
                acked_quantity: r.try_get(0)?,
                diverged_since: r.try_get::<Option<i64>, _>(1)?.map(from_nanos),
            })
        })
    }

    fn divergences<'a>(
        &'a self,
        channel: &'a str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Divergence>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(DIVERGENCES)
                .bind(channel)
                .bind(nanos(before))
                .bind(limit.clamp(1, MAX_SCAN) as i64)
                .fetch_all(&self.read)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Divergence {
                        sku: stored_id("sku", r.try_get(0)?, Sku::parse)?,
                        observed: r.try_get(1)?,
                        acked_quantity: r.try_get(2)?,
                        since: from_nanos(r.try_get(3)?),
                        actor: r.try_get(4)?,
                    })
                })
                .collect()
        })
    }

    fn push_samples(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PushSample>, StoreError>> {
        Box::pin(async move {
            let channels: Vec<String> = sqlx::query_scalar("SELECT DISTINCT channel FROM push_log")
                .fetch_all(&self.read)
                .await?;
            let mut out = Vec::new();
            for c in channels {
                let rows = sqlx::query(
                    "SELECT source, occurred_nanos, received_nanos, changed_nanos, acked_nanos \
                     FROM push_log WHERE channel = ? ORDER BY id DESC LIMIT (SELECT ?)",
                )
                .bind(&c)
                .bind(limit.max(1) as i64)
                .fetch_all(&self.read)
                .await?;
                for r in rows {
                    out.push(PushSample {
                        channel: c.clone(),
                        source: stored_opt_id("source", r.try_get(0)?, SystemId::parse)?,
                        occurred_nanos: r.try_get(1)?,
                        received_nanos: r.try_get(2)?,
                        changed_nanos: r.try_get(3)?,
                        acked_nanos: r.try_get(4)?,
                    });
                }
            }
            Ok(out)
        })
    }

    fn source_lags<'a>(
        &'a self,
        sources: &'a [String],
        limit: usize,
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<i64>>, StoreError>> {
        Box::pin(async move {
            // Events only come from configured systems (others are refused), so asking per system
            // avoids a DISTINCT over the whole ledger.
            let mut out = HashMap::new();
            for s in sources {
                let lags: Vec<i64> = sqlx::query_scalar(
                    "SELECT received_nanos - at_nanos FROM events WHERE source = ? \
                     AND outcome = 'applied' ORDER BY lsn DESC LIMIT (SELECT ?)",
                )
                .bind(s)
                .bind(limit.max(1) as i64)
                .fetch_all(&self.read)
                .await?;
                if !lags.is_empty() {
                    out.insert(s.clone(), lags);
                }
            }
            Ok(out)
        })
    }

    fn outbox_maintain<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let newest: Option<i64> =
                sqlx::query_scalar("SELECT MAX(id) FROM push_log WHERE channel = ?")
                    .bind(channel)
                    .fetch_one(&self.read)
                    .await?;
            if let Some(n) = newest {
                let mut tx = immediate(self).await?;
                // Ids are shared by all channels, so this keeps at least the newest rows of this one.
                sqlx::query("DELETE FROM push_log WHERE channel = ? AND id <= ?")
                    .bind(channel)
                    .bind(n - PUSH_LOG_KEEP)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok(())
        })
    }
}

/// Writes a run of acknowledgements: the new compare basis, the outbox rows cleaned where no newer
/// version arrived meanwhile (a newer version stays dirty and is pushed next, coalescing everything
/// in between), and the push log.
async fn write_acked(
    conn: &mut SqliteConnection,
    channel: &str,
    run: &[&PushRecord],
) -> Result<Vec<Sku>, StoreError> {
    let mut again = Vec::new();
    let rows: Vec<(&Sku, i64, i64, i64, &PushSample)> = run
        .iter()
        .filter_map(|r| match r {
            PushRecord::Acked {
                sku,
                version,
                quantity,
                at,
                sample,
            } => Some((sku, *version, *quantity, nanos(*at), sample)),
            _ => None,
        })
        .collect();
    for chunk in rows.chunks(500) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO channel_skus (channel, sku, acked_quantity, acked_version, acked_nanos, \
             basis, attempts, next_attempt_nanos) ",
        );
        q.push_values(chunk, |mut b, (sku, version, quantity, at, _)| {
            b.push_bind(channel)
                .push_bind(sku.as_str())
                .push_bind(*quantity)
                .push_bind(*version)
                .push_bind(*at)
                .push_bind(*quantity)
                .push_bind(0i64)
                .push_bind(0i64);
        });
        q.push(
            " ON CONFLICT (channel, sku) DO UPDATE SET acked_quantity = excluded.acked_quantity, \
             acked_version = excluded.acked_version, acked_nanos = excluded.acked_nanos, \
             basis = excluded.basis, pinned_version = NULL, pinned_quantity = NULL, attempts = 0, \
             next_attempt_nanos = 0, last_error = NULL, last_error_nanos = NULL, \
             dead_version = NULL, diverged_nanos = NULL",
        );
        q.build().execute(&mut *conn).await?;
        // UPDATE ... FROM drives the update from the list, one primary-key probe per row.
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE outbox SET dirty = 0 FROM (VALUES ");
        let mut sep = q.separated(", ");
        for (sku, version, ..) in chunk {
            sep.push("(");
            sep.push_bind_unseparated(sku.as_str());
            sep.push_unseparated(", ");
            sep.push_bind_unseparated(*version);
            sep.push_unseparated(")");
        }
        q.push(") AS v WHERE outbox.channel = ")
            .push_bind(channel)
            .push(" AND outbox.sku = v.column1 AND outbox.version = v.column2");
        q.build().execute(&mut *conn).await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO push_log (channel, sku, version, quantity, source, occurred_nanos, \
             received_nanos, changed_nanos, acked_nanos) ",
        );
        q.push_values(chunk, |mut b, (sku, version, quantity, _, sample)| {
            b.push_bind(channel)
                .push_bind(sku.as_str())
                .push_bind(*version)
                .push_bind(*quantity)
                .push_bind(sample.source.as_ref().map(SystemId::as_str))
                .push_bind(sample.occurred_nanos)
                .push_bind(sample.received_nanos)
                .push_bind(sample.changed_nanos)
                .push_bind(sample.acked_nanos);
        });
        q.build().execute(&mut *conn).await?;
        let mut q = QueryBuilder::<Sqlite>::new("SELECT sku FROM outbox WHERE channel = ");
        q.push_bind(channel).push(" AND dirty = 1 AND sku IN (");
        let mut sep = q.separated(", ");
        for (sku, ..) in chunk {
            sep.push_bind(sku.as_str());
        }
        q.push(")");
        for r in q.build().fetch_all(&mut *conn).await? {
            again.push(stored_id("sku", r.try_get(0)?, Sku::parse)?);
        }
    }
    Ok(again)
}

/// Marks outbox rows dirty again (replay, overwrite after an override), bumping `changed_nanos` so
/// the dispatcher's cursor sees them.
async fn mark_dirty(
    conn: &mut SqliteConnection,
    channel: &str,
    sku: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE outbox SET dirty = 1, changed_nanos = MAX(changed_nanos, ?3) \
         WHERE channel = ?1 AND (?2 IS NULL OR sku = ?2)",
    )
    .bind(channel)
    .bind(sku)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatcher's sweep runs every second: its read goes through the index of divergences,
    /// not through every row of the channel.
    #[tokio::test]
    async fn the_sweep_reads_only_divergences() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), driftless_core::Rules::default(), vec![])
            .await
            .unwrap();
        let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {DIVERGENCES}"
        )))
        .bind("shop")
        .bind(0i64)
        .bind(10i64)
        .fetch_all(&store.read)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>(3))
        .collect();
        assert!(
            plan.iter().any(|l| l.contains("channel_skus_diverged")),
            "{plan:?}"
        );
        crate::Store::close(&store).await;
    }
}
