//! The live checkpoints' rows (`Store::checkpoint_rows`, `save_checkpoints`, `checkpoints`): one
//! row per `(system, sku, location, state)` with the newest observation and how it was judged.
//! As in SQLite, the guard that an older observation never replaces a newer one is in the upsert
//! itself, so hubs racing for one key cannot undo each other.

use super::errors::db;
use super::records::insert_incidents;
use super::{PgStore, from_nanos, nanos};
use crate::rows::stored_id;
use crate::{CheckpointFilter, CheckpointRow, Incident, LiveLevels, StoreError};
use driftless_core::{Levels, Location, Sku, State, SystemId};
use sqlx::postgres::PgRow;
use sqlx::{Acquire, Row};

const COLUMNS: &str = "system, sku, location, state, quantity, observed_nanos, expected, \
                       diverged_nanos, open, handoff, cause";

fn row(r: &PgRow) -> Result<CheckpointRow, StoreError> {
    Ok(CheckpointRow {
        system: stored_id("system", r.try_get("system").map_err(db)?, SystemId::parse)?,
        sku: stored_id("sku", r.try_get("sku").map_err(db)?, Sku::parse)?,
        location: r.try_get("location").map_err(db)?,
        state: r.try_get("state").map_err(db)?,
        quantity: r.try_get("quantity").map_err(db)?,
        observed_at: from_nanos(r.try_get("observed_nanos").map_err(db)?),
        expected: r.try_get("expected").map_err(db)?,
        diverged_since: r
            .try_get::<Option<i64>, _>("diverged_nanos")
            .map_err(db)?
            .map(from_nanos),
        open: r.try_get("open").map_err(db)?,
        handoff: r.try_get("handoff").map_err(db)?,
        cause: r.try_get("cause").map_err(db)?,
    })
}

pub(super) async fn rows_of(
    st: &PgStore,
    keys: &[(String, String, String, String)],
) -> Result<Vec<CheckpointRow>, StoreError> {
    if keys.is_empty() {
        return Ok(vec![]);
    }
    let mut cols: [Vec<&str>; 4] = Default::default();
    for (system, sku, location, state) in keys {
        cols[0].push(system);
        cols[1].push(sku);
        cols[2].push(location);
        cols[3].push(state);
    }
    let rows = sqlx::query(
        "SELECT c.* FROM checkpoints c JOIN UNNEST($1::text[], $2::text[], $3::text[], \
         $4::text[]) AS k(system, sku, location, state) USING (system, sku, location, state)",
    )
    .bind(&cols[0])
    .bind(&cols[1])
    .bind(&cols[2])
    .bind(&cols[3])
    .fetch_all(&st.pool)
    .await
    .map_err(db)?;
    rows.iter().map(row).collect()
}

/// The live levels of these skus, for judging a request's observations: one statement for all
/// of them (the tables hold everything committed).
pub(super) async fn levels(st: &PgStore, skus: &[Sku]) -> Result<LiveLevels, StoreError> {
    let mut out = LiveLevels::with_capacity(skus.len());
    if skus.is_empty() {
        return Ok(out);
    }
    let list: Vec<&str> = skus.iter().map(|s| s.as_str()).collect();
    let rows = sqlx::query("SELECT sku, location, state, value FROM cells WHERE sku = ANY($1)")
        .bind(&list)
        .fetch_all(&st.pool)
        .await
        .map_err(db)?;
    let corrupt = |e: String| StoreError::Corrupt(e);
    for r in &rows {
        let sku = Sku::parse(r.try_get::<String, _>("sku").map_err(db)?)
            .map_err(|e| corrupt(e.to_string()))?;
        let loc = Location::parse(r.try_get::<String, _>("location").map_err(db)?)
            .map_err(|e| corrupt(e.to_string()))?;
        let state: i16 = r.try_get("state").map_err(db)?;
        let s = usize::try_from(state)
            .ok()
            .and_then(|i| State::ALL.get(i).copied())
            .ok_or_else(|| corrupt(format!("state index {state}")))?;
        let value: i64 = r.try_get("value").map_err(db)?;
        let locs = out.entry(sku).or_default();
        match locs.iter_mut().find(|(l, _)| *l == loc) {
            Some((_, lv)) => lv.set(s, value),
            None => {
                let mut lv = Levels::default();
                lv.set(s, value);
                locs.push((loc, lv));
            }
        }
    }
    Ok(out)
}

pub(super) async fn save(
    st: &PgStore,
    rows: &[(CheckpointRow, Option<Incident>)],
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut conn = st.pool.acquire().await.map_err(db)?;
    let mut tx = conn.begin().await.map_err(db)?;
    let mut stored = 0;
    let mut incidents: Vec<Incident> = Vec::new();
    // One statement per row: an incident goes with its row only when the row was stored, and
    // observations arrive in requests of at most a few thousand keys.
    for (r, incident) in rows {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO checkpoints ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11) ON CONFLICT (system, sku, location, state) DO UPDATE SET \
             quantity = EXCLUDED.quantity, observed_nanos = EXCLUDED.observed_nanos, \
             expected = EXCLUDED.expected, diverged_nanos = EXCLUDED.diverged_nanos, \
             open = EXCLUDED.open, handoff = EXCLUDED.handoff, cause = EXCLUDED.cause \
             WHERE EXCLUDED.observed_nanos > checkpoints.observed_nanos \
             OR (EXCLUDED.observed_nanos = checkpoints.observed_nanos \
                 AND EXCLUDED.open <> checkpoints.open)"
        )))
        .bind(r.system.as_str())
        .bind(r.sku.as_str())
        .bind(&r.location)
        .bind(&r.state)
        .bind(r.quantity)
        .bind(nanos(r.observed_at))
        .bind(r.expected)
        .bind(r.diverged_since.map(nanos))
        .bind(r.open)
        .bind(&r.handoff)
        .bind(&r.cause)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() > 0 {
            stored += 1;
            incidents.extend(incident.clone());
        }
    }
    insert_incidents(&mut tx, &incidents).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(stored)
}

pub(super) async fn page(
    st: &PgStore,
    f: &CheckpointFilter,
) -> Result<Vec<CheckpointRow>, StoreError> {
    let (a, b, c, d) = f.after.clone().unwrap_or_default();
    let rows = sqlx::query(
        "SELECT * FROM checkpoints WHERE ($1::text IS NULL OR system = $1) \
         AND (NOT $2 OR diverged_nanos IS NOT NULL OR open) \
         AND (NOT $3 OR (system, sku, location, state) > ($4, $5, $6, $7)) \
         ORDER BY system, sku, location, state LIMIT $8",
    )
    .bind(f.system.clone())
    .bind(f.drifting)
    .bind(f.after.is_some())
    .bind(a)
    .bind(b)
    .bind(c)
    .bind(d)
    .bind(f.limit.max(1) as i64)
    .fetch_all(&st.pool)
    .await
    .map_err(db)?;
    rows.iter().map(row).collect()
}
