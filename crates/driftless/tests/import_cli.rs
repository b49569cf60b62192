//! `driftless import` through the real binaries: a CSV stock file sent to a running hub, imported
//! twice without applying anything twice, and a bad file refused whole with its line and column.

mod common;

use serde_json::Value;
use std::process::Child;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[[systems]]
id = "wms"
role = "wms"
token_sha256 = "79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35"

[authority]
on_hand = ["wms"]

[[units]]
sku = "TEE-*"
unit = "CS"
factor = 12
"#;

struct Hub {
    child: Child,
    base: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hub(dir: &std::path::Path) -> Hub {
    let config = dir.join("driftless.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let (child, base) = common::serve(&config, &dir.join("data"));
    Hub { child, base }
}

fn import(hub: &Hub, file: &std::path::Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = common::driftless()
        .args(["import", "--source", "wms", "--url", &hub.base])
        .args(extra)
        .arg(file)
        .env("DRIFTLESS_TOKEN", "wms-demo-token")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn on_hand(hub: &Hub, sku: &str) -> Option<i64> {
    // reqwest is built without a default TLS provider (the connectors pick ring); install it once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/v1/inventory/{sku}", hub.base))
            .bearer_auth("wms-demo-token")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["locations"][0]["on_hand"].as_i64()
    })
}

#[test]
fn import_is_idempotent_and_refuses_bad_files_whole() {
    let dir = tempfile::tempdir().unwrap();
    let hub = hub(dir.path());
    let file = dir.path().join("stock.csv");
    // A BOM, CRLF line ends, quoted fields and a pack unit: what WMS exports look like.
    std::fs::write(
        &file,
        "\u{feff}id,sku,location,occurred_at,on_hand,uom\r\n\
         cnt-1,TEE-1,DC1,2026-11-27T06:00:00Z,10,CS\r\n\
         cnt-2,\"MUG-1\",DC1,2026-11-27T06:00:00Z,7,\r\n",
    )
    .unwrap();
    let (code, out, err) = import(&hub, &file, &["--set"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("2 events: 2 applied"), "{out}");
    assert_eq!(on_hand(&hub, "TEE-1"), Some(120));
    assert_eq!(on_hand(&hub, "MUG-1"), Some(7));

    let (code, out, _) = import(&hub, &file, &["--set"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("2 events: 2 duplicate"), "{out}");
    assert_eq!(on_hand(&hub, "TEE-1"), Some(120));

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "id,sku,location,occurred_at,on_hand\nb-1,NEW-1,DC1,2026-11-27T07:00:00Z,5\nb-2,NEW-2,DC1,yesterday,5\nb-3,NEW-3,DC1,2026-11-27T07:00:00Z,five\n",
    )
    .unwrap();
    let (code, _, err) = import(&hub, &bad, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.csv:3:4: occurred_at:"), "{err}");
    assert!(
        err.contains("bad.csv:4:5: on_hand must be a whole number"),
        "{err}"
    );
    assert_eq!(on_hand(&hub, "NEW-1"), None, "a refused file sends nothing");

    let missing = dir.path().join("missing.csv");
    std::fs::write(
        &missing,
        "id,sku,occurred_at,on_hand\nx,A,2026-11-27T07:00:00Z,1\n",
    )
    .unwrap();
    let (code, _, err) = import(&hub, &missing, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("missing column `location`"), "{err}");

    let dup = dir.path().join("dup.csv");
    std::fs::write(&dup, "id,sku,location,occurred_at,on_hand\nd,A,DC1,2026-11-27T07:00:00Z,1\nd,A,DC1,2026-11-27T07:00:00Z,2\n").unwrap();
    let (code, _, err) = import(&hub, &dup, &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("dup.csv:3:1: key \"d\" already used on line 2"),
        "{err}"
    );
}
