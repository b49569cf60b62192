//! The run's results: drift per system over time and at the end, drift per hand-off and cause,
//! oversells, what the hub did, and (when an audit was run) precision and recall. Serializes as the
//! one JSON object of `--format json` and renders as the terminal text.

use crate::eval::Evaluation;
use crate::truth::TruthRow;
use crate::world::{HubStats, Oversells, Run, Sample, rfc3339};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub architecture: String,
    pub seed: u64,
    pub skus: usize,
    pub days: u32,
    pub at: String,
    /// Drift against physical truth at the snapshot, per system.
    pub drift: BTreeMap<String, SystemDrift>,
    /// Rows of the ground truth per hand-off: keys over threshold and the sum of |delta|.
    pub handoffs: BTreeMap<String, HandoffDrift>,
    /// Rows of the ground truth per cause.
    pub causes: BTreeMap<String, u64>,
    pub oversells: Oversells,
    pub orders_accepted: u64,
    pub orders_lost: u64,
    /// Orders turned away although physical stock could have filled them.
    pub orders_lost_with_stock: u64,
    /// Hourly drift per system.
    pub series: Vec<Sample>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubStats>,
    /// Hub: integration hand-off rows still drifting once everything in flight at the snapshot
    /// has landed (0 is the hub's promise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_integration_rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SystemDrift {
    pub units: i64,
    pub keys_over_threshold: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct HandoffDrift {
    pub rows: u64,
    pub abs_units: u64,
    /// The largest |delta| of one key.
    pub max_units: u64,
}

pub const HANDOFFS: [&str; 3] = ["physical->wms", "wms->erp", "erp->shop"];

pub fn build(run: &Run, truth: &[TruthRow], settled: Option<&[TruthRow]>) -> Summary {
    let last = run.series.last().copied().unwrap_or_default();
    let mut drift = BTreeMap::new();
    drift.insert(
        "wms".to_owned(),
        SystemDrift {
            units: last.wms_units,
            keys_over_threshold: last.wms_keys,
        },
    );
    drift.insert(
        "erp".to_owned(),
        SystemDrift {
            units: last.erp_units,
            keys_over_threshold: last.erp_keys,
        },
    );
    drift.insert(
        "shop".to_owned(),
        SystemDrift {
            units: last.shop_units,
            keys_over_threshold: last.shop_keys,
        },
    );
    let mut handoffs: BTreeMap<String, HandoffDrift> = HANDOFFS
        .iter()
        .map(|h| ((*h).to_owned(), HandoffDrift::default()))
        .collect();
    let mut causes = BTreeMap::new();
    for r in truth {
        let h = handoffs.entry(r.handoff.clone()).or_default();
        h.rows += 1;
        h.abs_units += r.delta.unsigned_abs();
        h.max_units = h.max_units.max(r.delta.unsigned_abs());
        *causes.entry(r.cause.clone()).or_default() += 1;
    }
    let hub = run.settled.is_some();
    Summary {
        scenario: run.params.scenario.clone(),
        architecture: run.params.architecture.as_str().to_owned(),
        seed: run.params.seed,
        skus: run.params.skus,
        days: run.params.days,
        at: rfc3339(run.at),
        drift,
        handoffs,
        causes,
        oversells: run.oversells,
        orders_accepted: run.orders_accepted,
        orders_lost: run.orders_lost,
        orders_lost_with_stock: run.orders_lost_with_stock,
        series: run.series.clone(),
        hub: hub.then(|| run.hub.clone()),
        settled_integration_rows: settled
            .map(|rows| rows.iter().filter(|r| r.handoff != "physical->wms").count() as u64),
        evaluation: None,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The terminal rendering.
pub fn render_text(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "scenario {} on {} (seed {}, {} skus, {} days), snapshot at {}",
        s.scenario, s.architecture, s.seed, s.skus, s.days, s.at
    );
    let _ = writeln!(o, "\ndrift against physical stock at the snapshot");
    let _ = writeln!(
        o,
        "  {:<6} {:>10} {:>22}",
        "system", "|units|", "keys over threshold"
    );
    for sys in ["wms", "erp", "shop"] {
        if let Some(d) = s.drift.get(sys) {
            let _ = writeln!(
                o,
                "  {:<6} {:>10} {:>22}",
                sys, d.units, d.keys_over_threshold
            );
        }
    }
    let _ = writeln!(
        o,
        "\ndrift over time (|units| against physical, every 24 h)"
    );
    let _ = writeln!(o, "  {:>5} {:>8} {:>8} {:>8}", "hour", "wms", "erp", "shop");
    for x in s
        .series
        .iter()
        .filter(|x| x.hour % 24 == 0 || Some(*x) == s.series.last())
    {
        let _ = writeln!(
            o,
            "  {:>5} {:>8} {:>8} {:>8}",
            x.hour, x.wms_units, x.erp_units, x.shop_units
        );
    }
    let _ = writeln!(
        o,
        "\nwhere drift entered (ground truth, over the audit threshold)"
    );
    for h in HANDOFFS {
        if let Some(d) = s.handoffs.get(h) {
            let _ = writeln!(
                o,
                "  {:<14} {:>6} keys {:>9} units (largest {})",
                h, d.rows, d.abs_units, d.max_units
            );
        }
    }
    if !s.causes.is_empty() {
        let list: Vec<String> = s.causes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(o, "  causes: {}", list.join(", "));
    }
    let ov = &s.oversells;
    let _ = writeln!(
        o,
        "\noversells: {} orders ({} units) of {} accepted; {} from stale or wrong system views, {} from unrecorded shrink",
        ov.orders, ov.units, s.orders_accepted, ov.integration_orders, ov.shrink_orders
    );
    let _ = writeln!(
        o,
        "turned away: {} orders, {} of them while physical stock could have filled them",
        s.orders_lost, s.orders_lost_with_stock
    );
    if let Some(h) = &s.hub {
        let list: Vec<String> = h.outcomes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(
            o,
            "hub: events {}; {} pushes, {} compare-and-set refusals, {} hand edits overwritten",
            list.join(", "),
            h.pushes,
            h.compare_failures,
            h.overrides_overwritten
        );
    }
    if let Some(n) = s.settled_integration_rows {
        let _ = writeln!(
            o,
            "hub: integration drift once in-flight pushes landed: {n} keys"
        );
    }
    if let Some(e) = &s.evaluation {
        let _ = writeln!(o, "\naudit against ground truth");
        let _ = writeln!(
            o,
            "  hand-off   precision {:>7}  recall {:>7}  ({} right, {} reported, {} true)",
            pct(e.handoff.precision),
            pct(e.handoff.recall),
            e.handoff.right,
            e.handoff.reported,
            e.handoff.truth
        );
        let _ = writeln!(
            o,
            "  cause      precision {:>7}  recall {:>7}  (main cause)",
            pct(e.cause.precision),
            pct(e.cause.recall)
        );
        let _ = writeln!(
            o,
            "  cause      precision {:>7}  recall {:>7}  (any cause contributing over threshold)",
            pct(e.cause_contributing.precision),
            pct(e.cause_contributing.recall)
        );
        for (c, sc) in &e.per_cause {
            let _ = writeln!(
                o,
                "    {:<22} precision {:>7}  recall {:>7}  ({} true)",
                c,
                pct(sc.precision),
                pct(sc.recall),
                sc.truth
            );
        }
        for m in e.mistakes.iter().take(10) {
            let _ = writeln!(
                o,
                "    mismatch {} {}: truth {} reported {}",
                m.sku,
                if m.location.is_empty() {
                    "(channel)"
                } else {
                    &m.location
                },
                if m.truth.is_empty() { "-" } else { &m.truth },
                if m.reported.is_empty() {
                    "-"
                } else {
                    &m.reported
                }
            );
        }
    }
    o
}
