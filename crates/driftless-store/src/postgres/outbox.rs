//! The PostgreSQL side of fan-out ([`crate::Outbox`]): dirty rows read with the channel state
//! they need, push records, backoff, dead letters, holds, observations, the push log, and the
//! per-channel lease that makes one process the channel's only dispatcher.
//!
//! The lease is a session-level advisory lock on a connection of its own: PostgreSQL releases it
//! when that connection ends, so a hub that dies (or loses its connection) frees the channel for
//! another within the time the server notices, and the lease's task, which pings the connection,
//! tells its own process to stop pushing as soon as a ping fails.

use super::errors::{db, retryable};
use super::records::insert_incidents;
use super::{PgStore, from_nanos, nanos, notify_marked};
use crate::outbox::*;
use crate::rows::{stored_id, stored_opt_id};
use crate::{BoxFuture, StoreError};
use chrono::{DateTime, Utc};
use driftless_core::{Sku, SystemId};
use sqlx::postgres::PgRow;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use std::collections::HashMap;
use std::time::Duration;

/// Push log rows kept per channel for the matrix and "last push".
const PUSH_LOG_KEEP: i64 = 100_000;

/// How often a lease's connection is checked.
const LEASE_PING: Duration = Duration::from_secs(1);

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

/// The sweep's read of divergences past the SLA, through `channel_skus_diverged`.
const DIVERGENCES: &str = "SELECT sku, observed_quantity, acked_quantity, diverged_nanos, \
    observed_actor FROM channel_skus WHERE channel = $1 AND diverged_nanos IS NOT NULL \
    AND diverged_nanos <= $2 AND NOT held AND observed_quantity IS NOT NULL \
    ORDER BY diverged_nanos LIMIT $3";

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

/// A stable 64-bit key for a channel's advisory lock (FNV-1a: the same in every process and
/// build, unlike the standard library's hasher).
fn lease_key(channel: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "driftless-channel:".bytes().chain(channel.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

impl PgStore {
    /// Runs `f` in a transaction, again after a deadlock or serialization failure (a
    /// dispatcher's records and an applier's marks lock the same outbox rows).
    ///
    /// The `&'c &'a ()` argument only tells the compiler that the transaction's borrow `'c` is
    /// shorter than what `f` captures (`'a`).
    async fn write<'a, T, F>(&'a self, mut f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnMut(&'c mut PgConnection, &'c &'a ()) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    {
        let mut attempt = 0u32;
        loop {
            let mut tx = self.pool.begin().await.map_err(db)?;
            let r = f(&mut tx, &&()).await;
            let r = match r {
                Ok(v) => tx.commit().await.map(|_| v),
                Err(e) => Err(e),
            };
            match r {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
                }
                Err(e) => return Err(db(e)),
            }
        }
    }

    /// Tells this process's dispatchers about a committed write (see [`OutboxSignal`]).
    fn bump(&self, floor: i64) {
        self.changes.marked(floor);
    }
}

impl Outbox for PgStore {
    fn outbox_changes(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.changes.subscribe()
    }

    fn outbox_scan<'a>(
        &'a self,
        scan: &'a Scan,
    ) -> BoxFuture<'a, Result<Vec<OutboxRow>, StoreError>> {
        Box::pin(async move {
            let limit = scan.limit.clamp(1, MAX_SCAN) as i64;
            let rows = match &scan.from {
                ScanFrom::After(at, sku) => {
                    sqlx::query(sqlx::AssertSqlSafe(scan_after_sql()))
                        .bind(&scan.channel)
                        .bind(*at)
                        .bind(sku.as_ref().map_or("", Sku::as_str))
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await
                }
                ScanFrom::Skus(skus) => {
                    let skus: Vec<&str> =
                        skus.iter().take(limit as usize).map(Sku::as_str).collect();
                    sqlx::query(sqlx::AssertSqlSafe(scan_skus_sql()))
                        .bind(&scan.channel)
                        .bind(&skus)
                        .fetch_all(&self.pool)
                        .await
                }
            }
            .map_err(db)?;
            rows.iter().map(row_of).collect()
        })
    }

    fn outbox_record<'a>(
        &'a self,
        channel: &'a str,
        records: &'a [PushRecord],
    ) -> BoxFuture<'a, Result<Vec<Sku>, StoreError>> {
        Box::pin(async move {
            if records.is_empty() {
                return Ok(Vec::new());
            }
            // Only this process records the channel's pushes (it holds the lease), so its own
            // dispatcher is the one to tell about rows a compare failure made dirty again.
            let floor = nanos(Utc::now());
            let again = self
                .write(|tx, _| Box::pin(record(tx, channel, records)))
                .await?;
            self.bump(floor);
            Ok(again)
        })
    }

    fn channel_status<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<ChannelStatus, StoreError>> {
        Box::pin(status(self, channel))
    }

    fn outbox_hold<'a>(
        &'a self,
        channel: &'a str,
        sku: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(|tx, _| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO channel_skus (channel, sku, held) VALUES ($1, $2, TRUE) \
                         ON CONFLICT (channel, sku) DO UPDATE SET held = TRUE",
                    )
                    .bind(channel)
                    .bind(sku)
                    .execute(&mut *tx)
                    .await?;
                    Ok(())
                })
            })
            .await?;
            self.bump(WAKE_ONLY);
            Ok(())
        })
    }

    fn outbox_replay<'a>(
        &'a self,
        channel: &'a str,
        sku: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let floor = nanos(Utc::now());
            let me = self.me.as_str();
            let n = self
                .write(|tx, _| {
                    Box::pin(async move {
                        let now = nanos(Utc::now());
                        let skus: Vec<String> = sqlx::query_scalar(
                            "UPDATE channel_skus SET dead_version = NULL, held = FALSE, \
                             attempts = 0, next_attempt_nanos = 0 WHERE channel = $1 \
                             AND ($2::text IS NULL OR sku = $2) \
                             AND (dead_version IS NOT NULL OR held) RETURNING sku",
                        )
                        .bind(channel)
                        .bind(sku)
                        .fetch_all(&mut *tx)
                        .await?;
                        sqlx::query(
                            "UPDATE outbox SET dirty = TRUE, \
                             changed_nanos = GREATEST(changed_nanos, $3) \
                             WHERE channel = $1 AND sku = ANY($2)",
                        )
                        .bind(channel)
                        .bind(&skus)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        // The channel's dispatcher may run in another process.
                        notify_marked(tx, floor, me).await?;
                        Ok(skus.len() as u64)
                    })
                })
                .await?;
            self.bump(floor);
            Ok(n)
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
            let t = nanos(at);
            self.write(|tx, _| {
                Box::pin(async move {
                    // As in SQLite: the divergence clock starts at the first differing
                    // observation and stops when the channel agrees again or a new push is
                    // acknowledged; an observation older than the one held changes nothing.
                    sqlx::query(
                        "INSERT INTO channel_skus AS c (channel, sku, observed_quantity, \
                         observed_nanos, observed_actor, diverged_nanos) \
                         VALUES ($1, $2, $3, $4, $5, $4) \
                         ON CONFLICT (channel, sku) DO UPDATE SET observed_quantity = $3, \
                         observed_nanos = $4, observed_actor = $5, diverged_nanos = CASE \
                           WHEN c.acked_nanos IS NOT NULL AND $4 < c.acked_nanos THEN c.diverged_nanos \
                           WHEN c.acked_quantity IS NOT NULL AND c.acked_quantity = $3 THEN NULL \
                           WHEN c.diverged_nanos IS NULL THEN $4 ELSE c.diverged_nanos END \
                         WHERE c.observed_nanos IS NULL OR $4 >= c.observed_nanos",
                    )
                    .bind(channel)
                    .bind(sku)
                    .bind(quantity)
                    .bind(t)
                    .bind(actor)
                    .execute(&mut *tx)
                    .await?;
                    let r = sqlx::query(
                        "SELECT acked_quantity, diverged_nanos FROM channel_skus \
                         WHERE channel = $1 AND sku = $2",
                    )
                    .bind(channel)
                    .bind(sku)
                    .fetch_one(&mut *tx)
                    .await?;
                    Ok(Observed {
                        acked_quantity: r.try_get(0)?,
                        diverged_since: r.try_get::<Option<i64>, _>(1)?.map(from_nanos),
                    })
                })
            })
            .await
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
                .fetch_all(&self.pool)
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
        })
    }

    fn push_samples(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PushSample>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT p.channel, p.source, p.occurred_nanos, p.received_nanos, \
                 p.changed_nanos, p.acked_nanos FROM (SELECT DISTINCT channel FROM push_log) c \
                 CROSS JOIN LATERAL (SELECT * FROM push_log l WHERE l.channel = c.channel \
                 ORDER BY l.id DESC LIMIT $1) p",
            )
            .bind(limit.max(1) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            rows.iter()
                .map(|r| {
                    Ok(PushSample {
                        channel: r.try_get(0).map_err(db)?,
                        source: stored_opt_id(
                            "source",
                            r.try_get(1).map_err(db)?,
                            SystemId::parse,
                        )?,
                        occurred_nanos: r.try_get(2).map_err(db)?,
                        received_nanos: r.try_get(3).map_err(db)?,
                        changed_nanos: r.try_get(4).map_err(db)?,
                        acked_nanos: r.try_get(5).map_err(db)?,
                    })
                })
                .collect()
        })
    }

    fn source_lags<'a>(
        &'a self,
        sources: &'a [String],
        limit: usize,
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<i64>>, StoreError>> {
        Box::pin(async move {
            let mut out = HashMap::new();
            for s in sources {
                let lags: Vec<i64> = sqlx::query_scalar(
                    "SELECT received_nanos - at_nanos FROM events WHERE source = $1 \
                     AND outcome = 'applied' ORDER BY lsn DESC LIMIT $2",
                )
                .bind(s)
                .bind(limit.max(1) as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
                if !lags.is_empty() {
                    out.insert(s.clone(), lags);
                }
            }
            Ok(out)
        })
    }

    fn outbox_maintain<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query(
                "DELETE FROM push_log WHERE channel = $1 AND id <= \
                 (SELECT MAX(id) FROM push_log WHERE channel = $1) - $2",
            )
            .bind(channel)
            .bind(PUSH_LOG_KEEP)
            .execute(&self.pool)
            .await
            .map_err(db)?;
            Ok(())
        })
    }

    fn channel_lease<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<ChannelLease>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.connect.connect().await.map_err(db)?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lease_key(channel))
                .fetch_one(&mut conn)
                .await
                .map_err(db)?;
            if !got {
                let _ = conn.close().await;
                return Ok(None);
            }
            let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
            let (release_tx, release_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(keep_lease(conn, channel.to_owned(), lost_tx, release_rx));
            Ok(Some(ChannelLease::kept(lost_rx, release_tx)))
        })
    }
}

/// Holds a lease's connection (and with it the advisory lock) until the lease is dropped,
/// checking it every [`LEASE_PING`]; a failed check reports the lease lost.
async fn keep_lease(
    mut conn: PgConnection,
    channel: String,
    lost: tokio::sync::watch::Sender<bool>,
    mut release: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(LEASE_PING);
    loop {
        tokio::select! {
            _ = &mut release => {
                // Ending the session releases the lock.
                let _ = conn.close().await;
                return;
            }
            _ = tick.tick() => {
                let ok = tokio::time::timeout(LEASE_PING * 2, sqlx::query("SELECT 1").execute(&mut conn)).await;
                if !matches!(ok, Ok(Ok(_))) {
                    tracing::warn!(channel, "lost the channel's lease (its connection failed); stopping its pushes");
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
}

/// Writes push records in order (as SQLite does); returns the acknowledged skus still dirty.
/// Runs of acknowledgements, the usual record, are written by three statements over arrays
/// rather than three per record: a round trip each is what recording costs.
async fn record(
    tx: &mut PgConnection,
    channel: &str,
    records: &[PushRecord],
) -> Result<Vec<Sku>, sqlx::Error> {
    let now = nanos(Utc::now());
    let mut again = Vec::new();
    let mut acked: Vec<Ack<'_>> = Vec::new();
    for r in records {
        if let PushRecord::Acked {
            sku,
            version,
            quantity,
            at,
            sample,
        } = r
        {
            acked.push(Ack {
                sku,
                version: *version,
                quantity: *quantity,
                at: nanos(*at),
                sample,
            });
            continue;
        }
        again.extend(write_acked(tx, channel, &acked).await?);
        acked.clear();
        match r {
            // Gathered into the run above.
            PushRecord::Acked { .. } => {}
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
            }
            PushRecord::Rebased {
                sku,
                basis,
                hold,
                incident,
            } => {
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
                insert_incidents(tx, std::slice::from_ref(incident)).await?;
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
            }
        }
    }
    again.extend(write_acked(tx, channel, &acked).await?);
    again.sort();
    again.dedup();
    Ok(again)
}

/// One acknowledged push, as [`write_acked`] takes it.
struct Ack<'a> {
    sku: &'a Sku,
    version: i64,
    quantity: i64,
    at: i64,
    sample: &'a PushSample,
}

/// A run of acknowledgements: each sku's compare value and acknowledged version (the last one of
/// the run for a sku acknowledged twice, as writing them in turn would leave it), its outbox row
/// clean unless a newer version arrived meanwhile (a newer one stays dirty and is pushed next,
/// coalescing everything in between), and every push in the log. Returns the skus still dirty.
async fn write_acked(
    tx: &mut PgConnection,
    channel: &str,
    acked: &[Ack<'_>],
) -> Result<Vec<Sku>, sqlx::Error> {
    if acked.is_empty() {
        return Ok(Vec::new());
    }
    // The last acknowledgement per sku, in key order: the order appliers lock outbox rows in.
    let mut last: std::collections::BTreeMap<&str, &Ack<'_>> = Default::default();
    for a in acked {
        last.insert(a.sku.as_str(), a);
    }
    let skus: Vec<&str> = last.keys().copied().collect();
    let versions: Vec<i64> = last.values().map(|a| a.version).collect();
    let quantities: Vec<i64> = last.values().map(|a| a.quantity).collect();
    let ats: Vec<i64> = last.values().map(|a| a.at).collect();
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
    for a in acked {
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
    fn push(&mut self, a: &Ack<'a>) {
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

/// `GET /v1/channels/{id}`, from one snapshot.
async fn status(store: &PgStore, channel: &str) -> Result<ChannelStatus, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;
    use std::str::FromStr;

    /// Both scans look each row's `channel_skus` row up by its whole key whatever the tables'
    /// statistics say: here with the generic plan made while the tables are empty, which a new
    /// hub's pooled connections cache. A plain join planned there scanned every `channel_skus` row
    /// of the channel for each outbox row read. The sweep reads through its index.
    #[tokio::test]
    async fn scans_look_channel_skus_up_by_key_on_empty_tables() {
        let url = std::env::var("DRIFTLESS_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let opts = sqlx::postgres::PgConnectOptions::from_str(&url).expect("a database URL");
        let mut conn = match PgConnection::connect_with(&opts).await {
            Ok(c) => c,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("PostgreSQL plan test skipped: no server at {url} ({e})");
                return;
            }
            Err(e) => panic!("CI=true and PostgreSQL is unreachable at {url}: {e}"),
        };
        // In a schema of its own inside a transaction that is rolled back: nothing is left.
        let mut tx = conn.begin().await.unwrap();
        for sql in [
            "CREATE SCHEMA driftless_plan_test",
            "SET LOCAL search_path = driftless_plan_test",
            "SET LOCAL plan_cache_mode = force_generic_plan",
        ] {
            sqlx::query(sql).execute(&mut *tx).await.unwrap();
        }
        super::super::schema::migrate(&mut tx).await.unwrap();
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
