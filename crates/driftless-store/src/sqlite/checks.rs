//! What the writer looks up for the consistency rules (`driftless_core::checkpoint`): the deltas
//! a `set` swallows when it re-bases a cell, with their sources, for `cross_source_cover`. The
//! judging itself is the core's; this only reads.
//!
//! A delta can be in three places (see `keys.rs`): decided earlier in the group being decided
//! (not stored yet), in the index tail (stored, not yet in `event_keys`), or in `event_keys`.
//! The range asked is bounded by `[checkpoints] cover_window`, and each place by `MAX_LOOKED`, so
//! a set never scans a cell's whole history.

use super::keys::KeyTail;
use super::writer::Pending;
use crate::StoreError;
use crate::rows::swallowed_of;
use driftless_core::checkpoint::{Checkpoints, Swallowed};
use driftless_core::{Cell, Decision, OrderKey, Prepared, SystemId};
use sqlx::sqlite::SqliteConnection;
use sqlx::{AssertSqlSafe, Row};
use std::collections::HashSet;

/// At most this many swallowed deltas are read from each place: the incident names a few, and
/// one is enough to judge.
const MAX_LOOKED: usize = 64;

/// The deltas of other sources the decided `set` would swallow, per re-based state.
pub(super) async fn swallowed(
    conn: &mut SqliteConnection,
    keys: &std::sync::RwLock<KeyTail>,
    pending: &Pending<'_>,
    checks: &Checkpoints,
    p: &Prepared,
    d: &Decision,
    cells: &[Cell; 5],
) -> Result<Vec<Swallowed>, StoreError> {
    let mut out = Vec::new();
    let ev = &p.event;
    for (state, lo, hi) in checks.rebased_ranges(p, d, cells) {
        let inside = |k: &OrderKey| *k > lo && *k < hi;
        let mut seen: HashSet<i64> = HashSet::new();
        // This group's earlier events.
        for r in pending
            .adjusts_of(&ev.sku, &ev.location)
            .filter(|r| r.p.event.source != ev.source)
        {
            if let Some(delta) = r.p.base.get(state)
                && inside(&r.p.event.order_key())
                && out.len() < MAX_LOOKED
            {
                seen.insert(r.lsn);
                out.push(Swallowed {
                    source: r.p.event.source.clone(),
                    key: r.p.event.order_key(),
                    state,
                    delta,
                });
            }
        }
        // The index tail: keys and deltas in memory, the source from the stored event.
        let held: Vec<(i64, OrderKey, i64)> = {
            let t = keys.read().unwrap_or_else(|p| p.into_inner());
            t.of_sku(&ev.sku)
                .filter(|(l, _)| *l == &ev.location)
                .flat_map(|(_, v)| v.iter())
                .filter(|e| inside(&e.key))
                .filter_map(|e| e.deltas[state.index()].map(|d| (e.lsn, e.key.clone(), d)))
                .take(MAX_LOOKED)
                .collect()
        };
        for (lsn, key, delta) in held {
            if !seen.insert(lsn) {
                continue;
            }
            let source: Option<String> =
                sqlx::query_scalar("SELECT source FROM events WHERE lsn = ?")
                    .bind(lsn)
                    .fetch_optional(&mut *conn)
                    .await?;
            if let Some(source) = source.and_then(|s| SystemId::parse(s).ok())
                && source != ev.source
            {
                out.push(Swallowed {
                    source,
                    key,
                    state,
                    delta,
                });
            }
        }
        // The index table. The limit is written into the text, not bound (see `mod.rs`): this
        // statement runs for every count.
        let col = state.as_str();
        let sql = format!(
            "SELECT x.lsn, e.source, x.at_nanos, x.seq, x.id, e.{col} FROM event_keys x \
             JOIN events e ON e.lsn = x.lsn WHERE x.sku = ? AND x.location = ? \
             AND x.at_nanos >= ? AND x.at_nanos <= ? AND e.kind = 'adjust' AND e.effective = 1 \
             AND e.{col} IS NOT NULL AND e.source <> ? ORDER BY x.at_nanos DESC LIMIT {MAX_LOOKED}"
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(ev.sku.to_string())
            .bind(ev.location.to_string())
            .bind(lo.position.at_nanos)
            .bind(hi.position.at_nanos)
            .bind(ev.source.to_string())
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            let lsn: i64 = row.try_get(0)?;
            let columns = (
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
                row.try_get(4)?,
            );
            if let Some(s) = swallowed_of(columns, state, row.try_get(5)?)
                && inside(&s.key)
                && seen.insert(lsn)
            {
                out.push(s);
            }
        }
    }
    Ok(out)
}
