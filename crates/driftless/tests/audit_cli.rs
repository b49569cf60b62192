//! `driftless audit` and `driftless trend` through the real binary: exit status 0 / 1 / 2, each
//! output format, bad input located on standard error, and history feeding the trend.

use std::path::Path;
use std::process::{Command, Output};

const CONFIG: &str = r#"
[[systems]]
id = "wms"
role = "wms"
[[systems]]
id = "erp"
role = "erp"
[[systems]]
id = "shop"
role = "storefront"

[[units]]
sku = "TEE-*"
unit = "CS"
factor = 12

[[channels]]
id = "shop"
locations = ["DC1", "DC2"]

[audit]
chain = ["wms", "erp", "shop"]
threshold_units = 2
threshold_pct = 1.0
integration_actors = ["shop-connector"]
"#;

fn write(dir: &Path, erp: &str) {
    let shop = match erp {
        ERP_UOM => "sku,quantity\nMUG-1,96\nTEE-1,10\n",
        ERP_TWO => "sku,quantity\nMUG-1,76\nTEE-1,10\n",
        _ => "sku,quantity\nMUG-1,96\nTEE-1,120\n",
    };
    std::fs::write(dir.join("driftless.toml"), CONFIG).unwrap();
    std::fs::write(
        dir.join("baseline.csv"),
        "sku,location,quantity\nMUG-1,DC1,100\nTEE-1,DC2,120\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("wms.csv"),
        "sku,location,on_hand,committed\nMUG-1,DC1,100,4\nTEE-1,DC2,120,0\n",
    )
    .unwrap();
    std::fs::write(dir.join("erp.csv"), erp).unwrap();
    std::fs::write(dir.join("shop.csv"), shop).unwrap();
}

const ERP_OK: &str = "sku,location,on_hand,committed\nMUG-1,DC1,100,4\nTEE-1,DC2,120,0\n";
/// TEE-1 booked in cases and MUG-1 short by 20.
const ERP_TWO: &str = "sku,location,on_hand,committed\nMUG-1,DC1,80,4\nTEE-1,DC2,10,0\n";
/// TEE-1 booked in cases: 10 instead of 120.
const ERP_UOM: &str = "sku,location,on_hand,committed\nMUG-1,DC1,100,4\nTEE-1,DC2,10,0\n";

fn audit(dir: &Path, extra: &[&str]) -> Output {
    audit_at(dir, "2026-11-20T12:00:00Z", extra)
}

fn audit_at(dir: &Path, at: &str, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftless"))
        .current_dir(dir)
        .args([
            "audit",
            "--config",
            "driftless.toml",
            "--baseline",
            "baseline.csv",
            "--snapshot",
            "wms=wms.csv",
            "--snapshot",
            "erp=erp.csv",
            "--snapshot",
            "shop=shop.csv",
            "--at",
            at,
            "--data-dir",
            "data",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exit_zero_when_nothing_drifts() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), ERP_OK);
    let out = audit(d.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("nothing over threshold"), "{table}");
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");
    // No progress bar when standard error is not a terminal.
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn exit_one_on_drift_in_every_format() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), ERP_UOM);
    let out = audit(d.path(), &["--no-history"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");
    let summary = table.find("over threshold").unwrap();
    let row = table.find("uom_mismatch").unwrap();
    assert!(summary < row, "summary first:\n{table}");

    let out = audit(d.path(), &["--format", "json", "--no-history"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["drifting"], 1);
    assert_eq!(v["rows"][0]["handoff"], "wms->erp");
    assert_eq!(v["rows"][0]["cause"], "uom_mismatch");
    assert_eq!(v["rows"][0]["delta"], -110);

    let out = audit(d.path(), &["--format", "csv", "--no-history"]);
    let csv = text(&out.stdout);
    assert!(
        csv.starts_with("sku,location,handoff,cause,delta,baseline,wms,expected_wms"),
        "{csv}"
    );
    assert!(
        csv.contains("TEE-1,DC2,wms->erp,uom_mismatch,-110,120,120,120,10,120"),
        "{csv}"
    );

    let out = audit(
        d.path(),
        &["--format", "html", "--output", "r.html", "--no-history"],
    );
    assert_eq!(out.status.code(), Some(1));
    let html = std::fs::read_to_string(d.path().join("r.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("uom_mismatch"));
    assert!(
        !html.contains("<script")
            && !html.contains("src=")
            && !html.contains("href=")
            && !html.contains("@import"),
        "self-contained"
    );
}

#[test]
fn exit_two_on_bad_input_with_file_line_column() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "sku,location,on_hand,committed\nMUG-1,DC1,100,4\nTEE-1,DC2,1O0,0\n",
    );
    let out = audit(d.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("erp.csv:3:3: `1O0` is not a whole number"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = audit(d.path(), &["--snapshot", "ghost=erp.csv"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("ghost"), "{}", text(&out.stderr));

    let out = audit(d.path(), &["--at", "yesterday"]);
    assert_eq!(out.status.code(), Some(2));

    std::fs::write(
        d.path().join("driftless.toml"),
        "[audit]\nthreshold_units = -1\n",
    )
    .unwrap();
    let out = audit(d.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("driftless.toml:2:"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn audits_are_stored_and_trended() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), ERP_OK);
    assert_eq!(
        audit_at(d.path(), "2026-11-19T12:00:00Z", &[])
            .status
            .code(),
        Some(0)
    );
    write(d.path(), ERP_TWO);
    assert_eq!(audit(d.path(), &[]).status.code(), Some(1));
    let trend = |fmt: &str| {
        Command::new(env!("CARGO_BIN_EXE_driftless"))
            .current_dir(d.path())
            .args([
                "trend",
                "--config",
                "driftless.toml",
                "--data-dir",
                "data",
                "--days",
                "3650",
            ])
            .args(["--format", fmt])
            .output()
            .unwrap()
    };
    let out = trend("json");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["audits"], 2, "{v}");
    assert_eq!(v["series"][1]["handoffs"][1]["drifting_skus"], 2, "{v}");
    assert_eq!(v["degrading"]["handoff"], "wms->erp", "{v}");
    assert!(
        v["reading"]
            .as_str()
            .unwrap()
            .starts_with("repair wms->erp"),
        "{v}"
    );
    let out = trend("text");
    assert!(
        text(&out.stdout).contains("repair wms->erp"),
        "{}",
        text(&out.stdout)
    );
    let out = trend("svg");
    assert!(text(&out.stdout).starts_with("<svg"));
}

#[test]
fn live_audits_the_running_hub() {
    use std::io::{BufRead, BufReader, Read, Write};
    let d = tempfile::tempdir().unwrap();
    let mut hub = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.path())
        .env("DRIFTLESS_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(hub.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("listening on http://")
        .to_owned();
    let body = r#"[{"id":"c1","source":"wms","sku":"TEE-1","location":"DC1","occurred_at":"2026-11-27T10:00:00Z","set":{"on_hand":100}}]"#;
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer wms-demo-token\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("applied"), "{answer}");

    // The example channel has no connector: nothing was ever acknowledged, so the storefront is
    // reported as showing none of the 100 the hub says it may sell.
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args([
            "audit",
            "--live",
            "--no-history",
            "--format",
            "json",
            "--data-dir",
        ])
        .arg(d.path())
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status();
    let _ = hub.wait();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"][0]["sku"], "TEE-1");
    assert_eq!(v["rows"][0]["handoff"], "hub->shop");
    assert_eq!(v["rows"][0]["expected"]["shop"], 100);
    assert_eq!(v["rows"][0]["values"]["shop"], serde_json::Value::Null);
}
