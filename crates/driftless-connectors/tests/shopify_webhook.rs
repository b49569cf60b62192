//! The Shopify webhook signature on third parties' vectors (`../shared/fixtures/shopify-webhooks`,
//! read where they lie) and the InventoryLevel bodies of Shopify's own libraries.

use driftless_connectors::shopify::webhook::{self, sign, verify};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn shared(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.ancestors()
        .map(|a| a.join("../shared/fixtures"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no ../shared/fixtures above {}", root.display()))
        .join(rel)
}

#[test]
fn signatures_of_shopifys_and_other_libraries_vectors() {
    let v: Value = serde_json::from_slice(
        &std::fs::read(shared("shopify-webhooks/hmac-vectors.json")).unwrap(),
    )
    .unwrap();
    let vectors = v["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 7);
    for x in vectors {
        let id = x["id"].as_str().unwrap();
        let secret = x["secret"].as_str().unwrap().as_bytes();
        let body = webhook::unbase64(x["body_base64"].as_str().unwrap()).unwrap();
        assert_eq!(body, x["body"].as_str().unwrap().as_bytes(), "{id}");
        let header = x["x_shopify_hmac_sha256"].as_str().unwrap();
        let valid = x["expect_valid"].as_bool().unwrap();
        if id.ends_with("old-secret") {
            // Passes only while the previous secret is still tried (a rotation).
            assert!(verify(&[b"secret", secret], &body, Some(header)), "{id}");
            assert!(!verify(&[b"secret"], &body, Some(header)), "{id}");
            continue;
        }
        assert_eq!(verify(&[secret], &body, Some(header)), valid, "{id}");
        if valid {
            assert_eq!(sign(secret, &body), header, "{id}");
        }
    }
    let body = br#"{"foo": "bar"}"#;
    for bad in [
        None,
        Some(""),
        Some("invalid_hmac"),
        Some("XXXXXaGVsbG8="),
        Some("aGVsbG8="),
    ] {
        assert!(!verify(&[b"test_secret_key"], body, bad), "{bad:?}");
    }
}

#[test]
fn inventory_level_bodies_of_shopifys_libraries_parse() {
    let mut n = 0;
    for dir in ["go-shopify", "shopify_python_api", "shopify-app-js-2026-07"] {
        for e in
            std::fs::read_dir(shared("shopify-webhooks/rest-inventory-level").join(dir)).unwrap()
        {
            let v: Value =
                serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap();
            let v = v.get("response_body").cloned().unwrap_or(v);
            let mut levels = Vec::new();
            if let Some(l) = v.get("inventory_level") {
                levels.push(l.clone());
            }
            if let Some(Value::Array(a)) = v.get("inventory_levels") {
                levels.extend(a.iter().cloned());
            }
            for l in levels {
                if l.get("updated_at").is_none() {
                    continue;
                }
                // As Shopify sends it: `/` escaped.
                let raw = l.to_string().replace('/', "\\/");
                let p = webhook::parse(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"));
                assert_eq!(p.inventory_item_id, l["inventory_item_id"].to_string());
                n += 1;
            }
        }
    }
    assert!(n >= 8, "{n}");
}
