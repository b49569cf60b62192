//! The hub: canonical events built the way each system would send them, delivered (and, in a
//! retry storm, redelivered) to the real core's [`MemoryLedger`](driftless_core::MemoryLedger), a
//! dispatcher that pushes the latest channel quantity with compare-and-set and idempotency keys,
//! and the ERP's view mirrored from the ledger.

use super::actions::{Action, Push};
use super::{ERP, MIN, NLOC, SHOP, SOURCES, WMS, World, rfc3339};
use crate::config::{CASE, LOCATIONS};
use driftless_core::{Event, Outcome, RawEvent};

impl World {
    pub(super) fn wms_set(&mut self, sku: usize, l: usize, units: i64, id: &str) {
        self.send(
            WMS,
            sku,
            l,
            id,
            None,
            Some(("on_hand", units)),
            "count",
            id,
            0,
            0,
        );
    }

    /// A shipment: on-hand and committed fall together, in one event.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send_pair(
        &mut self,
        src: usize,
        sku: usize,
        l: usize,
        id: &str,
        units: i64,
        reason: &str,
        r: &str,
    ) {
        self.push_event(
            src,
            sku,
            l,
            id,
            vec![("on_hand", units), ("committed", units)],
            false,
            reason,
            r,
            1,
            5,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        src: usize,
        sku: usize,
        l: usize,
        id: &str,
        adjust: Option<(&'static str, i64)>,
        set: Option<(&'static str, i64)>,
        reason: &str,
        r: &str,
        lo: i64,
        hi: i64,
    ) {
        let (list, is_set) = match (adjust, set) {
            (Some(a), _) => (vec![a], false),
            (None, Some(s)) => (vec![s], true),
            (None, None) => return,
        };
        self.push_event(src, sku, l, id, list, is_set, reason, r, lo, hi);
    }

    /// Builds a canonical event the way a sender would (cased quantities in cases, as the WMS keeps
    /// them) and queues its delivery to the core, plus a late redelivery when a retry storm is on.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push_event(
        &mut self,
        src: usize,
        sku: usize,
        l: usize,
        id: &str,
        mut list: Vec<(&'static str, i64)>,
        is_set: bool,
        reason: &str,
        r: &str,
        lo: i64,
        hi: i64,
    ) {
        let in_cases = self.cased[sku] && list.iter().all(|(_, q)| q % CASE == 0);
        if in_cases {
            for (_, q) in list.iter_mut() {
                *q /= CASE;
            }
        }
        self.seq[src] += 1;
        let occurred = rfc3339(self.now);
        let raw = RawEvent {
            id,
            source: SOURCES[src],
            sku: &self.names[sku],
            location: LOCATIONS[l],
            occurred_at: &occurred,
            seq: self.seq[src],
            adjust: (!is_set).then(|| list.clone()),
            set: is_set.then(|| list.clone()),
            uom: in_cases.then_some("CS"),
            reason: Some(reason),
            reference: Some(r),
        };
        let Ok(ev) = Event::from_raw(&raw) else {
            // The simulator only builds valid events; count a bad one rather than stop the run.
            *self.hub.outcomes.entry("invalid".into()).or_default() += 1;
            return;
        };
        let idx = self.events.len();
        self.events.push((ev, sku, l));
        let d = self.rng_lat.range(lo, hi);
        self.at(self.now + d, Action::Deliver { idx });
        if self.rng_fault.chance(self.p.faults.retry_rate) {
            let max = i64::from(self.p.faults.retry_max_delay_min) * MIN;
            let d2 = self.rng_lat.range(d + 1, d + max.max(MIN));
            self.at(self.now + d2, Action::Deliver { idx });
        }
    }

    pub(super) fn deliver(&mut self, idx: usize) {
        if self.recording {
            self.delivered.push((self.now, idx));
        }
        let (ev, sku, l) = self.events[idx].clone();
        let feeds = self.spec.feeds_from(&ev.location);
        let Some(ledger) = self.ledger.as_mut() else {
            return;
        };
        let out = ledger.apply(ev);
        *self
            .hub
            .outcomes
            .entry(out.outcome.as_str().to_owned())
            .or_default() += 1;
        if out.outcome == Outcome::Applied || out.outcome == Outcome::Override {
            if feeds {
                self.dirty.insert(sku);
            }
            self.dirty_cells.insert(sku * NLOC + l);
            self.schedule_push();
        }
    }

    pub(super) fn schedule_push(&mut self) {
        if !self.push_pending {
            self.push_pending = true;
            self.at(self.now + 10, Action::PushCycle);
        }
    }

    /// One dispatcher cycle: the latest value of every dirty sku (coalesced) to the storefront,
    /// with compare-and-set, and the ledger's levels to the ERP's view.
    pub(super) fn push_cycle(&mut self) {
        self.push_pending = false;
        let Some(ledger) = self.ledger.as_ref() else {
            return;
        };
        let mut pushes = Vec::new();
        for sku in std::mem::take(&mut self.dirty) {
            let atp: i64 = self
                .spec
                .locations
                .iter()
                .map(|l| ledger.levels(&self.sku_ids[sku], l).available())
                .sum();
            pushes.push((sku, self.spec.quantity(&self.sku_ids[sku], atp)));
        }
        let mut mirrors = Vec::new();
        for c in std::mem::take(&mut self.dirty_cells) {
            let lv = ledger.levels(&self.sku_ids[c / NLOC], &self.loc_ids[c % NLOC]);
            mirrors.push((c, lv.on_hand, lv.committed));
        }
        for (sku, qty) in pushes {
            let p = Push {
                sku,
                qty,
                compare: self.last_acked[sku],
                key: self.push_key,
                src: self.now,
            };
            self.push_key += 1;
            self.hub.pushes += 1;
            let d = self.rng_lat.range(1, 3);
            self.at(self.now + d, Action::PushArrive(p));
            if self.rng_fault.chance(self.p.faults.retry_rate) {
                let max = i64::from(self.p.faults.retry_max_delay_min) * MIN;
                let d2 = self.rng_lat.range(d + 1, d + max.max(MIN));
                self.at(self.now + d2, Action::PushArrive(p));
            }
        }
        for (cell, on_hand, committed) in mirrors {
            let d = self.rng_lat.range(1, 3);
            self.at(
                self.now + d,
                Action::ErpMirror {
                    cell,
                    on_hand,
                    committed,
                    src: self.now,
                },
            );
        }
    }

    /// The storefront's side of a push: idempotency key, then compare-and-set.
    pub(super) fn push_arrive(&mut self, p: Push) {
        if !self.shop_keys.insert(p.key) {
            return; // a redelivered push: already handled under this key
        }
        let cur = self.shop[p.sku];
        if p.compare.is_none() || p.compare == Some(cur) || p.qty == cur {
            self.last_acked[p.sku] = Some(p.qty);
            self.shop_meta[p.sku].person = false;
            if cur != p.qty {
                self.shop[p.sku] = p.qty;
                self.log(
                    SHOP,
                    p.sku,
                    None,
                    p.qty,
                    "driftless",
                    Some(p.src),
                    format!("push {}", p.key),
                );
            }
        } else {
            // 409 with the current quantity: re-read and push again after a short backoff, by
            // when the events that explain the difference (the storefront's own orders) are in.
            self.hub.compare_failures += 1;
            self.last_acked[p.sku] = Some(cur);
            let d = self.rng_lat.range(10, 20);
            self.at(self.now + d, Action::PushRetry { sku: p.sku });
        }
    }

    pub(super) fn erp_mirror(&mut self, cell: usize, on_hand: i64, committed: i64, src: i64) {
        let m = &mut self.erp_meta[cell];
        if src < m.max_src {
            return; // older than what the ERP view already shows
        }
        m.src = src;
        m.max_src = src;
        m.w_src = on_hand;
        m.w_max = on_hand;
        // A row whenever either state moves: the log carries committed too (see `World::log`).
        let moved = self.erp_on[cell] != on_hand || self.erp_com[cell] != committed;
        self.erp_com[cell] = committed;
        if moved {
            self.erp_on[cell] = on_hand;
            self.log(
                ERP,
                cell / NLOC,
                Some(cell % NLOC),
                on_hand,
                "driftless",
                Some(src),
                "hub levels".into(),
            );
        }
    }
}
