//! The simulation itself: physical stock, the customers, the warehouse, and the three systems
//! (WMS, ERP, storefront) connected either point-to-point or through the driftless core.
//!
//! A discrete-event loop over whole seconds. Everything that happens is an `Action` in one queue
//! ordered by `(time, insertion number)`, so a run is a pure function of its [`Params`]. The model
//! keeps, beside every system's value, the provenance of that value (which write produced it, from
//! which upstream data, through which transform), which is what the ground truth is computed from.
//! No I/O happens here.
//!
//! This module holds the world's state, the run and its results; `start` the catalogue and the
//! opening stock, `actions` the queue and its dispatch, `business` the business (demand,
//! warehouse, purchasing, shrink, counts, people), `measurement` the measurements, `p2p` the
//! point-to-point integrations and `hub` the path through the core.

mod actions;
mod business;
mod hub;
mod measurement;
mod p2p;
mod start;

use crate::config::{self, CASE, LOCATIONS};
use crate::rng::Rng;
use crate::scenario::{Architecture, Params};
use crate::{ChangeRow, SimError};
use actions::Queued;
use driftless_config::Settings;
use driftless_core::{ChannelSpec, Event, Location, MemoryLedger, Sku};
use std::collections::{BTreeSet, BinaryHeap, HashSet};

pub use measurement::{HubStats, Oversells, Sample};

pub(crate) const MIN: i64 = 60;
pub(crate) const HOUR: i64 = 3600;
pub(crate) const DAY: i64 = 86_400;
const NLOC: usize = LOCATIONS.len();

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
    fn hub(&self) -> bool {
        self.p.architecture == Architecture::Hub
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
}

/// The simulation's clock starts on Monday 2 November 2026, 00:00 UTC.
pub const START: &str = "2026-11-02T00:00:00Z";

pub fn rfc3339(t: i64) -> String {
    let start = chrono::DateTime::parse_from_rfc3339(START)
        .map(|d| d.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    (start + chrono::Duration::seconds(t)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
