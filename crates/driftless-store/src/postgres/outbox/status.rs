//! What the operator reads of fan-out: a channel's status (pending, holds, dead letters, recent
//! errors, last push), divergences past the SLA, push samples and source lags.

use super::super::errors::db;
use super::super::{PgStore, from_nanos, nanos};
use crate::StoreError;
use crate::outbox::*;
use crate::rows::{stored_id, stored_opt_id};
use chrono::{DateTime, Utc};
use driftless_core::{Sku, SystemId};
use sqlx::Row;
use std::collections::HashMap;

/// The sweep's read of divergences past the SLA, through `channel_skus_diverged`.
const DIVERGENCES: &str = "SELECT sku, observed_quantity, acked_quantity, diverged_nanos, \
    observed_actor FROM channel_skus WHERE channel = $1 AND diverged_nanos IS NOT NULL \
    AND diverged_nanos <= $2 AND NOT held AND observed_quantity IS NOT NULL \
    ORDER BY diverged_nanos LIMIT $3";

/// `GET /v1/channels/{id}`, from one snapshot.
pub(super) async fn channel_status(
    store: &PgStore,
    channel: &str,
) -> Result<ChannelStatus, StoreError> {
    let mut tx = store.pool.begin().await.map_err(db)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE channel = $1 AND dirty")
            .bind(channel)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
    let held = sqlx::query_scalar::<_, String>(
        "SELECT sku FROM channel_skus WHERE channel = $1 AND held ORDER BY sku LIMIT 1000",
    )
    .bind(channel)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|s| stored_id("sku", s, Sku::parse))
    .collect::<Result<Vec<_>, _>>()?;
    let dead = sqlx::query(
        "SELECT sku, dead_version, attempts, last_error, last_error_nanos FROM channel_skus \
         WHERE channel = $1 AND dead_version IS NOT NULL ORDER BY sku LIMIT 1000",
    )
    .bind(channel)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let dead_letters = dead
        .iter()
        .map(|r| {
            Ok(DeadLetter {
                sku: stored_id("sku", r.try_get(0).map_err(db)?, Sku::parse)?,
                version: r.try_get(1).map_err(db)?,
                attempts: u32::try_from(r.try_get::<i64, _>(2).map_err(db)?).unwrap_or(u32::MAX),
                error: r.try_get(3).map_err(db)?,
                at: r.try_get::<Option<i64>, _>(4)?.map(from_nanos),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let errs = sqlx::query(
        "SELECT sku, attempts, last_error, last_error_nanos, next_attempt_nanos \
         FROM channel_skus WHERE channel = $1 AND dead_version IS NULL AND attempts > 0 \
         AND last_error IS NOT NULL ORDER BY last_error_nanos DESC LIMIT 100",
    )
    .bind(channel)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    let errors = errs
        .iter()
        .map(|r| {
            Ok(PushError {
                sku: stored_id("sku", r.try_get(0).map_err(db)?, Sku::parse)?,
                attempts: u32::try_from(r.try_get::<i64, _>(1).map_err(db)?).unwrap_or(u32::MAX),
                error: r.try_get(2).map_err(db)?,
                at: from_nanos(r.try_get::<Option<i64>, _>(3)?.unwrap_or(0)),
                next_attempt: from_nanos(r.try_get(4).map_err(db)?),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let last = sqlx::query(
        "SELECT sku, quantity, version, acked_nanos FROM push_log WHERE channel = $1 \
         ORDER BY id DESC LIMIT 1",
    )
    .bind(channel)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let last_push = match last {
        Some(r) => Some(LastPush {
            sku: stored_id("sku", r.try_get(0).map_err(db)?, Sku::parse)?,
            quantity: r.try_get(1).map_err(db)?,
            version: r.try_get(2).map_err(db)?,
            at: from_nanos(r.try_get(3).map_err(db)?),
        }),
        None => None,
    };
    tx.commit().await.map_err(db)?;
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
    store: &PgStore,
    channel: &str,
    before: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Divergence>, StoreError> {
    let rows = sqlx::query(DIVERGENCES)
        .bind(channel)
        .bind(nanos(before))
        .bind(limit.clamp(1, MAX_SCAN) as i64)
        .fetch_all(&store.pool)
        .await
        .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(Divergence {
                sku: stored_id("sku", r.try_get(0).map_err(db)?, Sku::parse)?,
                observed: r.try_get(1).map_err(db)?,
                acked_quantity: r.try_get(2).map_err(db)?,
                since: from_nanos(r.try_get(3).map_err(db)?),
                actor: r.try_get(4).map_err(db)?,
            })
        })
        .collect()
}

/// The newest `limit` pushes of every channel, for the integration matrix.
pub(super) async fn push_samples(
    store: &PgStore,
    limit: usize,
) -> Result<Vec<PushSample>, StoreError> {
    let rows = sqlx::query(
        "SELECT p.channel, p.source, p.occurred_nanos, p.received_nanos, \
         p.changed_nanos, p.acked_nanos FROM (SELECT DISTINCT channel FROM push_log) c \
         CROSS JOIN LATERAL (SELECT * FROM push_log l WHERE l.channel = c.channel \
         ORDER BY l.id DESC LIMIT $1) p",
    )
    .bind(limit.max(1) as i64)
    .fetch_all(&store.pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            Ok(PushSample {
                channel: r.try_get(0).map_err(db)?,
                source: stored_opt_id("source", r.try_get(1).map_err(db)?, SystemId::parse)?,
                occurred_nanos: r.try_get(2).map_err(db)?,
                received_nanos: r.try_get(3).map_err(db)?,
                changed_nanos: r.try_get(4).map_err(db)?,
                acked_nanos: r.try_get(5).map_err(db)?,
            })
        })
        .collect()
}

/// Per system, the lag from its events' time to their arrival, newest `limit` applied events.
pub(super) async fn source_lags(
    store: &PgStore,
    sources: &[String],
    limit: usize,
) -> Result<HashMap<String, Vec<i64>>, StoreError> {
    let mut out = HashMap::new();
    for s in sources {
        let lags: Vec<i64> = sqlx::query_scalar(
            "SELECT received_nanos - at_nanos FROM events WHERE source = $1 \
             AND outcome = 'applied' ORDER BY lsn DESC LIMIT $2",
        )
        .bind(s)
        .bind(limit.max(1) as i64)
        .fetch_all(&store.pool)
        .await
        .map_err(db)?;
        if !lags.is_empty() {
            out.insert(s.clone(), lags);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// The sweep reads through its index, with the generic plan made while the tables are empty
    /// too (as the scans' test in `scan.rs`).
    #[tokio::test]
    async fn the_sweep_reads_only_divergences() {
        let Some(mut conn) = super::super::plan_test_connection().await else {
            return;
        };
        // In a schema of its own inside a transaction that is rolled back: nothing is left.
        let mut tx = conn.begin().await.unwrap();
        super::super::plan_test_schema(&mut tx).await;
        // The sweep, every second: through the index of divergences, not every row.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PREPARE sweep AS {DIVERGENCES}"
        )))
        .execute(&mut *tx)
        .await
        .unwrap();
        let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE sweep('shop', 0, 500)")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert!(
            plan.iter().any(|l| l.contains("channel_skus_diverged")),
            "sweep:\n{}",
            plan.join("\n")
        );
        tx.rollback().await.unwrap();
    }
}
