//! Which index entries after the watermark are in `event_keys`, known without asking the table.
//!
//! A crash replays every event after the index's watermark, and for each it must know whether
//! the table holds its entry: slices are written in key order, so after the watermark some
//! entries are in and some are not. Asking the table was a B-tree descent per replayed event,
//! the largest part of the replay on a large ledger (see docs/performance.md, "The index's slices
//! recorded"). Instead every slice, in the transaction that writes it, records the skus it swept
//! and the newest position it held (`key_slices`), and the replay reads those few rows back.
//!
//! What a record promises: every entry of a sku within `first..=last` (in the sweep's cyclic key
//! order) positioned at or before `upto` is in the table. It holds because entries join the tail
//! in position order, before the slice that writes them is taken (a group's own entries join
//! after its slice, see `writer.rs`), and a slice takes every entry held for each sku it sweeps,
//! or, for the oldest changes, every entry held up to `upto` whatever its sku. A sku of the range
//! with no entry in the slice held none when it was taken, so its entries up to `upto` were
//! written before. The converse holds too (every entry written after the watermark was written by
//! a recorded slice), except for what a version before the records wrote: `meta.key_slices_from`
//! is the newest position such a version may have written, and the replay asks the table for
//! those positions as before.
//!
//! No I/O here: `sql.rs` reads and writes the rows.

use super::keys::KeySlice;
use driftless_core::Sku;

/// One written slice: its skus, from `first` to `last` in cyclic key order, and its newest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SliceRecord {
    pub first: Sku,
    pub last: Sku,
    pub upto: i64,
}

impl SliceRecord {
    /// The record of a slice about to be written; none for an empty one.
    pub fn of(slice: &KeySlice) -> Option<SliceRecord> {
        let (first, last) = (&slice.first()?.0, &slice.last()?.0);
        let upto = slice
            .iter()
            .flat_map(|(_, slots)| slots.iter().flat_map(|(_, v)| v.iter()))
            .map(|e| e.lsn)
            .max()?;
        Some(SliceRecord {
            first: first.clone(),
            last: last.clone(),
            upto,
        })
    }
}

/// A point of the sku line: `None` before every sku; `(sku, false)` at it, `(sku, true)` just
/// after it.
type Point = (Option<Sku>, bool);

/// The records as a step function over the sku line: from each point on, up to the next, the
/// newest position up to which every entry is written (`i64::MIN`: none known).
#[derive(Debug, Default)]
pub(crate) struct Written {
    steps: Vec<(Point, i64)>,
}

impl Written {
    pub fn new(records: &[SliceRecord]) -> Written {
        // Each record as one or two linear ranges: `[first, last]`, or, once the sweep wrapped
        // around, `[first, end)` and `[start, last]`.
        let mut edges: Vec<(Point, bool, i64)> = Vec::new();
        for r in records {
            let open = (Some(r.first.clone()), false);
            let close = (Some(r.last.clone()), true);
            if r.first <= r.last {
                edges.push((open, true, r.upto));
                edges.push((close, false, r.upto));
            } else {
                edges.push(((None, false), true, r.upto));
                edges.push((close, false, r.upto));
                edges.push((open, true, r.upto));
            }
        }
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        // Sweep the line, keeping the positions of the ranges open at each point.
        let mut open: std::collections::BTreeMap<i64, usize> = Default::default();
        let mut steps: Vec<(Point, i64)> = Vec::new();
        let mut i = 0;
        while i < edges.len() {
            let point = edges[i].0.clone();
            while i < edges.len() && edges[i].0 == point {
                let (_, opens, upto) = &edges[i];
                if *opens {
                    *open.entry(*upto).or_default() += 1;
                } else if let Some(n) = open.get_mut(upto) {
                    *n -= 1;
                    if *n == 0 {
                        open.remove(upto);
                    }
                }
                i += 1;
            }
            let newest = open.keys().next_back().copied().unwrap_or(i64::MIN);
            if steps.last().map(|s| s.1) != Some(newest) {
                steps.push((point, newest));
            }
        }
        Written { steps }
    }

    /// Whether the entry of the event at `lsn` of `sku` is known to be in the table.
    pub fn holds(&self, sku: &Sku, lsn: i64) -> bool {
        // The steps that start at or before the sku itself: `p <= (Some(sku), false)`.
        let n = self.steps.partition_point(|((s, after), _)| {
            s.as_ref().is_none_or(|s| s < sku || (s == sku && !after))
        });
        n > 0 && lsn <= self.steps[n - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::behind::{SliceBudget, WriteBehind, keep_all};
    use crate::sqlite::keys::{Entry, KeyTail};
    use driftless_core::{EventId, Location, OrderKey, Position};
    use proptest::prelude::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    fn record(first: &str, last: &str, upto: i64) -> SliceRecord {
        SliceRecord {
            first: sku(first),
            last: sku(last),
            upto,
        }
    }

    #[test]
    fn a_record_covers_its_range_up_to_its_newest_entry() {
        let w = Written::new(&[record("B", "D", 10)]);
        assert!(w.holds(&sku("B"), 10));
        assert!(w.holds(&sku("C"), 3), "a sku the slice held nothing of");
        assert!(w.holds(&sku("D"), 10));
        assert!(!w.holds(&sku("D"), 11), "after the slice was taken");
        assert!(!w.holds(&sku("A"), 1));
        assert!(!w.holds(&sku("DA"), 1), "just after the range");
        assert!(!Written::default().holds(&sku("A"), i64::MIN + 1));
    }

    #[test]
    fn a_wrapped_record_covers_both_ends_and_overlaps_keep_the_newest() {
        let w = Written::new(&[record("X", "B", 20), record("A", "Y", 5)]);
        assert!(w.holds(&sku("Z"), 20));
        assert!(w.holds(&sku("A"), 20));
        assert!(w.holds(&sku("B"), 20));
        assert!(!w.holds(&sku("C"), 6));
        assert!(w.holds(&sku("C"), 5));
        assert!(w.holds(&sku("X"), 20));
        assert!(
            w.holds(&sku("Y"), 20),
            "Y sorts after X: the wrapped record's upper end"
        );
        assert!(!w.holds(&sku("M"), 20), "M is in the older record only");
        assert!(w.holds(&sku("M"), 5));
    }

    fn entry(lsn: i64) -> Entry {
        Entry {
            lsn,
            key: OrderKey {
                position: Position {
                    at_nanos: lsn,
                    seq: 0,
                },
                id: EventId::parse(format!("e{lsn}")).unwrap(),
            },
            deltas: [None; 5],
        }
    }

    proptest! {
        /// The promise against the tail itself: events arrive over a few skus, slices of both
        /// kinds are written now and then, and every entry the records say is written is.
        #[test]
        fn the_records_hold_exactly_what_the_slices_wrote(
            ops in prop::collection::vec((0u8..6, 0usize..8, prop::bool::ANY), 1..120),
        ) {
            let skus: Vec<Sku> = (0..6).map(|i| sku(&format!("S{i}"))).collect();
            let loc = Location::parse("L1").unwrap();
            let mut tail = KeyTail::default();
            let mut written: std::collections::HashSet<i64> = Default::default();
            let mut records = Vec::new();
            // The sku of the entry at each position (index 0 unused).
            let mut owner = vec![0usize];
            for (s, budget, oldest) in ops {
                owner.push(s as usize);
                let lsn = owner.len() as i64 - 1;
                tail.push(&skus[s as usize], &loc, entry(lsn));
                if budget % 3 == 0 {
                    let b = SliceBudget(budget);
                    let slice = if oldest {
                        tail.take_oldest(b, &keep_all)
                    } else {
                        tail.take_slice(b, &keep_all)
                    };
                    for (_, slots) in &slice {
                        for (_, v) in slots {
                            written.extend(v.iter().map(|e| e.lsn));
                        }
                    }
                    records.extend(SliceRecord::of(&slice));
                    tail.written(&slice);
                }
            }
            let w = Written::new(&records);
            for (lsn, s) in owner.iter().enumerate().skip(1) {
                let (lsn, sku) = (lsn as i64, &skus[*s]);
                prop_assert_eq!(
                    w.holds(sku, lsn),
                    written.contains(&lsn),
                    "the entry of {:?} at {}", sku, lsn
                );
            }
        }
    }
}
