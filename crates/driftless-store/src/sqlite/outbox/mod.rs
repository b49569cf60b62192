//! The SQLite side of fan-out ([`crate::Outbox`]): `scan` reads dirty rows with the outbox rows
//! held in memory (`marks.rs`) laid over their table copies; `record` writes push results
//! (compare bases, backoff, dead letters); `status` is what the operator reads; holds,
//! replays, observations and the push log's trimming are here.
//!
//! Every write here runs in a `BEGIN IMMEDIATE` transaction on a connection of its own, so it queues
//! behind the ledger writer (which also begins immediately) instead of invalidating its snapshot.

mod record;
mod scan;
mod status;

use super::{SqliteStore, from_nanos, nanos};
use crate::outbox::*;
use crate::{BoxFuture, StoreError};
use chrono::{DateTime, Utc};
use driftless_core::Sku;
use record::mark_dirty;
use sqlx::sqlite::{SqliteConnection, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Sqlite};
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

impl Outbox for SqliteStore {
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
        Box::pin(record::record(self, channel, records))
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
