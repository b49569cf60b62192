//! The write-behind protocol that cells (`cells.rs`), outbox rows (`marks.rs`) and index entries
//! (`keys.rs`) share.
//!
//! Each kind is a function of the events, which are durable before they are acknowledged. So the
//! writer holds what changed in memory and writes it later, a slice at a time, sweeping through
//! the table's key order so that a page takes many rows at once (see `docs/performance.md`). Per
//! kind, `meta` stores a [`Watermark`]: every change at or before it is in the table, and a crash
//! replays the events after it (`recovery.rs`), skipping what a row already holds.
//!
//! The protocol, the same for the three:
//! - [`WriteBehind::take_slice`] picks rows from the cursor on, in key order, wrapping around
//!   once, at least as many as the [`SliceBudget`] asks (a kind takes whole keys). It moves
//!   nothing: a slice that fails to write is simply taken again later.
//!   Once the replay a crash would need outgrows `max_replay_events`, a group's slice is
//!   [`WriteBehind::take_oldest`] instead: the oldest changes held, so the watermark moves.
//! - [`WriteBehind::watermark_after`] is the watermark to store in the same transaction as the
//!   slice.
//! - [`WriteBehind::written`], once that transaction committed, drops the slice's rows and moves
//!   the cursor past it (only there, for every kind).
//!
//! No I/O here: the writer (`sweep.rs`) loads and writes.

/// A ledger position up to which every change of one kind is in its table (`meta`): a crash
/// replays the events after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Watermark(pub i64);

impl Watermark {
    /// Just before `oldest`, the first position of the oldest change held unwritten; with nothing
    /// held, just before `next`, the first position whose changes are not the kind's to hold yet.
    pub fn before(oldest: Option<i64>, next: i64) -> Watermark {
        Watermark(oldest.map_or(next, |first| first.min(next)) - 1)
    }
}

/// How many held rows a slice takes at the least (a kind takes whole keys, so a slice may hold a
/// few more); none for [`SliceBudget::NONE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SliceBudget(pub usize);

impl SliceBudget {
    pub const NONE: SliceBudget = SliceBudget(0);
    pub const ALL: SliceBudget = SliceBudget(usize::MAX);

    /// What a group commit writes behind beside its events, the one rule for every kind: the
    /// excess past its bounds (rows held over `max_held`, or positions of the replay a crash would
    /// need, `tail`, over `max_replay`) and twice what the group adds, at most `most`; within
    /// them, the replay's pace (see [`SliceBudget::paced`]). Small slices, a little more than the
    /// group changed, keep every commit short, and the sweep's key order still puts many rows on
    /// each page because so many wait. A whole slice each time the replay passed its bound made
    /// every group past it a long commit: with a short bound, the steady load's p99 paid for it
    /// (`docs/performance.md`).
    pub fn for_group(
        held: usize,
        max_held: usize,
        added: usize,
        tail: i64,
        max_replay: i64,
        most: usize,
    ) -> SliceBudget {
        let over = held
            .saturating_sub(max_held)
            .max(Self::replay_excess(tail, max_replay));
        let excess = if over > 0 {
            over.saturating_add(2 * added)
        } else {
            0
        };
        SliceBudget(
            excess
                .max(Self::paced(held, added, tail, max_replay))
                .min(most),
        )
    }

    /// Once the replay a crash would need passes half its bound, the share of what is held that
    /// goes round all of it in the other half: `held` x `added` / (`max_replay` / 2) rows a
    /// group. A sweep in key order moves the watermark only when it has been round, so writing
    /// only past the bound let the excess, and with it every slice, grow until the round ended,
    /// and a long group made the next group larger: a cascade of long commits every time a kind
    /// crossed the bound. Paced, the round ends before the bound and a slice grows only with its
    /// group.
    pub fn paced(held: usize, added: usize, tail: i64, max_replay: i64) -> usize {
        let half = max_replay / 2;
        if half <= 0 || tail <= half {
            return 0;
        }
        let half = usize::try_from(half).unwrap_or(usize::MAX);
        held.saturating_mul(added).div_ceil(half)
    }

    /// Positions of the replay a crash would need past its bound; none within it.
    pub fn replay_excess(tail: i64, max_replay: i64) -> usize {
        usize::try_from(tail.saturating_sub(max_replay)).unwrap_or(0)
    }

    /// Whether a group's slice takes the oldest changes held rather than the next ones in key
    /// order: once the replay a crash would need (`tail` positions) outgrows `max_replay`, the
    /// watermark has to move with every group, or the replay grows by a whole sweep beyond the
    /// bound.
    pub fn takes_oldest(tail: i64, max_replay: i64) -> bool {
        tail > max_replay
    }
}

/// Rows held in memory and written behind the events (see the module's notes).
pub(crate) trait WriteBehind {
    /// The rows of one slice, in the table's key order.
    type Slice;
    /// Where the sweep stands: the key of the last row written.
    type Key;

    /// Rows held unwritten (dirty slots, outbox rows, index entries).
    fn held(&self) -> usize;

    /// The first position of the oldest change held unwritten.
    fn oldest(&self) -> Option<i64>;

    /// Rows in a slice, counted as [`WriteBehind::held`] counts them.
    fn slice_len(slice: &Self::Slice) -> usize;

    /// The next slice of the sweep, leaving out the rows `leave_out` names; moves nothing.
    fn take_slice(
        &self,
        budget: SliceBudget,
        leave_out: &dyn Fn(&Self::Key) -> bool,
    ) -> Self::Slice;

    /// A slice of the oldest changes held, for when the replay a crash would need has outgrown
    /// its bound (see [`SliceBudget::takes_oldest`]): the watermark must move, and a sweep in key
    /// order moves it only once it has been all the way round. By default the sweep itself: a
    /// kind that holds a row once per key (a dirty slot) goes round its `max_held` rows in a few
    /// slices, and taking its oldest keys first goes round in as many. Outbox rows take their
    /// oldest: a row left out while the sweep passed it would wait a whole round.
    fn take_oldest(
        &self,
        budget: SliceBudget,
        leave_out: &dyn Fn(&Self::Key) -> bool,
    ) -> Self::Slice {
        self.take_slice(budget, leave_out)
    }

    /// Drops a written slice's rows (the table's copy is now as new); returns the key it ended
    /// at.
    fn drop_written(&mut self, slice: &Self::Slice) -> Option<Self::Key>;

    /// Puts the sweep's cursor after `key`.
    fn set_cursor(&mut self, key: Self::Key);

    /// Every change at or before it is in the table; positions from `next` on are not the kind's
    /// to hold yet.
    fn watermark(&self, next: i64) -> Watermark {
        Watermark::before(self.oldest(), next)
    }

    /// The watermark to store with a slice about to be written: once the slice holds every row
    /// held, the last position before `next`; otherwise the current one, which is conservative
    /// (a replay from an earlier position skips what rows already hold).
    fn watermark_after(&self, slice: &Self::Slice, next: i64) -> Watermark {
        if Self::slice_len(slice) == self.held() {
            Watermark(next - 1)
        } else {
            self.watermark(next)
        }
    }

    /// A slice's transaction committed: its rows leave, and the sweep goes on after it.
    fn written(&mut self, slice: &Self::Slice) {
        if let Some(last) = self.drop_written(slice) {
            self.set_cursor(last);
        }
    }
}

/// For [`WriteBehind::take_slice`] when nothing is left out.
pub(crate) fn keep_all<K>(_: &K) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_writes_the_excess_past_either_bound_and_twice_the_group() {
        // Within both bounds: nothing.
        assert_eq!(
            SliceBudget::for_group(10, 10, 5, 0, 100, 50),
            SliceBudget::NONE
        );
        // Three rows over `max_held`, a group of five: 3 + 10.
        assert_eq!(
            SliceBudget::for_group(13, 10, 5, 0, 100, 50),
            SliceBudget(13)
        );
        // Far over: at most a whole slice.
        assert_eq!(
            SliceBudget::for_group(90, 10, 5, 0, 100, 50),
            SliceBudget(50)
        );
        // The replay one position past its bound: 1 + 10, not a whole slice.
        assert_eq!(
            SliceBudget::for_group(3, 10, 5, 101, 100, 50),
            SliceBudget(11)
        );
        // Both over: the larger excess.
        assert_eq!(
            SliceBudget::for_group(12, 10, 5, 120, 100, 50),
            SliceBudget(30)
        );
        assert_eq!(
            SliceBudget::for_group(3, 10, 5, 1_000, 100, 50),
            SliceBudget(50)
        );
    }

    #[test]
    fn past_half_the_replay_bound_a_group_writes_its_share_of_a_round() {
        // Within half the bound: nothing.
        assert_eq!(SliceBudget::paced(1_000, 10, 50, 100), 0);
        // Past it: 1,000 held, a group of 10, a round in 50 positions: 200 rows.
        assert_eq!(SliceBudget::paced(1_000, 10, 51, 100), 200);
        assert_eq!(
            SliceBudget::for_group(1_000, 2_000, 10, 51, 100, 5_000),
            SliceBudget(200)
        );
        // Rounded up, so a small group over a few rows still writes one.
        assert_eq!(SliceBudget::paced(3, 1, 60, 100), 1);
        // Past the bound the excess rule takes over when it asks for more.
        assert_eq!(
            SliceBudget::for_group(10, 2_000, 1, 1_000, 100, 5_000),
            SliceBudget(902)
        );
        // No bound to pace by.
        assert_eq!(SliceBudget::paced(1_000, 10, 5, 0), 0);
        assert_eq!(SliceBudget::paced(1_000, 10, 5, 1), 0);
    }

    #[test]
    fn the_watermark_is_before_the_oldest_change_held_or_before_next() {
        assert_eq!(Watermark::before(Some(7), 20), Watermark(6));
        assert_eq!(Watermark::before(None, 20), Watermark(19));
        assert_eq!(Watermark::before(Some(25), 20), Watermark(19));
    }
}
