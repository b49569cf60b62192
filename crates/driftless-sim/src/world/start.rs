//! The opening of a run: the catalogue (velocities, cased, mismapped and phantom skus, the
//! flash sale's skus), the opening stock and each system's initial load, and the first actions.

use super::actions::Action;
use super::{DAY, ERP, ErpMeta, HOUR, HubStats, MIN, NLOC, Oversells, SHOP, ShopMeta, WMS, World};
use crate::SimError;
use crate::config::{CASE, LOCATIONS};
use crate::rng::Rng;
use crate::scenario::{Architecture, Params};
use driftless_config::Settings;
use driftless_core::{ChannelSpec, Location, MemoryLedger, Sku};
use std::collections::{BTreeSet, BinaryHeap, HashSet};

impl World {
    pub(super) fn new(
        p: &Params,
        settings: &Settings,
        spec: ChannelSpec,
    ) -> Result<World, SimError> {
        let n = p.skus;
        let mut rng_setup = Rng::stream(p.seed, "catalogue");
        // Velocity rank is shuffled against sku number so fast movers are spread through the
        // catalogue, as in a real one.
        let mut rank: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng_setup.below(i as u64 + 1) as usize;
            rank.swap(i, j);
        }
        let weights: Vec<f64> = (0..n)
            .map(|i| 1.0 / ((rank[i] + 1) as f64).powf(p.zipf))
            .collect();
        let total: f64 = weights.iter().sum();
        let rate: Vec<f64> = weights
            .iter()
            .map(|w| p.orders_per_sku_day * n as f64 * w / total)
            .collect();
        let mut cum = Vec::with_capacity(n);
        let mut acc = 0.0;
        for r in &rate {
            acc += r;
            cum.push(acc);
        }
        let f = &p.faults;
        let mut cased = vec![false; n];
        let mut mismapped = vec![false; n];
        let mut phantom = vec![false; n];
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            cased[i] = rng_setup.chance(f.cased_share);
            mismapped[i] = cased[i] && rng_setup.chance(f.uom_mismapped_share);
            phantom[i] = rng_setup.chance(f.phantom_share);
            names.push(if cased[i] {
                format!("CASE-{:05}", i + 1)
            } else {
                format!("SKU-{:05}", i + 1)
            });
        }
        // Flash-sale skus: among the moderately fast (ranks 10..), where stock is not bottomless.
        let mut by_rank: Vec<usize> = (0..n).collect();
        by_rank.sort_by_key(|i| rank[*i]);
        let flash: Vec<usize> = by_rank
            .iter()
            .copied()
            .skip(10.min(n.saturating_sub(p.flash_skus)))
            .take(p.flash_skus)
            .collect();
        let sku_ids = names
            .iter()
            .map(|s| Sku::parse(s.clone()).map_err(|e| SimError::Internal(format!("sku {s}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let loc_ids = LOCATIONS
            .iter()
            .map(|l| {
                Location::parse(*l).map_err(|e| SimError::Internal(format!("location {l}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ledger = (p.architecture == Architecture::Hub)
            .then(|| MemoryLedger::new(settings.rules.clone()));
        Ok(World {
            p: p.clone(),
            spec,
            sku_ids,
            loc_ids,
            names,
            cased,
            mismapped,
            phantom,
            rate,
            cum,
            flash,
            rng_demand: Rng::stream(p.seed, "demand"),
            rng_ops: Rng::stream(p.seed, "operations"),
            rng_fault: Rng::stream(p.seed, "faults"),
            rng_lat: Rng::stream(p.seed, "latency"),
            phys: vec![0; n * NLOC],
            open: vec![0; n],
            wms: vec![0; n * NLOC],
            erp_on: vec![0; n * NLOC],
            erp_com: vec![0; n * NLOC],
            erp_meta: vec![ErpMeta::default(); n * NLOC],
            shop: vec![0; n],
            shop_meta: vec![ShopMeta::default(); n],
            sh1: vec![0; n],
            sh2: vec![0; n],
            last2: vec![None; n],
            orders: Vec::new(),
            released: std::array::from_fn(|_| Vec::new()),
            po_open: vec![false; n * NLOC],
            next_po: 1,
            count_seq: 1,
            files: Vec::new(),
            imported: 0,
            changed: BTreeSet::new(),
            closed: Vec::new(),
            placed: Vec::new(),
            conn_last: vec![None; n],
            ledger,
            events: Vec::new(),
            seq: [0; 3],
            dirty: BTreeSet::new(),
            dirty_cells: BTreeSet::new(),
            push_pending: false,
            last_acked: vec![None; n],
            shop_keys: HashSet::new(),
            push_key: 1,
            delivered: Vec::new(),
            recording: true,
            queue: BinaryHeap::new(),
            qn: 0,
            now: 0,
            wms_log: Vec::new(),
            erp_log: Vec::new(),
            shop_log: Vec::new(),
            series: Vec::new(),
            oversells: Oversells::default(),
            hub: HubStats::default(),
            orders_accepted: 0,
            orders_lost: 0,
            orders_lost_with_stock: 0,
        })
    }

    // ----- start -----------------------------------------------------------------------------

    #[allow(clippy::needless_range_loop)] // cells are indexed sku * NLOC + l throughout
    pub(super) fn start(&mut self) {
        let n = self.p.skus;
        for sku in 0..n {
            let daily_units = self.rate[sku] * self.mean_units(sku);
            for l in 0..NLOC {
                let c = sku * NLOC + l;
                let cover = self.rng_ops.range(8, 14) as f64;
                let mut units =
                    (daily_units / NLOC as f64 * cover).ceil() as i64 + self.rng_ops.range(2, 6);
                if self.cased[sku] {
                    units = (units + CASE - 1) / CASE * CASE;
                }
                self.phys[c] = units;
                self.wms[c] = units;
                self.log(
                    WMS,
                    sku,
                    Some(l),
                    units,
                    "wms",
                    None,
                    "initial count".into(),
                );
                self.erp_on[c] = if self.mismapped[sku] {
                    units / CASE
                } else {
                    units
                };
                self.erp_meta[c] = ErpMeta {
                    src: 0,
                    w_src: units,
                    max_src: 0,
                    w_max: units,
                };
                let v = self.erp_on[c];
                let actor = if self.hub() { "driftless" } else { "wms-sync" };
                self.log(ERP, sku, Some(l), v, actor, Some(0), "initial load".into());
                if self.hub() {
                    let id = format!("count:initial:{}:{}", self.names[sku], LOCATIONS[l]);
                    self.wms_set(sku, l, units, &id);
                }
            }
            let (on, com) = self.erp_sums(sku);
            let v = if self.phantom[sku] && !self.hub() {
                self.q(sku, on)
            } else {
                self.q(sku, on - com)
            };
            self.shop[sku] = v;
            self.shop_meta[sku] = ShopMeta { person: false };
            self.conn_last[sku] = Some(v);
            // Counterfactual storefronts for the truth: the same connector without retries, and
            // without retries and with committed mapped.
            self.sh1[sku] = v;
            self.sh2[sku] = self.q(sku, on - com);
            self.last2[sku] = Some(self.sh2[sku]);
            self.last_acked[sku] = Some(v);
            let actor = if self.hub() { "driftless" } else { "erp-sync" };
            self.log(SHOP, sku, None, v, actor, Some(0), "initial load".into());
            // Demand.
            for b2b in [false, true] {
                let r = self.sku_rate(sku, b2b);
                if r > 0.0 {
                    let t = self.rng_demand.exp(DAY as f64 / r) as i64;
                    self.at(t, Action::Demand { sku, b2b });
                }
            }
        }
        for d in 0..i64::from(self.p.days) + 1 {
            self.at(d * DAY + 5 * HOUR, Action::DailyPlan { day: d });
            // Pick waves during the warehouse's shift; orders placed overnight wait for 10:00.
            let mut h = 10;
            while h <= 20 {
                self.at(d * DAY + h * HOUR, Action::Wave);
                h += 2;
            }
        }
        if !self.flash.is_empty() && self.p.days >= 1 {
            // At noon on the snapshot's day when the snapshot falls after noon (the audit then
            // catches the sale in progress), else at noon the day before.
            let day = i64::from(self.p.days) - i64::from(self.p.snapshot_hour <= 12);
            self.at(day * DAY + 12 * HOUR, Action::FlashStart);
        }
        self.at(HOUR, Action::Sample);
        if !self.hub() {
            let first = self.next_export_after(0);
            self.at(first, Action::Export);
            let f = self.p.faults.clone();
            let imp = i64::from(f.import_every_min) * MIN;
            let offset = HOUR.min(imp / 2);
            self.at(offset.max(MIN), Action::Import { retry_of: None });
            self.at(i64::from(f.order_sync_min) * MIN, Action::OrderSync);
            let poll = i64::from(f.poll_every_min.max(1)) * MIN;
            // Polls fall between order downloads, as two independent jobs do.
            self.at((poll / 2).max(30), Action::Poll);
        }
    }

    pub(super) fn mean_units(&self, sku: usize) -> f64 {
        if self.cased[sku] {
            1.2 * CASE as f64
        } else {
            1.5
        }
    }

    pub(super) fn sku_rate(&self, sku: usize, b2b: bool) -> f64 {
        let share = if b2b {
            self.p.b2b_share
        } else {
            1.0 - self.p.b2b_share
        };
        self.rate[sku] * share
    }

    pub(super) fn next_export_after(&self, t: i64) -> i64 {
        let f = &self.p.faults;
        if f.export_every_h == 0 {
            return t + 5 * MIN;
        }
        let every = i64::from(f.export_every_h) * HOUR;
        let mut x = i64::from(f.export_hour) * HOUR;
        while x <= t || (f.weekdays_only && (x / DAY) % 7 >= 5) {
            x += every;
        }
        x
    }
}
