//! A complete ledger in memory, over the same [`Rules::decide`] the database stores use. The
//! simulator runs its hub on it, and the property tests hold it against an oracle.

use crate::channel::Levels;
use crate::checkpoint::{Finding, Swallowed, reject, rejection};
use crate::event::{Event, Fingerprint, OrderKey};
use crate::fold::{Cell, Effect, Outcome, Rules};
use crate::id::{EventId, Location, Sku, SystemId};
use crate::state::State;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default, Clone)]
struct Slot {
    cells: [Cell; 5],
    /// Effective adjust deltas positioned after each state's base `set`. Older ones can never count
    /// again (a base only moves forward), so they are dropped on re-base.
    /// With the delta its source, for `cross_source_cover`.
    later: [BTreeMap<OrderKey, (i64, SystemId)>; 5],
}

/// The outcome of one event with its detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    pub detail: Option<String>,
    /// The consistency rules that held ([`crate::checkpoint`]); a rejecting one made the outcome
    /// `rejected`.
    pub findings: Vec<Finding>,
}

/// An in-memory ledger.
#[derive(Debug)]
pub struct MemoryLedger {
    rules: Rules,
    /// Claimed `(source, id)` pairs: an event's identity.
    seen: HashMap<(SystemId, EventId), Fingerprint>,
    slots: HashMap<(Sku, Location), Slot>,
}

impl MemoryLedger {
    pub fn new(rules: Rules) -> Self {
        MemoryLedger {
            rules,
            seen: HashMap::new(),
            slots: HashMap::new(),
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Applies one event and returns its outcome.
    pub fn apply(&mut self, event: Event) -> Applied {
        let prepared = match self.rules.prepare(event) {
            Ok(p) => p,
            Err(refused) => {
                let (_, r) = *refused;
                return Applied {
                    outcome: Outcome::Rejected,
                    detail: Some(r.0),
                    findings: vec![],
                };
            }
        };
        let ev = &prepared.event;
        let identity = (ev.source.clone(), ev.id.clone());
        let prior = self.seen.get(&identity).copied();
        let slot = self
            .slots
            .entry((ev.sku.clone(), ev.location.clone()))
            .or_default();
        let mut decision = self.rules.decide(&prepared, prior, &slot.cells);
        // The effects go to a copy first: the checkpoint rules judge the cells after, and a
        // rejecting rule must leave the slot as it was.
        let before = slot.cells.clone();
        let mut next = slot.clone();
        let mut swallowed = Vec::new();
        let key = ev.order_key();
        for (s, effect) in &decision.effects {
            let i = s.index();
            let later = match effect {
                Effect::Add(d) => {
                    next.later[i].insert(key.clone(), (*d, ev.source.clone()));
                    0
                }
                Effect::Rebase { key: k, .. } => {
                    // split_off keeps keys >= k; k itself is this set, never an adjust. What
                    // stays behind is what the set swallows.
                    let later = next.later[i].split_off(k);
                    let dropped = std::mem::replace(&mut next.later[i], later);
                    swallowed.extend(dropped.into_iter().map(|(key, (delta, source))| Swallowed {
                        source,
                        key,
                        state: *s,
                        delta,
                    }));
                    next.later[i]
                        .values()
                        .fold(0i64, |a, (d, _)| a.saturating_add(*d))
                }
            };
            effect.apply(&mut next.cells[i], later);
        }
        let checks = &self.rules.checkpoints;
        let findings = checks.judge(&prepared, &decision, &before, &next.cells, &swallowed);
        if let Some(f) = rejection(&findings) {
            reject(&mut decision, f);
        } else {
            *slot = next;
        }
        if decision.claims_id {
            self.seen.insert(identity, prepared.fingerprint);
        }
        Applied {
            outcome: decision.outcome,
            detail: decision.detail,
            findings,
        }
    }

    pub fn levels(&self, sku: &Sku, location: &Location) -> Levels {
        let mut l = Levels::default();
        if let Some(slot) = self.slots.get(&(sku.clone(), location.clone())) {
            for s in State::ALL {
                l.set(s, slot.cells[s.index()].value);
            }
        }
        l
    }

    /// Every `(sku, location)` with its levels, in key order.
    pub fn all_levels(&self) -> BTreeMap<(Sku, Location), Levels> {
        self.slots
            .keys()
            .map(|(s, l)| ((s.clone(), l.clone()), self.levels(s, l)))
            .collect()
    }

    pub fn events_seen(&self) -> usize {
        self.seen.len()
    }
}
