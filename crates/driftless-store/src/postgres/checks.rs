//! What the appliers look up for the consistency rules (`driftless_core::checkpoint`): the deltas
//! of other sources a `set` swallows when it re-bases a cell, for `cross_source_cover`. The
//! judging is the core's; this only reads, inside the group's transaction and under the slot's
//! row lock, so what it sees is what the set re-bases over.
//!
//! A delta is either stored (the `events` table, through its per-cell index) or decided earlier
//! in the group being decided (the caller passes those). The range asked is bounded by
//! `[checkpoints] cover_window`, and each place by `MAX_LOOKED`.

use crate::rows::swallowed_of;
use driftless_core::checkpoint::{Checkpoints, Swallowed};
use driftless_core::{Cell, Decision, OrderKey, Prepared};
use sqlx::{PgConnection, Row};

/// At most this many swallowed deltas are read from each place: the incident names a few, and
/// one is enough to judge.
const MAX_LOOKED: usize = 64;

/// The deltas of other sources the decided `set` would swallow, per re-based state. `group`
/// holds the effective deltas of this slot decided earlier in the group, from any source.
pub(super) async fn swallowed(
    tx: &mut PgConnection,
    checks: &Checkpoints,
    p: &Prepared,
    d: &Decision,
    cells: &[Cell; 5],
    group: &[Swallowed],
) -> Result<Vec<Swallowed>, sqlx::Error> {
    let mut out = Vec::new();
    let ev = &p.event;
    for (state, lo, hi) in checks.rebased_ranges(p, d, cells) {
        let inside = |k: &OrderKey| *k > lo && *k < hi;
        out.extend(
            group
                .iter()
                .filter(|s| s.state == state && s.source != ev.source && inside(&s.key))
                .take(MAX_LOOKED)
                .cloned(),
        );
        let col = state.as_str();
        let sql = format!(
            "SELECT source, at_nanos, seq, id, {col} FROM events WHERE sku = $1 AND location = $2 \
             AND at_nanos >= $3 AND at_nanos <= $4 AND kind = 'adjust' AND effective \
             AND {col} IS NOT NULL AND source <> $5 ORDER BY at_nanos DESC LIMIT $6"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ev.sku.as_str())
            .bind(ev.location.as_str())
            .bind(lo.position.at_nanos)
            .bind(hi.position.at_nanos)
            .bind(ev.source.as_str())
            .bind(MAX_LOOKED as i64)
            .fetch_all(&mut *tx)
            .await?;
        for row in rows {
            let columns = (
                row.try_get(0)?,
                row.try_get(1)?,
                row.try_get(2)?,
                row.try_get(3)?,
            );
            if let Some(s) = swallowed_of(columns, state, row.try_get(4)?)
                && inside(&s.key)
            {
                out.push(s);
            }
        }
    }
    Ok(out)
}
