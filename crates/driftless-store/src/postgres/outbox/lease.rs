//! The per-channel lease (`Outbox::channel_lease`): a session-level advisory lock on a connection
//! of its own, held by a task that pings it (see the module's doc).

use super::super::PgStore;
use super::super::errors::db;
use crate::StoreError;
use crate::outbox::*;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::time::Duration;

/// How often a lease's connection is checked.
const LEASE_PING: Duration = Duration::from_secs(1);

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

/// Takes `channel`'s lease if no process holds it; `None` if one does.
pub(super) async fn channel_lease(
    store: &PgStore,
    channel: &str,
) -> Result<Option<ChannelLease>, StoreError> {
    let mut conn = store.connect.connect().await.map_err(db)?;
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
