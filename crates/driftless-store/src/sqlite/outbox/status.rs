//! What the operator reads of fan-out: a channel's status (pending, holds, dead letters, recent
//! errors, last push), divergences past the SLA, push samples and source lags.

use super::super::{SqliteStore, from_nanos, nanos};
use crate::StoreError;
use crate::outbox::*;
use crate::rows::{stored_id, stored_opt_id};
use chrono::{DateTime, Utc};
use driftless_core::{Sku, SystemId};
use sqlx::Row;
use std::collections::HashMap;

/// The sweep's read of divergences past the SLA, through `channel_skus_diverged`.
const DIVERGENCES: &str = "SELECT sku, observed_quantity, acked_quantity, diverged_nanos, \
    observed_actor FROM channel_skus WHERE channel = ? AND diverged_nanos IS NOT NULL \
    AND diverged_nanos <= ? AND held = 0 AND observed_quantity IS NOT NULL \
    ORDER BY diverged_nanos LIMIT (SELECT ?)";

/// Pending count, holds, dead letters, recent errors and the last push of `channel`.
pub(super) async fn channel_status(
    store: &SqliteStore,
    channel: &str,
) -> Result<ChannelStatus, StoreError> {
    let mut tx = store.read.begin().await?;
    // Rows held in memory count as they are there, their table copies not at all.
    let (held, held_dirty) = {
        let m = store.marks.lock().unwrap_or_else(|p| p.into_inner());
        let held: Vec<String> = m.skus_of(channel).map(|s| s.to_string()).collect();
        (held, m.dirty_count(channel) as i64)
    };
    let list = serde_json::to_string(&held).map_err(|e| StoreError::Corrupt(e.to_string()))?;
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
}

/// Divergences of `channel` older than `before`, oldest first.
pub(super) async fn divergences(
    store: &SqliteStore,
    channel: &str,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Divergence>, StoreError> {
    let rows = sqlx::query(DIVERGENCES)
        .bind(channel)
        .bind(nanos(before))
        .bind(limit.clamp(1, MAX_SCAN) as i64)
        .fetch_all(&store.read)
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
}

/// The newest `limit` pushes of every channel, for the integration matrix.
pub(super) async fn push_samples(
    store: &SqliteStore,
    limit: usize,
) -> Result<Vec<PushSample>, StoreError> {
    let channels: Vec<String> = sqlx::query_scalar("SELECT DISTINCT channel FROM push_log")
        .fetch_all(&store.read)
        .await?;
    let mut out = Vec::new();
    for c in channels {
        let rows = sqlx::query(
            "SELECT source, occurred_nanos, received_nanos, changed_nanos, acked_nanos \
                 FROM push_log WHERE channel = ? ORDER BY id DESC LIMIT (SELECT ?)",
        )
        .bind(&c)
        .bind(limit.max(1) as i64)
        .fetch_all(&store.read)
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
}

/// Per system, the lag from its events' time to their arrival, newest `limit` applied events.
pub(super) async fn source_lags(
    store: &SqliteStore,
    sources: &[String],
    limit: usize,
) -> Result<HashMap<String, Vec<i64>>, StoreError> {
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
        .fetch_all(&store.read)
        .await?;
        if !lags.is_empty() {
            out.insert(s.clone(), lags);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

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
        Store::close(&store).await;
    }
}
