//! Property test: random small worlds (skus at three locations, rows missing here and there,
//! random thresholds and channel terms) audited by the engine and by a plain oracle that
//! recomputes every expected value the obvious way. The drifting rows (key, hand-off, delta), the
//! number of keys compared and the per-hand-off totals must agree.

mod common;

use driftless_audit::run_files;
use driftless_config::Settings;
use driftless_core::{Sku, SystemId};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::collections::{BTreeMap, BTreeSet};

/// One key: `(sku, location, baseline, wms on_hand, erp (on_hand, committed))`.
type Cell = (u8, u8, Option<i64>, Option<i64>, Option<(i64, i64)>);

#[derive(Debug, Clone)]
struct World {
    units: i64,
    pct: f64,
    safety: i64,
    allocation: f64,
    pack: u32,
    /// Per (sku, location): baseline, wms on_hand, erp (on_hand, committed); `None` = no row.
    cells: Vec<Cell>,
    /// Per sku: the shop's quantity.
    shop: Vec<(u8, Option<i64>)>,
}

const LOCS: [&str; 3] = ["DC1", "DC2", "DC3"];

fn world() -> impl Strategy<Value = World> {
    let cell = (
        0u8..5,
        0u8..3,
        proptest::option::weighted(0.8, 0i64..60),
        proptest::option::weighted(0.9, 0i64..60),
        proptest::option::weighted(0.9, (0i64..60, 0i64..8)),
    );
    (
        0i64..4,
        prop_oneof![Just(0.0), Just(1.0), Just(10.0), Just(50.0)],
        0i64..6,
        prop_oneof![Just(1.0), Just(0.5), Just(0.29)],
        prop_oneof![Just(1u32), Just(6u32)],
        proptest::collection::vec(cell, 0..14),
        proptest::collection::vec((0u8..5, proptest::option::weighted(0.85, 0i64..80)), 0..6),
    )
        .prop_map(
            |(units, pct, safety, allocation, pack, mut cells, mut shop)| {
                // One row per key in each file.
                let mut seen = BTreeSet::new();
                cells.retain(|c| {
                    (c.2.is_some() || c.3.is_some() || c.4.is_some()) && seen.insert((c.0, c.1))
                });
                let mut seen = BTreeSet::new();
                shop.retain(|s| seen.insert(s.0));
                World {
                    units,
                    pct,
                    safety,
                    allocation,
                    pack,
                    cells,
                    shop,
                }
            },
        )
}

fn sku(i: u8) -> String {
    format!("SKU-{i}")
}

fn config(w: &World) -> String {
    format!(
        r#"
[[systems]]
id = "wms"
role = "wms"
[[systems]]
id = "erp"
role = "erp"
[[systems]]
id = "shop"
role = "storefront"

[[channels]]
id = "shop"
locations = ["DC1", "DC2"]
safety_stock = {}
allocation = {}
pack = {}

[audit]
chain = ["wms", "erp", "shop"]
threshold_units = {}
threshold_pct = {}
"#,
        w.safety, w.allocation, w.pack, w.units, w.pct
    )
}

type Rows = BTreeSet<(String, String, String, i64)>;

/// The obvious computation, key by key.
fn oracle(w: &World, settings: &Settings) -> (Rows, u64, BTreeMap<String, (u64, u64)>) {
    let over =
        |d: i64, e: i64| d.abs() > w.units && (d.abs() * 100) as f64 > w.pct * e.abs() as f64;
    let spec = settings.channel("shop").unwrap().spec.clone();
    let mut rows = Rows::new();
    let mut per: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut add = |rows: &mut Rows, s: String, l: &str, h: &str, d: i64| {
        rows.insert((s, l.to_owned(), h.to_owned(), d));
        let e = per.entry(h.to_owned()).or_default();
        e.0 += 1;
        e.1 += d.unsigned_abs();
    };
    let mut compared = 0;
    for (s, l, base, wms, erp) in &w.cells {
        compared += 1;
        let wv = wms.unwrap_or(0);
        let ev = erp.map_or(0, |e| e.0);
        if let Some(b) = base
            && over(wv - b, *b)
        {
            add(
                &mut rows,
                sku(*s),
                LOCS[*l as usize],
                "physical->wms",
                wv - b,
            );
            continue;
        }
        if over(ev - wv, wv) {
            add(&mut rows, sku(*s), LOCS[*l as usize], "wms->erp", ev - wv);
        }
    }
    let skus: BTreeSet<u8> = w
        .cells
        .iter()
        .map(|c| c.0)
        .chain(w.shop.iter().filter(|s| s.1.is_some()).map(|s| s.0))
        .collect();
    for s in skus {
        compared += 1;
        let atp: i64 = w
            .cells
            .iter()
            .filter(|c| c.0 == s && c.1 < 2)
            .map(|c| c.4.map_or(0, |(on, com)| on - com))
            .sum();
        let expected = spec.quantity(&Sku::parse(sku(s)).unwrap(), atp);
        let shown = w
            .shop
            .iter()
            .find(|x| x.0 == s)
            .and_then(|x| x.1)
            .unwrap_or(0);
        if over(shown - expected, expected) {
            add(&mut rows, sku(s), "", "erp->shop", shown - expected);
        }
    }
    (rows, compared, per)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn engine_agrees_with_the_oracle(w in world()) {
        let mut baseline = String::from("sku,location,quantity\n");
        let mut wms = String::from("sku,location,on_hand\n");
        let mut erp = String::from("sku,location,on_hand,committed\n");
        let mut shop = String::from("sku,quantity\n");
        for (s, l, b, wv, e) in &w.cells {
            let (s, l) = (sku(*s), LOCS[*l as usize]);
            if let Some(b) = b { baseline.push_str(&format!("{s},{l},{b}\n")); }
            if let Some(v) = wv { wms.push_str(&format!("{s},{l},{v}\n")); }
            if let Some((on, c)) = e { erp.push_str(&format!("{s},{l},{on},{c}\n")); }
        }
        for (s, q) in &w.shop {
            if let Some(q) = q { shop.push_str(&format!("{},{q}\n", sku(*s))); }
        }
        let d = common::dir(&format!("oracle-{}", std::thread::current().name().unwrap_or("t").replace("::", "-")));
        for (f, t) in [("baseline.csv", &baseline), ("wms.csv", &wms), ("erp.csv", &erp), ("shop.csv", &shop)] {
            std::fs::write(d.join(f), t).unwrap();
        }
        let settings = Settings::parse("t.toml", &config(&w)).unwrap();
        let sys = |s: &str| SystemId::parse(s).unwrap();
        let input = driftless_audit::AuditInput {
            baseline: d.join("baseline.csv"),
            snapshots: ["wms", "erp", "shop"].iter().map(|s| (sys(s), d.join(format!("{s}.csv")))).collect(),
            changes: vec![],
            at: common::at(),
        };
        let report = run_files(&settings, &input).unwrap();
        let tuned = driftless_audit::Tuning { spill_above: 0, part_bytes: 100, sub_bytes: 64 };
        let spilled = driftless_audit::run_files_tuned(&settings, &input, &|_| {}, &tuned).unwrap();
        prop_assert_eq!(&spilled, &report);
        let got: Rows = report.rows.iter().map(|r| (r.sku.clone(), r.location.clone(), r.handoff.clone(), r.delta)).collect();
        let (want, compared, per) = oracle(&w, &settings);
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(report.drifting as usize, want.len());
        // Keys with no baseline row are still compared at wms->erp.
        prop_assert_eq!(report.skus_compared, compared);
        for h in &report.handoffs {
            let (n, u) = per.get(&h.handoff).copied().unwrap_or_default();
            prop_assert_eq!((h.drifting_skus, h.abs_units), (n, u), "{}", h.handoff);
        }
        for r in &report.rows {
            prop_assert_eq!(r.cause == "count_variance", r.handoff == "physical->wms");
        }
    }
}
