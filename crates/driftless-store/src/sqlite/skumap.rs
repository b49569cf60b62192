//! A map by sku that is hashed for the writer and ordered for sweeps and pages.
//!
//! The writer looks a sku up in its in-memory maps (overlay, index tail, outbox rows) for nearly
//! every event; as string-keyed B-trees over a hundred thousand skus each lookup was a dozen
//! comparisons, each a cache miss, and that was most of the writer's CPU after a commit. Slices
//! sweep the skus in the tables' key order and readers page them, so the order is kept as well, in
//! a set that changes only when a sku joins or leaves, not when its value does.
//!
//! No I/O here.

use super::FastMap;
use driftless_core::{Location, Sku};
use std::collections::BTreeSet;
use std::collections::hash_map::Entry;
use std::ops::Bound;

#[derive(Debug)]
pub(crate) struct SkuMap<V> {
    values: FastMap<Sku, V>,
    /// Exactly the keys of `values`, in key order.
    order: BTreeSet<Sku>,
}

impl<V> Default for SkuMap<V> {
    fn default() -> Self {
        SkuMap {
            values: FastMap::default(),
            order: BTreeSet::new(),
        }
    }
}

impl<V> SkuMap<V> {
    pub fn get(&self, sku: &Sku) -> Option<&V> {
        self.values.get(sku)
    }

    pub fn get_mut(&mut self, sku: &Sku) -> Option<&mut V> {
        self.values.get_mut(sku)
    }

    pub fn contains(&self, sku: &Sku) -> bool {
        self.values.contains_key(sku)
    }

    pub fn insert(&mut self, sku: Sku, v: V) {
        if !self.values.contains_key(&sku) {
            self.order.insert(sku.clone());
        }
        self.values.insert(sku, v);
    }

    pub fn remove(&mut self, sku: &Sku) -> Option<V> {
        let v = self.values.remove(sku)?;
        self.order.remove(sku);
        Some(v)
    }

    /// Values in no particular order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = (&Sku, &mut V)> {
        self.values.iter_mut()
    }

    /// Entries whose sku is within `bounds`, in key order.
    pub fn range<'a>(
        &'a self,
        bounds: (Bound<&'a Sku>, Bound<&'a Sku>),
    ) -> impl Iterator<Item = (&'a Sku, &'a V)> + 'a {
        self.order
            .range::<Sku, _>(bounds)
            .filter_map(|s| self.values.get(s).map(|v| (s, v)))
    }

    /// Entries after `after` (all of them with `None`), in key order.
    pub fn after<'a>(&'a self, after: Option<&'a Sku>) -> impl Iterator<Item = (&'a Sku, &'a V)> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.range((from, Bound::Unbounded))
    }
}

/// A map whose values are a sku's slots, a few, in arrival order (the overlay, the index tail).
impl<T: Default> SkuMap<Vec<(Location, T)>> {
    /// The value of one slot, added (with the sku if need be) when absent.
    pub fn slot_mut(&mut self, sku: &Sku, loc: &Location) -> &mut T {
        // One hash; the clone is a copy for an inline sku.
        let locs = match self.values.entry(sku.clone()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                self.order.insert(sku.clone());
                v.insert(Vec::new())
            }
        };
        let i = match locs.iter().position(|(l, _)| l == loc) {
            Some(i) => i,
            None => {
                locs.push((loc.clone(), T::default()));
                locs.len() - 1
            }
        };
        &mut locs[i].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }

    #[test]
    fn entries_come_in_key_order_and_leave_with_their_key() {
        let mut m = SkuMap::default();
        for (i, s) in ["C", "A", "B"].iter().enumerate() {
            m.insert(sku(s), i);
        }
        m.insert(sku("A"), 9);
        let all: Vec<(&str, usize)> = m.after(None).map(|(s, v)| (s.as_str(), *v)).collect();
        assert_eq!(
            all,
            [("A", 9), ("B", 2), ("C", 0)],
            "a second insert replaces"
        );
        assert_eq!(m.remove(&sku("B")), Some(2));
        assert_eq!(m.remove(&sku("B")), None);
        let a = sku("A");
        let rest: Vec<&str> = m.after(Some(&a)).map(|(s, _)| s.as_str()).collect();
        assert_eq!(rest, ["C"]);
        let upto: Vec<&str> = m
            .range((Bound::Unbounded, Bound::Included(&a)))
            .map(|(s, _)| s.as_str())
            .collect();
        assert_eq!(upto, ["A"]);
        assert!(!m.contains(&sku("B")));
    }
}
