//! Inventory as the hub knew it at a chosen moment: a sku's stored ledger entries received up to
//! that instant, folded with the outcomes they were given when they came.
//!
//! The fold is a function of the set of effective entries (see [`crate::fold::effects_of`]): per
//! state, the newest `set` is the base and every effective adjustment positioned after it adds. So
//! the entries received by the instant, in any order, give the cells the hub held then. Entries
//! that did not count (a duplicate, a conflict, an override held back) are left out by their stored
//! `effective` flag, never decided again: the configuration may have changed since.

use crate::channel::Levels;
use crate::event::OrderKey;
use crate::fold::Outcome;
use crate::id::Location;
use crate::state::{State, StateMap};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// One stored ledger entry of a sku, as the fold needs it.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    pub location: Location,
    pub key: OrderKey,
    pub received_at: DateTime<Utc>,
    /// Ledger position (orders entries by arrival).
    pub lsn: i64,
    pub outcome: Outcome,
    /// Whether the entry counts in the fold (stored when it was decided).
    pub effective: bool,
    pub is_set: bool,
    /// Quantities in base units.
    pub base: StateMap<i64>,
}

impl LedgerEntry {
    /// Whether the entry changed a cell when it came: an applied event, or an override accepted by
    /// policy. Stale and covered entries count in the fold but changed nothing.
    pub fn changed(&self) -> bool {
        self.effective && matches!(self.outcome, Outcome::Applied | Outcome::Override)
    }
}

/// A sku folded up to an instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AsOf {
    /// Every location seen by then, in location order; zero where nothing counted.
    pub locations: Vec<(Location, Levels)>,
    /// How many entries had changed a cell by then; `None` if none had. It grows by one with
    /// every change, whichever hub process stored it and in whatever order their commits land,
    /// so a reader that saw version `n` and reads `n` again saw no change. (A ledger position
    /// would not do on PostgreSQL: several processes take positions from one sequence before
    /// they commit, so a later change can hold a lower one.)
    pub version: Option<i64>,
    /// Entries received by then.
    pub entries: usize,
}

/// Folds the entries received at or before `at` (all of them when `None`).
pub fn fold_as_of(entries: &[LedgerEntry], at: Option<DateTime<Utc>>) -> AsOf {
    let known: Vec<&LedgerEntry> = entries
        .iter()
        .filter(|e| at.is_none_or(|t| e.received_at <= t))
        .collect();
    let mut by_location: BTreeMap<&str, Vec<&LedgerEntry>> = BTreeMap::new();
    for e in &known {
        by_location.entry(e.location.as_str()).or_default().push(e);
    }
    let locations = by_location
        .into_values()
        .map(|list| {
            let mut levels = Levels::default();
            for s in State::ALL {
                levels.set(s, fold_state(&list, s));
            }
            (list[0].location.clone(), levels)
        })
        .collect();
    AsOf {
        locations,
        version: version(known.iter().copied()),
        entries: known.len(),
    }
}

/// The number of entries that changed a cell, `None` before the first (see [`AsOf::version`]).
fn version<'a>(entries: impl Iterator<Item = &'a LedgerEntry>) -> Option<i64> {
    let n = entries.filter(|e| e.changed()).count();
    (n > 0).then(|| i64::try_from(n).unwrap_or(i64::MAX))
}

/// One state at one location: the newest effective `set` naming it, plus the effective
/// adjustments positioned after that set (all of them when there is no set).
fn fold_state(list: &[&LedgerEntry], s: State) -> i64 {
    let counting = || {
        list.iter()
            .filter(|e| e.effective)
            .filter_map(|e| e.base.get(s).map(|q| (*e, q)))
    };
    let base = counting()
        .filter(|(e, _)| e.is_set)
        .max_by(|a, b| a.0.key.cmp(&b.0.key));
    let (start, after) = match base {
        Some((e, q)) => (q, Some(&e.key)),
        None => (0, None),
    };
    counting()
        .filter(|(e, _)| !e.is_set && after.is_none_or(|k| e.key > *k))
        .map(|(_, q)| q)
        .fold(start, i64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Position;
    use crate::id::EventId;
    use chrono::TimeZone;

    fn entry(id: &str, occurred: i64, received: i64, set: bool, on_hand: i64) -> LedgerEntry {
        let mut base = StateMap::new();
        base.insert(State::OnHand, on_hand);
        LedgerEntry {
            location: Location::parse("DC1").unwrap(),
            key: OrderKey {
                position: Position {
                    at_nanos: occurred,
                    seq: 0,
                },
                id: EventId::parse(id).unwrap(),
            },
            received_at: Utc.timestamp_opt(received, 0).unwrap(),
            lsn: received,
            outcome: Outcome::Applied,
            effective: true,
            is_set: set,
            base,
        }
    }

    fn on_hand(a: &AsOf) -> i64 {
        a.locations[0].1.get(State::OnHand)
    }

    #[test]
    fn folds_only_what_was_received_by_the_instant() {
        let list = vec![
            entry("a", 10, 100, true, 50),
            entry("b", 20, 200, false, -3),
            entry("c", 30, 300, false, -2),
        ];
        assert_eq!(on_hand(&fold_as_of(&list, None)), 45);
        let t = Utc.timestamp_opt(250, 0).unwrap();
        let then = fold_as_of(&list, Some(t));
        assert_eq!(on_hand(&then), 47);
        assert_eq!(then.version, Some(2));
        assert_eq!(then.entries, 2);
        assert!(
            fold_as_of(&list, Some(Utc.timestamp_opt(5, 0).unwrap()))
                .locations
                .is_empty()
        );
    }

    #[test]
    fn a_newer_set_is_the_base_and_earlier_adjustments_are_in_it() {
        // The adjustment at 15 came after the set at 20 was in place: covered, counted by the set.
        let mut covered = entry("b", 15, 300, false, -4);
        covered.outcome = Outcome::Covered;
        let list = vec![
            entry("a", 10, 100, false, 7),
            entry("s", 20, 200, true, 40),
            covered,
            entry("c", 25, 400, false, 1),
        ];
        let now = fold_as_of(&list, None);
        assert_eq!(on_hand(&now), 41);
        assert_eq!(now.version, Some(3), "the covered entry changed nothing");
        assert_eq!(
            on_hand(&fold_as_of(&list, Some(Utc.timestamp_opt(150, 0).unwrap()))),
            7
        );
    }

    #[test]
    fn entries_that_did_not_count_change_nothing_but_show_the_location() {
        let mut held = entry("o", 10, 100, false, 9);
        held.outcome = Outcome::Override;
        held.effective = false;
        let mut dup = entry("d", 10, 110, false, 9);
        dup.outcome = Outcome::Duplicate;
        dup.effective = false;
        let a = fold_as_of(&[held, dup], None);
        assert_eq!(on_hand(&a), 0);
        assert_eq!(a.version, None);
    }

    #[test]
    fn the_result_does_not_depend_on_arrival_order() {
        let mut list = vec![
            entry("a", 10, 100, false, 5),
            entry("s", 30, 200, true, 20),
            entry("b", 40, 300, false, -1),
            entry("c", 20, 400, false, 8),
        ];
        let forward = fold_as_of(&list, None);
        list.reverse();
        assert_eq!(fold_as_of(&list, None), forward);
        assert_eq!(on_hand(&forward), 19);
    }
}
