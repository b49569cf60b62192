//! Ground truth: for every key that drifts beyond the threshold, the hand-off where the error
//! entered and its cause, computed from what the simulation knows and an auditor cannot see (the
//! provenance of each value), not from the auditor's rules.
//!
//! Keys and hand-offs follow DESIGN section 13: one key per (sku, location) for the WMS and the
//! ERP, one per sku (empty location) for the storefront, and each system is compared with the
//! value expected from its actual upstream, so one error is named once, where it entered. The
//! cause is the mechanism responsible for the largest part of the deviation: the deviation is
//! split exactly into counterfactual components (what changes if this one defect had not
//! happened), ties going to the first in the order listed in each function.

use crate::config::{self, CASE, LOCATIONS};
use crate::scenario::Architecture;
use crate::world::{ErpMeta, Run, ShopMeta};
use serde::Serialize;

const NLOC: usize = LOCATIONS.len();

/// One drifting key with its true hand-off and cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TruthRow {
    pub sku: String,
    /// Empty for the storefront's channel-level quantity.
    pub location: String,
    pub handoff: String,
    pub cause: String,
    /// The drifting system's value minus its expected value.
    pub delta: i64,
    /// Every cause whose share of the deviation is itself over the threshold (the main `cause`
    /// first). Usually one; two when defects compound (a mis-mapped sku that is also a weekend
    /// behind).
    pub contributing: Vec<String>,
}

/// The systems' values at one moment.
pub(crate) struct View<'a> {
    pub phys: &'a [i64],
    pub wms: &'a [i64],
    pub erp_on: &'a [i64],
    pub erp_com: &'a [i64],
    pub shop: &'a [i64],
    pub erp_meta: &'a [ErpMeta],
    pub shop_meta: &'a [ShopMeta],
    /// Point-to-point: the storefront without retried writes, and also with committed mapped.
    pub shadows: Option<(&'a [i64], &'a [i64])>,
}

/// Truth at the snapshot.
pub fn at_snapshot(run: &Run) -> Vec<TruthRow> {
    rows(
        run,
        &View {
            phys: &run.phys,
            wms: &run.wms,
            erp_on: &run.erp_on,
            erp_com: &run.erp_com,
            shop: &run.shop,
            erp_meta: &run.erp_meta,
            shop_meta: &run.shop_meta,
            shadows: (run.params.architecture == Architecture::PointToPoint)
                .then_some((&run.shop_no_retry[..], &run.shop_no_retry_mapped[..])),
        },
    )
}

/// On the hub: the rows left once everything in flight at the snapshot has landed.
pub fn settled(run: &Run) -> Option<Vec<TruthRow>> {
    let s = run.settled.as_ref()?;
    Some(rows(
        run,
        &View {
            phys: &s.phys,
            wms: &s.wms,
            erp_on: &s.erp_on,
            erp_com: &s.erp_com,
            shop: &s.shop,
            erp_meta: &s.erp_meta,
            shop_meta: &s.shop_meta,
            shadows: None,
        },
    ))
}

/// The main cause (largest component) and every cause whose component alone is drift.
fn split(
    components: &[(&'static str, i64)],
    expected: i64,
    units: i64,
    pct: f64,
) -> (&'static str, Vec<String>) {
    let mut best = ("unexplained", 0i64);
    for (name, c) in components {
        if c.abs() > best.1.abs() {
            best = (name, *c);
        }
    }
    let mut all = vec![best.0.to_owned()];
    for (name, c) in components {
        if *name != best.0 && config::is_drift(*c, expected, units, pct) {
            all.push((*name).to_owned());
        }
    }
    (best.0, all)
}

pub(crate) fn rows(run: &Run, v: &View<'_>) -> Vec<TruthRow> {
    let spec = run.settings.channel("shop").map(|c| c.spec.clone());
    let hub = run.params.architecture == Architecture::Hub;
    let (units, pct) = (
        run.settings.audit.threshold_units,
        run.settings.audit.threshold_pct,
    );
    let sku_ids: Vec<_> = run
        .skus
        .iter()
        .map(|s| driftless_core::Sku::parse(s.clone()).ok())
        .collect();
    let q = |sku: usize, atp: i64| -> i64 {
        match (&spec, &sku_ids[sku]) {
            (Some(spec), Some(id)) => spec.quantity(id, atp),
            _ => atp.max(0),
        }
    };
    let mut out = Vec::new();
    for sku in 0..run.skus.len() {
        let name = &run.skus[sku];
        // The channel-level row sorts before the location rows (empty location first).
        let (on_now, com_now) = (0..NLOC).fold((0, 0), |(a, b), l| {
            (a + v.erp_on[sku * NLOC + l], b + v.erp_com[sku * NLOC + l])
        });
        let expected = q(sku, on_now - com_now);
        let delta = v.shop[sku] - expected;
        if config::is_drift(delta, expected, units, pct) {
            let m = &v.shop_meta[sku];
            let (cause, contributing) = match v.shadows {
                _ if m.person => ("manual_override", vec!["manual_override".to_owned()]),
                None => ("sync_lag", vec!["sync_lag".to_owned()]),
                Some((no_retry, mapped)) => split(
                    &[
                        ("out_of_sequence", v.shop[sku] - no_retry[sku]),
                        ("committed_not_mapped", no_retry[sku] - mapped[sku]),
                        ("sync_lag", mapped[sku] - expected),
                    ],
                    expected,
                    units,
                    pct,
                ),
            };
            out.push(TruthRow {
                sku: name.clone(),
                location: String::new(),
                handoff: "erp->shop".into(),
                cause: cause.into(),
                delta,
                contributing,
            });
        }
        for (l, loc) in LOCATIONS.iter().enumerate() {
            let c = sku * NLOC + l;
            let d_wms = v.wms[c] - v.phys[c];
            if config::is_drift(d_wms, v.phys[c], units, pct) {
                out.push(TruthRow {
                    sku: name.clone(),
                    location: (*loc).into(),
                    handoff: "physical->wms".into(),
                    cause: "count_variance".into(),
                    delta: d_wms,
                    contributing: vec!["count_variance".into()],
                });
                continue;
            }
            let d_erp = v.erp_on[c] - v.wms[c];
            if config::is_drift(d_erp, v.wms[c], units, pct) {
                let (cause, contributing) = if hub {
                    ("sync_lag", vec!["sync_lag".to_owned()])
                } else {
                    let m = &v.erp_meta[c];
                    let mis = run.mismapped[sku];
                    let t = |w: i64| if mis { w / CASE } else { w };
                    let oos = if m.src < m.max_src {
                        t(m.w_src) - t(m.w_max)
                    } else {
                        0
                    };
                    split(
                        &[
                            ("out_of_sequence", oos),
                            ("uom_mismatch", t(m.w_max) - m.w_max),
                            ("sync_lag", m.w_max - v.wms[c]),
                        ],
                        v.wms[c],
                        units,
                        pct,
                    )
                };
                out.push(TruthRow {
                    sku: name.clone(),
                    location: (*loc).into(),
                    handoff: "wms->erp".into(),
                    cause: cause.into(),
                    delta: d_erp,
                    contributing,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
    out
}
