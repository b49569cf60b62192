//! The PostgreSQL side of fan-out ([`crate::Outbox`]): `scan` reads dirty rows with the channel
//! state they need; `record` writes push records (compare bases, backoff, dead letters); `status`
//! is what the operator reads; `lease` is the per-channel lease that makes one process the
//! channel's only dispatcher; holds, replays, observations and the push log's trimming are here.
//!
//! The lease is a session-level advisory lock on a connection of its own: PostgreSQL releases it
//! when that connection ends, so a hub that dies (or loses its connection) frees the channel for
//! another within the time the server notices, and the lease's task, which pings the connection,
//! tells its own process to stop pushing as soon as a ping fails.

mod lease;
mod record;
mod scan;
mod status;

use super::errors::{db, retryable};
use super::{PgStore, from_nanos, nanos, notify_marked};
use crate::outbox::*;
use crate::{BoxFuture, StoreError};
use chrono::{DateTime, Utc};
use driftless_core::Sku;
use sqlx::{PgConnection, Row};
use std::collections::HashMap;
use std::time::Duration;

/// Push log rows kept per channel for the matrix and "last push".
const PUSH_LOG_KEEP: i64 = 100_000;

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
        Box::pin(scan::scan(self, scan))
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
                .write(|tx, _| Box::pin(record::record(tx, channel, records)))
                .await?;
            self.bump(floor);
            Ok(again)
        })
    }

    fn channel_status<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<ChannelStatus, StoreError>> {
        Box::pin(status::channel_status(self, channel))
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
        Box::pin(status::divergences(self, channel, before, limit))
    }

    fn push_samples(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PushSample>, StoreError>> {
        Box::pin(status::push_samples(self, limit))
    }

    fn source_lags<'a>(
        &'a self,
        sources: &'a [String],
        limit: usize,
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<i64>>, StoreError>> {
        Box::pin(status::source_lags(self, sources, limit))
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
        Box::pin(lease::channel_lease(self, channel))
    }
}

/// A connection for the plan tests (`scan.rs`, `status.rs`) to the server of
/// `DRIFTLESS_TEST_DATABASE_URL`; `None`, saying so, when there is none (a failure under `CI=true`).
#[cfg(test)]
async fn plan_test_connection() -> Option<PgConnection> {
    use sqlx::Connection;
    use std::str::FromStr;
    let url = std::env::var("DRIFTLESS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let opts = sqlx::postgres::PgConnectOptions::from_str(&url).expect("a database URL");
    match PgConnection::connect_with(&opts).await {
        Ok(c) => Some(c),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("PostgreSQL plan test skipped: no server at {url} ({e})");
            None
        }
        Err(e) => panic!("CI=true and PostgreSQL is unreachable at {url}: {e}"),
    }
}

/// Makes the plan tests' transaction plan over empty tables of a schema of its own, with the
/// generic plans a new hub's pooled connections cache.
#[cfg(test)]
async fn plan_test_schema(tx: &mut PgConnection) {
    for sql in [
        "CREATE SCHEMA driftless_plan_test",
        "SET LOCAL search_path = driftless_plan_test",
        "SET LOCAL plan_cache_mode = force_generic_plan",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    super::schema::migrate(tx).await.unwrap();
}
