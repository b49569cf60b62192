//! The record of push results (`Outbox::outbox_record`): compare bases, backoff, dead letters and
//! rebases after an override, with what the outbox rows held in memory must learn once it commits.

use super::super::sql::insert_incidents;
use super::super::{SqliteStore, nanos};
use super::immediate;
use crate::outbox::*;
use crate::rows::stored_id;
use crate::{Incident, StoreError};
use chrono::Utc;
use driftless_core::{Sku, SystemId};
use sqlx::sqlite::SqliteConnection;
use sqlx::{QueryBuilder, Row, Sqlite};
use std::collections::HashSet;

/// Records `records` in one transaction, in their order; the skus that are dirty again after it
/// (a newer version arrived while the push was on its way).
pub(super) async fn record(
    store: &SqliteStore,
    channel: &str,
    records: &[PushRecord],
) -> Result<Vec<Sku>, StoreError> {
    let mut again = Vec::new();
    if records.is_empty() {
        return Ok(again);
    }
    // What the rows held in memory (see `marks.rs`) must learn once this commits.
    let mut acks: Vec<(&Sku, i64)> = Vec::new();
    let mut redirty: Vec<&Sku> = Vec::new();
    let mut tx = immediate(store).await?;
    let now = nanos(Utc::now());
    // Runs of acknowledgements (the hot path) are written with multi-row statements; order with
    // the other records is kept.
    let mut acked: Vec<&AckedPush> = Vec::new();
    for r in records {
        if !matches!(r, PushRecord::Acked(_)) && !acked.is_empty() {
            again.extend(write_acked(&mut tx, channel, &acked).await?);
            acked.clear();
        }
        match r {
            PushRecord::Acked(a) => {
                acks.push((&a.sku, a.version));
                acked.push(a);
            }
            PushRecord::Failed(f) => write_failed(&mut tx, channel, f, now).await?,
            PushRecord::Rebased(rb) => {
                write_rebased(&mut tx, channel, rb, now).await?;
                if !rb.hold {
                    redirty.push(&rb.sku);
                }
            }
            PushRecord::Refused(rf) => write_refused(&mut tx, channel, rf, now).await?,
        }
    }
    if !acked.is_empty() {
        again.extend(write_acked(&mut tx, channel, &acked).await?);
    }
    let _turn = tx.commit_holding().await?;
    {
        let mut m = store.marks.lock().unwrap_or_else(|p| p.into_inner());
        for sku in redirty {
            m.redirty(channel, Some(sku), now);
        }
        // A row held in memory answers for itself whether it is still dirty.
        let mut held_again: Vec<Sku> = Vec::new();
        let mut held: HashSet<&Sku> = HashSet::new();
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
    store.changes.marked(now);
    Ok(again)
}

/// A push that failed in doubt: backoff, the version pinned for the retry, a dead letter after the
/// last attempt.
async fn write_failed(
    conn: &mut SqliteConnection,
    channel: &str,
    r: &FailedPush,
    now: i64,
) -> Result<(), StoreError> {
    let FailedPush {
        sku,
        version,
        pinned,
        attempts,
        next_attempt,
        error,
        dead,
    } = r;
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
    .execute(&mut *conn)
    .await?;
    dead_letter(conn, dead.as_ref()).await
}

/// A compare that found the channel changed by someone else: the new basis, held or dirty again.
async fn write_rebased(
    conn: &mut SqliteConnection,
    channel: &str,
    r: &RebasedPush,
    now: i64,
) -> Result<(), StoreError> {
    let RebasedPush {
        sku,
        basis,
        hold,
        incident,
    } = r;
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
    .execute(&mut *conn)
    .await?;
    if !*hold {
        mark_dirty(conn, channel, Some(sku.as_str()), now).await?;
    }
    insert_incidents(conn, std::slice::from_ref(incident)).await
}

/// A push the channel refused. Nothing is in doubt: the channel answered and applied nothing.
async fn write_refused(
    conn: &mut SqliteConnection,
    channel: &str,
    r: &RefusedPush,
    now: i64,
) -> Result<(), StoreError> {
    let RefusedPush {
        sku,
        version,
        basis,
        attempts,
        next_attempt,
        error,
        dead,
    } = r;
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
    .execute(&mut *conn)
    .await?;
    dead_letter(conn, dead.as_ref()).await
}

/// The incident of a dead letter, if the record made one.
async fn dead_letter(
    conn: &mut SqliteConnection,
    dead: Option<&Incident>,
) -> Result<(), StoreError> {
    match dead {
        Some(i) => insert_incidents(conn, std::slice::from_ref(i)).await,
        None => Ok(()),
    }
}

/// Writes a run of acknowledgements: the new compare basis, the outbox rows cleaned where no newer
/// version arrived meanwhile (a newer version stays dirty and is pushed next, coalescing everything
/// in between), and the push log.
async fn write_acked(
    conn: &mut SqliteConnection,
    channel: &str,
    run: &[&AckedPush],
) -> Result<Vec<Sku>, StoreError> {
    let mut again = Vec::new();
    let rows: Vec<(&Sku, i64, i64, i64, &PushSample)> = run
        .iter()
        .map(|a| (&a.sku, a.version, a.quantity, nanos(a.at), &a.sample))
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
pub(super) async fn mark_dirty(
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
