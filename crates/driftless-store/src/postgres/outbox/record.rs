//! The record of push results (`Outbox::outbox_record`), inside the transaction `PgStore::write`
//! runs: compare bases, backoff, dead letters and rebases after an override, with runs of
//! acknowledgements written over arrays.

use super::super::nanos;
use super::super::records::insert_incidents;
use crate::outbox::*;
use chrono::Utc;
use driftless_core::{Sku, SystemId};
use sqlx::PgConnection;

/// Writes push records in order (as SQLite does); returns the acknowledged skus still dirty.
/// Runs of acknowledgements, the usual record, are written by three statements over arrays
/// rather than three per record: a round trip each is what recording costs.
pub(super) async fn record(
    tx: &mut PgConnection,
    channel: &str,
    records: &[PushRecord],
) -> Result<Vec<Sku>, sqlx::Error> {
    let now = nanos(Utc::now());
    let mut again = Vec::new();
    let mut acked: Vec<&AckedPush> = Vec::new();
    for r in records {
        if !matches!(r, PushRecord::Acked(_)) {
            again.extend(write_acked(tx, channel, &acked).await?);
            acked.clear();
        }
        match r {
            PushRecord::Acked(a) => acked.push(a),
            PushRecord::Failed(f) => write_failed(tx, channel, f, now).await?,
            PushRecord::Rebased(rb) => write_rebased(tx, channel, rb, now).await?,
            PushRecord::Refused(rf) => write_refused(tx, channel, rf, now).await?,
        }
    }
    again.extend(write_acked(tx, channel, &acked).await?);
    again.sort();
    again.dedup();
    Ok(again)
}

/// A push that failed in doubt: backoff, the version pinned for the retry, a dead letter after the
/// last attempt.
async fn write_failed(
    tx: &mut PgConnection,
    channel: &str,
    r: &FailedPush,
    now: i64,
) -> Result<(), sqlx::Error> {
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
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (channel, sku) DO UPDATE SET attempts = $3, \
         next_attempt_nanos = $4, last_error = $5, last_error_nanos = $6, \
         dead_version = $7, pinned_version = $8, pinned_quantity = $9",
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
        insert_incidents(tx, std::slice::from_ref(i)).await?;
    }
    Ok(())
}

/// A compare that found the channel changed by someone else: the new basis, held or dirty again.
async fn write_rebased(
    tx: &mut PgConnection,
    channel: &str,
    r: &RebasedPush,
    now: i64,
) -> Result<(), sqlx::Error> {
    let RebasedPush {
        sku,
        basis,
        hold,
        incident,
    } = r;
    sqlx::query(
        "INSERT INTO channel_skus (channel, sku, basis, held, attempts, \
         next_attempt_nanos, diverged_nanos) VALUES ($1, $2, $3, $4, 0, 0, NULL) \
         ON CONFLICT (channel, sku) DO UPDATE SET basis = $3, held = $4, \
         attempts = 0, next_attempt_nanos = 0, diverged_nanos = NULL, \
         pinned_version = NULL, pinned_quantity = NULL",
    )
    .bind(channel)
    .bind(sku.as_str())
    .bind(basis)
    .bind(*hold)
    .execute(&mut *tx)
    .await?;
    if !*hold {
        sqlx::query(
            "UPDATE outbox SET dirty = TRUE, changed_nanos = GREATEST(changed_nanos, $3) \
             WHERE channel = $1 AND sku = $2",
        )
        .bind(channel)
        .bind(sku.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    insert_incidents(tx, std::slice::from_ref(incident)).await
}

/// A push the channel refused.
async fn write_refused(
    tx: &mut PgConnection,
    channel: &str,
    r: &RefusedPush,
    now: i64,
) -> Result<(), sqlx::Error> {
    let RefusedPush {
        sku,
        version,
        basis,
        attempts,
        next_attempt,
        error,
        dead,
    } = r;
    // Nothing is in doubt: the channel answered and applied nothing.
    sqlx::query(
        "INSERT INTO channel_skus (channel, sku, basis, attempts, \
         next_attempt_nanos, last_error, last_error_nanos, dead_version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (channel, sku) DO UPDATE SET basis = $3, attempts = $4, \
         next_attempt_nanos = $5, last_error = $6, last_error_nanos = $7, \
         dead_version = $8, pinned_version = NULL, pinned_quantity = NULL",
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
        insert_incidents(tx, std::slice::from_ref(i)).await?;
    }
    Ok(())
}

/// A run of acknowledgements: each sku's compare value and acknowledged version (the last one of
/// the run for a sku acknowledged twice, as writing them in turn would leave it), its outbox row
/// clean unless a newer version arrived meanwhile (a newer one stays dirty and is pushed next,
/// coalescing everything in between), and every push in the log. Returns the skus still dirty.
async fn write_acked(
    tx: &mut PgConnection,
    channel: &str,
    acked: &[&AckedPush],
) -> Result<Vec<Sku>, sqlx::Error> {
    if acked.is_empty() {
        return Ok(Vec::new());
    }
    // The last acknowledgement per sku, in key order: the order appliers lock outbox rows in.
    let mut last: std::collections::BTreeMap<&str, &AckedPush> = Default::default();
    for &a in acked {
        last.insert(a.sku.as_str(), a);
    }
    let skus: Vec<&str> = last.keys().copied().collect();
    let versions: Vec<i64> = last.values().map(|a| a.version).collect();
    let quantities: Vec<i64> = last.values().map(|a| a.quantity).collect();
    let ats: Vec<i64> = last.values().map(|a| nanos(a.at)).collect();
    sqlx::query(
        "INSERT INTO channel_skus (channel, sku, acked_quantity, acked_version, acked_nanos, \
         basis, attempts, next_attempt_nanos) \
         SELECT $1, s, q, v, t, q, 0, 0 FROM UNNEST($2::text[], $3::int8[], $4::int8[], \
         $5::int8[]) AS u(s, q, v, t) \
         ON CONFLICT (channel, sku) DO UPDATE SET acked_quantity = EXCLUDED.acked_quantity, \
         acked_version = EXCLUDED.acked_version, acked_nanos = EXCLUDED.acked_nanos, \
         basis = EXCLUDED.basis, pinned_version = NULL, pinned_quantity = NULL, attempts = 0, \
         next_attempt_nanos = 0, last_error = NULL, last_error_nanos = NULL, \
         dead_version = NULL, diverged_nanos = NULL",
    )
    .bind(channel)
    .bind(&skus)
    .bind(&quantities)
    .bind(&versions)
    .bind(&ats)
    .execute(&mut *tx)
    .await?;
    let still: Vec<String> = sqlx::query_scalar::<_, Option<String>>(
        "UPDATE outbox o SET dirty = (o.version <> u.v) \
         FROM UNNEST($2::text[], $3::int8[]) AS u(s, v) \
         WHERE o.channel = $1 AND o.sku = u.s RETURNING CASE WHEN o.dirty THEN o.sku END",
    )
    .bind(channel)
    .bind(&skus)
    .bind(&versions)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .flatten()
    .collect();
    let mut log = PushLogColumns::default();
    for &a in acked {
        log.push(a);
    }
    sqlx::query(
        "INSERT INTO push_log (channel, sku, version, quantity, source, occurred_nanos, \
         received_nanos, changed_nanos, acked_nanos) \
         SELECT $1, s, v, q, src, occ, rec, chg, ack FROM UNNEST($2::text[], $3::int8[], \
         $4::int8[], $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::int8[]) \
         AS u(s, v, q, src, occ, rec, chg, ack)",
    )
    .bind(channel)
    .bind(&log.skus)
    .bind(&log.versions)
    .bind(&log.quantities)
    .bind(&log.sources)
    .bind(&log.occurred)
    .bind(&log.received)
    .bind(&log.changed)
    .bind(&log.acked)
    .execute(&mut *tx)
    .await?;
    Ok(still
        .iter()
        .filter_map(|s| last.get(s.as_str()).map(|a| a.sku.clone()))
        .collect())
}

/// The columns of `push_log` rows, as arrays to bind.
#[derive(Default)]
struct PushLogColumns<'a> {
    skus: Vec<&'a str>,
    versions: Vec<i64>,
    quantities: Vec<i64>,
    sources: Vec<Option<&'a str>>,
    occurred: Vec<Option<i64>>,
    received: Vec<Option<i64>>,
    changed: Vec<i64>,
    acked: Vec<i64>,
}

impl<'a> PushLogColumns<'a> {
    fn push(&mut self, a: &'a AckedPush) {
        self.skus.push(a.sku.as_str());
        self.versions.push(a.version);
        self.quantities.push(a.quantity);
        self.sources
            .push(a.sample.source.as_ref().map(SystemId::as_str));
        self.occurred.push(a.sample.occurred_nanos);
        self.received.push(a.sample.received_nanos);
        self.changed.push(a.sample.changed_nanos);
        self.acked.push(a.sample.acked_nanos);
    }
}
