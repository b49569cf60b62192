//! Pure wire mapping of the Shopify connector: GIDs, the `inventorySetQuantities` request, the
//! read-back query, and what a GraphQL answer means (user errors, throttling).
//!
//! Ids stay strings from configuration to the wire: Shopify ids exceed 2^53 and would lose digits
//! as JSON numbers read into floats.

use serde_json::{Value, json};
use std::time::Duration;

/// The mutation. The idempotency key is a variable so that the query text is constant.
pub const SET_MUTATION: &str = "mutation DriftlessSetAvailable($input: InventorySetQuantitiesInput!, $idempotencyKey: String!) { inventorySetQuantities(input: $input) @idempotent(key: $idempotencyKey) { inventoryAdjustmentGroup { id } userErrors { code field message } } }";

/// Reads the `available` quantity at one location, after a compare failure.
pub const READ_QUERY: &str = "query DriftlessAvailable($item: ID!, $location: ID!) { inventoryItem(id: $item) { inventoryLevel(locationId: $location) { quantities(names: [\"available\"]) { name quantity } } } }";

/// How compare-and-set is spelt in an API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasStyle {
    /// 2026-01: `compareQuantity` per quantity, `ignoreCompareQuantity` for the first push.
    CompareQuantity,
    /// 2026-04 and later: `changeFromQuantity` on every quantity, `null` to skip the check.
    ChangeFromQuantity,
}

/// Accepts `2026-01` and later (the versions with `@idempotent`) and `unstable`.
pub fn cas_style(version: &str) -> Result<CasStyle, String> {
    if version == "unstable" {
        return Ok(CasStyle::ChangeFromQuantity);
    }
    let ok = version.len() == 7
        && version.as_bytes()[4] == b'-'
        && version[..4].bytes().all(|b| b.is_ascii_digit())
        && version[5..].bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(format!(
            "api_version {version:?} is not of the form 2026-04"
        ));
    }
    if version < "2026-01" {
        return Err(format!(
            "api_version {version} has no @idempotent directive; use 2026-01 or later"
        ));
    }
    Ok(if version < "2026-04" {
        CasStyle::CompareQuantity
    } else {
        CasStyle::ChangeFromQuantity
    })
}

/// `gid://shopify/{kind}/{id}` from a numeric id, or a GID as given.
pub fn gid(kind: &str, id: &str) -> Result<String, String> {
    let id = id.trim();
    if let Some(rest) = id.strip_prefix("gid://shopify/") {
        let ok = rest
            .strip_prefix(kind)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        return if ok {
            Ok(id.to_owned())
        } else {
            Err(format!("`{id}` is not a {kind} GID"))
        };
    }
    if !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(format!("gid://shopify/{kind}/{id}"))
    } else {
        Err(format!("`{id}` is not a numeric Shopify {kind} id"))
    }
}

/// The GraphQL request that sets `available` to `quantity` if the channel still shows `compare`.
pub fn set_request(
    style: CasStyle,
    item: &str,
    location: &str,
    quantity: i64,
    compare: Option<i64>,
    key: &str,
) -> Value {
    let mut q = json!({"inventoryItemId": item, "locationId": location, "quantity": quantity});
    let mut input = json!({
        "name": "available",
        // "correction" is the documented reason for a system setting the true value.
        "reason": "correction",
        "referenceDocumentUri": format!("gid://driftless/Push/{key}"),
    });
    match style {
        CasStyle::ChangeFromQuantity => {
            q["changeFromQuantity"] = compare.map_or(Value::Null, Value::from);
        }
        CasStyle::CompareQuantity => match compare {
            Some(c) => q["compareQuantity"] = c.into(),
            None => input["ignoreCompareQuantity"] = true.into(),
        },
    }
    input["quantities"] = json!([q]);
    json!({"query": SET_MUTATION, "variables": {"input": input, "idempotencyKey": key}})
}

pub fn read_request(item: &str, location: &str) -> Value {
    json!({"query": READ_QUERY, "variables": {"item": item, "location": location}})
}

/// `extensions.cost.throttleStatus` plus the cost of the call that reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    pub maximum: f64,
    pub available: f64,
    pub restore_rate: f64,
    pub requested: f64,
}

impl Throttle {
    /// How long to wait, `elapsed` after this status was reported, before a call costing `cost`
    /// fits in the bucket.
    pub fn wait_for(&self, elapsed: Duration, cost: f64) -> Duration {
        if self.restore_rate <= 0.0 || !self.restore_rate.is_finite() {
            return Duration::ZERO;
        }
        let now = (self.available + elapsed.as_secs_f64() * self.restore_rate).min(self.maximum);
        if now >= cost {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(((cost - now) / self.restore_rate).min(60.0))
        }
    }
}

pub fn throttle(body: &Value) -> Option<Throttle> {
    let cost = body.get("extensions")?.get("cost")?;
    let t = cost.get("throttleStatus")?;
    Some(Throttle {
        maximum: t.get("maximumAvailable")?.as_f64()?,
        available: t.get("currentlyAvailable")?.as_f64()?,
        restore_rate: t.get("restoreRate")?.as_f64()?,
        requested: cost
            .get("requestedQueryCost")
            .and_then(Value::as_f64)
            .unwrap_or(10.0),
    })
}

/// The meaning of an `inventorySetQuantities` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetAnswer {
    Applied,
    /// The quantity was not the compare value.
    Stale,
    /// Refused for cost; retry once the bucket refills.
    Throttled,
    /// The same key is being processed; retry shortly with the same key.
    Busy,
    /// A refusal that a retry of the same request will meet again.
    Refused(String),
    /// Top-level GraphQL errors (server side); retryable.
    Errors(String),
}

pub fn parse_set(body: &Value) -> SetAnswer {
    if let Some(errs) = body.get("errors").and_then(Value::as_array)
        && !errs.is_empty()
    {
        let throttled = errs
            .iter()
            .any(|e| e.pointer("/extensions/code").and_then(Value::as_str) == Some("THROTTLED"));
        if throttled {
            return SetAnswer::Throttled;
        }
        let msg: Vec<&str> = errs
            .iter()
            .filter_map(|e| e.get("message").and_then(Value::as_str))
            .collect();
        return SetAnswer::Errors(msg.join("; "));
    }
    let Some(payload) = body.pointer("/data/inventorySetQuantities") else {
        return SetAnswer::Errors("no data.inventorySetQuantities in the answer".into());
    };
    let errors = payload
        .get("userErrors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if errors.is_empty() {
        return SetAnswer::Applied;
    }
    let code = |e: &Value| {
        e.get("code")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if errors.iter().any(|e| {
        matches!(
            code(e).as_str(),
            "CHANGE_FROM_QUANTITY_STALE" | "COMPARE_QUANTITY_STALE"
        )
    }) {
        return SetAnswer::Stale;
    }
    if errors
        .iter()
        .any(|e| code(e) == "IDEMPOTENCY_CONCURRENT_REQUEST")
    {
        return SetAnswer::Busy;
    }
    let text: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                code(e),
                e.get("message").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    SetAnswer::Refused(text.join("; "))
}

/// The `available` quantity from a read-back; `Ok(None)` when the item is not stocked there.
pub fn parse_read(body: &Value) -> Result<Option<i64>, String> {
    if let Some(errs) = body.get("errors").and_then(Value::as_array)
        && !errs.is_empty()
    {
        return Err(format!("read-back failed: {}", errs[0]));
    }
    let Some(level) = body.pointer("/data/inventoryItem/inventoryLevel") else {
        return Ok(None);
    };
    if level.is_null() {
        return Ok(None);
    }
    let qs = level
        .get("quantities")
        .and_then(Value::as_array)
        .ok_or("read-back: no quantities")?;
    Ok(qs
        .iter()
        .find(|q| q.get("name").and_then(Value::as_str) == Some("available"))
        .and_then(|q| q.get("quantity"))
        .and_then(Value::as_i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(cas_style("2026-01"), Ok(CasStyle::CompareQuantity));
        assert_eq!(cas_style("2026-04"), Ok(CasStyle::ChangeFromQuantity));
        assert_eq!(cas_style("2027-01"), Ok(CasStyle::ChangeFromQuantity));
        assert!(cas_style("2025-10").is_err());
        assert!(cas_style("latest").is_err());
    }

    #[test]
    fn gids_keep_every_digit() {
        // 2^53 + 1: a float would round it to ...992.
        assert_eq!(
            gid("InventoryItem", "9007199254740993").unwrap(),
            "gid://shopify/InventoryItem/9007199254740993"
        );
        assert_eq!(
            gid("Location", "gid://shopify/Location/655441491").unwrap(),
            "gid://shopify/Location/655441491"
        );
        assert!(gid("Location", "gid://shopify/InventoryItem/1").is_err());
        assert!(gid("Location", "1.5e9").is_err());
    }

    #[test]
    fn request_shapes() {
        let r = set_request(
            CasStyle::ChangeFromQuantity,
            "gid://shopify/InventoryItem/1",
            "gid://shopify/Location/2",
            5,
            None,
            "k",
        );
        let q = &r["variables"]["input"]["quantities"][0];
        assert!(q.as_object().unwrap().contains_key("changeFromQuantity"));
        assert!(q["changeFromQuantity"].is_null());
        assert_eq!(r["variables"]["input"]["name"], "available");
        assert_eq!(r["variables"]["idempotencyKey"], "k");
        assert!(
            r["query"]
                .as_str()
                .unwrap()
                .contains("@idempotent(key: $idempotencyKey)")
        );
        let old = set_request(CasStyle::CompareQuantity, "i", "l", 5, None, "k");
        assert_eq!(old["variables"]["input"]["ignoreCompareQuantity"], true);
        let old = set_request(CasStyle::CompareQuantity, "i", "l", 5, Some(3), "k");
        assert_eq!(
            old["variables"]["input"]["quantities"][0]["compareQuantity"],
            3
        );
    }

    #[test]
    fn answers() {
        let ok = json!({"data": {"inventorySetQuantities": {"inventoryAdjustmentGroup": {"id": "x"}, "userErrors": []}}});
        assert_eq!(parse_set(&ok), SetAnswer::Applied);
        let stale = json!({"data": {"inventorySetQuantities": {"inventoryAdjustmentGroup": null,
            "userErrors": [{"code": "CHANGE_FROM_QUANTITY_STALE", "field": ["input"], "message": "stale"}]}}});
        assert_eq!(parse_set(&stale), SetAnswer::Stale);
        let thr = json!({"errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {"cost": {"requestedQueryCost": 10, "throttleStatus":
                {"maximumAvailable": 2000.0, "currentlyAvailable": 4, "restoreRate": 100.0}}}});
        assert_eq!(parse_set(&thr), SetAnswer::Throttled);
        let t = throttle(&thr).unwrap();
        assert_eq!(t.wait_for(Duration::ZERO, 10.0), Duration::from_millis(60));
        assert_eq!(t.wait_for(Duration::from_secs(1), 10.0), Duration::ZERO);
        let read = json!({"data": {"inventoryItem": {"inventoryLevel": {"quantities": [{"name": "available", "quantity": 7}]}}}});
        assert_eq!(parse_read(&read), Ok(Some(7)));
    }
}
