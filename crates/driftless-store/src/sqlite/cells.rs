//! The ledger writer's cells, written behind.
//!
//! Every event row is durable before it is acknowledged; the folded cells are not written with it.
//! Writing a cell per event dirtied one random page of the `cells` B-tree per event (with 2M
//! `(sku, location)` slots nearly every cell has a page of its own), which cost as much as the
//! events themselves. Instead the writer keeps changed cells here and writes them later in key
//! order, many to a page, sweeping through the key space a slice per group commit; a crash loses
//! nothing because the cells are a function of the events: on open the store replays the events
//! after the watermark (the oldest change not yet written) and skips, per row, what the row already
//! holds (`cells.lsn`).
//!
//! Readers see unwritten cells through the [`Overlay`], which the writer updates after each commit.
//!
//! The protocol is the one of `behind.rs`. No I/O here: the writer (`sweep.rs`) loads and writes.

use super::FastMap;
use super::behind::{SliceBudget, WriteBehind};
use super::positions::Positions;
use super::skumap::SkuMap;
use driftless_core::{Cell, ChannelSpec, Levels, Location, Sku, State};
use std::collections::BTreeSet;

/// One `(sku, location)` in memory.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub loc: Location,
    pub cells: [Cell; 5],
    /// A bit per state changed since the slot was last written.
    pub dirty: u8,
    /// Ledger position of the first change not yet written (0 when clean).
    pub first_lsn: i64,
}

impl Slot {
    /// A location with nothing waiting to be written.
    pub fn clean(loc: Location) -> Slot {
        Slot {
            loc,
            cells: Default::default(),
            dirty: 0,
            first_lsn: 0,
        }
    }
}

/// Every location of one sku known to the ledger. A sku is cached whole, so that a channel's
/// quantity (a sum over its locations) can be computed from memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct SkuCells {
    pub slots: Vec<Slot>,
}

impl SkuCells {
    /// The levels of one location, if the sku has it in memory.
    pub fn levels_at(&self, loc: &Location) -> Option<Levels> {
        self.slots
            .iter()
            .find(|s| &s.loc == loc)
            .map(|s| levels_of(&s.cells))
    }

    fn is_dirty(&self) -> bool {
        self.slots.iter().any(|s| s.dirty != 0)
    }
}

pub(crate) fn levels_of(cells: &[Cell; 5]) -> Levels {
    let mut l = Levels::default();
    for s in State::ALL {
        l.set(s, cells[s.index()].value);
    }
    l
}

/// Cells the readers must see that the `cells` table does not hold yet: per sku, the levels of
/// every location changed since the sku was last written. Read it *before* the table: a sku leaves
/// the overlay only after the transaction that wrote it has committed, so overlay-then-table never
/// misses an acknowledged change.
pub(crate) type Overlay = std::sync::RwLock<OverlayMap>;

/// The overlay's map (hashed, and ordered for paged reads; see `skumap.rs`).
pub(crate) type OverlayMap = SkuMap<Vec<(Location, Levels)>>;

/// Puts the levels of one slot, as of the commit just made, in the overlay.
pub(crate) fn set_levels(ov: &mut OverlayMap, sku: &Sku, loc: &Location, levels: Levels) {
    *ov.slot_mut(sku, loc) = levels;
}

/// The rows one slice writes: per sku, the dirty slots with their dirty states.
pub(crate) type FlushRows = Vec<(Sku, Vec<(Location, u8, [Cell; 5])>)>;

#[derive(Debug, Default)]
pub(crate) struct CellCache {
    skus: FastMap<Sku, SkuCells>,
    slots: usize,
    dirty_slots: usize,
    /// Skus with a dirty slot, in the `cells` table's key order.
    sweep: BTreeSet<Sku>,
    /// Where the sweep stopped last.
    cursor: Option<Sku>,
    /// How many dirty slots have each first unwritten position; the smallest is the watermark.
    firsts: Positions,
    /// What this group changed, as it was before.
    undo: FastMap<Sku, Undo>,
    /// The size below which eviction does not look again (0: the bound itself). When skus with
    /// unwritten slots kept the cache above its bound, the next group's look would find the same
    /// ones: it waits until the cache has grown by an eighth of the bound, and slices have written
    /// some of them meanwhile. Looking every group walked the whole map each time.
    evict_after: usize,
}

/// One sku's state before the group: whether it was cached, how many slots it had, and the slots
/// the group touched. Only touched slots are copied: copying the whole sku for every event made the
/// undo log a tenth of the writer's time.
#[derive(Debug)]
struct Undo {
    existed: bool,
    len: usize,
    slots: Vec<(usize, Slot)>,
}

impl CellCache {
    pub fn contains(&self, sku: &Sku) -> bool {
        self.skus.contains_key(sku)
    }

    pub fn get(&self, sku: &Sku) -> Option<&SkuCells> {
        self.skus.get(sku)
    }

    pub fn dirty_slots(&self) -> usize {
        self.dirty_slots
    }

    /// A sku as the table holds it (clean).
    pub fn insert_loaded(&mut self, sku: Sku, cells: SkuCells) {
        self.slots += cells.slots.len();
        if let Some(old) = self.skus.insert(sku, cells) {
            self.slots -= old.slots.len();
        }
    }

    /// When more than `max` slots are cached, drops clean skus until a quarter of `max` is free.
    /// Dropping only that many keeps most of the cache warm (dropping every clean sku made each
    /// following group load nearly all its skus again). Dirty ones must stay until written.
    pub fn evict_clean(&mut self, max: usize) {
        if self.slots <= max.max(self.evict_after) {
            return;
        }
        let mut excess = self.slots - max * 3 / 4;
        let mut dropped = 0usize;
        self.skus.retain(|_, c| {
            if excess == 0 || c.is_dirty() {
                return true;
            }
            excess = excess.saturating_sub(c.slots.len());
            dropped += c.slots.len();
            false
        });
        self.slots -= dropped;
        self.evict_after = if self.slots > max {
            self.slots.saturating_add(max / 8)
        } else {
            0
        };
    }

    /// The cells of a slot for this group to change (the sku must be cached or be new).
    pub fn cells_mut(&mut self, sku: &Sku, loc: &Location) -> &mut [Cell; 5] {
        if !self.undo.contains_key(sku) {
            let before = self.skus.get(sku);
            let u = Undo {
                existed: before.is_some(),
                len: before.map_or(0, |c| c.slots.len()),
                slots: Vec::new(),
            };
            self.undo.insert(sku.clone(), u);
        }
        let (entry, i) = slot(&mut self.skus, &mut self.slots, sku, loc);
        // Slots this group added go with the truncation on rollback.
        if let Some(u) = self.undo.get_mut(sku)
            && i < u.len
            && !u.slots.iter().any(|(j, _)| *j == i)
        {
            u.slots.push((i, entry.slots[i].clone()));
        }
        &mut entry.slots[i].cells
    }

    /// The cells of a slot for the replay to change, with no undo log: a replay that fails fails
    /// the open, and the cache goes with it (the log was a quarter of the replay's apply).
    pub fn replay_cells_mut(&mut self, sku: &Sku, loc: &Location) -> &mut [Cell; 5] {
        let (entry, i) = slot(&mut self.skus, &mut self.slots, sku, loc);
        &mut entry.slots[i].cells
    }

    /// Marks states of a slot changed by the event at `lsn`.
    pub fn mark_dirty(&mut self, sku: &Sku, loc: &Location, mask: u8, lsn: i64) {
        let Some(c) = self.skus.get_mut(sku) else {
            return;
        };
        // The sweep holds skus with a dirty slot: only the first one adds it.
        let was_dirty = c.is_dirty();
        let Some(slot) = c.slots.iter_mut().find(|s| &s.loc == loc) else {
            return;
        };
        if slot.dirty == 0 {
            slot.first_lsn = lsn;
            self.firsts.add(lsn);
            self.dirty_slots += 1;
            if !was_dirty {
                self.sweep.insert(sku.clone());
            }
        }
        slot.dirty |= mask;
    }

    /// The group committed: its changes stay.
    pub fn commit_group(&mut self) {
        self.undo.clear();
    }

    /// The group rolled back: its skus return to what they were.
    pub fn rollback_group(&mut self) {
        if self.undo.is_empty() {
            return;
        }
        for (sku, u) in self.undo.drain() {
            if !u.existed {
                self.skus.remove(&sku);
                continue;
            }
            if let Some(c) = self.skus.get_mut(&sku) {
                c.slots.truncate(u.len);
                for (i, slot) in u.slots {
                    if let Some(s) = c.slots.get_mut(i) {
                        *s = slot;
                    }
                }
            }
        }
        self.reindex();
    }

    fn reindex(&mut self) {
        self.slots = 0;
        self.dirty_slots = 0;
        self.sweep.clear();
        let mut firsts = Vec::new();
        for (sku, c) in &self.skus {
            self.slots += c.slots.len();
            for s in c.slots.iter().filter(|s| s.dirty != 0) {
                self.dirty_slots += 1;
                firsts.push(s.first_lsn);
                self.sweep.insert(sku.clone());
            }
        }
        self.firsts = Positions::from_unordered(firsts);
    }

    /// Sum of ATP over the locations a channel sells from.
    pub fn channel_atp(&self, sku: &Sku, channel: &ChannelSpec) -> i64 {
        self.skus.get(sku).map_or(0, |c| {
            c.slots
                .iter()
                .filter(|s| channel.feeds_from(&s.loc))
                .fold(0i64, |a, s| {
                    a.saturating_add(levels_of(&s.cells).available())
                })
        })
    }
}

/// A slot's sku and index, the slot added (clean, counted in `slots`) when the sku does not hold
/// it yet. Apart from the cache so the group's undo log can be borrowed beside it.
fn slot<'a>(
    skus: &'a mut FastMap<Sku, SkuCells>,
    slots: &mut usize,
    sku: &Sku,
    loc: &Location,
) -> (&'a mut SkuCells, usize) {
    let entry = skus.entry(sku.clone()).or_default();
    let i = match entry.slots.iter().position(|s| &s.loc == loc) {
        Some(i) => i,
        None => {
            entry.slots.push(Slot::clean(loc.clone()));
            *slots += 1;
            entry.slots.len() - 1
        }
    };
    (entry, i)
}

impl WriteBehind for CellCache {
    type Slice = FlushRows;
    type Key = Sku;

    fn held(&self) -> usize {
        self.dirty_slots
    }

    fn oldest(&self) -> Option<i64> {
        self.firsts.oldest()
    }

    fn slice_len(slice: &FlushRows) -> usize {
        slice.iter().map(|(_, v)| v.len()).sum()
    }

    /// Dirty skus from the cursor on, in key order, until at least `budget` dirty slots are
    /// taken, each sku with all its dirty slots.
    fn take_slice(&self, budget: SliceBudget, leave_out: &dyn Fn(&Sku) -> bool) -> FlushRows {
        let mut out: FlushRows = Vec::new();
        if budget == SliceBudget::NONE || self.sweep.is_empty() {
            return out;
        }
        // From the cursor to the end, then from the start: lazily, the set may be large.
        let (tail, head): (
            Box<dyn Iterator<Item = &Sku>>,
            Box<dyn Iterator<Item = &Sku>>,
        ) =
            match &self.cursor {
                Some(c) => (
                    Box::new(self.sweep.range::<Sku, _>((
                        std::ops::Bound::Excluded(c),
                        std::ops::Bound::Unbounded,
                    ))),
                    Box::new(self.sweep.range::<Sku, _>((
                        std::ops::Bound::Unbounded,
                        std::ops::Bound::Included(c),
                    ))),
                ),
                None => (Box::new(self.sweep.iter()), Box::new(std::iter::empty())),
            };
        let after = tail.chain(head);
        let mut taken = 0usize;
        for sku in after {
            let Some(c) = self.skus.get(sku) else {
                continue;
            };
            if leave_out(sku) {
                continue;
            }
            let rows: Vec<(Location, u8, [Cell; 5])> = c
                .slots
                .iter()
                .filter(|s| s.dirty != 0)
                .map(|s| (s.loc.clone(), s.dirty, s.cells.clone()))
                .collect();
            taken += rows.len();
            out.push((sku.clone(), rows));
            if taken >= budget.0 {
                break;
            }
        }
        out
    }

    /// Its skus are clean: they were written with their latest cells.
    fn drop_written(&mut self, rows: &FlushRows) -> Option<Sku> {
        for (sku, _) in rows {
            if let Some(c) = self.skus.get_mut(sku) {
                for s in c.slots.iter_mut().filter(|s| s.dirty != 0) {
                    self.firsts.remove(s.first_lsn);
                    s.dirty = 0;
                    s.first_lsn = 0;
                    self.dirty_slots -= 1;
                }
            }
            self.sweep.remove(sku);
        }
        rows.last().map(|(last, _)| last.clone())
    }

    fn set_cursor(&mut self, key: Sku) {
        self.cursor = Some(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::behind::{Watermark, keep_all};

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    fn loc(s: &str) -> Location {
        Location::parse(s).unwrap()
    }

    #[test]
    fn slices_sweep_in_key_order_and_wrap() {
        let mut c = CellCache::default();
        for (i, s) in ["C", "A", "B", "D"].iter().enumerate() {
            c.cells_mut(&sku(s), &loc("L1"))[0].value = 1;
            c.mark_dirty(&sku(s), &loc("L1"), 1, 10 + i as i64);
        }
        c.commit_group();
        assert_eq!(c.watermark(100), Watermark(9));
        let first = c.take_slice(SliceBudget(2), &keep_all);
        let names: Vec<&str> = first.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
        c.written(&first);
        // C (lsn 10) is still unwritten, so the watermark stays before it.
        assert_eq!(c.watermark(100), Watermark(9));
        c.cells_mut(&sku("A"), &loc("L1"))[0].value = 2;
        c.mark_dirty(&sku("A"), &loc("L1"), 1, 20);
        c.commit_group();
        let second = c.take_slice(SliceBudget(3), &keep_all);
        let names: Vec<&str> = second.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["C", "D", "A"]);
        c.written(&second);
        assert_eq!(c.dirty_slots(), 0);
        assert_eq!(c.watermark(100), Watermark(99));
    }

    #[test]
    fn a_rolled_back_group_leaves_nothing_behind() {
        let mut c = CellCache::default();
        c.cells_mut(&sku("A"), &loc("L1"))[0].value = 5;
        c.mark_dirty(&sku("A"), &loc("L1"), 1, 1);
        c.commit_group();
        c.cells_mut(&sku("A"), &loc("L1"))[0].value = 7;
        c.mark_dirty(&sku("A"), &loc("L2"), 1, 2);
        c.cells_mut(&sku("B"), &loc("L1"))[0].value = 1;
        c.mark_dirty(&sku("B"), &loc("L1"), 1, 3);
        c.cells_mut(&sku("A"), &loc("L3"))[1].value = 4;
        c.mark_dirty(&sku("A"), &loc("L3"), 2, 4);
        c.cells_mut(&sku("A"), &loc("L1"))[1].value = 9;
        c.mark_dirty(&sku("A"), &loc("L1"), 2, 5);
        c.rollback_group();
        let a = c.get(&sku("A")).unwrap();
        assert_eq!(a.slots.len(), 1, "the slot the group added is gone");
        assert_eq!(a.slots[0].cells[0].value, 5);
        assert_eq!(a.slots[0].cells[1].value, 0);
        assert_eq!((a.slots[0].dirty, a.slots[0].first_lsn), (1, 1));
        assert!(!c.contains(&sku("B")));
        assert_eq!(c.dirty_slots(), 1);
        assert_eq!(c.watermark(10), Watermark(0));
    }

    #[test]
    fn what_the_replay_changed_outlives_the_next_groups_rollback() {
        let mut c = CellCache::default();
        c.replay_cells_mut(&sku("A"), &loc("L1"))[0].value = 5;
        c.mark_dirty(&sku("A"), &loc("L1"), 1, 1);
        c.replay_cells_mut(&sku("B"), &loc("L1"))[0].value = 3;
        c.mark_dirty(&sku("B"), &loc("L1"), 1, 2);
        // The first group after the open fails.
        c.cells_mut(&sku("A"), &loc("L1"))[0].value = 7;
        c.cells_mut(&sku("C"), &loc("L1"))[0].value = 1;
        c.rollback_group();
        assert_eq!(c.get(&sku("A")).unwrap().slots[0].cells[0].value, 5);
        assert_eq!(c.get(&sku("B")).unwrap().slots[0].cells[0].value, 3);
        assert!(!c.contains(&sku("C")));
        assert_eq!(c.dirty_slots(), 2);
    }

    #[test]
    fn the_overlay_updates_a_slot_in_place_and_pages_in_key_order() {
        let mut ov = OverlayMap::default();
        let lv = |n: i64| {
            let mut l = Levels::default();
            l.set(State::OnHand, n);
            l
        };
        for s in ["C", "A", "B"] {
            set_levels(&mut ov, &sku(s), &loc("L1"), lv(1));
        }
        set_levels(&mut ov, &sku("A"), &loc("L2"), lv(2));
        set_levels(&mut ov, &sku("A"), &loc("L1"), lv(3));
        let page: Vec<&str> = ov.after(None).map(|(s, _)| s.as_str()).collect();
        assert_eq!(page, ["A", "B", "C"]);
        assert_eq!(
            ov.get(&sku("A")).unwrap().as_slice(),
            &[(loc("L1"), lv(3)), (loc("L2"), lv(2))],
            "a slot is updated in place, a new one added"
        );
        ov.remove(&sku("B"));
        let a = sku("A");
        let page: Vec<&str> = ov.after(Some(&a)).map(|(s, _)| s.as_str()).collect();
        assert_eq!(page, ["C"]);
        assert!(ov.get(&sku("B")).is_none());
    }

    #[test]
    fn eviction_keeps_unwritten_skus() {
        let mut c = CellCache::default();
        c.insert_loaded(
            sku("CLEAN"),
            SkuCells {
                slots: vec![Slot::clean(loc("L1"))],
            },
        );
        c.cells_mut(&sku("DIRTY"), &loc("L1"))[0].value = 1;
        c.mark_dirty(&sku("DIRTY"), &loc("L1"), 1, 1);
        c.commit_group();
        c.evict_clean(1);
        assert!(!c.contains(&sku("CLEAN")));
        assert!(c.contains(&sku("DIRTY")));
        // Only as many clean skus go as needed to free a quarter of the bound.
        for i in 0..8 {
            c.insert_loaded(
                sku(&format!("K{i}")),
                SkuCells {
                    slots: vec![Slot::clean(loc("L1"))],
                },
            );
        }
        c.evict_clean(8);
        assert_eq!(c.slots, 6);
        assert!(c.contains(&sku("DIRTY")));
    }

    #[test]
    fn a_cache_held_up_by_unwritten_skus_looks_again_only_after_growing() {
        let mut c = CellCache::default();
        for i in 0..20 {
            let k = sku(&format!("D{i:02}"));
            c.cells_mut(&k, &loc("L1"))[0].value = 1;
            c.mark_dirty(&k, &loc("L1"), 1, i + 1);
        }
        c.commit_group();
        let clean = |c: &mut CellCache, name: &str| {
            c.insert_loaded(
                sku(name),
                SkuCells {
                    slots: vec![Slot::clean(loc("L1"))],
                },
            )
        };
        // Nothing clean to drop: the cache stays above its bound of 16.
        c.evict_clean(16);
        assert_eq!(c.slots, 20);
        // Within an eighth of the bound of that, no look (which would drop these).
        clean(&mut c, "C1");
        clean(&mut c, "C2");
        c.evict_clean(16);
        assert!(c.contains(&sku("C1")) && c.contains(&sku("C2")));
        // Past it, the clean skus go and the unwritten ones stay.
        clean(&mut c, "C3");
        c.evict_clean(16);
        assert!(!c.contains(&sku("C1")) && !c.contains(&sku("C2")) && !c.contains(&sku("C3")));
        assert_eq!(c.slots, 20);
    }
}
