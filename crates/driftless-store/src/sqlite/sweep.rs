//! The writer's side of writing behind (the protocol is in `behind.rs`): where the writer holds
//! each kind (cells, outbox rows, index entries), how it writes a slice of one, and the two
//! moments it does: beside a group's events (phase 5 of a group commit), and on its own when the
//! writer is idle or closing. The three kinds go through the same functions; what differs per
//! kind is in its [`Behind`] impl.

use super::behind::{SliceBudget, Watermark, WriteBehind, keep_all};
use super::cells::{CellCache, FlushRows};
use super::keys::{KeySlice, KeyTail};
use super::marks::{MarkRow, Marks};
use super::sql::{get_meta, set_meta, set_metas, write_cells, write_keys, write_marks};
use super::writer::{Decided, FLUSH_SLICE, Held, Published, Writer, settle};
use super::{SqliteOptions, StoreError};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use std::future::Future;
use std::ops::{Deref, DerefMut};

/// A kind the writer writes behind, as the writer reaches and writes it.
pub(super) trait Behind: WriteBehind + Sized {
    /// The `meta` key its watermark is stored under.
    const WATERMARK: &'static str;
    /// Its rows, in the logs.
    const ROWS: &'static str;

    /// The most rows held unwritten before a group writes the excess.
    fn max_held(opts: &SqliteOptions) -> usize;

    /// The kind as the writer holds it (locked where readers and the fan-out share it); never
    /// held across an await.
    fn look(held: &Held) -> impl Deref<Target = Self> + '_;
    fn reach(held: &mut Held) -> impl DerefMut<Target = Self> + '_;

    /// Rows the group adds to what the kind holds.
    fn added(decided: &Decided<'_>) -> usize;

    /// The first position whose changes the kind does not hold yet while the group is written
    /// (see [`WriteBehind::watermark`]); `group_first` is the group's first position.
    fn next(group_first: i64, decided: &Decided<'_>) -> i64;

    /// Whether a group's slice leaves a row out.
    fn left_out(_held: &Held, _decided: &Decided<'_>, _key: &Self::Key) -> bool {
        false
    }

    /// Writes a slice; `last` is the newest stored position.
    fn write(
        tx: &mut SqliteConnection,
        held: &Held,
        slice: &Self::Slice,
        last: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What readers are to see once a slice written on its own has committed (a group's slice
    /// is published with the group, see [`Published`]).
    fn published(_held: &Held, _slice: &Self::Slice) {}
}

impl Behind for CellCache {
    const WATERMARK: &'static str = "cells_watermark";
    const ROWS: &'static str = "cells";

    fn max_held(opts: &SqliteOptions) -> usize {
        opts.max_dirty_slots
    }

    fn look(held: &Held) -> impl Deref<Target = Self> + '_ {
        &held.cache
    }

    fn reach(held: &mut Held) -> impl DerefMut<Target = Self> + '_ {
        &mut held.cache
    }

    fn added(decided: &Decided<'_>) -> usize {
        decided.pending.cells.len()
    }

    /// The group's changes are in the cache already.
    fn next(_group_first: i64, decided: &Decided<'_>) -> i64 {
        decided.next_lsn
    }

    async fn write(
        tx: &mut SqliteConnection,
        _held: &Held,
        slice: &FlushRows,
        last: i64,
    ) -> Result<(), StoreError> {
        write_cells(tx, slice, last).await
    }

    /// The slice's skus leave the overlay: the table holds them now.
    fn published(held: &Held, slice: &FlushRows) {
        let written = Published {
            written: slice.iter().map(|(sku, _)| sku.clone()).collect(),
            ..Published::default()
        };
        written.install(&held.overlay, &held.marks, &held.changes);
    }
}

impl Behind for Marks {
    const WATERMARK: &'static str = "outbox_watermark";
    const ROWS: &'static str = "outbox rows";

    fn max_held(opts: &SqliteOptions) -> usize {
        opts.max_dirty_slots
    }

    fn look(held: &Held) -> impl Deref<Target = Self> + '_ {
        held.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reach(held: &mut Held) -> impl DerefMut<Target = Self> + '_ {
        held.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn added(decided: &Decided<'_>) -> usize {
        decided.pending.outbox.len()
    }

    /// A group's marks join after its commit (see `Published`), from its first position on; a
    /// group that marks nothing leaves nothing of its positions to hold.
    fn next(group_first: i64, decided: &Decided<'_>) -> i64 {
        if decided.pending.outbox.is_empty() {
            decided.next_lsn
        } else {
            group_first
        }
    }

    /// The rows this group marks: they change after the commit, and the slice must not write an
    /// older state over them.
    fn left_out(
        held: &Held,
        decided: &Decided<'_>,
        (channel, sku): &(String, driftless_core::Sku),
    ) -> bool {
        held.channels
            .iter()
            .position(|c| c.id.as_str() == channel)
            .is_some_and(|i| decided.pending.outbox.contains_key(&(i, sku)))
    }

    async fn write(
        tx: &mut SqliteConnection,
        _held: &Held,
        slice: &Vec<MarkRow>,
        _last: i64,
    ) -> Result<(), StoreError> {
        write_marks(tx, slice).await
    }
}

impl Behind for KeyTail {
    const WATERMARK: &'static str = "keys_watermark";
    const ROWS: &'static str = "index entries";

    fn max_held(opts: &SqliteOptions) -> usize {
        opts.max_unindexed_events
    }

    fn look(held: &Held) -> impl Deref<Target = Self> + '_ {
        held.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn reach(held: &mut Held) -> impl DerefMut<Target = Self> + '_ {
        held.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    fn added(decided: &Decided<'_>) -> usize {
        decided.pending.events.len()
    }

    /// The group's entries join the tail during its commit.
    fn next(group_first: i64, _decided: &Decided<'_>) -> i64 {
        group_first
    }

    /// With the table's newest position after it (see `keys.rs`).
    async fn write(
        tx: &mut SqliteConnection,
        held: &Held,
        slice: &KeySlice,
        _last: i64,
    ) -> Result<(), StoreError> {
        let max_at = KeyTail::look(held).written_max_at_after(slice);
        write_keys(tx, slice, max_at).await
    }
}

/// A kind's watermark as stored (the start of the ledger when none is).
pub(super) async fn read_watermark<K: Behind>(
    conn: &mut SqliteConnection,
) -> Result<Watermark, StoreError> {
    Ok(Watermark(get_meta(conn, K::WATERMARK).await?))
}

/// What a group commit writes behind beside its events, and the watermarks that moved.
#[derive(Default)]
pub(super) struct Slices {
    pub(super) cells: FlushRows,
    pub(super) marks: Vec<MarkRow>,
    pub(super) keys: KeySlice,
    pub(super) moved: Vec<(&'static str, Watermark)>,
}

impl Held {
    /// Phase 5, guarded: a slice that fails to write must fail neither this group nor the groups
    /// after it (a writer that stays wedged answers every request with an error until it is
    /// restarted). The slice is undone to a savepoint and the group commits without it; its rows
    /// stay held, and a later slice takes them again.
    pub(super) async fn write_behind_or_skip(
        &mut self,
        tx: &mut SqliteConnection,
        decided: &Decided<'_>,
    ) -> Result<Slices, StoreError> {
        // The savepoint is set by `write_behind`, only when it writes. No RELEASE: the group's
        // COMMIT follows with no statement between, and a COMMIT releases every savepoint. Each
        // statement is a round trip to SQLite's thread (two wake-ups), and a small group (single
        // events) runs few, usually with nothing due behind it.
        match self.write_behind(tx, decided).await {
            Ok(slices) => Ok(slices),
            Err(e) => {
                tracing::warn!(error = %e, "writing behind failed; the group commits without it");
                sqlx::query("ROLLBACK TO behind").execute(&mut *tx).await?;
                sqlx::query("RELEASE behind").execute(&mut *tx).await?;
                Ok(Slices::default())
            }
        }
    }

    /// Phase 5: a slice of each kind that waits, once more of it waits than the writer keeps
    /// unwritten or the replay a crash would need grows long, and the watermarks that moved.
    async fn write_behind(
        &mut self,
        tx: &mut SqliteConnection,
        decided: &Decided<'_>,
    ) -> Result<Slices, StoreError> {
        // Taking a slice reads nothing from the tables, so all three are taken first, and a
        // group with nothing due behind it sends no statement here.
        let (cells, cells_wm) = self.group_slice::<CellCache>(decided);
        let (marks, outbox_wm) = self.group_slice::<Marks>(decided);
        let (keys, keys_wm) = self.group_slice::<KeyTail>(decided);
        // Only the watermarks that moved: a small group usually moves none, and each is a row.
        let moved: Vec<(&'static str, Watermark)> = [cells_wm, outbox_wm, keys_wm]
            .into_iter()
            .filter(|(k, v)| self.stored_meta.get(k) != Some(v))
            .collect();
        let empty = CellCache::slice_len(&cells) == 0
            && Marks::slice_len(&marks) == 0
            && KeyTail::slice_len(&keys) == 0;
        if !(empty && moved.is_empty()) {
            sqlx::query("SAVEPOINT behind").execute(&mut *tx).await?;
            let last = decided.next_lsn - 1;
            CellCache::write(tx, self, &cells, last).await?;
            Marks::write(tx, self, &marks, last).await?;
            KeyTail::write(tx, self, &keys, last).await?;
            let values: Vec<(&str, i64)> = moved.iter().map(|(k, w)| (*k, w.0)).collect();
            set_metas(tx, &values).await?;
        }
        Ok(Slices {
            cells,
            marks,
            keys,
            moved,
        })
    }

    /// One kind's slice beside a group, by the one budget rule; with the watermark to store
    /// beside it once the slice is written.
    fn group_slice<K: Behind>(
        &self,
        decided: &Decided<'_>,
    ) -> (K::Slice, (&'static str, Watermark)) {
        let last = decided.next_lsn - 1;
        let next = K::next(self.next_lsn, decided);
        let (slice, wm) = {
            let kind = K::look(self);
            let tail = last - kind.watermark(next).0;
            let max_replay = self.opts.max_replay_events;
            let budget = SliceBudget::for_group(
                kind.held(),
                K::max_held(&self.opts),
                K::added(decided),
                tail,
                max_replay,
                FLUSH_SLICE,
            );
            let leave_out = |k: &K::Key| K::left_out(self, decided, k);
            let slice = if SliceBudget::takes_oldest(tail, max_replay) {
                kind.take_oldest(budget, &leave_out)
            } else {
                kind.take_slice(budget, &leave_out)
            };
            let wm = kind.watermark_after(&slice, next);
            (slice, wm)
        };
        (slice, (K::WATERMARK, wm))
    }

    /// Phase 7, for what the group wrote behind: its slices are in their tables.
    pub(super) fn written(&mut self, slices: &Slices) {
        self.stored_meta.extend(slices.moved.iter().copied());
        CellCache::reach(self).written(&slices.cells);
        Marks::reach(self).written(&slices.marks);
        KeyTail::reach(self).written(&slices.keys);
    }

    /// Whether anything waits to be written.
    pub(super) fn holds_any(&self) -> bool {
        CellCache::look(self).held() > 0
            || Marks::look(self).held() > 0
            || KeyTail::look(self).held() > 0
    }

    /// Puts every cell held unwritten in the overlay, where readers look (a reader's replay).
    pub(super) fn publish_held_cells(&mut self) {
        let rows = self.cache.take_slice(SliceBudget::ALL, &keep_all);
        let mut ov = self.overlay.write().unwrap_or_else(|p| p.into_inner());
        for (sku, slots) in &rows {
            for (loc, _, cells) in slots {
                super::cells::set_levels(&mut ov, sku, loc, super::cells::levels_of(cells));
            }
        }
    }
}

impl Writer {
    /// Writes every waiting cell, outbox row and index entry, a slice per transaction.
    pub(super) async fn flush_all(&mut self) {
        while self.flush_slice(SliceBudget(FLUSH_SLICE)).await {}
    }

    /// Writes one slice of waiting cells, or else of outbox rows, or else of index entries; false
    /// when nothing waits (or the write failed: the rows stay waiting, and a restart would replay
    /// them).
    pub(super) async fn flush_slice(&mut self, budget: SliceBudget) -> bool {
        // A slice's skus leave the overlay, so the previous group's levels must be in it first.
        settle(&mut self.held.installing).await;
        if CellCache::look(&self.held).held() > 0 {
            self.flush_one::<CellCache>(budget, false).await
        } else if Marks::look(&self.held).held() > 0 {
            self.flush_one::<Marks>(budget, false).await
        } else if KeyTail::look(&self.held).held() > 0 {
            self.flush_one::<KeyTail>(budget, false).await
        } else {
            false
        }
    }

    /// Between two groups: the outbox rows a group marks are left out of its slice (see
    /// [`Behind::left_out`]), and under a steady load over a hot set every group marks nearly
    /// every row held, so no group's slice would move their watermark and the replay a crash
    /// needs would grow with the load. Once it outgrows `max_replay_events`, the rows of the
    /// excess past it (at most a flush slice), oldest first, are written on its own, with
    /// nothing left out: a little after a group now and then, rather than a long transaction.
    pub(super) async fn write_marks_left_behind(&mut self) {
        let next = self.held.next_lsn;
        let tail = next - 1 - Marks::look(&self.held).watermark(next).0;
        let excess = SliceBudget::replay_excess(tail, self.held.opts.max_replay_events);
        if excess > 0 {
            // The previous group's marks must be in before a slice is taken from them.
            settle(&mut self.held.installing).await;
            self.flush_one::<Marks>(SliceBudget(excess.clamp(1, FLUSH_SLICE)), true)
                .await;
        }
    }

    /// One slice of one kind in a transaction of its own, with its watermark: the next in key
    /// order, or the `oldest` changes held.
    async fn flush_one<K: Behind>(&mut self, budget: SliceBudget, oldest: bool) -> bool {
        let next = self.held.next_lsn;
        let r = async {
            let gate = self.held.gate.clone();
            let _turn = gate.lock().await;
            // Taken, written and dropped under the gate: a dispatcher acknowledges outbox rows
            // under it too (see `marks.rs`).
            let (slice, wm) = {
                let kind = K::look(&self.held);
                let slice = if oldest {
                    kind.take_oldest(budget, &keep_all)
                } else {
                    kind.take_slice(budget, &keep_all)
                };
                let wm = kind.watermark_after(&slice, next);
                (slice, wm)
            };
            let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
            K::write(&mut tx, &self.held, &slice, next - 1).await?;
            set_meta(&mut tx, K::WATERMARK, wm.0).await?;
            tx.commit().await?;
            self.held.stored_meta.insert(K::WATERMARK, wm);
            K::reach(&mut self.held).written(&slice);
            Ok::<_, StoreError>(slice)
        }
        .await;
        match r {
            Ok(slice) => {
                K::published(&self.held, &slice);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, rows = K::ROWS, "writing behind failed; a restart would replay them");
                false
            }
        }
    }
}
