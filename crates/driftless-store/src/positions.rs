//! The ledger positions of what the writer holds unwritten (dirty slots, outbox rows, index
//! entries), counted per position, so the oldest gives the watermark.
//!
//! Positions are handed out in ledger order and join in that order, so this is a deque sorted by
//! position: joining is a push at the back, leaving is a binary search, the oldest is the front.
//! A B-tree did the same with a node allocation and a dozen comparisons per change, for nearly
//! every event.
//!
//! No I/O here.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(crate) struct Positions {
    /// `(position, how many)` in position order; counts behind the front may be 0 (left
    /// entries are dropped once they reach the front, or when they outnumber the held ones).
    runs: VecDeque<(i64, u32)>,
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
        self.len += 1;
        match self.runs.back_mut() {
            Some((last, n)) if *last == lsn => *n += 1,
            Some((last, _)) if *last > lsn => {
                // Out of order (only when a caller re-adds an old position): in place.
                match self.runs.binary_search_by_key(&lsn, |(l, _)| *l) {
                    Ok(i) => self.runs[i].1 += 1,
                    Err(i) => self.runs.insert(i, (lsn, 1)),
                }
            }
            _ => self.runs.push_back((lsn, 1)),
        }
    }

    /// Removes one count of `lsn`; false when it is not held.
    pub fn remove(&mut self, lsn: i64) -> bool {
        let Ok(i) = self.runs.binary_search_by_key(&lsn, |(l, _)| *l) else {
            return false;
        };
        if self.runs[i].1 == 0 {
            return false;
        }
        self.runs[i].1 -= 1;
        self.len -= 1;
        while self.runs.front().is_some_and(|(_, n)| *n == 0) {
            self.runs.pop_front();
        }
        // Left entries between held ones stay until they reach the front; bound them.
        if self.runs.len() > 2 * self.len + 1024 {
            self.runs.retain(|(_, n)| *n > 0);
        }
        true
    }

    /// The oldest position held.
    pub fn oldest(&self) -> Option<i64> {
        self.runs.front().map(|(l, _)| *l)
    }

    /// The positions held, oldest first, each once.
    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        self.runs.iter().filter(|(_, n)| *n > 0).map(|(l, _)| *l)
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
        let rebuilt = Positions::from_unordered(
            m.iter()
                .rev()
                .flat_map(|(l, n)| std::iter::repeat_n(*l, *n as usize)),
        );
        assert_eq!(rebuilt.len(), p.len());
        assert_eq!(rebuilt.iter().collect::<Vec<_>>(), held);
    }
}
