//! Outbox rows, written behind like the cells (see `cells.rs`).
//!
//! Upserting `outbox` per group cost two random B-tree pages per marked `(channel, sku)` (the row
//! and its place in the dispatcher's index), as much as the events themselves. The ledger writer
//! keeps marked rows here instead, shared with the fan-out half of the store, and writes them to
//! the table in key-ordered slices. While a row is here it is the truth for its `(channel, sku)`;
//! the table's copy is older. A crash loses nothing: versions count marking events, and the open
//! replays the events after `meta.outbox_watermark`, skipping those a stored row already counts
//! (`outbox.lsn`).
//!
//! Every slice is taken, written and dropped from here while holding the store's write gate, and
//! so is every acknowledgement or re-dirtying a dispatcher records, so a slice cannot race an
//! acknowledgement. The one change made outside the gate is a committed group's marks, installed
//! just after the commit (for a large group beside the next group, see `Published` in
//! `sqlite.rs`), before the group's requests are answered and before the writer reads the marks
//! or takes a slice again. A mark
//! commutes with an acknowledgement (a row stays dirty unless the acknowledged version is its
//! newest, and a mark only raises the version) and with re-dirtying (both leave the row dirty).
//! What a dispatcher reads in between is the state just before the group, which nobody has been
//! told about yet.

use super::behind::{SliceBudget, Watermark, WriteBehind};
use super::positions::Positions;
use super::skumap::SkuMap;
use driftless_core::Sku;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The state of one `(channel, sku)` outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub version: i64,
    /// The newest event this version counts.
    pub lsn: i64,
    pub dirty: bool,
    pub changed_nanos: i64,
    pub atp: i64,
    pub source: Option<String>,
    pub occurred_nanos: Option<i64>,
    pub received_nanos: Option<i64>,
    /// Ledger position of the first change not yet written (0 for a row read from the table).
    pub first_lsn: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Marks {
    /// Per channel, per sku (see `skumap.rs` for why hashed and ordered).
    rows: BTreeMap<String, SkuMap<Mark>>,
    len: usize,
    /// Per channel, the dirty rows in the dispatcher's scan order.
    dirty: HashMap<String, BTreeSet<(i64, Sku)>>,
    firsts: Positions,
    /// Where the last slice stopped.
    cursor: Option<(String, Sku)>,
    /// Grows with every written slice, so a reader can tell that rows left meanwhile.
    generation: u64,
}

/// What a marking event brings to a row.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// The first and the newest marking event of the group.
    pub first: i64,
    pub lsn: i64,
    /// Marking events since the row's last version (a group may hold several).
    pub events: i64,
    pub now_nanos: i64,
    pub atp: i64,
    /// The newest applied event: `(source, occurred, received)`.
    pub sample: Option<(String, i64, i64)>,
}

impl Marks {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn get(&self, channel: &str, sku: &Sku) -> Option<&Mark> {
        self.rows.get(channel).and_then(|m| m.get(sku))
    }

    /// Skus of a channel held here (their table rows are stale).
    pub fn skus_of<'a>(&'a self, channel: &str) -> impl Iterator<Item = &'a Sku> + 'a {
        self.rows
            .get(channel)
            .into_iter()
            .flat_map(|m| m.after(None).map(|(s, _)| s))
    }

    /// Applies a change to a row; `stored` is the table's row when this is the first change
    /// since it was written (`None`: no row yet).
    pub fn mark(&mut self, channel: &str, sku: &Sku, stored: Option<Mark>, c: Change) {
        // Looked up before inserting: a channel's name is allocated once, not per mark.
        if !self.rows.contains_key(channel) {
            self.rows.insert(channel.to_owned(), SkuMap::default());
        }
        if !self.dirty.contains_key(channel) {
            self.dirty.insert(channel.to_owned(), BTreeSet::new());
        }
        let (Some(per), Some(set)) = (self.rows.get_mut(channel), self.dirty.get_mut(channel))
        else {
            return;
        };
        // A row held here is changed in place; the first change since it was written starts
        // from the table's row (or from nothing).
        let fresh = !per.contains(sku);
        if fresh {
            let mut m = stored.unwrap_or(Mark {
                version: 0,
                lsn: 0,
                dirty: false,
                changed_nanos: 0,
                atp: 0,
                source: None,
                occurred_nanos: None,
                received_nanos: None,
                first_lsn: 0,
            });
            m.first_lsn = c.first;
            per.insert(sku.clone(), m);
            self.len += 1;
            self.firsts.add(c.first);
        }
        let Some(m) = per.get_mut(sku) else {
            return;
        };
        if m.dirty {
            set.remove(&(m.changed_nanos, sku.clone()));
        }
        m.version += c.events;
        m.lsn = c.lsn;
        m.dirty = true;
        m.changed_nanos = c.now_nanos;
        m.atp = c.atp;
        if let Some((source, occurred, received)) = c.sample {
            m.source = Some(source);
            m.occurred_nanos = Some(occurred);
            m.received_nanos = Some(received);
        }
        set.insert((m.changed_nanos, sku.clone()));
    }

    /// A push of `version` was acknowledged: the row is clean unless a newer version came.
    /// Returns `Some(still_dirty)` when the row is held here.
    pub fn acked(&mut self, channel: &str, sku: &Sku, version: i64) -> Option<bool> {
        let m = self.rows.get_mut(channel)?.get_mut(sku)?;
        if m.version == version && m.dirty {
            m.dirty = false;
            if let Some(set) = self.dirty.get_mut(channel) {
                set.remove(&(m.changed_nanos, sku.clone()));
            }
        }
        Some(m.dirty)
    }

    /// Marks rows dirty again (replay, overwrite after an override); `None` is every row of the
    /// channel held here.
    pub fn redirty(&mut self, channel: &str, sku: Option<&Sku>, now_nanos: i64) {
        let Some(per) = self.rows.get_mut(channel) else {
            return;
        };
        let set = self.dirty.entry(channel.to_owned()).or_default();
        for (s, m) in per.values_mut() {
            if sku.is_some_and(|want| want != s) {
                continue;
            }
            if m.dirty {
                set.remove(&(m.changed_nanos, s.clone()));
            }
            m.dirty = true;
            m.changed_nanos = m.changed_nanos.max(now_nanos);
            set.insert((m.changed_nanos, s.clone()));
        }
    }

    /// Dirty rows of a channel after the cursor, in scan order, at most `limit`.
    pub fn dirty_after(&self, channel: &str, after: (i64, &str), limit: usize) -> Vec<(Sku, Mark)> {
        let Some(set) = self.dirty.get(channel) else {
            return Vec::new();
        };
        set.iter()
            .filter(|(t, s)| (*t, s.as_str()) > after)
            .take(limit)
            .filter_map(|(_, s)| self.get(channel, s).map(|m| (s.clone(), m.clone())))
            .collect()
    }

    pub fn dirty_count(&self, channel: &str) -> usize {
        self.dirty.get(channel).map_or(0, |s| s.len())
    }
}

/// An outbox row of a slice: `(channel, sku)` and its state.
pub(crate) type MarkRow = (String, Sku, Mark);

impl WriteBehind for Marks {
    type Slice = Vec<MarkRow>;
    type Key = (String, Sku);

    fn held(&self) -> usize {
        self.len
    }

    fn oldest(&self) -> Option<i64> {
        self.firsts.oldest()
    }

    fn slice_len(slice: &Vec<MarkRow>) -> usize {
        slice.len()
    }

    /// The next `budget` rows, in key order from where the last slice stopped.
    fn take_slice(
        &self,
        budget: SliceBudget,
        leave_out: &dyn Fn(&(String, Sku)) -> bool,
    ) -> Vec<MarkRow> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let mut out = Vec::new();
        if budget == SliceBudget::NONE || self.len == 0 {
            return out;
        }
        // Rows after the cursor (the rest of its channel, then later channels), then from the
        // start up to the cursor: lazily, there may be many.
        type Range<'a> = (std::ops::Bound<&'a Sku>, std::ops::Bound<&'a Sku>);
        let mut parts: Vec<(&String, Range)> = Vec::new();
        match &self.cursor {
            Some((cc, cs)) => {
                for c in self
                    .rows
                    .range::<String, _>((Included(cc), Unbounded))
                    .map(|(c, _)| c)
                {
                    parts.push((
                        c,
                        (if c == cc { Excluded(cs) } else { Unbounded }, Unbounded),
                    ));
                }
                for c in self
                    .rows
                    .range::<String, _>((Unbounded, Included(cc)))
                    .map(|(c, _)| c)
                {
                    parts.push((
                        c,
                        (Unbounded, if c == cc { Included(cs) } else { Unbounded }),
                    ));
                }
            }
            None => parts.extend(self.rows.keys().map(|c| (c, (Unbounded, Unbounded)))),
        }
        for (c, range) in parts {
            for (s, m) in self.rows[c].range(range) {
                if out.len() >= budget.0 {
                    return out;
                }
                let key = (c.clone(), s.clone());
                if !leave_out(&key) {
                    out.push((key.0, key.1, m.clone()));
                }
            }
        }
        out
    }

    /// The rows whose first unwritten change is among the `budget` oldest, in key order: a
    /// pass over every row held, which only a replay past its bound asks for. A row the sweep
    /// passed while a group marked it (left out) waits a whole round in key order; taken oldest
    /// first, it goes now.
    fn take_oldest(
        &self,
        budget: SliceBudget,
        leave_out: &dyn Fn(&(String, Sku)) -> bool,
    ) -> Vec<MarkRow> {
        let Some(cutoff) = self
            .firsts
            .nth_oldest(budget.0)
            .filter(|_| budget != SliceBudget::NONE)
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (c, per) in &self.rows {
            for (s, m) in per.after(None) {
                if m.first_lsn > cutoff {
                    continue;
                }
                let key = (c.clone(), s.clone());
                if !leave_out(&key) {
                    out.push((key.0, key.1, m.clone()));
                }
            }
        }
        out
    }

    /// Exact rather than conservative, so that a slice of the oldest rows moves the watermark
    /// with its own transaction: the oldest first change of the rows the slice leaves held.
    fn watermark_after(&self, slice: &Vec<MarkRow>, next: i64) -> Watermark {
        let mut taken: HashMap<i64, u32> = HashMap::new();
        for (_, _, m) in slice {
            *taken.entry(m.first_lsn).or_default() += 1;
        }
        let oldest = self
            .firsts
            .counted()
            .find(|(lsn, n)| *n > taken.get(lsn).copied().unwrap_or(0))
            .map(|(lsn, _)| lsn);
        Watermark::before(oldest, next)
    }

    /// Its rows leave (the table's copy is now as new).
    fn drop_written(&mut self, slice: &Vec<MarkRow>) -> Option<(String, Sku)> {
        for (c, s, _) in slice {
            let Some(m) = self.rows.get_mut(c).and_then(|per| per.remove(s)) else {
                continue;
            };
            self.len -= 1;
            if m.dirty
                && let Some(set) = self.dirty.get_mut(c)
            {
                set.remove(&(m.changed_nanos, s.clone()));
            }
            self.firsts.remove(m.first_lsn);
        }
        let (c, s, _) = slice.last()?;
        // A reader that scanned before this slice must scan again.
        self.generation += 1;
        Some((c.clone(), s.clone()))
    }

    fn set_cursor(&mut self, key: (String, Sku)) {
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

    fn change(first: i64, lsn: i64, events: i64) -> Change {
        Change {
            first,
            lsn,
            events,
            now_nanos: lsn * 10,
            atp: 7,
            sample: None,
        }
    }

    #[test]
    fn versions_count_events_and_acks_clean_only_the_current_one() {
        let mut m = Marks::default();
        m.mark("shop", &sku("A"), None, change(1, 3, 2));
        assert_eq!(m.get("shop", &sku("A")).unwrap().version, 2);
        m.mark("shop", &sku("A"), None, change(5, 5, 1));
        assert_eq!(m.acked("shop", &sku("A"), 2), Some(true));
        assert_eq!(m.dirty_count("shop"), 1);
        assert_eq!(m.acked("shop", &sku("A"), 3), Some(false));
        assert_eq!(m.dirty_count("shop"), 0);
        assert_eq!(m.acked("shop", &sku("B"), 1), None);
        // The first marking event of the first group is what the watermark waits for.
        assert_eq!(m.watermark(10), Watermark(0));
    }

    #[test]
    fn slices_go_round_in_key_order_across_channels() {
        let mut m = Marks::default();
        for (i, (c, s)) in [("b", "X"), ("a", "Y"), ("a", "X"), ("b", "W")]
            .iter()
            .enumerate()
        {
            m.mark(c, &sku(s), None, change(i as i64 + 1, i as i64 + 1, 1));
        }
        let keys = |v: &[MarkRow]| -> Vec<String> {
            v.iter().map(|(c, s, _)| format!("{c}/{s}")).collect()
        };
        let first = m.take_slice(SliceBudget(3), &keep_all);
        assert_eq!(keys(&first), ["a/X", "a/Y", "b/W"]);
        m.written(&first);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.watermark(10),
            Watermark(0),
            "b/X (first 1) is still waiting"
        );
        m.mark("a", &sku("Z"), None, change(8, 8, 1));
        m.mark("a", &sku("A"), None, change(9, 9, 1));
        assert_eq!(
            keys(&m.take_slice(SliceBudget(5), &keep_all)),
            ["b/X", "a/A", "a/Z"]
        );
        let dirty = m.dirty_after("a", (0, ""), 10);
        assert_eq!(dirty.len(), 2);
    }

    #[test]
    fn the_oldest_rows_go_first_and_move_the_watermark_with_their_slice() {
        let mut m = Marks::default();
        // b/X first changed at 1, a/Y at 2 (left out by the group that marks it), a/X and
        // b/W at 5, as one group marks them.
        m.mark("b", &sku("X"), None, change(1, 1, 1));
        m.mark("a", &sku("Y"), None, change(2, 2, 1));
        m.mark("a", &sku("X"), None, change(5, 6, 2));
        m.mark("b", &sku("W"), None, change(5, 6, 2));
        let keys = |v: &[MarkRow]| -> Vec<String> {
            v.iter().map(|(c, s, _)| format!("{c}/{s}")).collect()
        };
        let oldest = m.take_oldest(SliceBudget(2), &keep_all);
        assert_eq!(keys(&oldest), ["a/Y", "b/X"], "in key order");
        assert_eq!(m.watermark_after(&oldest, 10), Watermark(4));
        let marked = |k: &(String, Sku)| k.0 == "a" && k.1 == sku("Y");
        let without_y = m.take_oldest(SliceBudget(2), &marked);
        assert_eq!(keys(&without_y), ["b/X"]);
        assert_eq!(m.watermark_after(&without_y, 10), Watermark(1));
        // Positions shared by several rows leave only with the last of them.
        let three = m.take_oldest(SliceBudget(3), &keep_all);
        assert_eq!(
            keys(&three),
            ["a/X", "a/Y", "b/W", "b/X"],
            "the whole position"
        );
        assert_eq!(m.watermark_after(&three, 10), Watermark(9));
        let part: Vec<MarkRow> = three.into_iter().filter(|r| r.0 == "a").collect();
        assert_eq!(m.watermark_after(&part, 10), Watermark(0));
        m.written(&oldest);
        assert_eq!(m.watermark(10), Watermark(4));
    }
}
