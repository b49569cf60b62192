//! The business: customers' orders and whether the selling system accepts them, the warehouse's
//! pick waves, the daily plan (purchasing, shrink, cycle counts, hand edits), receipts, counts and
//! people's edits of the storefront.

use super::actions::Action;
use super::{DAY, ERP, HOUR, NLOC, Order, PEOPLE, SHOP, WMS, World};
use crate::SimError;
use crate::config::CASE;

impl World {
    // ----- business ----------------------------------------------------------------------------

    pub(super) fn order(&mut self, sku: usize, b2b: bool) -> Result<(), SimError> {
        let pack = self.pack(sku);
        let packs = if b2b {
            if self.cased[sku] {
                self.rng_demand.range(2, 5)
            } else {
                self.rng_demand.range(5, 20)
            }
        } else {
            let x = self.rng_demand.f64();
            if self.cased[sku] {
                if x < 0.8 { 1 } else { 2 }
            } else if x < 0.7 {
                1
            } else if x < 0.9 {
                2
            } else {
                self.rng_demand.range(3, 5)
            }
        };
        let units = packs * pack;
        // Does the selling system accept it?
        // The ERP checks its own (point-to-point) or the hub's (hub) availability for B2B; the
        // storefront checks the quantity it shows.
        let (loc, atp) = self.best_location(sku);
        let accepted = if b2b {
            atp >= units
        } else {
            self.shop[sku] >= packs
        };
        if !accepted {
            self.orders_lost += 1;
            let phys: i64 = (0..NLOC).map(|l| self.phys[sku * NLOC + l]).sum();
            if phys - self.open[sku] >= units {
                self.orders_lost_with_stock += 1;
            }
            return Ok(());
        }
        self.orders_accepted += 1;
        // Oversell: what was physically there, minus what was already promised, fell short.
        let phys: i64 = (0..NLOC).map(|l| self.phys[sku * NLOC + l]).sum();
        let wms: i64 = (0..NLOC).map(|l| self.wms[sku * NLOC + l]).sum();
        if phys - self.open[sku] < units {
            self.oversells.orders += 1;
            self.oversells.units += (units - (phys - self.open[sku]).max(0)) as u64;
            if wms - self.open[sku] < units {
                self.oversells.integration_orders += 1;
            } else {
                self.oversells.shrink_orders += 1;
            }
        }
        self.open[sku] += units;
        let id = self.orders.len();
        self.orders.push(Order {
            sku,
            units,
            loc,
            erp_closed: false,
        });
        if !b2b && self.p.faults.shop_decrements {
            self.shop[sku] -= packs;
            self.sh1[sku] -= packs;
            self.sh2[sku] -= packs;
            let v = self.shop[sku];
            self.log(SHOP, sku, None, v, "checkout", None, format!("SO-{id}"));
        }
        if self.hub() {
            let src = if b2b { ERP } else { SHOP };
            let eid = format!("order:SO-{id}:1");
            self.send(
                src,
                sku,
                loc,
                &eid,
                Some(("committed", units)),
                None,
                "order",
                &format!("SO-{id}"),
                1,
                5,
            );
            self.released[loc].push(id);
        } else if b2b {
            // A B2B order keyed into the ERP by its sales staff.
            self.erp_commit(sku * NLOC + loc, units, "sales", None, format!("SO-{id}"));
            self.released[loc].push(id);
        } else {
            self.placed.push(id);
        }
        Ok(())
    }

    /// The location with the most availability in the view of whoever allocates orders: the ERP on
    /// point-to-point, the hub's ledger on the hub. Ties go to the first location.
    pub(super) fn best_location(&self, sku: usize) -> (usize, i64) {
        let mut best = (0, i64::MIN);
        for l in 0..NLOC {
            let c = sku * NLOC + l;
            let atp = match &self.ledger {
                Some(led) => led.levels(&self.sku_ids[sku], &self.loc_ids[l]).available(),
                None => self.erp_on[c] - self.erp_com[c],
            };
            if atp > best.1 {
                best = (l, atp);
            }
        }
        best
    }

    pub(super) fn wave(&mut self) -> Result<(), SimError> {
        for l in 0..NLOC {
            let ids = std::mem::take(&mut self.released[l]);
            for id in ids {
                let Order { sku, units, .. } = self.orders[id].clone();
                let c = sku * NLOC + l;
                self.open[sku] -= units;
                if self.phys[c] >= units {
                    self.phys[c] -= units;
                    self.wms[c] -= units;
                    let v = self.wms[c];
                    self.log(WMS, sku, Some(l), v, "wms", None, format!("ship SO-{id}"));
                    if self.hub() {
                        let eid = format!("ship:SO-{id}:1");
                        self.send_pair(WMS, sku, l, &eid, -units, "shipment", &format!("SO-{id}"));
                    } else {
                        self.changed.insert(c);
                        self.closed.push(id);
                    }
                } else {
                    // Short pick: the shelf is emptier than the WMS thought. The picker's count
                    // corrects the WMS and the line is cancelled.
                    let found = self.phys[c];
                    self.wms_counted(c, found, format!("short pick SO-{id}"));
                    if self.hub() {
                        let eid = format!("short:SO-{id}");
                        self.wms_set(sku, l, found, &eid);
                        let eid = format!("cancel:SO-{id}:1");
                        self.send(
                            WMS,
                            sku,
                            l,
                            &eid,
                            Some(("committed", -units)),
                            None,
                            "cancel",
                            &format!("SO-{id}"),
                            1,
                            5,
                        );
                    } else {
                        self.changed.insert(c);
                        self.closed.push(id);
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn plan(&mut self, day: i64) {
        let n = self.p.skus;
        let max_rate = self.rate.iter().copied().fold(0.0, f64::max).max(1e-9);
        for sku in 0..n {
            let daily = self.rate[sku] * self.mean_units(sku) / NLOC as f64;
            for l in 0..NLOC {
                let c = sku * NLOC + l;
                // Replenishment: below four days of cover and nothing on order.
                if !self.po_open[c] && (self.wms[c] as f64) < daily * 4.0 {
                    let mut units = (daily * 10.0).ceil().max(6.0) as i64;
                    if self.cased[sku] {
                        units = (units + CASE - 1) / CASE * CASE;
                    }
                    let po = self.next_po;
                    self.next_po += 1;
                    self.po_open[c] = true;
                    let arrive = (day + self.rng_ops.range(2, 3)) * DAY
                        + 9 * HOUR
                        + self.rng_ops.range(0, 6 * HOUR);
                    self.at(arrive, Action::Receipt { cell: c, units, po });
                    if self.hub() {
                        let eid = format!("po:PO-{po}:1");
                        self.send(
                            ERP,
                            sku,
                            l,
                            &eid,
                            Some(("incoming", units)),
                            None,
                            "purchase_order",
                            &format!("PO-{po}"),
                            1,
                            60,
                        );
                    }
                }
                // Unrecorded losses, proportional to how much the sku moves.
                let lambda = self.p.shrink_per_day * self.rate[sku] / max_rate;
                if self.rng_ops.chance(lambda.min(1.0)) {
                    let units = if self.cased[sku] {
                        CASE
                    } else {
                        self.rng_ops.range(1, 3)
                    };
                    let t = day * DAY + self.rng_ops.range(0, DAY - 1);
                    self.at(t, Action::Loss { cell: c, units });
                }
                if self.rng_ops.chance(self.p.cycle_count_share) {
                    let t = day * DAY + 6 * HOUR + self.rng_ops.range(0, 8 * HOUR);
                    self.at(t, Action::Count { cell: c });
                }
            }
        }
        // Hand edits of storefront quantities; people look at the skus that move.
        let per_day = self.p.faults.overrides_per_day;
        let mut k = per_day.floor() as i64;
        if self.rng_fault.chance(per_day - per_day.floor()) {
            k += 1;
        }
        for _ in 0..k {
            let sku = self.rng_fault.weighted(&self.cum);
            let t = day * DAY + 8 * HOUR + self.rng_fault.range(0, 12 * HOUR);
            self.at(t, Action::Override { sku });
        }
    }

    pub(super) fn receipt(&mut self, cell: usize, units: i64, po: u64) -> Result<(), SimError> {
        let (sku, l) = (cell / NLOC, cell % NLOC);
        self.phys[cell] += units;
        self.wms[cell] += units;
        self.po_open[cell] = false;
        let v = self.wms[cell];
        self.log(
            WMS,
            sku,
            Some(l),
            v,
            "wms",
            None,
            format!("receive PO-{po}"),
        );
        if self.hub() {
            let eid = format!("receipt:PO-{po}:1");
            self.send(
                WMS,
                sku,
                l,
                &eid,
                Some(("on_hand", units)),
                None,
                "receipt",
                &format!("PO-{po}"),
                1,
                5,
            );
            let eid = format!("po:PO-{po}:2");
            self.send(
                ERP,
                sku,
                l,
                &eid,
                Some(("incoming", -units)),
                None,
                "receipt",
                &format!("PO-{po}"),
                1,
                60,
            );
        } else {
            self.changed.insert(cell);
        }
        Ok(())
    }

    /// A person counted `found` units at `cell`: the WMS takes the count, and its change log says
    /// why (only when the value changes: the log records writes that change something).
    fn wms_counted(&mut self, cell: usize, found: i64, why: String) {
        if self.wms[cell] != found {
            self.wms[cell] = found;
            let (sku, l) = (cell / NLOC, cell % NLOC);
            self.log(WMS, sku, Some(l), found, "wms", None, why);
        }
    }

    pub(super) fn count(&mut self, cell: usize) -> Result<(), SimError> {
        let (sku, l) = (cell / NLOC, cell % NLOC);
        let found = self.phys[cell];
        let n = self.count_seq;
        self.count_seq += 1;
        self.wms_counted(cell, found, format!("cycle count CC-{n}"));
        if self.hub() {
            let eid = format!("count:CC-{n}");
            self.wms_set(sku, l, found, &eid);
        } else {
            self.changed.insert(cell);
        }
        Ok(())
    }

    pub(super) fn override_(&mut self, sku: usize) {
        let cur = self.shop[sku];
        let x = self.rng_fault.f64();
        let v = if x < 0.3 {
            0 // hide it
        } else if x < 0.7 {
            cur + self.rng_fault.range(10, 50) // make it look plentiful for a campaign
        } else {
            self.rng_fault.range(0, 100) // typed from a spreadsheet
        };
        if v == cur {
            return;
        }
        let who = PEOPLE[self.rng_fault.below(PEOPLE.len() as u64) as usize];
        self.shop[sku] = v;
        self.shop_meta[sku].person = true;
        self.log(SHOP, sku, None, v, who, None, "manual edit".into());
        if self.hub() {
            let d = self.rng_lat.range(1, 5);
            self.at(self.now + d, Action::Observe { sku, value: v });
        }
    }
}
