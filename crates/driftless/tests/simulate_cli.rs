//! `driftless simulate` end to end: flags and their errors, the `--out` files, determinism through
//! the binary, and the auditor's accuracy against the simulator's ground truth on small sizes.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn driftless(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("driftless-sim-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["simulate", "--scenario", "nope", "--architecture", "hub"],
            "nope",
        ),
        (
            &[
                "simulate",
                "--scenario",
                "phantom",
                "--architecture",
                "star",
            ],
            "star",
        ),
        (&["simulate", "--scenario", "phantom"], "--architecture"),
        (
            &[
                "simulate",
                "--scenario",
                "phantom",
                "--architecture",
                "hub",
                "--set",
                "bogus=1",
            ],
            "unknown setting `bogus`",
        ),
        (
            &[
                "simulate",
                "--scenario",
                "phantom",
                "--architecture",
                "hub",
                "--set",
                "retry_rate=2",
            ],
            "retry_rate",
        ),
        (
            &[
                "simulate",
                "--scenario",
                "phantom",
                "--architecture",
                "hub",
                "--skus",
                "0",
            ],
            "--skus",
        ),
    ];
    for (args, needle) in cases {
        let o = driftless(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

fn read_dir(d: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn out_writes_exactly_the_audit_files_byte_for_byte_per_seed() {
    let (a, b) = (temp("a"), temp("b"));
    for d in [&a, &b] {
        let o = driftless(&[
            "simulate",
            "--scenario",
            "everything",
            "--architecture",
            "point-to-point",
            "--skus",
            "40",
            "--seed",
            "9",
            "--out",
            d.to_str().unwrap(),
        ]);
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let (fa, fb) = (read_dir(&a), read_dir(&b));
    assert_eq!(fa, fb, "same seed, same bytes");
    let names: Vec<&str> = fa.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "at.txt",
            "baseline.csv",
            "driftless.toml",
            "erp-changes.csv",
            "erp.csv",
            "shop-changes.csv",
            "shop.csv",
            "truth.csv",
            "wms-changes.csv",
            "wms.csv"
        ]
    );
    // The configuration written is one the product accepts.
    let o = driftless(&["check-config", a.join("driftless.toml").to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let at = std::fs::read_to_string(a.join("at.txt")).unwrap();
    assert_eq!(at.trim(), "2026-11-09T09:00:00Z");
    let truth = std::fs::read_to_string(a.join("truth.csv")).unwrap();
    assert!(truth.starts_with("sku,location,handoff,cause\n"));
    assert!(truth.lines().count() > 10, "{truth}");
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn seeds_evaluates_a_range_of_seeds_in_one_command() {
    let o = driftless(&[
        "simulate",
        "--evaluate",
        "--seeds",
        "1..2",
        "--scenario",
        "uom-cases",
        "--skus",
        "40",
        "--days",
        "3",
        "--format",
        "json",
    ]);
    assert!(code(&o) == 0 || code(&o) == 1, "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON array");
    let rows = v.as_array().unwrap();
    // No architecture given: both.
    assert_eq!(rows.len(), 2, "{v}");
    for r in rows {
        assert_eq!(r["scenario"], "uom-cases");
        assert_eq!(r["seeds"], "1..2");
        let h = &r["handoff"];
        assert!(h["truth"].as_u64().unwrap() > 0, "{r}");
        assert!(h["right"].as_u64() <= h["reported"].as_u64());
        // Every reported row whose hand-off or cause is wrong is a miss (and so is every true row
        // not reported).
        let wrong = h["reported"].as_u64().unwrap() - r["cause"]["right"].as_u64().unwrap();
        assert!(r["misses"].as_array().unwrap().len() as u64 >= wrong, "{r}");
    }
    let text = driftless(&[
        "simulate",
        "--evaluate",
        "--seeds",
        "3..3",
        "--scenario",
        "phantom",
        "--architecture",
        "point-to-point",
        "--skus",
        "40",
        "--days",
        "3",
    ]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("phantom") && out.contains("point-to-point"),
        "{out}"
    );
    assert!(out.contains("hand-off") && out.contains("cause"), "{out}");
    for (args, needle) in [
        (
            &["simulate", "--evaluate", "--seeds", "3..1"][..],
            "first seed",
        ),
        (&["simulate", "--seeds", "1..2"][..], "--evaluate"),
        (
            &["simulate", "--evaluate", "--seeds", "1..2", "--seed", "4"][..],
            "--seed",
        ),
    ] {
        let o = driftless(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
}

fn evaluate(scenario: &str, arch: &str, seed: u64) -> Value {
    let seed = seed.to_string();
    let o = driftless(&[
        "simulate",
        "--scenario",
        scenario,
        "--architecture",
        arch,
        "--skus",
        "60",
        "--seed",
        &seed,
        "--evaluate",
        "--format",
        "json",
    ]);
    assert!(
        code(&o) == 0 || code(&o) == 1,
        "{scenario} {arch}: {}",
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

/// Right over true and right over reported, summed over two seeds.
fn scores(scenario: &str, arch: &str) -> ((f64, f64), (f64, f64)) {
    let (mut hr, mut cr, mut rep, mut tru) = (0.0, 0.0, 0.0, 0.0);
    for seed in [1, 2] {
        let v = evaluate(scenario, arch, seed);
        let e = &v["evaluation"];
        hr += e["handoff"]["right"].as_f64().unwrap();
        cr += e["cause"]["right"].as_f64().unwrap();
        rep += e["handoff"]["reported"].as_f64().unwrap();
        tru += e["handoff"]["truth"].as_f64().unwrap();
        assert!(v["drift"]["erp"]["units"].is_i64());
        assert!(v["series"].as_array().is_some_and(|s| s.len() > 100));
    }
    let r = |a: f64, b: f64| if b == 0.0 { 1.0 } else { a / b };
    ((r(hr, rep), r(hr, tru)), (r(cr, rep), r(cr, tru)))
}

fn assert_goals(scenario: &str, arch: &str) {
    let ((hp, hr), (cp, cr)) = scores(scenario, arch);
    assert!(
        hp >= 0.99 && hr >= 0.99,
        "{scenario} {arch}: hand-off {hp:.3}/{hr:.3}"
    );
    assert!(
        cp >= 0.95 && cr >= 0.95,
        "{scenario} {arch}: cause {cp:.3}/{cr:.3}"
    );
}

#[test]
fn the_auditor_meets_the_goals_on_the_hub() {
    for (s, _) in driftless_sim::SCENARIOS {
        assert_goals(s, "hub");
    }
}

#[test]
fn the_auditor_names_the_hand_off_on_every_point_to_point_scenario() {
    for (s, _) in driftless_sim::SCENARIOS {
        let ((hp, hr), _) = scores(s, "point-to-point");
        assert!(hp >= 0.99 && hr >= 0.99, "{s}: hand-off {hp:.3}/{hr:.3}");
    }
}

#[test]
fn the_auditor_meets_the_goals_on_every_point_to_point_scenario() {
    for (s, _) in driftless_sim::SCENARIOS {
        assert_goals(s, "point-to-point");
    }
}

#[test]
fn json_summary_compares_the_architectures() {
    let p2p = evaluate("flash-sale-polling", "point-to-point", 1);
    let hub = evaluate("flash-sale-polling", "hub", 1);
    assert!(p2p["oversells"]["integration_orders"].as_u64().unwrap() > 0);
    assert_eq!(hub["oversells"]["integration_orders"].as_u64(), Some(0));
    assert_eq!(hub["settled_integration_rows"].as_u64(), Some(0));
    assert!(p2p.get("settled_integration_rows").is_none());
}

#[test]
fn demo_replays_over_http_and_the_storefront_ends_in_step_with_the_hub() {
    let dir = temp("demo");
    let o = driftless(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--skus",
        "12",
        "--days",
        "1",
        "--seconds",
        "3",
        "--exit",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(code(&o), 0, "{out}\n{}", stderr(&o));
    assert!(out.contains("events over HTTP: applied"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("storefront shows the hub's channel quantity for"))
        .unwrap_or_default();
    let nums: Vec<&str> = line
        .split(' ')
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert!(
        nums.len() == 2 && nums[0] == nums[1] && nums[0] != "0",
        "{out}"
    );
    assert!(dir.join("driftless-demo.toml").exists());
    // A second run starts again from an empty ledger in its own directory.
    let again = driftless(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--skus",
        "5",
        "--days",
        "1",
        "--seconds",
        "1",
        "--exit",
    ]);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let out = String::from_utf8_lossy(&again.stdout);
    // Reusing the old ledger would turn the replayed ids into conflicts (their times differ).
    let sent = out
        .lines()
        .find(|l| l.contains("events over HTTP"))
        .unwrap_or_default();
    assert!(
        sent.contains(": applied ") && !sent.contains("conflict"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn checkpoints_scores_the_live_checkpoints_per_seed() {
    let o = driftless(&[
        "simulate",
        "--evaluate",
        "--checkpoints",
        "--seeds",
        "2..3",
        "--format",
        "json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let s = &r["score"];
        let drifting = s["drifting_keys"].as_u64().unwrap();
        assert!(drifting > 0, "{r}");
        // Every truly drifting key found with its hand-off and cause, nothing on other keys.
        assert_eq!(s["right_handoff"].as_u64(), Some(drifting), "{r}");
        assert_eq!(s["right_cause"].as_u64(), Some(drifting), "{r}");
        assert_eq!(s["false_incidents"].as_u64(), Some(0), "{r}");
        assert_eq!(r["met"], true);
    }
    // Without the range it is refused, naming what is missing.
    let o = driftless(&["simulate", "--evaluate", "--checkpoints"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--seeds"), "{}", stderr(&o));
}
