//! The measurements: each system's drift against physical stock, sampled every hour, the orders
//! oversold, and what the hub did.

use super::{HOUR, NLOC, World};
use crate::config;
use std::collections::BTreeMap;

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

impl World {
    // ----- measurement -----------------------------------------------------------------------------

    pub(super) fn sample(&mut self) {
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
