//! Golden tests: one small hand-made audit per cause and per hand-off, with the row each must
//! produce. Each case changes one thing of a consistent base so that a wrong rule shows here.

mod common;

use common::{CONFIG, audit};
use driftless_audit::Report;

const BASELINE: &str = "sku,location,quantity\nMUG-1,DC1,100\nMUG-1,DC2,50\nTEE-1,DC1,120\n";
const WMS: &str =
    "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,50,0\nTEE-1,DC1,120,0\n";
const ERP: &str =
    "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,50,0\nTEE-1,DC1,120,0\n";
const SHOP: &str = "sku,quantity\nMUG-1,145\nTEE-1,120\n";

fn case(name: &str, replace: &[(&str, &str)]) -> Report {
    let mut files: Vec<(&str, &str)> = vec![
        ("baseline.csv", BASELINE),
        ("wms.csv", WMS),
        ("erp.csv", ERP),
        ("shop.csv", SHOP),
    ];
    for (f, t) in replace {
        match files.iter_mut().find(|(n, _)| n == f) {
            Some(slot) => slot.1 = t,
            None => files.push((f, t)),
        }
    }
    audit(name, CONFIG, &files).unwrap_or_else(|e| panic!("{e}"))
}

/// The one row of a report, as `(sku, location, handoff, cause, delta)`.
fn one(r: &Report) -> (String, String, String, String, i64) {
    assert_eq!(
        r.rows.len(),
        1,
        "{}",
        serde_json::to_string_pretty(r).unwrap()
    );
    let x = &r.rows[0];
    (
        x.sku.clone(),
        x.location.clone(),
        x.handoff.clone(),
        x.cause.clone(),
        x.delta,
    )
}

fn row(
    sku: &str,
    loc: &str,
    handoff: &str,
    cause: &str,
    delta: i64,
) -> (String, String, String, String, i64) {
    (sku.into(), loc.into(), handoff.into(), cause.into(), delta)
}

#[test]
fn consistent_files_have_no_drift() {
    let r = case("clean", &[]);
    assert_eq!(r.drifting, 0, "{r:?}");
    assert!(r.rows.is_empty());
    // 3 location keys + 2 channel keys.
    assert_eq!(r.skus_compared, 5);
    let names: Vec<_> = r.handoffs.iter().map(|h| h.handoff.as_str()).collect();
    assert_eq!(names, ["physical->wms", "wms->erp", "erp->shop"]);
}

#[test]
fn count_variance_at_physical_to_wms() {
    // The WMS lost 10 mugs the count found; the ERP and the shop faithfully follow the WMS.
    let r = case(
        "count",
        &[
            (
                "wms.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,90,5\nMUG-1,DC2,50,0\nTEE-1,DC1,120,0\n",
            ),
            (
                "erp.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,90,5\nMUG-1,DC2,50,0\nTEE-1,DC1,120,0\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,135\nTEE-1,120\n"),
        ],
    );
    assert_eq!(
        one(&r),
        row("MUG-1", "DC1", "physical->wms", "count_variance", -10)
    );
    assert_eq!(r.rows[0].baseline, Some(100));
    assert_eq!(r.rows[0].values.get("wms"), Some(90));
    assert_eq!(r.rows[0].expected.get("erp"), Some(90));
}

#[test]
fn uom_mismatch_at_wms_to_erp() {
    // The ERP took the WMS's 120 EA as 10 (cases).
    let r = case(
        "uom",
        &[
            (
                "erp.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,50,0\nTEE-1,DC1,10,0\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,145\nTEE-1,10\n"),
        ],
    );
    assert_eq!(
        one(&r),
        row("TEE-1", "DC1", "wms->erp", "uom_mismatch", -110)
    );
}

#[test]
fn committed_not_mapped_at_erp_to_shop() {
    // The shop shows on-hand (150) instead of ATP (145): the committed 5 were never mapped.
    let r = case(
        "committed",
        &[("shop.csv", "sku,quantity\nMUG-1,150\nTEE-1,120\n")],
    );
    assert_eq!(
        one(&r),
        row("MUG-1", "", "erp->shop", "committed_not_mapped", 5)
    );
}

#[test]
fn sync_lag_at_wms_to_erp() {
    // The WMS shipped 20 mugs at DC2 two hours ago; the ERP still shows yesterday's 50.
    let r = case(
        "lag",
        &[
            (
                "wms.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,30,0\nTEE-1,DC1,120,0\n",
            ),
            (
                "baseline.csv",
                "sku,location,quantity\nMUG-1,DC1,100\nMUG-1,DC2,30\nTEE-1,DC1,120\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,145\nTEE-1,120\n"),
            (
                "wms-changes.csv",
                "sku,location,at,quantity,actor\nMUG-1,DC2,2026-11-19T08:00:00Z,50,wms-sync\nMUG-1,DC2,2026-11-20T10:00:00Z,30,wms-sync\n",
            ),
        ],
    );
    assert_eq!(one(&r), row("MUG-1", "DC2", "wms->erp", "sync_lag", 20));
}

#[test]
fn lag_outside_the_window_is_not_sync_lag() {
    // Same, but the earlier value is three days old: far outside 24h + 4h.
    let r = case(
        "lag-old",
        &[
            (
                "wms.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,30,0\nTEE-1,DC1,120,0\n",
            ),
            (
                "baseline.csv",
                "sku,location,quantity\nMUG-1,DC1,100\nMUG-1,DC2,30\nTEE-1,DC1,120\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,145\nTEE-1,120\n"),
            (
                "wms-changes.csv",
                "sku,location,at,quantity,actor\nMUG-1,DC2,2026-11-16T08:00:00Z,50,wms-sync\nMUG-1,DC2,2026-11-17T10:00:00Z,30,wms-sync\n",
            ),
        ],
    );
    assert_eq!(one(&r), row("MUG-1", "DC2", "wms->erp", "unexplained", 20));
}

#[test]
fn sync_lag_at_erp_to_shop() {
    // The ERP's DC1 went from 100 to 90 ten minutes ago; the shop still sells 145.
    let r = case(
        "lag-shop",
        &[
            (
                "baseline.csv",
                "sku,location,quantity\nMUG-1,DC1,90\nMUG-1,DC2,50\nTEE-1,DC1,120\n",
            ),
            (
                "wms.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,90,5\nMUG-1,DC2,50,0\nTEE-1,DC1,120,0\n",
            ),
            (
                "erp.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,90,5\nMUG-1,DC2,50,0\nTEE-1,DC1,120,0\n",
            ),
            (
                "erp-changes.csv",
                "sku,location,at,quantity,actor\nMUG-1,DC1,2026-11-20T09:00:00Z,100,erp-connector\nMUG-1,DC1,2026-11-20T11:50:00Z,90,erp-connector\n",
            ),
        ],
    );
    assert_eq!(one(&r), row("MUG-1", "", "erp->shop", "sync_lag", 10));
}

#[test]
fn out_of_sequence_at_erp_to_shop() {
    // The connector wrote 145 (data of 11:00), then a retried older push (data of 09:00) wrote 130.
    let r = case(
        "oos",
        &[
            ("shop.csv", "sku,quantity\nMUG-1,130\nTEE-1,120\n"),
            (
                "shop-changes.csv",
                "sku,location,at,quantity,actor,source_at\nMUG-1,,2026-11-20T11:00:05Z,145,shop-connector,2026-11-20T11:00:00Z\nMUG-1,,2026-11-20T11:01:00Z,130,shop-connector,2026-11-20T09:00:00Z\n",
            ),
        ],
    );
    assert_eq!(
        one(&r),
        row("MUG-1", "", "erp->shop", "out_of_sequence", -15)
    );
}

#[test]
fn manual_override_at_erp_to_shop() {
    let r = case(
        "manual",
        &[
            ("shop.csv", "sku,quantity\nMUG-1,145\nTEE-1,200\n"),
            (
                "shop-changes.csv",
                "sku,location,at,quantity,actor\nTEE-1,,2026-11-20T08:00:00Z,120,shop-connector\nTEE-1,,2026-11-20T09:30:00Z,200,alice@example.com\n",
            ),
        ],
    );
    assert_eq!(
        one(&r),
        row("TEE-1", "", "erp->shop", "manual_override", 80)
    );
}

#[test]
fn a_write_after_the_snapshot_is_ignored() {
    // The person's edit happened after the snapshot was taken: it cannot explain it.
    let r = case(
        "after",
        &[
            ("shop.csv", "sku,quantity\nMUG-1,145\nTEE-1,200\n"),
            (
                "shop-changes.csv",
                "sku,location,at,quantity,actor\nTEE-1,,2026-11-20T13:00:00Z,200,alice@example.com\n",
            ),
        ],
    );
    assert_eq!(one(&r), row("TEE-1", "", "erp->shop", "unexplained", 80));
}

#[test]
fn unexplained_at_wms_to_erp() {
    let r = case(
        "unexplained",
        &[
            (
                "erp.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,43,0\nTEE-1,DC1,120,0\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,138\nTEE-1,120\n"),
        ],
    );
    assert_eq!(one(&r), row("MUG-1", "DC2", "wms->erp", "unexplained", -7));
}

#[test]
fn drift_is_reported_once_where_it_entered() {
    // The ERP is off at DC2; the shop follows the ERP, so only wms->erp is reported.
    let r = case(
        "once",
        &[
            (
                "erp.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,40,0\nTEE-1,DC1,120,0\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,135\nTEE-1,120\n"),
        ],
    );
    assert_eq!(one(&r), row("MUG-1", "DC2", "wms->erp", "unexplained", -10));
    assert_eq!(r.rows[0].expected.get("shop"), None);
}

#[test]
fn under_threshold_is_not_drift() {
    // 2 units is not more than threshold_units = 2.
    let r = case(
        "under",
        &[
            (
                "erp.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,48,0\nTEE-1,DC1,120,0\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,143\nTEE-1,120\n"),
        ],
    );
    assert_eq!(r.drifting, 0, "{r:?}");
}

#[test]
fn velocity_class_tightens_the_threshold() {
    let config = format!(
        "{CONFIG}\n[[audit.classes]]\nname = \"fast\"\nsku = \"MUG-*\"\nthreshold_units = 0\nthreshold_pct = 0\n"
    );
    let erp = "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,48,0\nTEE-1,DC1,120,0\n";
    let r = audit(
        "class",
        &config,
        &[
            ("baseline.csv", BASELINE),
            ("wms.csv", WMS),
            ("erp.csv", erp),
            ("shop.csv", "sku,quantity\nMUG-1,143\nTEE-1,120\n"),
        ],
    )
    .unwrap();
    assert_eq!(one(&r), row("MUG-1", "DC2", "wms->erp", "unexplained", -2));
}

#[test]
fn a_sku_in_one_system_only_is_reported_not_dropped() {
    // The WMS has a sku nobody else knows: the ERP shows nothing of it.
    let r = case(
        "only",
        &[(
            "wms.csv",
            "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,50,0\nTEE-1,DC1,120,0\nNEW-1,DC1,30,0\n",
        )],
    );
    assert_eq!(one(&r), row("NEW-1", "DC1", "wms->erp", "unexplained", -30));
    assert_eq!(r.rows[0].values.get("erp"), None);
    assert_eq!(r.not_counted, 1);
    assert!(
        r.absent.iter().any(|a| a.system == "erp" && a.keys == 1),
        "{r:?}"
    );
    assert!(
        r.absent.iter().any(|a| a.system == "shop" && a.keys == 1),
        "{r:?}"
    );
}

#[test]
fn json_has_the_design_shape() {
    let r = case(
        "json",
        &[("shop.csv", "sku,quantity\nMUG-1,150\nTEE-1,120\n")],
    );
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 5, "{v}");
    for k in ["at", "skus_compared", "drifting", "handoffs", "rows"] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!(v["at"], "2026-11-20T12:00:00Z");
    let row = &v["rows"][0];
    for k in [
        "sku", "location", "baseline", "values", "expected", "handoff", "cause", "delta",
    ] {
        assert!(row.get(k).is_some(), "{k}: {row}");
    }
    assert_eq!(row["values"]["shop"], 150);
    assert_eq!(row["expected"]["shop"], 145);
    let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn manual_override_survives_checkout_decrements() {
    // A person set 200; the storefront's checkout has sold 3 since; no sync came after.
    let r = case(
        "manual-checkout",
        &[
            ("shop.csv", "sku,quantity\nMUG-1,145\nTEE-1,197\n"),
            (
                "shop-changes.csv",
                "sku,location,at,quantity,actor,source_at\n\
                 TEE-1,,2026-11-20T08:00:00Z,120,shop-connector,2026-11-20T08:00:00Z\n\
                 TEE-1,,2026-11-20T09:30:00Z,200,alice@example.com,\n\
                 TEE-1,,2026-11-20T10:00:00Z,199,checkout,\n\
                 TEE-1,,2026-11-20T11:00:00Z,197,checkout,\n",
            ),
        ],
    );
    assert_eq!(
        one(&r),
        row("TEE-1", "", "erp->shop", "manual_override", 77)
    );
}

#[test]
fn phantom_availability_seen_at_the_last_sync() {
    // The sync wrote on-hand (150) instead of ATP (145); checkout has sold 2 since, so the
    // current value (148) is off by neither the committed 5 nor a pack factor.
    let r = case(
        "phantom-sync",
        &[
            ("shop.csv", "sku,quantity\nMUG-1,148\nTEE-1,120\n"),
            (
                "shop-changes.csv",
                "sku,location,at,quantity,actor,source_at\n\
                 MUG-1,,2026-11-20T10:00:00Z,150,shop-connector,2026-11-20T10:00:00Z\n\
                 MUG-1,,2026-11-20T10:30:00Z,149,checkout,\n\
                 MUG-1,,2026-11-20T11:00:00Z,148,checkout,\n",
            ),
        ],
    );
    assert_eq!(
        one(&r),
        row("MUG-1", "", "erp->shop", "committed_not_mapped", 3)
    );
}

const WMS_LOG: &str = "sku,location,at,quantity,actor\n\
    MUG-1,DC2,2026-11-19T08:00:00Z,50,wms-sync\n\
    MUG-1,DC2,2026-11-19T10:00:00Z,48,wms-sync\n\
    MUG-1,DC2,2026-11-20T06:00:00Z,40,wms-sync\n\
    MUG-1,DC2,2026-11-20T10:00:00Z,30,wms-sync\n";

fn stale_write(name: &str, newest: i64, stale: i64) -> Report {
    let erp = format!(
        "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,{stale},0\nTEE-1,DC1,120,0\n"
    );
    let log = format!(
        "sku,location,at,quantity,actor,source_at\n\
         MUG-1,DC2,2026-11-19T09:00:00Z,50,wms-sync,2026-11-19T08:00:00Z\n\
         MUG-1,DC2,2026-11-20T07:00:00Z,{newest},wms-sync,2026-11-20T06:00:00Z\n\
         MUG-1,DC2,2026-11-20T08:00:00Z,{stale},wms-sync,2026-11-19T10:00:00Z\n"
    );
    let shop = format!("sku,quantity\nMUG-1,{}\nTEE-1,120\n", 95 + stale);
    case(
        name,
        &[
            (
                "baseline.csv",
                "sku,location,quantity\nMUG-1,DC1,100\nMUG-1,DC2,30\nTEE-1,DC1,120\n",
            ),
            (
                "wms.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,30,0\nTEE-1,DC1,120,0\n",
            ),
            ("erp.csv", &erp),
            ("shop.csv", &shop),
            ("wms-changes.csv", WMS_LOG),
            ("erp-changes.csv", &log),
        ],
    )
}

#[test]
fn a_stale_write_is_out_of_sequence_when_it_makes_the_drift() {
    // Newest data said 32 (2 off); the retried older write put back 48.
    let r = stale_write("oos-share", 32, 48);
    assert_eq!(
        one(&r),
        row("MUG-1", "DC2", "wms->erp", "out_of_sequence", 18)
    );
}

#[test]
fn a_stale_write_on_a_late_integration_is_lag() {
    // Newest data said 40 (10 off, the integration is behind); the stale write moved it 8 more.
    let r = stale_write("oos-lag", 40, 48);
    assert_eq!(one(&r), row("MUG-1", "DC2", "wms->erp", "sync_lag", 18));
}

#[test]
fn late_and_wrongly_converted_is_uom_mismatch() {
    // The ERP shows 12: the WMS's 144 of this morning read as cases (now 120).
    let r = case(
        "uom-lag",
        &[
            (
                "erp.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,50,0\nTEE-1,DC1,12,0\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,145\nTEE-1,12\n"),
            (
                "wms-changes.csv",
                "sku,location,at,quantity,actor\nTEE-1,DC1,2026-11-20T06:00:00Z,144,wms-sync\nTEE-1,DC1,2026-11-20T10:00:00Z,120,wms-sync\n",
            ),
        ],
    );
    assert_eq!(
        one(&r),
        row("TEE-1", "DC1", "wms->erp", "uom_mismatch", -108)
    );
}

#[test]
fn a_partial_count_judges_only_what_it_counted() {
    let base = "sku,location,quantity\nMUG-1,DC1,100\nTEE-1,DC1,120\n";
    let r = case("partial", &[("baseline.csv", base)]);
    assert_eq!(r.drifting, 0, "{r:?}");
    assert_eq!(r.not_counted, 1);
    let r = case(
        "partial-drift",
        &[
            ("baseline.csv", base),
            (
                "erp.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,40,0\nTEE-1,DC1,120,0\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,135\nTEE-1,120\n"),
        ],
    );
    assert_eq!(one(&r), row("MUG-1", "DC2", "wms->erp", "unexplained", -10));
    assert_eq!(r.rows[0].baseline, None);
    assert_eq!(r.rows[0].expected.get("wms"), None);
}

#[test]
fn a_storefront_reporting_per_location_is_judged_per_location() {
    let shop = "sku,location,quantity\nMUG-1,DC1,95\nMUG-1,DC2,60\nTEE-1,DC1,120\n";
    let r = case("shop-loc", &[("shop.csv", shop)]);
    assert_eq!(one(&r), row("MUG-1", "DC2", "erp->shop", "unexplained", 10));
    // Three location keys, no channel-level key.
    assert_eq!(r.skus_compared, 3);
}

#[test]
fn a_system_reporting_available_is_compared_with_upstream_atp() {
    let config = CONFIG.replace(
        "[audit]",
        "[audit.snapshots.erp]\nreports = \"available\"\n\n[audit]",
    );
    let files = |erp: &'static str, shop: &'static str| {
        vec![
            ("baseline.csv", BASELINE),
            ("wms.csv", WMS),
            ("erp.csv", erp),
            ("shop.csv", shop),
        ]
    };
    let ok = audit(
        "avail",
        &config,
        &files(
            "sku,location,available\nMUG-1,DC1,95\nMUG-1,DC2,50\nTEE-1,DC1,120\n",
            SHOP,
        ),
    )
    .unwrap();
    assert_eq!(ok.drifting, 0, "{ok:?}");
    // Showing on-hand as available: off by exactly the committed 5.
    // (The storefront follows the ERP, so only the ERP is reported.)
    let bad = audit(
        "avail-bad",
        &config,
        &files(
            "sku,location,available\nMUG-1,DC1,100\nMUG-1,DC2,50\nTEE-1,DC1,120\n",
            "sku,quantity\nMUG-1,150\nTEE-1,120\n",
        ),
    )
    .unwrap();
    assert_eq!(
        one(&bad),
        row("MUG-1", "DC1", "wms->erp", "committed_not_mapped", 5)
    );
}

#[test]
fn a_state_missing_upstream_comes_from_further_upstream() {
    // The ERP export has no committed column: the storefront's ATP uses the WMS's.
    let r = case(
        "fallback",
        &[(
            "erp.csv",
            "sku,location,on_hand\nMUG-1,DC1,100\nMUG-1,DC2,50\nTEE-1,DC1,120\n",
        )],
    );
    assert_eq!(r.drifting, 0, "{r:?}");
}

#[test]
fn an_integration_silent_beyond_its_window_is_still_lag() {
    // The ERP's last sync carried the WMS's data of three days ago (50); the WMS has shipped
    // 20 since. The value is older than the 28 h window, but it is what the last sync wrote.
    let r = case(
        "lag-silent",
        &[
            (
                "wms.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,30,0\nTEE-1,DC1,120,0\n",
            ),
            (
                "baseline.csv",
                "sku,location,quantity\nMUG-1,DC1,100\nMUG-1,DC2,30\nTEE-1,DC1,120\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,145\nTEE-1,120\n"),
            (
                "wms-changes.csv",
                "sku,location,at,quantity,actor\nMUG-1,DC2,2026-11-16T08:00:00Z,50,wms-sync\nMUG-1,DC2,2026-11-17T10:00:00Z,30,wms-sync\n",
            ),
            (
                "erp-changes.csv",
                "sku,location,at,quantity,actor,source_at\nMUG-1,DC2,2026-11-17T01:00:00Z,50,wms-sync,2026-11-16T22:00:00Z\n",
            ),
        ],
    );
    assert_eq!(one(&r), row("MUG-1", "DC2", "wms->erp", "sync_lag", 20));
}

#[test]
fn the_baseline_can_name_each_rows_velocity_class() {
    let config = format!(
        "{CONFIG}\n[[audit.classes]]\nname = \"fast\"\nsku = \"NOTHING-*\"\nthreshold_units = 0\nthreshold_pct = 0\n"
    );
    let erp = "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,48,0\nTEE-1,DC1,120,0\n";
    let files = |baseline: &'static str| {
        vec![
            ("baseline.csv", baseline),
            ("wms.csv", WMS),
            ("erp.csv", erp),
            ("shop.csv", "sku,quantity\nMUG-1,143\nTEE-1,120\n"),
        ]
    };
    // No class named: 2 units off is within the default threshold.
    let r = audit("class-col-none", &config, &files(BASELINE)).unwrap();
    assert_eq!(r.drifting, 0, "{r:?}");
    // The count names MUG-1 at DC2 a fast mover: now 2 units off is drift.
    let named = "sku,location,quantity,class\nMUG-1,DC1,100,\nMUG-1,DC2,50,fast\nTEE-1,DC1,120,\n";
    let r = audit("class-col", &config, &files(named)).unwrap();
    assert_eq!(one(&r), row("MUG-1", "DC2", "wms->erp", "unexplained", -2));
    // An unknown class is bad input, located.
    let bad = "sku,location,quantity,class\nMUG-1,DC1,100,turbo\n";
    match audit("class-col-bad", &config, &files(bad)) {
        Err(driftless_audit::AuditError::Input { errors, .. }) => {
            assert_eq!((errors[0].line, errors[0].column), (2, 4), "{}", errors[0]);
            assert!(errors[0].message.contains("turbo"), "{}", errors[0]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn zero_is_not_off_by_a_pack_factor() {
    // The WMS sold out (0) then received 120 this morning; the ERP still shows 0. Zero times any
    // case factor is zero, so only the lag rule can explain it.
    let r = case(
        "zero-lag",
        &[
            (
                "erp.csv",
                "sku,location,on_hand,committed\nMUG-1,DC1,100,5\nMUG-1,DC2,50,0\nTEE-1,DC1,0,0\n",
            ),
            ("shop.csv", "sku,quantity\nMUG-1,145\nTEE-1,0\n"),
            (
                "wms-changes.csv",
                "sku,location,at,quantity,actor\nTEE-1,DC1,2026-11-19T16:00:00Z,0,wms-sync\nTEE-1,DC1,2026-11-20T08:00:00Z,120,wms-sync\n",
            ),
        ],
    );
    assert_eq!(one(&r), row("TEE-1", "DC1", "wms->erp", "sync_lag", -120));
}

#[test]
fn orders_the_upstream_has_not_downloaded_are_lag() {
    // The last sync wrote the expected 145; the storefront has sold 4 since, which the ERP
    // has not downloaded yet.
    let r = case(
        "orders-lag",
        &[
            ("shop.csv", "sku,quantity\nMUG-1,141\nTEE-1,120\n"),
            (
                "shop-changes.csv",
                "sku,location,at,quantity,actor,source_at\n\
                 MUG-1,,2026-11-20T10:00:00Z,145,shop-connector,2026-11-20T10:00:00Z\n\
                 MUG-1,,2026-11-20T10:30:00Z,143,checkout,\n\
                 MUG-1,,2026-11-20T11:30:00Z,141,checkout,\n",
            ),
        ],
    );
    assert_eq!(one(&r), row("MUG-1", "", "erp->shop", "sync_lag", -4));
}

fn ahead(name: &str, last_checkout: &str) -> Report {
    let log = format!(
        "sku,location,at,quantity,actor,source_at\n\
         MUG-1,,2026-11-20T09:00:00Z,147,shop-connector,2026-11-20T09:00:00Z\n\
         MUG-1,,2026-11-20T10:00:00Z,146,checkout,\n\
         MUG-1,,2026-11-20T10:20:00Z,145,checkout,\n\
         MUG-1,,{last_checkout},141,checkout,\n"
    );
    let log: &'static str = Box::leak(log.into_boxed_str());
    case(
        name,
        &[
            ("shop.csv", "sku,quantity\nMUG-1,141\nTEE-1,120\n"),
            ("shop-changes.csv", log),
        ],
    )
}

#[test]
fn a_storefront_ahead_of_an_upstream_that_moved_since_the_sync_is_lag() {
    // The sync wrote 147; the ERP has since taken in the first two orders (expected 145 now) but
    // not the last, placed 20 minutes before the snapshot, within the hop's 45-minute window.
    let r = ahead("ahead-in-window", "2026-11-20T11:40:00Z");
    assert_eq!(one(&r), row("MUG-1", "", "erp->shop", "sync_lag", -4));
    // The same order placed long before the window: the ERP should have taken it in by now.
    let r = ahead("ahead-out-of-window", "2026-11-20T10:40:00Z");
    assert_eq!(one(&r), row("MUG-1", "", "erp->shop", "unexplained", -4));
}

#[test]
fn a_sync_inside_the_window_followed_by_checkouts_only_is_lag() {
    // The sync 20 minutes ago wrote 152 (the ERP's available then); the ERP's committed has
    // moved since (its change log does not carry it): the next poll is still due.
    let r = case(
        "synced-in-window",
        &[
            ("shop.csv", "sku,quantity\nMUG-1,151\nTEE-1,120\n"),
            (
                "shop-changes.csv",
                "sku,location,at,quantity,actor,source_at\n\
                 MUG-1,,2026-11-20T11:40:00Z,152,shop-connector,2026-11-20T11:40:00Z\n\
                 MUG-1,,2026-11-20T11:50:00Z,151,checkout,\n",
            ),
        ],
    );
    assert_eq!(one(&r), row("MUG-1", "", "erp->shop", "sync_lag", 6));
}

#[test]
fn two_causes_on_one_key_the_larger_share_names_it_and_the_other_goes_beside_it() {
    // Newest data said 36 (6 behind: lag); the retried older write put back 48 (12 more): the
    // stale write has the larger share, the lag's share is drift on its own.
    let r = stale_write("oos-also", 36, 48);
    assert_eq!(
        one(&r),
        row("MUG-1", "DC2", "wms->erp", "out_of_sequence", 18)
    );
    assert_eq!(r.rows[0].also.as_deref(), Some("sync_lag"));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["rows"][0]["also"], "sync_lag");
    let html = driftless_audit::render::html(&r);
    assert!(html.contains("out_of_sequence <small>(also sync_lag)</small>"));
    let csv = driftless_audit::render::csv(&r);
    assert!(csv.lines().next().unwrap().ends_with(",also"), "{csv}");
    assert!(csv.lines().nth(1).unwrap().ends_with(",sync_lag"), "{csv}");
    // A second share under the threshold is not reported; the key is omitted from JSON.
    let r = stale_write("oos-no-also", 32, 48);
    assert_eq!(r.rows[0].also, None);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["rows"][0].get("also").is_none());
}

#[test]
fn a_persons_write_after_a_stale_sync_is_manual_override() {
    // The connector's retried write put back older data (40 over the newer 141); then a person
    // typed 170: what shows is the person's, not the stale write's.
    let r = case(
        "stale-then-person",
        &[
            ("shop.csv", "sku,quantity\nMUG-1,170\nTEE-1,120\n"),
            (
                "shop-changes.csv",
                "sku,location,at,quantity,actor,source_at\n\
                 MUG-1,,2026-11-20T10:00:00Z,141,shop-connector,2026-11-20T10:00:00Z\n\
                 MUG-1,,2026-11-20T10:30:00Z,40,shop-connector,2026-11-20T08:00:00Z\n\
                 MUG-1,,2026-11-20T11:00:00Z,170,alice@example.com,\n",
            ),
        ],
    );
    assert_eq!(
        one(&r),
        row("MUG-1", "", "erp->shop", "manual_override", 25)
    );
}

/// The ERP's change log with its committed quantity: both locations loaded at 08:00 with nothing
/// committed, then 5 committed at DC1 at `when`. The storefront's connector polls every 15
/// minutes (in phase with its last write at 10:05: 11:50, 12:05, ...) and wrote on-hand (150)
/// at 10:05, when that was also right; it shows 150 at the snapshot (12:00), 145 expected.
fn commitment_at(name: &str, when: &str) -> Report {
    let erp_log = format!(
        "sku,location,at,quantity,actor,source_at,ref,committed\n\
         MUG-1,DC1,2026-11-20T08:00:00Z,100,wms-sync,2026-11-20T08:00:00Z,load,0\n\
         MUG-1,DC2,2026-11-20T08:00:00Z,50,wms-sync,2026-11-20T08:00:00Z,load,0\n\
         MUG-1,DC1,{when},100,checkout,,SO-1,5\n"
    );
    case(
        name,
        &[
            ("shop.csv", "sku,quantity\nMUG-1,150\nTEE-1,120\n"),
            ("erp-changes.csv", &erp_log),
            (
                "shop-changes.csv",
                "sku,location,at,quantity,actor,source_at\n\
                 MUG-1,,2026-11-20T10:05:00Z,150,shop-connector,2026-11-20T10:05:00Z\n",
            ),
        ],
    )
}

#[test]
fn a_commitment_after_the_last_poll_is_lag_not_phantom() {
    // Committed at 11:55, after the 11:50 poll: either mapping would still show 150.
    let r = commitment_at("commit-after-poll", "2026-11-20T11:55:00Z");
    assert_eq!(one(&r), row("MUG-1", "", "erp->shop", "sync_lag", 5));
}

#[test]
fn a_commitment_the_connector_read_and_did_not_write_is_phantom() {
    // Committed at 11:40: the 11:50 poll read it; mapped right, the connector would have written
    // 145 then. It wrote nothing, so it maps on-hand.
    let r = commitment_at("commit-before-poll", "2026-11-20T11:40:00Z");
    assert_eq!(
        one(&r),
        row("MUG-1", "", "erp->shop", "committed_not_mapped", 5)
    );
}

#[test]
fn a_bad_committed_cell_names_its_file_line_and_column() {
    let files = [
        ("baseline.csv", BASELINE),
        ("wms.csv", WMS),
        ("erp.csv", ERP),
        ("shop.csv", SHOP),
        (
            "erp-changes.csv",
            "sku,location,at,quantity,actor,source_at,ref,committed\n\
             MUG-1,DC1,2026-11-20T08:00:00Z,100,wms-sync,,load,five\n",
        ),
    ];
    let e = common::audit("bad-committed", CONFIG, &files).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("erp-changes.csv:2:8:") && text.contains("`five` is not a whole number"),
        "{text}"
    );
}
