//! The inventory object with its `version`, now or as of a chosen moment (`?at=<RFC 3339>`): what
//! the hub knew then, folded from the sku's stored ledger entries by their receipt time (see
//! [`driftless_core::asof`]): the history holds every entry with the outcome and the `effective`
//! flag it was given. The live read takes its version from the store instead of folding.

use crate::AppState;
use crate::error::ApiError;
use chrono::{DateTime, SecondsFormat, Utc};
use driftless_core::{EventId, LedgerEntry, OrderKey, Position, Sku, StateMap};
use driftless_store::{HistoryEntry, LocationLevels};
use serde_json::Value;

/// Most ledger entries of one sku an answer folds. Far beyond any real sku's history; past it the
/// request is refused rather than answered from part of the ledger.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Parses the `at` parameter.
pub fn parse_at(s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::InvalidRequest(format!(
                "at: not an RFC 3339 timestamp ({e}); example: 2026-11-27T14:03:00Z"
            ))
        })
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("stored history entry: {what}: {e}"))
}

/// A stored history entry as the fold needs it.
pub fn ledger_entry(h: &HistoryEntry) -> Result<LedgerEntry, ApiError> {
    let mut base = StateMap::new();
    for (s, q) in &h.quantities {
        base.insert(s.parse().map_err(|e| corrupt("state", e))?, *q);
    }
    Ok(LedgerEntry {
        location: h.location.clone(),
        key: OrderKey {
            position: Position::parse(&h.occurred_at, h.seq).map_err(|e| corrupt("position", e))?,
            id: EventId::parse(&h.id).map_err(|e| corrupt("id", e))?,
        },
        received_at: h.received_at,
        lsn: h.lsn,
        outcome: h.outcome,
        effective: h.effective,
        is_set: h.kind == "set",
        base,
    })
}

/// Every stored entry of a sku.
pub async fn ledger(st: &AppState, sku: &Sku) -> Result<Vec<LedgerEntry>, ApiError> {
    let entries = st.store.history(sku, MAX_ENTRIES).await?;
    if entries.len() >= MAX_ENTRIES {
        return Err(ApiError::InvalidRequest(format!(
            "sku `{sku}` has more than {MAX_ENTRIES} ledger entries; as-of reads are limited to that"
        )));
    }
    entries.iter().map(ledger_entry).collect()
}

/// `GET /v1/inventory/{sku}` with or without `at`. Now: the live levels with the version. As of a
/// moment: the fold of what had been received by then, with `at` echoed; a sku not seen yet by
/// then answers with no locations and a `null` version (it exists now, so it is not a 404).
pub async fn inventory(
    st: &AppState,
    sku: &Sku,
    at: Option<DateTime<Utc>>,
) -> Result<Value, ApiError> {
    let never = || ApiError::NotFound(format!("sku `{sku}` has never been seen"));
    let body = match at {
        None => {
            // The live read stays cheap: the levels and one count for the version, not
            // the fold of the whole history.
            let locs = st.store.inventory(sku).await?.ok_or_else(never)?;
            let mut v = crate::routes::inventory_json(st, sku, &locs);
            v["version"] = st.store.sku_version(sku).await?.into();
            v
        }
        Some(t) => {
            let ledger = ledger(st, sku).await?;
            if ledger.is_empty() && st.store.inventory(sku).await?.is_none() {
                return Err(never());
            }
            let folded = driftless_core::fold_as_of(&ledger, Some(t));
            let locs: Vec<LocationLevels> = folded
                .locations
                .into_iter()
                .map(|(location, levels)| LocationLevels { location, levels })
                .collect();
            let mut v = crate::routes::inventory_json(st, sku, &locs);
            v["version"] = folded.version.into();
            v["at"] = t.to_rfc3339_opts(SecondsFormat::AutoSi, true).into();
            v
        }
    };
    Ok(body)
}
