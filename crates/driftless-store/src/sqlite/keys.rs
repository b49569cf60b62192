//! The ledger's per-cell index, written behind.
//!
//! History, the locations a sku was seen at, and the re-base of a late count all ask for the events
//! of one `(sku, location)` in fold order. An index on `events` keyed that way took one random
//! B-tree page per event: with a million events the index is thousands of pages and a group of a
//! thousand events dirtied a thousand of them, so every event cost a 4 KiB page written to the WAL
//! and copied back by the checkpoint. That was nine tenths of what a bare insert of the event rows
//! wrote (`bench/`: 27k rows/s with the index, 360k without).
//!
//! Instead the index is a table of its own, `event_keys`, and the entries of recent events wait
//! here, in memory, until the writer writes them in key order, a slice per group commit while too
//! many wait, sweeping through the key space the way `cells.rs` does: a page then takes many
//! entries at once. The events themselves are durable before they are acknowledged; the index is a
//! function of them, so on open the store reads back into this tail every event after the
//! watermark (`meta.keys_watermark`) that the table does not hold.
//!
//! Every entry is in exactly one of the table and this tail. Readers read the tail first and the
//! table second: the writer removes entries only after the commit that wrote them, so an entry
//! missing from the tail is already in the table (a reader may see one in both, and dedups by
//! position).
//!
//! The protocol is the one of `behind.rs`. No I/O here: the writer (`sweep.rs`) loads and writes.

use super::behind::{SliceBudget, Watermark, WriteBehind};
use super::positions::Positions;
use super::skumap::SkuMap;
use driftless_core::{Location, OrderKey, Sku, State};
use std::collections::HashSet;

/// One stored event not yet in `event_keys`.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub lsn: i64,
    pub key: OrderKey,
    /// Per state, the delta an effective adjustment counts in a later re-base (none for counts and
    /// for events that changed nothing).
    pub deltas: [Option<i64>; 5],
}

/// A slice to write: whole skus, each slot with the entries it had when taken.
pub(crate) type KeySlice = Vec<(Sku, Vec<(Location, Vec<Entry>)>)>;

#[derive(Debug)]
pub(crate) struct KeyTail {
    /// Per sku, its slots (a few, in arrival order) with their entries; every event pushes one
    /// (see `skumap.rs` for why hashed and ordered).
    skus: SkuMap<Vec<(Location, Vec<Entry>)>>,
    /// The newest `at_nanos` of any entry in the table (`meta.keys_max_at`). A count positioned
    /// after it has nothing in the table to re-base over, so the writer skips the query; counts
    /// usually are the newest event of their cell.
    written_max_at: i64,
    /// Positions of every entry held, for the watermark.
    lsns: Positions,
    /// Where the last slice ended.
    cursor: Option<Sku>,
}

impl Default for KeyTail {
    fn default() -> Self {
        KeyTail {
            skus: SkuMap::default(),
            written_max_at: i64::MIN,
            lsns: Positions::default(),
            cursor: None,
        }
    }
}

impl KeyTail {
    pub fn len(&self) -> usize {
        self.lsns.len()
    }

    /// Adds an entry; entries of one slot arrive in position order.
    pub fn push(&mut self, sku: &Sku, loc: &Location, e: Entry) {
        self.lsns.add(e.lsn);
        self.skus.slot_mut(sku, loc).push(e);
    }

    /// Takes back a slot's newest entry if it is the one at `lsn` (a group whose commit failed
    /// after its entries were added).
    pub fn pop(&mut self, sku: &Sku, loc: &Location, lsn: i64) {
        let Some(locs) = self.skus.get_mut(sku) else {
            return;
        };
        let Some(i) = locs.iter().position(|(l, _)| l == loc) else {
            return;
        };
        let v = &mut locs[i].1;
        if v.last().is_some_and(|e| e.lsn == lsn) {
            v.pop();
            self.lsns.remove(lsn);
        }
        if v.is_empty() {
            locs.swap_remove(i);
        }
        if locs.is_empty() {
            self.skus.remove(sku);
        }
    }

    /// What the table's newest position is known to be (`i64::MAX`: unknown).
    pub fn set_written_max_at(&mut self, at: i64) {
        self.written_max_at = at;
    }

    /// The table's newest `at_nanos` once `slice` is written too.
    pub fn written_max_at_after(&self, slice: &KeySlice) -> i64 {
        slice
            .iter()
            .flat_map(|(_, slots)| slots.iter().flat_map(|(_, v)| v.iter()))
            .map(|e| e.key.position.at_nanos)
            .fold(self.written_max_at, i64::max)
    }

    /// Whether the table may hold an entry positioned after `k`.
    pub fn table_may_hold_after(&self, k: &OrderKey) -> bool {
        k.position.at_nanos <= self.written_max_at
    }

    /// The sum of the effective adjustment deltas of `state` held here for one slot, positioned
    /// after `k` and stored before position `before`.
    pub fn sum_after(
        &self,
        sku: &Sku,
        loc: &Location,
        state: State,
        k: &OrderKey,
        before: i64,
    ) -> i64 {
        self.skus
            .get(sku)
            .and_then(|l| l.iter().find(|(l, _)| l == loc))
            .map(|(_, v)| {
                v.iter()
                    .filter(|e| e.lsn < before && &e.key > k)
                    .filter_map(|e| e.deltas[state.index()])
                    .fold(0i64, |a, d| a.saturating_add(d))
            })
            .unwrap_or(0)
    }

    /// The slots of `sku` held here, with their entries.
    pub fn of_sku(&self, sku: &Sku) -> impl Iterator<Item = (&Location, &[Entry])> {
        self.skus
            .get(sku)
            .into_iter()
            .flat_map(|l| l.iter().map(|(loc, v)| (loc, v.as_slice())))
    }
}

impl WriteBehind for KeyTail {
    type Slice = KeySlice;
    type Key = Sku;

    fn held(&self) -> usize {
        self.lsns.len()
    }

    fn oldest(&self) -> Option<i64> {
        self.lsns.oldest()
    }

    fn slice_len(slice: &KeySlice) -> usize {
        slice
            .iter()
            .map(|(_, slots)| slots.iter().map(|(_, v)| v.len()).sum::<usize>())
            .sum()
    }

    /// At least `budget` entries (whole skus) from the cursor on, wrapping around once. A sku's
    /// slots come in location order, the table's key order.
    fn take_slice(&self, budget: SliceBudget, leave_out: &dyn Fn(&Sku) -> bool) -> KeySlice {
        let mut out = KeySlice::new();
        if budget == SliceBudget::NONE {
            return out;
        }
        let mut taken = 0;
        let after = self.skus.after(self.cursor.as_ref());
        for (sku, locs) in after.chain(self.skus.after(None)) {
            if taken >= budget.0 || out.first().is_some_and(|(f, _)| f == sku) {
                break;
            }
            if leave_out(sku) {
                continue;
            }
            let mut slots: Vec<(Location, Vec<Entry>)> =
                locs.iter().map(|(l, v)| (l.clone(), v.clone())).collect();
            slots.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            taken += slots.iter().map(|(_, v)| v.len()).sum::<usize>();
            out.push((sku.clone(), slots));
        }
        out
    }

    /// The `budget` oldest entries (by position), from every slot that holds one: a slot's oldest
    /// entries, a prefix of its own, in key order. Not whole skus, unlike the sweep: every event
    /// has an entry, so a hot sku holds entries from all over the tail, and taking whole skus
    /// oldest first would still go round all of them before the watermark moved past the first
    /// group's positions. This way the watermark moves by about `budget` positions per slice.
    fn take_oldest(&self, budget: SliceBudget, leave_out: &dyn Fn(&Sku) -> bool) -> KeySlice {
        let mut out = KeySlice::new();
        let Some(cutoff) = self
            .lsns
            .nth_oldest(budget.0)
            .filter(|_| budget != SliceBudget::NONE)
        else {
            return out;
        };
        for (sku, locs) in self.skus.after(None) {
            if leave_out(sku) {
                continue;
            }
            let mut slots: Vec<(Location, Vec<Entry>)> = locs
                .iter()
                .filter_map(|(l, v)| {
                    let n = v.partition_point(|e| e.lsn <= cutoff);
                    (n > 0).then(|| (l.clone(), v[..n].to_vec()))
                })
                .collect();
            if slots.is_empty() {
                continue;
            }
            slots.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            out.push((sku.clone(), slots));
        }
        out
    }

    /// The position up to which every entry is in the table once `slice` is, given that the
    /// entries of positions from `next` on are not (the group being committed). Exact rather
    /// than conservative: entries leave one by one, each with a position of its own.
    fn watermark_after(&self, slice: &KeySlice, next: i64) -> Watermark {
        let gone: HashSet<i64> = slice
            .iter()
            .flat_map(|(_, slots)| slots.iter().flat_map(|(_, v)| v.iter().map(|e| e.lsn)))
            .collect();
        Watermark::before(self.lsns.iter().find(|l| !gone.contains(l)), next)
    }

    /// Drops the slice's entries (a slot's entries taken are a prefix of it).
    fn drop_written(&mut self, slice: &KeySlice) -> Option<Sku> {
        self.written_max_at = self.written_max_at_after(slice);
        for (sku, slots) in slice {
            let Some(locs) = self.skus.get_mut(sku) else {
                continue;
            };
            for (loc, taken) in slots {
                let Some(i) = locs.iter().position(|(l, _)| l == loc) else {
                    continue;
                };
                let v = &mut locs[i].1;
                let n = taken.len().min(v.len());
                for e in v.drain(..n) {
                    self.lsns.remove(e.lsn);
                }
                if v.is_empty() {
                    locs.swap_remove(i);
                }
            }
            if locs.is_empty() {
                self.skus.remove(sku);
            }
        }
        slice.last().map(|(last, _)| last.clone())
    }

    fn set_cursor(&mut self, key: Sku) {
        self.cursor = Some(key);
    }
}

/// The index entry of a stored event: only effective adjustments count in a later re-base.
pub(super) fn entry_of(
    lsn: i64,
    key: OrderKey,
    is_set: bool,
    effective: bool,
    base: impl Fn(State) -> Option<i64>,
) -> Entry {
    let mut deltas = [None; 5];
    if effective && !is_set {
        for s in State::ALL {
            deltas[s.index()] = base(s);
        }
    }
    Entry { lsn, key, deltas }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::behind::keep_all;
    use driftless_core::{EventId, Position};

    fn entry(lsn: i64, at: i64) -> Entry {
        Entry {
            lsn,
            key: OrderKey {
                position: Position {
                    at_nanos: at,
                    seq: 0,
                },
                id: EventId::parse(format!("e{lsn}")).unwrap(),
            },
            deltas: [Some(lsn), None, None, None, None],
        }
    }

    fn slot(s: &str, l: &str) -> (Sku, Location) {
        (Sku::parse(s).unwrap(), Location::parse(l).unwrap())
    }

    #[test]
    fn a_failed_group_takes_back_only_its_own_entries() {
        let mut t = KeyTail::default();
        let (a, b) = (slot("A", "L1"), slot("B", "L1"));
        t.push(&a.0, &a.1, entry(1, 10));
        // The failed group: positions 2 and 3.
        t.push(&a.0, &a.1, entry(2, 11));
        t.push(&b.0, &b.1, entry(3, 11));
        t.pop(&b.0, &b.1, 3);
        t.pop(&a.0, &a.1, 2);
        // Not the newest entry of its slot: left alone.
        t.pop(&a.0, &a.1, 7);
        assert_eq!(t.len(), 1);
        assert_eq!(t.of_sku(&b.0).count(), 0, "an emptied sku is gone");
        let k = entry(0, 0).key;
        assert_eq!(t.sum_after(&a.0, &a.1, State::OnHand, &k, i64::MAX), 1);
        assert_eq!(t.watermark_after(&KeySlice::new(), 9), Watermark(0));
    }

    #[test]
    fn slices_sweep_the_key_space_and_the_watermark_follows_the_oldest_left() {
        let mut t = KeyTail::default();
        let (a, b, c) = (slot("A", "L1"), slot("B", "L1"), slot("C", "L1"));
        t.push(&c.0, &c.1, entry(1, 10));
        t.push(&a.0, &a.1, entry(2, 10));
        t.push(&b.0, &b.1, entry(3, 10));
        t.push(&a.0, &a.1, entry(4, 11));
        let s = t.take_slice(SliceBudget(2), &keep_all);
        assert_eq!(s.len(), 1, "sku A alone holds two entries");
        assert_eq!(s[0].0, a.0);
        // Position 1 (slot C) is still waiting.
        assert_eq!(t.watermark_after(&s, 5), Watermark(0));
        t.written(&s);
        assert_eq!(t.len(), 2);
        let s = t.take_slice(SliceBudget(1), &keep_all);
        assert_eq!(s[0].0, b.0, "the sweep goes on after A");
        t.written(&s);
        let s = t.take_slice(SliceBudget(10), &keep_all);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, c.0);
        assert_eq!(t.watermark_after(&s, 5), Watermark(4));
        t.written(&s);
        assert_eq!(t.len(), 0);
        assert!(t.take_slice(SliceBudget(10), &keep_all).is_empty());
    }

    #[test]
    fn the_oldest_entries_go_first_a_prefix_of_each_slot() {
        let mut t = KeyTail::default();
        let (a, b, c) = (slot("A", "L1"), slot("B", "L1"), slot("C", "L1"));
        t.push(&c.0, &c.1, entry(1, 10));
        t.push(&a.0, &a.1, entry(2, 10));
        t.push(&b.0, &b.1, entry(3, 10));
        t.push(&c.0, &c.1, entry(4, 11));
        t.push(&a.0, &a.1, entry(5, 11));
        let s = t.take_oldest(SliceBudget(2), &keep_all);
        let taken: Vec<(&str, Vec<i64>)> = s
            .iter()
            .map(|(sku, slots)| (sku.as_str(), slots[0].1.iter().map(|e| e.lsn).collect()))
            .collect();
        assert_eq!(
            taken,
            [("A", vec![2]), ("C", vec![1])],
            "key order, prefixes"
        );
        assert_eq!(t.watermark_after(&s, 9), Watermark(2));
        t.written(&s);
        assert_eq!(t.len(), 3);
        assert_eq!(t.watermark(9), Watermark(2));
        let s = t.take_oldest(SliceBudget(2), &keep_all);
        assert_eq!(KeyTail::slice_len(&s), 2);
        t.written(&s);
        assert_eq!(t.oldest(), Some(5));
        assert!(t.take_oldest(SliceBudget::NONE, &keep_all).is_empty());
        let s = t.take_oldest(SliceBudget(10), &keep_all);
        t.written(&s);
        assert_eq!(t.len(), 0);
        assert!(t.take_oldest(SliceBudget(10), &keep_all).is_empty());
    }

    #[test]
    fn a_slice_wraps_once_and_entries_added_after_it_was_taken_stay() {
        let mut t = KeyTail::default();
        let (a, b) = (slot("A", "L1"), slot("B", "L1"));
        t.push(&a.0, &a.1, entry(1, 10));
        t.push(&b.0, &b.1, entry(2, 10));
        let first = t.take_slice(SliceBudget(1), &keep_all);
        // Taking moves nothing; writing moves the sweep past A.
        assert_eq!(t.take_slice(SliceBudget(1), &keep_all)[0].0, a.0);
        t.written(&first);
        t.push(&a.0, &a.1, entry(3, 11));
        let s = t.take_slice(SliceBudget(100), &keep_all);
        assert_eq!(s.len(), 2, "B, then A again, and no further");
        t.push(&a.0, &a.1, entry(4, 12));
        t.written(&s);
        assert_eq!(t.len(), 1);
        assert_eq!(t.of_sku(&a.0).next().map(|(_, v)| v[0].lsn), Some(4));
    }

    #[test]
    fn the_table_may_hold_later_entries_only_up_to_the_newest_written() {
        let mut t = KeyTail::default();
        let a = slot("A", "L1");
        assert!(!t.table_may_hold_after(&entry(0, i64::MIN + 1).key));
        t.push(&a.0, &a.1, entry(1, 10));
        t.push(&a.0, &a.1, entry(2, 30));
        assert!(
            !t.table_may_hold_after(&entry(9, 5).key),
            "nothing written yet"
        );
        let s = t.take_slice(SliceBudget(10), &keep_all);
        assert_eq!(t.written_max_at_after(&s), 30);
        t.written(&s);
        assert!(
            t.table_may_hold_after(&entry(9, 30).key),
            "same time, later id"
        );
        assert!(t.table_may_hold_after(&entry(9, 5).key));
        assert!(!t.table_may_hold_after(&entry(9, 31).key));
        t.set_written_max_at(i64::MAX);
        assert!(
            t.table_may_hold_after(&entry(9, 31).key),
            "unknown: always ask"
        );
    }

    #[test]
    fn sum_after_counts_later_positions_stored_before_the_limit() {
        let mut t = KeyTail::default();
        let a = slot("A", "L1");
        t.push(&a.0, &a.1, entry(1, 10));
        t.push(&a.0, &a.1, entry(2, 20));
        t.push(&a.0, &a.1, entry(3, 30));
        let k = entry(9, 15).key;
        assert_eq!(t.sum_after(&a.0, &a.1, State::OnHand, &k, i64::MAX), 5);
        assert_eq!(t.sum_after(&a.0, &a.1, State::OnHand, &k, 3), 2);
        assert_eq!(t.sum_after(&a.0, &a.1, State::Committed, &k, i64::MAX), 0);
    }
}
