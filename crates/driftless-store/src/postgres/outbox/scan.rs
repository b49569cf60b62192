//! The dispatcher's read of dirty rows (`Outbox::outbox_scan`): each outbox row with the
//! `channel_skus` state it needs, looked up by its key.

use super::super::PgStore;
use super::super::errors::db;
use crate::StoreError;
use crate::outbox::*;
use crate::rows::{stored_id, stored_opt_id};
use driftless_core::{Sku, SystemId};
use sqlx::Row;
use sqlx::postgres::PgRow;

const ROW_COLUMNS: &str = "o.sku, o.version, o.dirty, o.changed_nanos, o.atp, o.source, \
    o.occurred_nanos, o.received_nanos, s.acked_quantity, s.acked_version, s.basis, \
    s.pinned_version, s.pinned_quantity, COALESCE(s.attempts, 0) AS attempts, \
    COALESCE(s.next_attempt_nanos, 0) AS next_attempt_nanos, COALESCE(s.held, FALSE) AS held, \
    s.dead_version";

/// Each outbox row's `channel_skus` row, looked up by its key, one probe per row read.
///
/// As a plain `LEFT JOIN` the plan depends on the tables' statistics, and the plan a pooled
/// connection caches for this statement can be made when the tables are nearly empty (a new
/// hub, a database whose autovacuum has not analyzed them yet): it scanned every `channel_skus`
/// row of the channel for each outbox row, and a scan of a few hundred rows took a second once
/// the channel had pushed ten thousand skus. `OFFSET 0` keeps the subquery from being merged into
/// a join, so the lookup is always by the whole key.
const CHANNEL_SKU: &str = "LEFT JOIN LATERAL (SELECT * FROM channel_skus c \
    WHERE c.channel = o.channel AND c.sku = o.sku OFFSET 0) s ON TRUE";

/// The cursor's scan: the channel's dirty rows after `($2, $3)`, oldest change first.
fn scan_after_sql() -> String {
    format!(
        "SELECT {ROW_COLUMNS} FROM outbox o {CHANNEL_SKU} \
         WHERE o.channel = $1 AND o.dirty AND (o.changed_nanos, o.sku) > ($2, $3) \
         ORDER BY o.changed_nanos, o.sku LIMIT $4"
    )
}

/// The targeted scan: these skus' rows, dirty or not.
fn scan_skus_sql() -> String {
    format!(
        "SELECT {ROW_COLUMNS} FROM outbox o {CHANNEL_SKU} \
         WHERE o.channel = $1 AND o.sku = ANY($2)"
    )
}

/// A scan: the cursor's (dirty rows after a point) or the targeted one (these skus' rows).
pub(super) async fn scan(store: &PgStore, scan: &Scan) -> Result<Vec<OutboxRow>, StoreError> {
    let limit = scan.limit.clamp(1, MAX_SCAN) as i64;
    let rows = match &scan.from {
        ScanFrom::After(at, sku) => {
            sqlx::query(sqlx::AssertSqlSafe(scan_after_sql()))
                .bind(&scan.channel)
                .bind(*at)
                .bind(sku.as_ref().map_or("", Sku::as_str))
                .bind(limit)
                .fetch_all(&store.pool)
                .await
        }
        ScanFrom::Skus(skus) => {
            let skus: Vec<&str> = skus.iter().take(limit as usize).map(Sku::as_str).collect();
            sqlx::query(sqlx::AssertSqlSafe(scan_skus_sql()))
                .bind(&scan.channel)
                .bind(&skus)
                .fetch_all(&store.pool)
                .await
        }
    }
    .map_err(db)?;
    rows.iter().map(row_of).collect()
}

fn row_of(r: &PgRow) -> Result<OutboxRow, StoreError> {
    let attempts: i64 = r.try_get("attempts").map_err(db)?;
    Ok(OutboxRow {
        sku: stored_id("sku", r.try_get("sku").map_err(db)?, Sku::parse)?,
        version: r.try_get("version").map_err(db)?,
        dirty: r.try_get("dirty").map_err(db)?,
        changed_nanos: r.try_get("changed_nanos").map_err(db)?,
        atp: r.try_get("atp").map_err(db)?,
        acked_quantity: r.try_get("acked_quantity").map_err(db)?,
        acked_version: r.try_get("acked_version").map_err(db)?,
        basis: r.try_get("basis").map_err(db)?,
        pinned: r
            .try_get::<Option<i64>, _>("pinned_version")?
            .zip(r.try_get::<Option<i64>, _>("pinned_quantity")?),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_nanos: r.try_get("next_attempt_nanos").map_err(db)?,
        held: r.try_get("held").map_err(db)?,
        dead_version: r.try_get("dead_version").map_err(db)?,
        source: stored_opt_id("source", r.try_get("source").map_err(db)?, SystemId::parse)?,
        occurred_nanos: r.try_get("occurred_nanos").map_err(db)?,
        received_nanos: r.try_get("received_nanos").map_err(db)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// Both scans look each row's `channel_skus` row up by its whole key whatever the tables'
    /// statistics say: here with the generic plan made while the tables are empty, which a new
    /// hub's pooled connections cache. A plain join planned there scanned every `channel_skus` row
    /// of the channel for each outbox row read.
    #[tokio::test]
    async fn scans_look_channel_skus_up_by_key_on_empty_tables() {
        let Some(mut conn) = super::super::plan_test_connection().await else {
            return;
        };
        // In a schema of its own inside a transaction that is rolled back: nothing is left.
        let mut tx = conn.begin().await.unwrap();
        super::super::plan_test_schema(&mut tx).await;
        for (name, sql, args) in [
            ("after", scan_after_sql(), "('shop', 0, '', 100)"),
            ("skus", scan_skus_sql(), "('shop', ARRAY['A', 'B'])"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE {name} AS {sql}")))
                .execute(&mut *tx)
                .await
                .unwrap();
            let plan: Vec<String> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN EXECUTE {name}{args}")))
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
            assert!(
                plan.iter()
                    .any(|l| l.contains("Index Cond") && l.contains("(sku = o.sku)")),
                "{name}: channel_skus is not looked up by its key:\n{}",
                plan.join("\n")
            );
        }
        tx.rollback().await.unwrap();
    }
}
