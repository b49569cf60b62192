//! The simulator's promises: determinism, each cause drifting on point-to-point (and not when it is
//! switched off), and the hub ending every scenario with no integration drift once in-flight work
//! has landed and no oversells the systems could have prevented.

use driftless_sim::{Architecture, Params, SCENARIOS, simulate};

fn small(name: &str, arch: Architecture, seed: u64) -> Params {
    let mut p = Params::scenario(name, arch, seed).unwrap();
    p.skus = 60;
    p
}

fn causes(p: &Params) -> Vec<(String, String)> {
    simulate(p)
        .unwrap()
        .truth
        .into_iter()
        .map(|r| (r.handoff, r.cause))
        .collect()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    for arch in [Architecture::PointToPoint, Architecture::Hub] {
        let p = small("everything", arch, 42);
        let a = simulate(&p).unwrap().files();
        let b = simulate(&p).unwrap().files();
        assert_eq!(a, b, "{arch:?}");
        let c = simulate(&small("everything", arch, 43)).unwrap().files();
        assert_ne!(a, c, "{arch:?}: the seed must matter");
        let names: Vec<&str> = a.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, driftless_sim::files::FILES);
    }
}

#[test]
fn each_cause_drifts_on_point_to_point_and_stops_when_switched_off() {
    let cases = [
        (
            "weekend-batch",
            "wms->erp",
            "sync_lag",
            "weekdays_only",
            "false",
        ),
        (
            "uom-cases",
            "wms->erp",
            "uom_mismatch",
            "uom_mismapped_share",
            "0",
        ),
        (
            "phantom",
            "erp->shop",
            "committed_not_mapped",
            "phantom_share",
            "0",
        ),
        (
            "overrides",
            "erp->shop",
            "manual_override",
            "overrides_per_day",
            "0",
        ),
        ("retry-storm", "any", "out_of_sequence", "retry_rate", "0"),
    ];
    for (scenario, handoff, cause, key, off) in cases {
        // Summed over three seeds: one small run can be quiet by chance, three rarely are.
        let (mut n, mut m) = (0, 0);
        for seed in [5, 6, 7] {
            let p = small(scenario, Architecture::PointToPoint, seed);
            n += causes(&p)
                .iter()
                .filter(|(h, c)| (handoff == "any" || h == handoff) && c == cause)
                .count();
            let mut q = p.clone();
            q.set(key, off).unwrap();
            m += causes(&q).iter().filter(|(_, c)| c == cause).count();
        }
        assert!(n >= 6, "{scenario}: only {n} {handoff}/{cause} rows");
        assert!(
            m * 4 < n,
            "{scenario}: switching `{key}` off left {m} of {n} {cause} rows"
        );
    }
    // The weekend leaves the ERP 50-100+ units behind on fast movers.
    let o = simulate(&small("weekend-batch", Architecture::PointToPoint, 7)).unwrap();
    let worst = o.truth.iter().map(|r| r.delta.abs()).max().unwrap_or(0);
    assert!(worst >= 50, "worst weekend drift only {worst} units");
}

#[test]
fn flash_sale_polling_oversells_point_to_point_not_the_hub() {
    let p2p = simulate(&small("flash-sale-polling", Architecture::PointToPoint, 3)).unwrap();
    assert!(
        p2p.summary.oversells.integration_orders > 0,
        "{:?}",
        p2p.summary.oversells
    );
    let mut slow = small("flash-sale-polling", Architecture::PointToPoint, 3);
    slow.set("poll_every_min", "0").unwrap();
    slow.set("order_sync_min", "1").unwrap();
    let fast = simulate(&slow).unwrap();
    assert!(
        fast.summary.oversells.integration_orders < p2p.summary.oversells.integration_orders,
        "polling every minute should oversell less: {:?} vs {:?}",
        fast.summary.oversells,
        p2p.summary.oversells
    );
}

#[test]
fn the_hub_ends_every_scenario_without_integration_drift_or_oversells() {
    for (name, _) in SCENARIOS {
        for seed in [1, 2] {
            let o = simulate(&small(name, Architecture::Hub, seed)).unwrap();
            assert_eq!(
                o.summary.settled_integration_rows,
                Some(0),
                "{name} seed {seed}"
            );
            assert_eq!(
                o.summary.oversells.integration_orders, 0,
                "{name} seed {seed}: {:?}",
                o.summary.oversells
            );
            // At the snapshot itself, only what is in flight may differ: a handful of keys.
            let integration = o
                .truth
                .iter()
                .filter(|r| r.handoff != "physical->wms")
                .count();
            assert!(
                integration <= 3,
                "{name} seed {seed}: {integration} rows in flight"
            );
            let outcomes = &o.summary.hub.as_ref().unwrap().outcomes;
            assert!(outcomes.get("applied").copied().unwrap_or(0) > 1000);
            assert_eq!(outcomes.get("rejected"), None, "{outcomes:?}");
        }
    }
    // The retry storm reaches the core as duplicates, which change nothing.
    let o = simulate(&small("retry-storm", Architecture::Hub, 1)).unwrap();
    assert!(o.summary.hub.unwrap().outcomes["duplicate"] > 100);
}

#[test]
fn the_same_business_drifts_on_point_to_point() {
    for (name, _) in SCENARIOS {
        let p2p = simulate(&small(name, Architecture::PointToPoint, 1)).unwrap();
        let integration = p2p
            .truth
            .iter()
            .filter(|r| r.handoff != "physical->wms")
            .count();
        assert!(integration > 0 || name == "flash-sale-polling", "{name}");
    }
}

/// The truth's keys and hand-offs follow from the files alone (DESIGN section 13's arithmetic):
/// recomputed here from the CSV text, independently of the simulator's internal state.
#[test]
fn truth_hand_offs_are_the_arithmetic_of_the_files() {
    use std::collections::BTreeMap;
    for arch in [Architecture::PointToPoint, Architecture::Hub] {
        let o = simulate(&small("everything", arch, 11)).unwrap();
        let files: BTreeMap<&str, String> = o.files().into_iter().collect();
        let rows = |name: &str| -> Vec<Vec<String>> {
            files[name]
                .lines()
                .skip(1)
                .map(|l| l.split(',').map(str::to_owned).collect())
                .collect()
        };
        let num = |s: &str| s.parse::<i64>().unwrap();
        let drift = |d: i64, e: i64| d.abs() > 2 && d.abs() as f64 > 0.01 * e.abs() as f64;
        let mut base = BTreeMap::new();
        for r in rows("baseline.csv") {
            base.insert((r[0].clone(), r[1].clone()), num(&r[2]));
        }
        let mut wms = BTreeMap::new();
        for r in rows("wms.csv") {
            wms.insert((r[0].clone(), r[1].clone()), num(&r[2]));
        }
        let mut erp = BTreeMap::new();
        for r in rows("erp.csv") {
            erp.insert((r[0].clone(), r[1].clone()), (num(&r[2]), num(&r[3])));
        }
        let spec = o.run.settings.channel("shop").unwrap().spec.clone();
        let mut expect = BTreeMap::new();
        for (k, v) in &base {
            let w = wms[k];
            if drift(w - v, *v) {
                expect.insert(k.clone(), "physical->wms".to_owned());
            } else if drift(erp[k].0 - w, w) {
                expect.insert(k.clone(), "wms->erp".to_owned());
            }
        }
        for r in rows("shop.csv") {
            let atp: i64 = erp
                .iter()
                .filter(|((s, _), _)| *s == r[0])
                .map(|(_, (on, com))| on - com)
                .sum();
            let e = spec.quantity(&driftless_core::Sku::parse(r[0].clone()).unwrap(), atp);
            if drift(num(&r[1]) - e, e) {
                expect.insert((r[0].clone(), String::new()), "erp->shop".to_owned());
            }
        }
        let truth: BTreeMap<(String, String), String> = rows("truth.csv")
            .into_iter()
            .map(|r| ((r[0].clone(), r[1].clone()), r[2].clone()))
            .collect();
        assert_eq!(truth, expect, "{arch:?}");
        assert!(!truth.is_empty());
    }
}
