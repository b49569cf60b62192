//! Shopify's `inventory_levels/update` webhook, as a pure transform: the signature over the raw
//! body, the InventoryLevel body, and its ids to a configured sku and location.
//!
//! The signature (`X-Shopify-Hmac-Sha256`, base64 of HMAC-SHA256 with the app's secret) covers the
//! bytes exactly as sent: Shopify escapes `/` as `\/`, so a body parsed and written again would not
//! verify. Ids are read as integers without passing through a float (they exceed 2^53) or as
//! digit strings, and kept as strings from then on.

use chrono::{DateTime, Utc};
use driftless_config::{ChannelConfig, Settings};
use driftless_core::{Location, Sku};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding required), or `None` for anything else.
pub fn unbase64(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| B64.iter().position(|x| *x == c).map(|p| p as u32);
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (ci, chunk) in s.chunks(4).enumerate() {
        let last = ci == s.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { val(*c)? };
            n |= v << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; the fallback is unreachable.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new_from_slice(&[0]).expect("one byte"))
}

/// The `X-Shopify-Hmac-Sha256` value of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    base64(&m.finalize().into_bytes())
}

/// Whether `header` is the signature of the raw `body` under one of `secrets` (the current one and,
/// during a rotation, the previous one). The comparison is constant-time.
pub fn verify(secrets: &[&[u8]], body: &[u8], header: Option<&str>) -> bool {
    let Some(tag) = header.map(str::trim).and_then(unbase64) else {
        return false;
    };
    if tag.len() != 32 {
        return false;
    }
    secrets.iter().any(|s| {
        let mut m = mac(s);
        m.update(body);
        m.verify_slice(&tag).is_ok()
    })
}

/// The webhook body: Shopify's InventoryLevel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryLevel {
    pub inventory_item_id: String,
    pub location_id: String,
    /// `None` when Shopify does not track the item's quantity at that location.
    pub available: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

/// A Shopify id: a JSON integer (read exactly, never through a float), a digit string, or a GID.
fn id(v: Option<&Value>, field: &str) -> Result<String, String> {
    let s = match v {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(u) => u.to_string(),
            None => return Err(format!("{field}: {n} is not a positive integer id")),
        },
        Some(Value::String(s)) => {
            normalise_id(s).ok_or_else(|| format!("{field}: `{s}` is not a Shopify id"))?
        }
        Some(other) => return Err(format!("{field}: must be an integer id, not {other}")),
        None => return Err(format!("{field}: is required")),
    };
    Ok(s)
}

/// `808950810` or `gid://shopify/InventoryItem/808950810` as `808950810`.
pub fn normalise_id(s: &str) -> Option<String> {
    let s = s.trim();
    let digits = match s.strip_prefix("gid://shopify/") {
        Some(rest) => rest.rsplit_once('/')?.1.split('?').next()?,
        None => s,
    };
    (!digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.trim_start_matches('0').to_owned())
        .map(|d| if d.is_empty() { "0".to_owned() } else { d })
}

/// Parses a webhook body (or the REST `{"inventory_level": {...}}` wrapper).
pub fn parse(body: &[u8]) -> Result<InventoryLevel, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not valid JSON: {e}"))?;
    let v = v.get("inventory_level").cloned().unwrap_or(v);
    let Value::Object(o) = &v else {
        return Err("must be an InventoryLevel object".into());
    };
    let available = match o.get("available") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .filter(|q| q.unsigned_abs() <= driftless_core::MAX_QUANTITY as u64)
                .ok_or_else(|| format!("available: {n} is not a whole number in range"))?,
        ),
        Some(other) => {
            return Err(format!(
                "available: must be a whole number or null, not {other}"
            ));
        }
    };
    let updated_at = match o.get("updated_at") {
        Some(Value::String(t)) => DateTime::parse_from_rfc3339(t)
            .map_err(|e| format!("updated_at: `{t}` is not an ISO 8601 time with offset ({e})"))?
            .with_timezone(&Utc),
        Some(other) => return Err(format!("updated_at: must be a time, not {other}")),
        None => return Err("updated_at: is required".into()),
    };
    Ok(InventoryLevel {
        inventory_item_id: id(o.get("inventory_item_id"), "inventory_item_id")?,
        location_id: id(o.get("location_id"), "location_id")?,
        available,
        updated_at,
    })
}

/// `[[items]] shopify_inventory_item_id` and `[[locations]] shopify_location_id`, and where one
/// channel's quantity goes in Shopify.
#[derive(Debug, Clone, Default)]
pub struct ShopifyIds {
    items: HashMap<String, Sku>,
    locations: HashMap<String, Location>,
}

impl ShopifyIds {
    pub fn from_settings(s: &Settings) -> ShopifyIds {
        let mut ids = ShopifyIds::default();
        for i in &s.items {
            if let Some(n) = i
                .shopify_inventory_item_id
                .as_deref()
                .and_then(normalise_id)
            {
                ids.items.insert(n, i.sku.clone());
            }
        }
        for l in &s.locations {
            if let Some(n) = l.shopify_location_id.as_deref().and_then(normalise_id) {
                ids.locations.insert(n, l.id.clone());
            }
        }
        ids
    }
}

/// What one webhook is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// The channel shows `quantity` of `sku` (at the location the hub pushes it to).
    Observed {
        sku: Sku,
        quantity: i64,
        at: DateTime<Utc>,
    },
    /// Shopify does not track the item there (`available: null`): nothing to compare.
    Untracked { sku: Sku },
    /// A location the hub does not push this channel's quantity to.
    OtherLocation { sku: Sku, location: Location },
    /// An id without a mapping: the operator must add it.
    Unknown(String),
}

/// The Shopify location a channel's quantity goes to: the first of its locations with a
/// `shopify_location_id` (as the Shopify connector pushes).
pub fn push_location<'a>(c: &ChannelConfig, s: &'a Settings) -> Option<&'a Location> {
    c.spec.locations.iter().find_map(|l| {
        s.locations
            .iter()
            .find(|x| &x.id == l && x.shopify_location_id.is_some())
            .map(|x| &x.id)
    })
}

/// Maps a webhook body to what it says about the channel.
pub fn read(level: &InventoryLevel, ids: &ShopifyIds, pushed_to: Option<&Location>) -> Reading {
    let Some(sku) = ids.items.get(&level.inventory_item_id) else {
        return Reading::Unknown(format!(
            "Shopify inventory_item_id {} is not under any [[items]] shopify_inventory_item_id",
            level.inventory_item_id
        ));
    };
    let Some(location) = ids.locations.get(&level.location_id) else {
        return Reading::Unknown(format!(
            "Shopify location_id {} (sku `{sku}`) is not under any [[locations]] shopify_location_id",
            level.location_id
        ));
    };
    if pushed_to != Some(location) {
        return Reading::OtherLocation {
            sku: sku.clone(),
            location: location.clone(),
        };
    }
    match level.available {
        None => Reading::Untracked { sku: sku.clone() },
        Some(q) => Reading::Observed {
            sku: sku.clone(),
            quantity: q,
            at: level.updated_at,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(
                unbase64(&base64(s)).as_deref(),
                if s.is_empty() { None } else { Some(s) }
            );
        }
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(unbase64("Zm9vYg=="), Some(b"foob".to_vec()));
        assert_eq!(unbase64("Zm9vYg="), None);
        assert_eq!(unbase64("Zm=vYg=="), None);
        assert_eq!(unbase64("invalid_hmac"), None);
    }

    #[test]
    fn big_ids_stay_exact() {
        let body = br#"{"inventory_item_id":1152921504606846976,"location_id":"gid://shopify/Location/24826418","available":null,"updated_at":"2026-11-27T10:00:00-05:00","admin_graphql_api_id":"gid:\/\/shopify\/InventoryLevel\/24826418?inventory_item_id=1152921504606846976"}"#;
        let l = parse(body).unwrap();
        assert_eq!(l.inventory_item_id, "1152921504606846976");
        assert_eq!(l.location_id, "24826418");
        assert_eq!(l.available, None);
        assert!(parse(br#"{"inventory_item_id":1.5e19,"location_id":1,"available":1,"updated_at":"2026-11-27T10:00:00Z"}"#).is_err());
        assert!(parse(br#"{"inventory_item_id":1,"location_id":1,"available":"3","updated_at":"2026-11-27T10:00:00Z"}"#).is_err());
    }
}
