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

/// Shopify's cap on an inventory quantity (above it: `INVALID_QUANTITY_TOO_HIGH`). GraphQL `Int`
/// is 32-bit, so a value past 2^31 would not even be read: it is never sent.
pub const MAX_QUANTITY: i64 = 1_000_000_000;

/// Top-level GraphQL error codes that say the request itself is wrong (they arrive with HTTP 200,
/// a missing `write_inventory` scope as `ACCESS_DENIED`): repeating the request cannot help.
pub const INVALID_REQUEST_CODES: [&str; 4] = [
    "INVALID_VARIABLE",
    "INVALID_FIELD_ARGUMENTS",
    "BAD_REQUEST",
    "ACCESS_DENIED",
];

/// Accepts `2026-01` and later and `unstable`: the versions with `@idempotent(key:)` and
/// `changeFromQuantity`, the one compare-and-set spelling they all take (`compareQuantity` and
/// `ignoreCompareQuantity` are deprecated in 2026-01 and gone from 2026-04).
pub fn check_version(version: &str) -> Result<(), String> {
    if version == "unstable" {
        return Ok(());
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
            "api_version {version} has no @idempotent directive and no changeFromQuantity; use \
             2026-01 or later"
        ));
    }
    Ok(())
}

/// Why a push cannot be sent to Shopify at all, if it cannot: a quantity (or compare value) past
/// Shopify's cap would be refused however often it is sent.
pub fn check_quantities(quantity: i64, compare: Option<i64>) -> Result<(), String> {
    if !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&quantity) {
        return Err(format!(
            "quantity {quantity} is beyond Shopify's limit of 1,000,000,000 (GraphQL Int is \
             32-bit); not sent"
        ));
    }
    if let Some(c) = compare
        && !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&c)
    {
        return Err(format!(
            "compare value {c} is beyond Shopify's limit of 1,000,000,000; not sent"
        ));
    }
    Ok(())
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

/// The GraphQL request that sets `available` to `quantity` if the channel still shows `compare`
/// (`changeFromQuantity`; `null` skips the check, on the first push of a sku). The field is always
/// present: from 2026-04 Shopify requires it, even as `null`.
pub fn set_request(
    item: &str,
    location: &str,
    quantity: i64,
    compare: Option<i64>,
    key: &str,
) -> Value {
    let q = json!({"inventoryItemId": item, "locationId": location, "quantity": quantity,
        "changeFromQuantity": compare});
    let input = json!({
        "name": "available",
        // "correction" is the documented reason for a system setting the true value.
        "reason": "correction",
        "referenceDocumentUri": format!("gid://driftless/Push/{key}"),
        "quantities": [q],
    });
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
    /// An earlier request with this key failed (nothing applied); send again with a fresh key.
    PreviousAttemptFailed,
    /// Top-level errors that say the request itself is wrong (`INVALID_REQUEST_CODES`), with
    /// Shopify's codes and messages.
    Invalid(String),
    /// A refusal (`userErrors`) that a retry of the same request will meet again.
    Refused(String),
    /// Other top-level GraphQL errors (server side); retryable.
    Errors(String),
}

pub fn parse_set(body: &Value) -> SetAnswer {
    if let Some(errs) = body.get("errors").and_then(Value::as_array)
        && !errs.is_empty()
    {
        fn code(e: &Value) -> Option<&str> {
            e.pointer("/extensions/code").and_then(Value::as_str)
        }
        let any = |c: &str| errs.iter().any(|e| code(e) == Some(c));
        if any("THROTTLED") {
            return SetAnswer::Throttled;
        }
        let text: Vec<String> = errs
            .iter()
            .map(|e| {
                let m = e.get("message").and_then(Value::as_str).unwrap_or("");
                code(e).map_or_else(|| m.to_owned(), |c| format!("{c}: {m}"))
            })
            .collect();
        let text = text.join("; ");
        if errs
            .iter()
            .any(|e| code(e).is_some_and(|c| INVALID_REQUEST_CODES.contains(&c)))
        {
            return SetAnswer::Invalid(text);
        }
        if any("IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED") {
            return SetAnswer::PreviousAttemptFailed;
        }
        if any("IDEMPOTENCY_CONCURRENT_REQUEST") {
            return SetAnswer::Busy;
        }
        return SetAnswer::Errors(text);
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
    if errors
        .iter()
        .any(|e| code(e) == "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED")
    {
        return SetAnswer::PreviousAttemptFailed;
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
        for v in ["2026-01", "2026-04", "2026-07", "2027-01", "unstable"] {
            assert_eq!(check_version(v), Ok(()), "{v}");
        }
        assert!(check_version("2025-10").is_err());
        assert!(check_version("latest").is_err());
    }

    #[test]
    fn quantities_past_the_cap_are_never_sent() {
        assert_eq!(check_quantities(1_000_000_000, Some(0)), Ok(()));
        assert_eq!(check_quantities(-5, None), Ok(()));
        let e = check_quantities(1_000_000_001, None).unwrap_err();
        assert!(e.contains("1,000,000,000"), "{e}");
        assert!(check_quantities(i64::from(i32::MAX) + 1, None).is_err());
        assert!(check_quantities(5, Some(4_000_000_000)).is_err());
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
        let cas = set_request("i", "l", 5, Some(3), "k");
        assert_eq!(
            cas["variables"]["input"]["quantities"][0]["changeFromQuantity"],
            3
        );
        // The spelling removed in 2026-04 is never sent.
        let text = cas.to_string();
        assert!(!text.contains("compareQuantity") && !text.contains("ignoreCompareQuantity"));
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
        // HTTP 200 with top-level errors that say the request is wrong: not retryable.
        for code in INVALID_REQUEST_CODES {
            let e = json!({"errors": [{"message": "no", "extensions": {"code": code}}],
                "data": {"inventorySetQuantities": null}});
            assert_eq!(parse_set(&e), SetAnswer::Invalid(format!("{code}: no")));
        }
        let scope = json!({"errors": [{"message": "Access denied for inventorySetQuantities field. Required access: `write_inventory` access scope.",
            "extensions": {"code": "ACCESS_DENIED"}, "path": ["inventorySetQuantities"]}]});
        assert!(
            matches!(parse_set(&scope), SetAnswer::Invalid(m) if m.contains("write_inventory"))
        );
        let internal = json!({"errors": [{"message": "Internal error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]});
        assert!(matches!(parse_set(&internal), SetAnswer::Errors(_)));
        // A key whose earlier request failed: a fresh key, as a user error or a top-level one.
        let prev = json!({"data": {"inventorySetQuantities": {"inventoryAdjustmentGroup": null,
            "userErrors": [{"code": "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED", "field": null, "message": "x"}]}}});
        assert_eq!(parse_set(&prev), SetAnswer::PreviousAttemptFailed);
        let prev = json!({"errors": [{"message": "x", "extensions": {"code": "IDEMPOTENCY_PREVIOUS_ATTEMPT_FAILED"}}]});
        assert_eq!(parse_set(&prev), SetAnswer::PreviousAttemptFailed);
        let old = json!({"data": {"inventorySetQuantities": {"inventoryAdjustmentGroup": null,
            "userErrors": [{"code": "COMPARE_QUANTITY_STALE", "field": ["input"], "message": "stale"}]}}});
        assert_eq!(parse_set(&old), SetAnswer::Stale);
        let read = json!({"data": {"inventoryItem": {"inventoryLevel": {"quantities": [{"name": "available", "quantity": 7}]}}}});
        assert_eq!(parse_read(&read), Ok(Some(7)));
    }
}
