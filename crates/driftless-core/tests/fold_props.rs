//! The fold's invariant: state is a pure function of the set of distinct events received. Random
//! event sets are delivered in many orders with duplicates, and every delivery must end where a
//! direct oracle says.

use driftless_core::authority::Policy;
use driftless_core::event::RawEvent;
use driftless_core::{
    Authority, Event, Levels, Location, MemoryLedger, Outcome, Rules, Sku, State, SystemId,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};

const SKUS: [&str; 3] = ["A", "B", "C"];
const LOCS: [&str; 2] = ["DC1", "DC2"];
const SOURCES: [&str; 3] = ["wms", "erp", "shop"];

fn rules() -> Rules {
    let mut authority = Authority::default();
    authority.set_writers(State::OnHand, vec![SystemId::parse("wms").unwrap()]);
    authority.set_writers(
        State::Committed,
        vec![
            SystemId::parse("shop").unwrap(),
            SystemId::parse("wms").unwrap(),
        ],
    );
    authority.set_writers(State::Reserved, vec![SystemId::parse("erp").unwrap()]);
    authority.set_policy(State::Reserved, Policy::Accept);
    Rules {
        authority,
        systems: SOURCES
            .iter()
            .map(|s| SystemId::parse(*s).unwrap())
            .collect(),
        ..Rules::default()
    }
}

#[derive(Debug, Clone)]
struct Spec {
    source: usize,
    sku: usize,
    loc: usize,
    minute: u8,
    seq: u8,
    set: bool,
    states: Vec<(usize, i64)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..SOURCES.len(),
        0..SKUS.len(),
        0..LOCS.len(),
        0u8..12, // few minutes: many ties, many late sets
        0u8..3,
        prop::bool::weighted(0.25),
        prop::collection::btree_map(0usize..5, -20i64..50, 1..=3),
    )
        .prop_map(|(source, sku, loc, minute, seq, set, m)| Spec {
            source,
            sku,
            loc,
            minute,
            seq,
            set,
            states: m.into_iter().collect(),
        })
}

fn build(i: usize, s: &Spec) -> Event {
    let names: Vec<(&str, i64)> = s
        .states
        .iter()
        .map(|(st, q)| (State::ALL[*st].as_str(), if s.set { q.abs() } else { *q }))
        .collect();
    let id = format!("e{i}");
    let at = format!("2026-11-27T10:{:02}:00Z", s.minute);
    let raw = RawEvent {
        id: &id,
        source: SOURCES[s.source],
        sku: SKUS[s.sku],
        location: LOCS[s.loc],
        occurred_at: &at,
        seq: u64::from(s.seq),
        adjust: (!s.set).then(|| names.clone()),
        set: s.set.then_some(names),
        ..RawEvent::default()
    };
    Event::from_raw(&raw).unwrap()
}

/// Straight from the contract: per cell, the newest effective `set` (0 if none) plus the effective
/// adjusts positioned after it. No incremental state at all.
fn oracle(rules: &Rules, events: &[Event]) -> BTreeMap<(Sku, Location), Levels> {
    let mut out: BTreeMap<(Sku, Location), Levels> = BTreeMap::new();
    let effective: Vec<&Event> = events
        .iter()
        .filter(|e| {
            matches!(
                rules
                    .authority
                    .judge(&e.source, e.change.quantities().iter().map(|(s, _)| s)),
                driftless_core::Verdict::Authorized
                    | driftless_core::Verdict::Override { applied: true, .. }
            )
        })
        .collect();
    for e in events {
        out.entry((e.sku.clone(), e.location.clone())).or_default();
    }
    for ((sku, loc), levels) in out.iter_mut() {
        for st in State::ALL {
            let here = effective
                .iter()
                .filter(|e| &e.sku == sku && &e.location == loc)
                .filter_map(|e| e.change.quantities().get(st).map(|q| (e, q)));
            let base = here
                .clone()
                .filter(|(e, _)| e.change.is_set())
                .max_by(|(a, _), (b, _)| a.order_key().cmp(&b.order_key()));
            let (from, start) = match base {
                Some((e, q)) => (Some(e.order_key()), q),
                None => (None, 0),
            };
            let sum: i64 = here
                .filter(|(e, _)| !e.change.is_set())
                .filter(|(e, _)| from.as_ref().is_none_or(|k| &e.order_key() > k))
                .map(|(_, q)| q)
                .sum();
            levels.set(st, start + sum);
        }
    }
    out
}

fn deliver(order: &[usize], events: &[Event]) -> MemoryLedger {
    let mut l = MemoryLedger::new(rules());
    for &i in order {
        l.apply(events[i].clone());
    }
    l
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_order_any_duplicates_same_state(
        specs in prop::collection::vec(spec(), 1..40),
        shuffle_seed in any::<u64>(),
        dups in prop::collection::vec((any::<prop::sample::Index>(), 1usize..10), 0..20),
    ) {
        let events: Vec<Event> = specs.iter().enumerate().map(|(i, s)| build(i, s)).collect();
        let expected = oracle(&rules(), &events);
        let n = events.len();

        // Strategy 1: as generated. 2: reversed. 3: sorted by position (in order). 4: reverse
        // position (every set arrives after every adjust it covers... or before). 5: a seeded
        // shuffle with each duplicate delivered up to 10x at random places (retry storm).
        let mut orders: Vec<Vec<usize>> = vec![(0..n).collect(), (0..n).rev().collect()];
        let mut by_pos: Vec<usize> = (0..n).collect();
        by_pos.sort_by_key(|&i| events[i].order_key());
        orders.push(by_pos.clone());
        orders.push(by_pos.into_iter().rev().collect());
        let mut storm: Vec<usize> = (0..n).collect();
        for (idx, times) in &dups {
            let i = idx.index(n);
            for _ in 0..*times { storm.push(i); }
        }
        let mut x = shuffle_seed | 1;
        for k in (1..storm.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            storm.swap(k, (x % (k as u64 + 1)) as usize);
        }
        orders.push(storm);

        for order in &orders {
            let got = deliver(order, &events).all_levels();
            prop_assert_eq!(&got, &expected, "order {:?}", order);
        }
    }
}

#[test]
fn outcomes_one_by_one() {
    let mut l = MemoryLedger::new(rules());
    let ev = |id: &str,
              source: &str,
              at: &str,
              adjust: Option<Vec<(&str, i64)>>,
              set: Option<Vec<(&str, i64)>>| {
        Event::from_raw(&RawEvent {
            id,
            source,
            sku: "A",
            location: "DC1",
            occurred_at: at,
            adjust,
            set,
            ..RawEvent::default()
        })
        .unwrap()
    };
    let a = Sku::parse("A").unwrap();
    let dc1 = Location::parse("DC1").unwrap();
    let t = |m: u32| format!("2026-11-27T10:{m:02}:00Z");

    let first = ev("r1", "wms", &t(1), Some(vec![("on_hand", 10)]), None);
    assert_eq!(l.apply(first.clone()).outcome, Outcome::Applied);
    assert_eq!(l.apply(first).outcome, Outcome::Duplicate);
    assert_eq!(
        l.apply(ev("r1", "wms", &t(1), Some(vec![("on_hand", 11)]), None))
            .outcome,
        Outcome::Conflict
    );
    // A count at minute 5 re-bases; the adjust at minute 1 is covered by it.
    assert_eq!(
        l.apply(ev("c5", "wms", &t(5), None, Some(vec![("on_hand", 40)])))
            .outcome,
        Outcome::Applied
    );
    assert_eq!(l.levels(&a, &dc1).on_hand, 40);
    // A late adjust from before the count is covered; one after it counts.
    assert_eq!(
        l.apply(ev("s3", "wms", &t(3), Some(vec![("on_hand", -2)]), None))
            .outcome,
        Outcome::Covered
    );
    assert_eq!(
        l.apply(ev("s7", "wms", &t(7), Some(vec![("on_hand", -2)]), None))
            .outcome,
        Outcome::Applied
    );
    assert_eq!(l.levels(&a, &dc1).on_hand, 38);
    // A late older count is stale.
    assert_eq!(
        l.apply(ev("c4", "wms", &t(4), None, Some(vec![("on_hand", 99)])))
            .outcome,
        Outcome::Stale
    );
    // A newer count that arrives late still sees the adjust after it.
    assert_eq!(
        l.apply(ev("c6", "wms", &t(6), None, Some(vec![("on_hand", 50)])))
            .outcome,
        Outcome::Applied
    );
    assert_eq!(l.levels(&a, &dc1).on_hand, 48);
    // The storefront writing on_hand is an override, rejected by policy: nothing changes.
    assert_eq!(
        l.apply(ev("o1", "shop", &t(9), Some(vec![("on_hand", 5)]), None))
            .outcome,
        Outcome::Override
    );
    assert_eq!(l.levels(&a, &dc1).on_hand, 48);
    // erp may not write reserved... it may; wms writing reserved is accepted by policy.
    assert_eq!(
        l.apply(ev("o2", "wms", &t(9), Some(vec![("reserved", 5)]), None))
            .outcome,
        Outcome::Override
    );
    assert_eq!(l.levels(&a, &dc1).reserved, 5);
    // Unknown source and unit are rejected and do not claim the id.
    assert_eq!(
        l.apply(ev("x1", "pos", &t(9), Some(vec![("on_hand", 1)]), None))
            .outcome,
        Outcome::Rejected
    );
    let mut cased = ev("x2", "wms", &t(9), Some(vec![("on_hand", 1)]), None);
    cased.uom = Some(driftless_core::Unit::parse("CS").unwrap());
    assert_eq!(l.apply(cased).outcome, Outcome::Rejected);
    assert_eq!(
        l.apply(ev("x2", "wms", &t(9), Some(vec![("on_hand", 1)]), None))
            .outcome,
        Outcome::Applied
    );
    // A multi-state event with one state newer than its set is applied (state by state).
    assert_eq!(
        l.apply(ev(
            "m1",
            "wms",
            &t(5),
            Some(vec![("on_hand", 100), ("committed", 3)]),
            None
        ))
        .outcome,
        Outcome::Applied
    );
    let lv = l.levels(&a, &dc1);
    assert_eq!((lv.on_hand, lv.committed), (49, 3));
    let _: HashSet<()> = HashSet::new();
}
