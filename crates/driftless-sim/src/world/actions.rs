//! The queue of everything that happens in a run: each `Action`, ordered by time and insertion
//! number, and the loop's dispatch of it to the business, the integrations or the hub.

use super::{DAY, HOUR, NLOC, World};
use crate::SimError;
use std::cmp::Ordering;

#[derive(Debug, Clone)]
pub(super) enum Action {
    Demand {
        sku: usize,
        b2b: bool,
    },
    FlashStart,
    FlashDemand {
        sku: usize,
        end: i64,
        mean_gap: f64,
    },
    Wave,
    DailyPlan {
        day: i64,
    },
    Receipt {
        cell: usize,
        units: i64,
        po: u64,
    },
    Loss {
        cell: usize,
        units: i64,
    },
    Count {
        cell: usize,
    },
    Override {
        sku: usize,
    },
    Sample,
    // point-to-point
    Export,
    Import {
        retry_of: Option<usize>,
    },
    OrderSync,
    Poll,
    ShopWrite(Write),
    // hub
    Deliver {
        idx: usize,
    },
    PushCycle,
    PushArrive(Push),
    PushRetry {
        sku: usize,
    },
    ErpMirror {
        cell: usize,
        on_hand: i64,
        committed: i64,
        src: i64,
    },
    Observe {
        sku: usize,
        value: i64,
    },
}

impl Action {
    /// Whether this action is an integration's work in flight (as opposed to business happening).
    /// After the snapshot the hub is allowed to finish these and nothing else.
    pub(super) fn in_flight(&self) -> bool {
        matches!(
            self,
            Action::Deliver { .. }
                | Action::PushCycle
                | Action::PushArrive(_)
                | Action::PushRetry { .. }
                | Action::ErpMirror { .. }
                | Action::Observe { .. }
                | Action::ShopWrite(_)
                | Action::Import { retry_of: Some(_) }
        )
    }
}

/// A storefront update by the point-to-point connector, kept whole so a retry re-sends it as it was.
#[derive(Debug, Clone, Copy)]
pub(super) struct Write {
    pub(super) sku: usize,
    pub(super) value: i64,
    /// When the ERP data it was computed from was read.
    pub(super) src: i64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Push {
    pub(super) sku: usize,
    pub(super) qty: i64,
    pub(super) compare: Option<i64>,
    pub(super) key: u64,
    pub(super) src: i64,
}

pub(super) struct Queued {
    pub(super) at: i64,
    n: u64,
    pub(super) action: Action,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.n) == (o.at, o.n)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and the earliest action must come out first.
        (o.at, o.n).cmp(&(self.at, self.n))
    }
}

impl World {
    pub(super) fn at(&mut self, t: i64, action: Action) {
        self.qn += 1;
        self.queue.push(Queued {
            at: t,
            n: self.qn,
            action,
        });
    }

    // ----- the loop --------------------------------------------------------------------------

    pub(super) fn handle(&mut self, a: Action) -> Result<(), SimError> {
        match a {
            Action::Demand { sku, b2b } => {
                let r = self.sku_rate(sku, b2b);
                let gap = self.rng_demand.exp(DAY as f64 / r).max(1.0) as i64;
                self.at(self.now + gap, Action::Demand { sku, b2b });
                self.order(sku, b2b)?;
            }
            Action::FlashStart => {
                let hours = i64::from(self.p.flash_hours.max(1));
                let end = self.now + hours * HOUR;
                for sku in self.flash.clone() {
                    // Demand for the sale is a multiple of the stock there is, so it sells out.
                    let stock: i64 = (0..NLOC).map(|l| self.phys[sku * NLOC + l]).sum();
                    let orders =
                        (stock as f64 / self.mean_units(sku) * self.p.flash_multiplier).max(1.0);
                    let mean_gap = (hours * HOUR) as f64 / orders;
                    let t = self.now + self.rng_demand.exp(mean_gap) as i64;
                    self.at(t, Action::FlashDemand { sku, end, mean_gap });
                }
            }
            Action::FlashDemand { sku, end, mean_gap } => {
                if self.now < end {
                    let t = self.now + self.rng_demand.exp(mean_gap).max(1.0) as i64;
                    self.at(t, Action::FlashDemand { sku, end, mean_gap });
                    self.order(sku, false)?;
                }
            }
            Action::Wave => self.wave()?,
            Action::DailyPlan { day } => self.plan(day),
            Action::Receipt { cell, units, po } => self.receipt(cell, units, po)?,
            Action::Loss { cell, units } => {
                let u = units.min(self.phys[cell]);
                self.phys[cell] -= u;
            }
            Action::Count { cell } => self.count(cell)?,
            Action::Override { sku } => self.override_(sku),
            Action::Sample => {
                self.sample();
                self.at(self.now + HOUR, Action::Sample);
            }
            Action::Export => self.export(),
            Action::Import { retry_of } => self.import(retry_of),
            Action::OrderSync => self.order_sync(),
            Action::Poll => self.poll(),
            Action::ShopWrite(w) => self.shop_write(w),
            Action::Deliver { idx } => self.deliver(idx),
            Action::PushCycle => self.push_cycle(),
            Action::PushArrive(p) => self.push_arrive(p),
            Action::PushRetry { sku } => {
                self.dirty.insert(sku);
                self.schedule_push();
            }
            Action::ErpMirror {
                cell,
                on_hand,
                committed,
                src,
            } => self.erp_mirror(cell, on_hand, committed, src),
            Action::Observe { sku, value } => {
                // The storefront reported a quantity the hub did not push: record it, then
                // overwrite it (policy `overwrite`) with compare-and-set against what was seen.
                if self.last_acked[sku] != Some(value) {
                    self.hub.overrides_overwritten += 1;
                    self.last_acked[sku] = Some(value);
                    self.dirty.insert(sku);
                    self.schedule_push();
                }
            }
        }
        Ok(())
    }
}
