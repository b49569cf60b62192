//! The ledger positions of what the writer holds unwritten (dirty slots, outbox rows, index
//! entries), counted per position, so the oldest gives the watermark.
//!
//! Positions are handed out one after another, and whatever is held was changed within the last
//! `max_replay_events` or so (a longer tail forces a slice), so this is a count per position over
//! that span: joining and leaving index it directly and the oldest is the front. A B-tree did the
//! same with a node allocation and a dozen comparisons per change, for nearly every event; a
//! sorted list with binary searches was no cheaper.
//!
//! No I/O here.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(crate) struct Positions {
    /// How many are held at each position from `base` on; the front is never 0.
    counts: VecDeque<u32>,
    base: i64,
    len: usize,
}

impl Positions {
    /// Built from positions in any order (after a rollback re-counts them).
    pub fn from_unordered(positions: impl IntoIterator<Item = i64>) -> Self {
        let mut all: Vec<i64> = positions.into_iter().collect();
        all.sort_unstable();
        let mut p = Positions::default();
        for lsn in all {
            p.add(lsn);
        }
        p
    }

    /// How many are held, counting each time a position was added.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn add(&mut self, lsn: i64) {
        if self.counts.is_empty() {
            self.base = lsn;
        }
        if lsn < self.base {
            // Only when a caller re-adds an older position; the span stays within the replay
            // bound either way.
            for _ in lsn..self.base {
                self.counts.push_front(0);
            }
            self.base = lsn;
        }
        let i = (lsn - self.base) as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.len += 1;
    }

    /// Removes one count of `lsn`; false when it is not held.
    pub fn remove(&mut self, lsn: i64) -> bool {
        let Some(n) = lsn
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.counts.get_mut(i))
            .filter(|n| **n > 0)
        else {
            return false;
        };
        *n -= 1;
        self.len -= 1;
        while self.counts.front() == Some(&0) {
            self.counts.pop_front();
            self.base += 1;
        }
        true
    }

    /// The oldest position held.
    pub fn oldest(&self) -> Option<i64> {
        (!self.counts.is_empty()).then_some(self.base)
    }

    /// The position of the `n`th oldest held (counting each time a position was added), or the
    /// newest when fewer are held; `None` when nothing is.
    pub fn nth_oldest(&self, n: usize) -> Option<i64> {
        let mut seen = 0usize;
        for (i, c) in self.counts.iter().enumerate() {
            seen += *c as usize;
            if seen >= n.max(1) {
                return Some(self.base + i as i64);
            }
        }
        (!self.counts.is_empty()).then(|| self.base + self.counts.len() as i64 - 1)
    }

    /// The positions held, oldest first, each once.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.counted().map(|(lsn, _)| lsn)
    }

    /// The positions held, oldest first, each with how many times it is held.
    pub fn counted(&self) -> impl Iterator<Item = (i64, u32)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (self.base + i as i64, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Against a counted B-tree, the structure this replaces, on a pseudo-random mix of joins in
    /// order, out of order, repeats and leaves (held and not held).
    #[test]
    fn agrees_with_a_counted_btree() {
        let mut p = Positions::default();
        let mut m: BTreeMap<i64, u32> = BTreeMap::new();
        let mut next = 0i64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let r = x % 100;
            let lsn = if r < 45 {
                next += (x % 3) as i64;
                next
            } else if r < 50 {
                next - (x % 50) as i64
            } else {
                next - (x % 400) as i64
            };
            if r < 50 {
                p.add(lsn);
                *m.entry(lsn).or_default() += 1;
            } else {
                let held = m.get(&lsn).is_some_and(|n| *n > 0);
                assert_eq!(p.remove(lsn), held, "remove {lsn}");
                if held {
                    let n = m.get_mut(&lsn).unwrap();
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&lsn);
                    }
                }
            }
            assert_eq!(p.len(), m.values().map(|n| *n as usize).sum::<usize>());
            assert_eq!(p.oldest(), m.keys().next().copied());
        }
        let held: Vec<i64> = p.iter().collect();
        assert_eq!(held, m.keys().copied().collect::<Vec<_>>());
        let counted: Vec<i64> = m
            .iter()
            .flat_map(|(l, n)| std::iter::repeat_n(*l, *n as usize))
            .collect();
        for n in [1, 2, counted.len() / 2, counted.len()] {
            assert_eq!(p.nth_oldest(n), counted.get(n.max(1) - 1).copied(), "{n}");
        }
        assert_eq!(p.nth_oldest(counted.len() + 5), counted.last().copied());
        let rebuilt = Positions::from_unordered(
            m.iter()
                .rev()
                .flat_map(|(l, n)| std::iter::repeat_n(*l, *n as usize)),
        );
        assert_eq!(rebuilt.len(), p.len());
        assert_eq!(rebuilt.iter().collect::<Vec<_>>(), held);
    }
}
