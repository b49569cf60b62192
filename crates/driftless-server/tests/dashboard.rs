//! The dashboard end to end in headless Chromium (Debian's `chromium`, installed with apt-get when
//! missing) against a hub started here, driven over the DevTools protocol by `dashboard/cdp.py`
//! (Python's `websocket-client`, installed with pip when missing): every page loads with no
//! console error and no failed request; the sku page shows posted events in its history; the
//! as-of view shows the older value; a read token cannot replay. Screenshots are kept under the
//! target directory (`tmp/dashboard-e2e/`).

use driftless_store::{AuditRecord, Store};
use serde_json::{Value, json};
use std::process::Command;

mod common;

use common::{READ, SHOP_SYSTEM, TestApp, WMS, spawn};

fn config() -> String {
    common::config_wms(
        "",
        &format!(
            r#"
[[systems]]
id = "erp"
role = "erp"
{SHOP_SYSTEM}
[authority]
on_hand = ["wms"]

[[channels]]
id = "shop"
locations = ["DC1"]
safety_stock = 2

[[hops]]
from = "wms"
to = "erp"
trigger = "batch"
schedule = "every 24h"
latency_sla = "4h"
direction = "one-way"

[[hops]]
from = "erp"
to = "shop"
trigger = "poll"
latency_sla = "30m"
direction = "bidirectional"
"#
        ),
    )
}

fn found(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The test's own setup: Chromium from Debian, websocket-client from PyPI.
fn ensure_tools() -> String {
    if !found("chromium", "--version") {
        let ok = Command::new("sh")
            .args([
                "-c",
                "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "installing chromium with apt-get failed");
    }
    if !found("python3", "-c")
        || !Command::new("python3")
            .args(["-c", "import websocket"])
            .status()
            .is_ok_and(|s| s.success())
    {
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "websocket-client"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pip install websocket-client failed");
    }
    "chromium".into()
}

async fn post(app: &TestApp, body: Value) {
    let (s, v) = app
        .post_events(WMS, body.to_string(), "application/json")
        .await;
    assert!(s.is_success(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium() {
    let chromium = ensure_tools();
    let app = spawn(&config()).await;
    let base = app.base.clone();

    // A count of 50, then (later) a pick of 3: now 47, and 50 as of the moment between.
    post(
        &app,
        json!({"id": "count-1", "source": "wms", "sku": "TEE-RED-M", "location": "DC1",
        "occurred_at": "2026-11-20T10:00:00Z", "set": {"on_hand": 50}, "reason": "cycle count"}),
    )
    .await;
    for i in 0..30 {
        post(&app, json!({"id": format!("seed-{i}"), "source": "wms", "sku": format!("SKU-{i:03}"),
            "location": if i % 2 == 0 { "DC1" } else { "DC2" }, "occurred_at": "2026-11-20T10:00:00Z", "set": {"on_hand": 10 + i}})).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    post(
        &app,
        json!({"id": "pick-1", "source": "wms", "sku": "TEE-RED-M", "location": "DC1",
        "occurred_at": "2026-11-20T11:00:00Z", "adjust": {"on_hand": -3}, "ref": "order 1001"}),
    )
    .await;
    for day in 0..6i64 {
        let at = chrono::Utc::now() - chrono::Duration::days(12 - 2 * day);
        let report = json!({"at": at.to_rfc3339(), "skus_compared": 30, "drifting": day + 2, "handoffs": [],
            "rows": [{"sku": "TEE-RED-M", "location": "DC1", "baseline": 50, "values": {"wms": 47, "erp": 44},
                      "expected": {"erp": 47}, "handoff": "wms->erp", "cause": "sync_lag", "delta": -3}]});
        app.store
            .save_audit(&AuditRecord {
                at,
                skus_compared: 30,
                drifting: day + 2,
                handoffs: vec![
                    ("physical->wms".into(), 1, 2),
                    ("wms->erp".into(), day + 1, 3 * day + 3),
                ],
                report_json: report.to_string(),
            })
            .await
            .unwrap();
    }

    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e");
    let _ = std::fs::remove_dir_all(&artifacts);
    std::fs::create_dir_all(&artifacts).unwrap();
    let main_text = "document.querySelector('main').innerText";
    let plan = json!({
        "chromium": chromium,
        "base": base,
        "token": READ,
        "artifacts": artifacts,
        "steps": [
            {"name": "overview", "route": "/", "screenshot": "overview", "read": {"text": main_text}},
            {"name": "matrix", "route": "/matrix", "screenshot": "matrix", "read": {"text": main_text, "paths": "document.querySelectorAll('main svg path').length"}},
            {"name": "drift", "route": "/drift", "screenshot": "drift", "read": {"text": main_text}},
            {"name": "skus", "route": "/skus", "screenshot": "skus", "read": {"rows": "document.querySelectorAll('main tbody tr').length", "text": main_text}},
            {"name": "skus-next", "route": "/skus?after=SKU-028", "read": {"text": main_text}},
            {"name": "sku", "route": "/sku/TEE-RED-M", "screenshot": "sku", "read": {
                "text": main_text, "on_hand": "document.querySelector('main table tbody tr td:nth-child(2)').innerText"}},
            {"name": "asof", "route": format!("/sku/TEE-RED-M?at={between}"), "screenshot": "sku-as-of", "read": {
                "text": main_text, "on_hand": "document.querySelector('main table tbody tr td:nth-child(2)').innerText"}},
            {"name": "unknown-sku", "route": "/sku/NEVER-SEEN", "read": {"text": main_text}},
            {"name": "incidents", "route": "/incidents", "read": {"text": main_text}},
            {"name": "channels", "route": "/channels", "screenshot": "channels", "read": {"text": main_text}},
            {"name": "channel", "route": "/channel/shop", "read": {"text": main_text}},
            {"name": "replay", "click": "[data-action=replay]", "settle": 1.0, "screenshot": "replay-refused", "read": {
                "notice": "document.getElementById('notice').innerText"}},
        ],
    });
    let plan_file = artifacts.join("plan.json");
    std::fs::write(&plan_file, plan.to_string()).unwrap();
    let script = artifacts.join("cdp.py");
    std::fs::write(&script, include_str!("dashboard/cdp.py")).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(&script)
            .arg(&plan_file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::write(
        artifacts.join("result.json"),
        serde_json::to_string_pretty(&r).unwrap(),
    )
    .unwrap();

    for (name, step) in r.as_object().unwrap() {
        if name == "replay" {
            continue;
        }
        if name == "unknown-sku" {
            // The hub's answer for a sku never seen is a 404, and the page says so.
            for p in step["problems"].as_array().unwrap() {
                assert!(p.as_str().unwrap().contains("404"), "{name}: {p}");
            }
            continue;
        }
        assert_eq!(step["problems"], json!([]), "{name}: {}", step["text"]);
    }
    let text = |step: &str| r[step]["text"].as_str().unwrap_or_default().to_owned();
    assert!(
        text("overview")
            .to_lowercase()
            .contains("events since start"),
        "{}",
        text("overview")
    );
    assert!(
        r["matrix"]["paths"].as_u64().unwrap() >= 2,
        "the hops are drawn"
    );
    assert!(text("matrix").contains("wms → erp"));
    assert!(text("drift").contains("wms->erp"), "{}", text("drift"));
    assert!(text("drift").contains("sync_lag"));
    assert!(
        r["skus"]["rows"].as_u64().unwrap() == 31,
        "{}",
        text("skus")
    );
    assert!(text("skus-next").contains("SKU-029") && !text("skus-next").contains("SKU-027"));
    let sku = text("sku");
    assert!(
        sku.contains("pick-1") || sku.contains("order 1001"),
        "{sku}"
    );
    assert!(
        sku.contains("cycle count")
            && sku.contains("adjust on_hand -3")
            && sku.contains("set on_hand 50"),
        "{sku}"
    );
    assert!(sku.contains("applied") && sku.contains("wms"));
    assert_eq!(r["sku"]["on_hand"], "47");
    assert_eq!(r["asof"]["on_hand"], "50", "{}", text("asof"));
    assert!(text("asof").contains("As of"));
    assert!(text("unknown-sku").contains("never been seen"));
    // A read token cannot replay: the hub answers 403 and the page says why.
    let replay = &r["replay"];
    assert!(
        replay["notice"]
            .as_str()
            .unwrap()
            .contains("needs an operator token"),
        "{replay}"
    );
    assert!(
        replay["problems"].to_string().contains("HTTP 403"),
        "{replay}"
    );

    app.stop().await;
}
