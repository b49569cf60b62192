//! The demo's side of HTTP: a minimal client for the simulated systems, the hub's channel
//! quantities, and the merchandiser's hand edit reported as the storefront would.

use super::{READ_TOKEN, TOKENS};
use anyhow::Context;
use driftless_connectors::standin::StandIn;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A minimal HTTP/1.1 client: one request per connection, JSON in and out.
pub(super) async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut sock = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    sock.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status in the answer")?;
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    Ok((status, json))
}

pub(super) fn token_for(source: &str) -> &'static str {
    TOKENS
        .iter()
        .find(|(id, _)| *id == source)
        .map_or("", |(_, t)| *t)
}

/// The hub's channel quantity per sku, paged through `GET /v1/inventory`.
pub(super) async fn hub_quantities(addr: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/inventory?limit=1000&after={a}"),
            None => "/v1/inventory?limit=1000".to_owned(),
        };
        let (status, v) = http(addr, "GET", &path, READ_TOKEN, None).await?;
        anyhow::ensure!(status == 200, "GET {path}: HTTP {status}");
        for item in v["items"].as_array().into_iter().flatten() {
            let sku = item["sku"].as_str().unwrap_or_default().to_owned();
            let q = item["channels"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["channel"] == "shop")
                .and_then(|c| c["quantity"].as_i64());
            if let Some(q) = q {
                out.insert(sku, q);
            }
        }
        match v["next_after"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    Ok(out)
}

/// A person changes one storefront quantity by hand and the storefront reports it to the hub, as a
/// Shopify `inventory_levels/update` webhook would. Returns how many edits were made.
pub(super) async fn merchandiser_edit(
    addr: &str,
    shop: &StandIn,
    rng: &mut driftless_sim::rng::Rng,
) -> anyhow::Result<u64> {
    let edit = {
        let mut s = shop.lock();
        if s.quantities.is_empty() {
            return Ok(0);
        }
        // In sku order, so a seed picks the same sku every time.
        let mut skus: Vec<(&String, &i64)> = s.quantities.iter().collect();
        skus.sort();
        let i = rng.below(skus.len() as u64) as usize;
        let (sku, cur) = (skus[i].0.clone(), *skus[i].1);
        let v = cur + rng.range(10, 50);
        s.quantities.insert(sku.clone(), v);
        (sku, v)
    };
    let body =
        json!({"observations": [{"sku": edit.0, "quantity": edit.1, "actor": "merch.anna"}]});
    let (status, v) = http(
        addr,
        "POST",
        "/v1/channels/shop/observations",
        token_for("shop"),
        Some(&body.to_string()),
    )
    .await?;
    anyhow::ensure!(status == 200, "POST observations: HTTP {status}: {v}");
    Ok(1)
}
