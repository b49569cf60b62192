//! The live checkpoints' rows (`Store::checkpoint_rows`, `save_checkpoints`, `checkpoints`): one
//! row per `(system, sku, location, state)` with the newest observation and how it was judged.
//! The guard that an older observation never replaces a newer one is in the upsert itself, so two
//! requests racing for one key cannot undo each other.

use super::reads::levels_of;
use super::sql::insert_incidents;
use super::{SqliteStore, from_nanos, nanos};
use crate::rows::stored_id;
use crate::{CheckpointFilter, CheckpointRow, Incident, LiveLevels, StoreError};
use driftless_core::{Location, Sku, SystemId};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

/// The table, created with the others on open (`schema.rs` lists it).
pub const TABLE: &str = "CREATE TABLE IF NOT EXISTS checkpoints (
        system TEXT NOT NULL,
        sku TEXT NOT NULL,
        location TEXT NOT NULL,
        state TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        observed_nanos INTEGER NOT NULL,
        expected INTEGER NOT NULL,
        diverged_nanos INTEGER,
        open INTEGER NOT NULL,
        handoff TEXT NOT NULL,
        cause TEXT NOT NULL,
        PRIMARY KEY (system, sku, location, state)
    ) WITHOUT ROWID";

fn row(r: &SqliteRow) -> Result<CheckpointRow, StoreError> {
    Ok(CheckpointRow {
        system: stored_id("system", r.try_get("system")?, SystemId::parse)?,
        sku: stored_id("sku", r.try_get("sku")?, Sku::parse)?,
        location: r.try_get("location")?,
        state: r.try_get("state")?,
        quantity: r.try_get("quantity")?,
        observed_at: from_nanos(r.try_get("observed_nanos")?),
        expected: r.try_get("expected")?,
        diverged_since: r
            .try_get::<Option<i64>, _>("diverged_nanos")?
            .map(from_nanos),
        open: r.try_get::<i64, _>("open")? != 0,
        handoff: r.try_get("handoff")?,
        cause: r.try_get("cause")?,
    })
}

/// A ledger opened read-only from before checkpoints existed has no table: nothing observed.
fn absent(e: &sqlx::Error) -> bool {
    e.to_string().contains("no such table")
}

pub(super) async fn rows_of(
    st: &SqliteStore,
    keys: &[(String, String, String, String)],
) -> Result<Vec<CheckpointRow>, StoreError> {
    let mut out = Vec::with_capacity(keys.len());
    // One statement per 200 keys (four parameters each, far under SQLite's limit).
    for chunk in keys.chunks(200) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT * FROM checkpoints WHERE (system, sku, location, state) IN (VALUES ",
        );
        let mut sep = q.separated(", ");
        for (system, sku, location, state) in chunk {
            sep.push("(")
                .push_bind_unseparated(system)
                .push_unseparated(", ")
                .push_bind_unseparated(sku)
                .push_unseparated(", ")
                .push_bind_unseparated(location)
                .push_unseparated(", ")
                .push_bind_unseparated(state)
                .push_unseparated(")");
        }
        q.push(")");
        match q.build().fetch_all(&st.read).await {
            Ok(rows) => {
                for r in &rows {
                    out.push(row(r)?);
                }
            }
            Err(e) if absent(&e) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The live levels of these skus, for judging a request's observations: the overlay first, then
/// the table, in one statement for all of them (the per-sku `inventory` took two statements a sku,
/// and its zero-level locations seen only in the index change no expected value).
pub(super) async fn levels(st: &SqliteStore, skus: &[Sku]) -> Result<LiveLevels, StoreError> {
    if skus.is_empty() {
        return Ok(LiveLevels::new());
    }
    // Before the table (see `cells::Overlay`).
    let fresh = st.overlay_of(skus);
    let mut out = LiveLevels::with_capacity(skus.len());
    // One statement per 5,000 skus (a JSON list: one parameter).
    for chunk in skus.chunks(5000) {
        let list = serde_json::to_string(&chunk.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT c.sku, c.location, c.state, c.value FROM (SELECT DISTINCT value FROM json_each(?)) AS j \
             CROSS JOIN cells AS c ON c.sku = j.value ORDER BY c.sku, c.location, c.state",
        )
        .bind(list)
        .fetch_all(&st.read)
        .await?;
        for (sku, loc, lv) in levels_of(&rows)? {
            let sku = Sku::parse(sku).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let loc = Location::parse(loc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.entry(sku).or_default().push((loc, lv));
        }
    }
    for (sku, locs) in fresh {
        let stored = out.entry(sku).or_default();
        for (loc, lv) in locs {
            match stored.iter_mut().find(|(l, _)| *l == loc) {
                Some(x) => x.1 = lv,
                None => stored.push((loc, lv)),
            }
        }
    }
    Ok(out)
}

pub(super) async fn save(
    st: &SqliteStore,
    rows: &[(CheckpointRow, Option<Incident>)],
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    // Outside the event path, in turn with the ledger writer (as `record_incident`), one
    // transaction for the whole request.
    let _turn = st.gate.clone().lock_owned().await;
    let mut conn = st.side().await?.acquire().await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let mut stored = 0;
    let mut incidents: Vec<Incident> = Vec::new();
    // Rows that raise an incident (rare) one by one, to know whether each was stored; the rest in
    // multi-row statements, one per 500 rows (eleven parameters each).
    let (single, plain): (Vec<_>, Vec<_>) = rows.iter().partition(|(_, i)| i.is_some());
    for (r, incident) in single {
        let done = upsert(std::slice::from_ref(r))
            .build()
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() > 0 {
            stored += 1;
            incidents.extend(incident.clone());
        }
    }
    let plain: Vec<CheckpointRow> = plain.into_iter().map(|(r, _)| r.clone()).collect();
    for chunk in plain.chunks(500) {
        let done = upsert(chunk).build().execute(&mut *tx).await?;
        stored += done.rows_affected() as usize;
    }
    insert_incidents(&mut tx, &incidents).await?;
    tx.commit().await?;
    Ok(stored)
}

/// The upsert of `rows`: an older (or as old, unchanged) observation never replaces a newer.
fn upsert(rows: &[CheckpointRow]) -> sqlx::QueryBuilder<sqlx::Sqlite> {
    let mut q = sqlx::QueryBuilder::new(
        "INSERT INTO checkpoints (system, sku, location, state, quantity, observed_nanos, \
         expected, diverged_nanos, open, handoff, cause) ",
    );
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.system.to_string())
            .push_bind(r.sku.to_string())
            .push_bind(r.location.clone())
            .push_bind(r.state.clone())
            .push_bind(r.quantity)
            .push_bind(nanos(r.observed_at))
            .push_bind(r.expected)
            .push_bind(r.diverged_since.map(nanos))
            .push_bind(i64::from(r.open))
            .push_bind(r.handoff.clone())
            .push_bind(r.cause.clone());
    });
    q.push(
        " ON CONFLICT (system, sku, location, state) DO UPDATE SET quantity = excluded.quantity, \
         observed_nanos = excluded.observed_nanos, expected = excluded.expected, \
         diverged_nanos = excluded.diverged_nanos, open = excluded.open, \
         handoff = excluded.handoff, cause = excluded.cause \
         WHERE excluded.observed_nanos > checkpoints.observed_nanos \
         OR (excluded.observed_nanos = checkpoints.observed_nanos \
             AND excluded.open <> checkpoints.open)",
    );
    q
}

pub(super) async fn page(
    st: &SqliteStore,
    f: &CheckpointFilter,
) -> Result<Vec<CheckpointRow>, StoreError> {
    let (a, b, c, d) = f.after.clone().unwrap_or_default();
    let r = sqlx::query(
        "SELECT * FROM checkpoints WHERE (?1 IS NULL OR system = ?1) \
         AND (?2 = 0 OR diverged_nanos IS NOT NULL OR open = 1) \
         AND (?3 = 0 OR (system, sku, location, state) > (?4, ?5, ?6, ?7)) \
         ORDER BY system, sku, location, state LIMIT (SELECT ?8)",
    )
    .bind(f.system.clone())
    .bind(i64::from(f.drifting))
    .bind(i64::from(f.after.is_some()))
    .bind(a)
    .bind(b)
    .bind(c)
    .bind(d)
    .bind(f.limit.max(1) as i64)
    .fetch_all(&st.read)
    .await;
    match r {
        Ok(rows) => rows.iter().map(row).collect(),
        Err(e) if absent(&e) => Ok(vec![]),
        Err(e) => Err(e.into()),
    }
}
