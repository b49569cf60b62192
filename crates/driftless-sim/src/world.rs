//! The simulation itself: physical stock, the customers, the warehouse, and the three systems
//! (WMS, ERP, storefront) connected either point-to-point or through the driftless core.
//!
//! A discrete-event loop over whole seconds. Everything that happens is an `Action` in one queue
//! ordered by `(time, insertion number)`, so a run is a pure function of its [`Params`]. The model
//! keeps, beside every system's value, the provenance of that value (which write produced it, from
//! which upstream data, through which transform), which is what the ground truth is computed from.
//! No I/O happens here.
//!
//! This module holds the business (demand, warehouse, purchasing, shrink, counts, people) and the
//! measurements; `p2p` the point-to-point integrations and `hub` the path through the core.

mod hub;
mod p2p;

use crate::config::{self, CASE, LOCATIONS};
use crate::rng::Rng;
use crate::scenario::{Architecture, Params};
use crate::{ChangeRow, SimError};
use driftless_config::Settings;
use driftless_core::{ChannelSpec, Event, Location, MemoryLedger, Sku};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};

pub(crate) const MIN: i64 = 60;
pub(crate) const HOUR: i64 = 3600;
pub(crate) const DAY: i64 = 86_400;
const NLOC: usize = LOCATIONS.len();

#[derive(Debug, Clone)]
enum Action {
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
    fn in_flight(&self) -> bool {
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
struct Write {
    sku: usize,
    value: i64,
    /// When the ERP data it was computed from was read.
    src: i64,
}

#[derive(Debug, Clone, Copy)]
struct Push {
    sku: usize,
    qty: i64,
    compare: Option<i64>,
    key: u64,
    src: i64,
}

struct Queued {
    at: i64,
    n: u64,
    action: Action,
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

#[derive(Debug, Clone)]
struct Order {
    sku: usize,
    units: i64,
    loc: usize,
    /// The ERP has closed the line (point-to-point: released its committed quantity).
    erp_closed: bool,
}

/// Where the ERP's on-hand for one cell came from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ErpMeta {
    /// Upstream data time of the last write, and the WMS value it carried.
    pub src: i64,
    pub w_src: i64,
    /// Newest upstream data time ever written, and its WMS value.
    pub max_src: i64,
    pub w_max: i64,
}

/// Where the storefront's quantity for one sku came from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ShopMeta {
    /// The last write other than a checkout was a person's.
    pub person: bool,
}

/// Oversold orders: accepted when the stock physically available could not cover them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Oversells {
    pub orders: u64,
    pub units: u64,
    /// Of these, orders the WMS's own records could not have covered either: the systems'
    /// views were stale or wrong (integration). The rest were caused by unrecorded shrink, which
    /// only a count can reveal, on any architecture.
    pub integration_orders: u64,
    pub shrink_orders: u64,
}

/// Drift of each system against physical truth at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    /// Hours since the start.
    pub hour: i64,
    /// Sum over (sku, location) of |WMS on-hand - physical|.
    pub wms_units: i64,
    /// Sum over (sku, location) of |ERP on-hand - physical|.
    pub erp_units: i64,
    /// Sum over skus of |storefront - what physical stock allows it to sell|, in selling packs.
    pub shop_units: i64,
    /// Keys over the threshold, per system.
    pub wms_keys: u64,
    pub erp_keys: u64,
    pub shop_keys: u64,
}

/// What the hub did (zero on point-to-point).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HubStats {
    /// Deliveries to the core per outcome, including duplicate redeliveries.
    pub outcomes: BTreeMap<String, u64>,
    pub pushes: u64,
    /// Pushes refused by the storefront's compare-and-set (someone changed it since).
    pub compare_failures: u64,
    /// Hand edits the storefront reported and the hub overwrote.
    pub overrides_overwritten: u64,
}

/// Everything one run produced, before rendering.
#[derive(Debug, Clone)]
pub struct Run {
    pub params: Params,
    pub config_toml: String,
    pub settings: Settings,
    pub skus: Vec<String>,
    /// Snapshot time, seconds since the start.
    pub at: i64,
    pub phys: Vec<i64>,
    pub wms: Vec<i64>,
    pub erp_on: Vec<i64>,
    pub erp_com: Vec<i64>,
    pub shop: Vec<i64>,
    pub(crate) erp_meta: Vec<ErpMeta>,
    pub(crate) shop_meta: Vec<ShopMeta>,
    /// Point-to-point counterfactual storefronts (see `truth`).
    pub(crate) shop_no_retry: Vec<i64>,
    pub(crate) shop_no_retry_mapped: Vec<i64>,
    pub(crate) mismapped: Vec<bool>,
    pub wms_log: Vec<ChangeRow>,
    pub erp_log: Vec<ChangeRow>,
    pub shop_log: Vec<ChangeRow>,
    pub series: Vec<Sample>,
    pub oversells: Oversells,
    pub hub: HubStats,
    /// On the hub, the state once every push and event in flight at the snapshot has landed.
    pub settled: Option<Settled>,
    pub orders_accepted: u64,
    pub orders_lost: u64,
    /// Of the orders turned away, those the physical stock could have filled: sales lost to a view
    /// that showed too little.
    pub orders_lost_with_stock: u64,
    /// Hub: every event sent, and every delivery to the core before the snapshot (time in seconds
    /// since the start, index into `sent`); see [`Run::hub_events`].
    sent: Vec<Event>,
    deliveries: Vec<(i64, usize)>,
}

impl Run {
    /// Hub: every delivery of an event to the core before the snapshot, in order, with its time
    /// (seconds since the start). Redeliveries of a retry storm appear again. The demo replays
    /// these over HTTP.
    pub fn hub_events(&self) -> impl Iterator<Item = (i64, &Event)> + '_ {
        self.deliveries
            .iter()
            .filter_map(|(t, i)| self.sent.get(*i).map(|e| (*t, e)))
    }
}

/// The systems' values after in-flight work finished (hub only).
#[derive(Debug, Clone)]
pub struct Settled {
    pub phys: Vec<i64>,
    pub wms: Vec<i64>,
    pub erp_on: Vec<i64>,
    pub erp_com: Vec<i64>,
    pub shop: Vec<i64>,
    pub(crate) shop_meta: Vec<ShopMeta>,
    pub(crate) erp_meta: Vec<ErpMeta>,
}

struct World {
    p: Params,
    spec: ChannelSpec,
    sku_ids: Vec<Sku>,
    loc_ids: Vec<Location>,
    names: Vec<String>,
    cased: Vec<bool>,
    mismapped: Vec<bool>,
    phantom: Vec<bool>,
    /// Orders per day per sku.
    rate: Vec<f64>,
    /// Cumulative velocity, to pick skus the way people notice them (fast movers first).
    cum: Vec<f64>,
    flash: Vec<usize>,

    rng_demand: Rng,
    rng_ops: Rng,
    rng_fault: Rng,
    rng_lat: Rng,

    phys: Vec<i64>,
    open: Vec<i64>,
    wms: Vec<i64>,
    erp_on: Vec<i64>,
    erp_com: Vec<i64>,
    erp_meta: Vec<ErpMeta>,
    shop: Vec<i64>,
    shop_meta: Vec<ShopMeta>,
    sh1: Vec<i64>,
    sh2: Vec<i64>,
    last2: Vec<Option<i64>>,
    orders: Vec<Order>,
    released: [Vec<usize>; NLOC],
    po_open: Vec<bool>,
    next_po: u64,
    count_seq: u64,

    // point-to-point
    files: Vec<ExportFile>,
    imported: usize,
    changed: BTreeSet<usize>,
    closed: Vec<usize>,
    placed: Vec<usize>,
    conn_last: Vec<Option<i64>>,

    // hub
    ledger: Option<MemoryLedger>,
    events: Vec<(Event, usize, usize)>,
    seq: [u64; 3],
    dirty: BTreeSet<usize>,
    dirty_cells: BTreeSet<usize>,
    push_pending: bool,
    last_acked: Vec<Option<i64>>,
    shop_keys: HashSet<u64>,
    push_key: u64,

    delivered: Vec<(i64, usize)>,
    recording: bool,
    queue: BinaryHeap<Queued>,
    qn: u64,
    now: i64,

    wms_log: Vec<ChangeRow>,
    erp_log: Vec<ChangeRow>,
    shop_log: Vec<ChangeRow>,
    series: Vec<Sample>,
    oversells: Oversells,
    hub: HubStats,
    orders_accepted: u64,
    orders_lost: u64,
    orders_lost_with_stock: u64,
}

#[derive(Debug, Clone)]
struct ExportFile {
    at: i64,
    values: Vec<(usize, i64)>,
    closed: Vec<usize>,
}

const PEOPLE: [&str; 4] = ["merch.anna", "ops.li", "merch.tomas", "cs.priya"];
const WMS: usize = 0;
const ERP: usize = 1;
const SHOP: usize = 2;
const SOURCES: [&str; 3] = ["wms", "erp", "shop"];

/// Runs one simulation.
pub fn run(p: &Params) -> Result<Run, SimError> {
    p.validate()?;
    let config_toml = config::render(p);
    let settings = Settings::parse("driftless.toml", &config_toml)
        .map_err(|e| SimError::Internal(format!("generated configuration is invalid: {e}")))?;
    let spec = settings
        .channel("shop")
        .map(|c| c.spec.clone())
        .ok_or_else(|| SimError::Internal("generated configuration has no shop channel".into()))?;
    let mut w = World::new(p, &settings, spec)?;
    let at = i64::from(p.days) * DAY + i64::from(p.snapshot_hour) * HOUR;
    w.start();
    while let Some(q) = w.queue.peek() {
        if q.at >= at {
            break;
        }
        let Some(q) = w.queue.pop() else { break };
        w.now = q.at;
        w.handle(q.action)?;
    }
    w.now = at;
    w.sample();
    let snap = (
        w.phys.clone(),
        w.wms.clone(),
        w.erp_on.clone(),
        w.erp_com.clone(),
        w.shop.clone(),
        w.erp_meta.clone(),
        w.shop_meta.clone(),
        (),
        w.sh1.clone(),
        w.sh2.clone(),
    );
    let logs = (w.wms_log.clone(), w.erp_log.clone(), w.shop_log.clone());
    w.recording = false;
    let settled = if p.architecture == Architecture::Hub {
        // Let everything already sent land; no new business happens.
        while let Some(q) = w.queue.pop() {
            if !q.action.in_flight() {
                continue;
            }
            w.now = w.now.max(q.at);
            w.handle(q.action)?;
        }
        Some(Settled {
            phys: w.phys.clone(),
            wms: w.wms.clone(),
            erp_on: w.erp_on.clone(),
            erp_com: w.erp_com.clone(),
            shop: w.shop.clone(),
            shop_meta: w.shop_meta.clone(),
            erp_meta: w.erp_meta.clone(),
        })
    } else {
        None
    };
    Ok(Run {
        params: p.clone(),
        config_toml,
        settings,
        skus: w.names,
        at,
        phys: snap.0,
        wms: snap.1,
        erp_on: snap.2,
        erp_com: snap.3,
        shop: snap.4,
        erp_meta: snap.5,
        shop_meta: snap.6,
        shop_no_retry: snap.8,
        shop_no_retry_mapped: snap.9,
        mismapped: w.mismapped,
        wms_log: logs.0,
        erp_log: logs.1,
        shop_log: logs.2,
        series: w.series,
        oversells: w.oversells,
        hub: w.hub,
        settled,
        orders_accepted: w.orders_accepted,
        orders_lost: w.orders_lost,
        orders_lost_with_stock: w.orders_lost_with_stock,
        sent: w.events.into_iter().map(|(e, _, _)| e).collect(),
        deliveries: w.delivered,
    })
}

impl World {
    fn new(p: &Params, settings: &Settings, spec: ChannelSpec) -> Result<World, SimError> {
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

    fn hub(&self) -> bool {
        self.p.architecture == Architecture::Hub
    }

    fn at(&mut self, t: i64, action: Action) {
        self.qn += 1;
        self.queue.push(Queued {
            at: t,
            n: self.qn,
            action,
        });
    }

    fn pack(&self, sku: usize) -> i64 {
        if self.cased[sku] { CASE } else { 1 }
    }

    /// The channel quantity for an ATP summed over the channel's locations.
    fn q(&self, sku: usize, atp: i64) -> i64 {
        self.spec.quantity(&self.sku_ids[sku], atp)
    }

    #[allow(clippy::too_many_arguments)] // one change-log row has this many columns
    fn log(
        &mut self,
        sys: usize,
        sku: usize,
        loc: Option<usize>,
        qty: i64,
        actor: &str,
        src: Option<i64>,
        r: String,
    ) {
        // The ERP's log carries its committed quantity on every row, so that an auditor can
        // rebuild its availability (on-hand minus committed) at any earlier moment.
        let committed = match (sys, loc) {
            (ERP, Some(l)) => Some(self.erp_com[sku * NLOC + l]),
            _ => None,
        };
        let row = ChangeRow {
            sku,
            loc,
            at: self.now,
            qty,
            actor: actor.to_owned(),
            source_at: src,
            reference: r,
            committed,
        };
        match sys {
            WMS => self.wms_log.push(row),
            ERP => self.erp_log.push(row),
            _ => self.shop_log.push(row),
        }
    }

    /// The ERP's committed quantity at `cell` moves by `delta`; its change log records the
    /// new committed quantity on a row of its own (the on-hand unchanged), as an ERP's
    /// inventory-transaction log does for a reservation.
    pub(super) fn erp_commit(
        &mut self,
        cell: usize,
        delta: i64,
        actor: &str,
        src: Option<i64>,
        reference: String,
    ) {
        if delta == 0 {
            return;
        }
        self.erp_com[cell] += delta;
        let on_hand = self.erp_on[cell];
        self.log(
            ERP,
            cell / NLOC,
            Some(cell % NLOC),
            on_hand,
            actor,
            src,
            reference,
        );
    }

    // ----- start -----------------------------------------------------------------------------

    #[allow(clippy::needless_range_loop)] // cells are indexed sku * NLOC + l throughout
    fn start(&mut self) {
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

    fn mean_units(&self, sku: usize) -> f64 {
        if self.cased[sku] {
            1.2 * CASE as f64
        } else {
            1.5
        }
    }

    fn sku_rate(&self, sku: usize, b2b: bool) -> f64 {
        let share = if b2b {
            self.p.b2b_share
        } else {
            1.0 - self.p.b2b_share
        };
        self.rate[sku] * share
    }

    fn next_export_after(&self, t: i64) -> i64 {
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

    // ----- the loop --------------------------------------------------------------------------

    fn handle(&mut self, a: Action) -> Result<(), SimError> {
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

    // ----- business ----------------------------------------------------------------------------

    fn order(&mut self, sku: usize, b2b: bool) -> Result<(), SimError> {
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
    fn best_location(&self, sku: usize) -> (usize, i64) {
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

    fn wave(&mut self) -> Result<(), SimError> {
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

    fn plan(&mut self, day: i64) {
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

    fn receipt(&mut self, cell: usize, units: i64, po: u64) -> Result<(), SimError> {
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

    fn count(&mut self, cell: usize) -> Result<(), SimError> {
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

    fn override_(&mut self, sku: usize) {
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

    // ----- measurement -----------------------------------------------------------------------------

    fn sample(&mut self) {
        let mut s = Sample {
            hour: self.now / HOUR,
            ..Sample::default()
        };
        let (u, pct) = (config::THRESHOLD_UNITS, config::THRESHOLD_PCT);
        for sku in 0..self.p.skus {
            let mut phys_sum = 0;
            for l in 0..NLOC {
                let c = sku * NLOC + l;
                let p = self.phys[c];
                phys_sum += p;
                let dw = self.wms[c] - p;
                s.wms_units += dw.abs();
                s.wms_keys += u64::from(config::is_drift(dw, p, u, pct));
                let de = self.erp_on[c] - p;
                s.erp_units += de.abs();
                s.erp_keys += u64::from(config::is_drift(de, p, u, pct));
            }
            let truth = self.q(sku, phys_sum - self.open[sku]);
            let ds = self.shop[sku] - truth;
            s.shop_units += ds.abs();
            s.shop_keys += u64::from(config::is_drift(ds, truth, u, pct));
        }
        self.series.push(s);
    }
}

/// The simulation's clock starts on Monday 2 November 2026, 00:00 UTC.
pub const START: &str = "2026-11-02T00:00:00Z";

pub fn rfc3339(t: i64) -> String {
    let start = chrono::DateTime::parse_from_rfc3339(START)
        .map(|d| d.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    (start + chrono::Duration::seconds(t)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
