//! What travels on the bus: an event with the instant the hub received it, an outcome batch, a
//! channel quantity. JSON, versioned with `v`, so a hub process of the next version can refuse a
//! message it does not understand instead of misreading it. The event is re-validated through
//! [`Event::from_raw`] when it is read back, so a message on the bus is never trusted more than an
//! HTTP body.

use crate::BusError;
use chrono::{DateTime, TimeZone, Utc};
use driftless_core::{Event, RawEvent};
use serde::{Deserialize, Serialize};

/// The message format version this build writes and reads.
const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct EventWire {
    v: u32,
    /// When the API process received the request (nanoseconds since the epoch): the clock the
    /// `max_future_skew` check is made against, so a backlog on the bus does not change outcomes.
    received_at: i64,
    id: String,
    source: String,
    sku: String,
    location: String,
    occurred_at: String,
    seq: u64,
    /// `adjust` or `set`.
    kind: String,
    q: Vec<(String, i64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uom: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ref")]
    reference: Option<String>,
}

/// An event and the instant the hub received it.
pub fn encode_event(received_at: DateTime<Utc>, e: &Event) -> Vec<u8> {
    let w = EventWire {
        v: VERSION,
        received_at: received_at.timestamp_nanos_opt().unwrap_or(i64::MAX),
        id: e.id.to_string(),
        source: e.source.to_string(),
        sku: e.sku.to_string(),
        location: e.location.to_string(),
        occurred_at: e.position.occurred_at_rfc3339(),
        seq: e.position.seq,
        kind: e.change.kind().to_owned(),
        q: e.change
            .quantities()
            .iter()
            .map(|(s, v)| (s.as_str().to_owned(), v))
            .collect(),
        uom: e.uom.as_ref().map(|u| u.to_string()),
        reason: e.reason.clone(),
        reference: e.reference.clone(),
    };
    // A struct of strings and integers always serializes.
    serde_json::to_vec(&w).unwrap_or_default()
}

/// Reads an event message back, validating the event as an HTTP body would be.
pub fn decode_event(bytes: &[u8]) -> Result<(DateTime<Utc>, Event), BusError> {
    let w: EventWire =
        serde_json::from_slice(bytes).map_err(|e| BusError::Decode(format!("event: {e}")))?;
    if w.v != VERSION {
        return Err(BusError::Decode(format!(
            "event message version {} (this build reads {VERSION})",
            w.v
        )));
    }
    let q: Vec<(&str, i64)> = w.q.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    let (adjust, set) = match w.kind.as_str() {
        "adjust" => (Some(q), None),
        "set" => (None, Some(q)),
        other => return Err(BusError::Decode(format!("event kind `{other}`"))),
    };
    let raw = RawEvent {
        id: &w.id,
        source: &w.source,
        sku: &w.sku,
        location: &w.location,
        occurred_at: &w.occurred_at,
        seq: w.seq,
        adjust,
        set,
        uom: w.uom.as_deref(),
        reason: w.reason.as_deref(),
        reference: w.reference.as_deref(),
    };
    let event = Event::from_raw(&raw).map_err(|e| BusError::Decode(format!("event: {e}")))?;
    Ok((Utc.timestamp_nanos(w.received_at), event))
}

/// One event's final outcome, as published on `<prefix>.outcomes.<source>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutcomeWire {
    pub id: String,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The outcomes of one source's events in one applied group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutcomesWire {
    pub v: u32,
    pub source: String,
    pub results: Vec<OutcomeWire>,
}

impl OutcomesWire {
    pub fn new(source: String, results: Vec<OutcomeWire>) -> OutcomesWire {
        OutcomesWire {
            v: VERSION,
            source,
            results,
        }
    }
}

/// Ids an API process answered `accepted` for, told to the other hub processes so that
/// `GET /v1/events/{source}/{id}` answers 202 on whichever process the load balancer picks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptedWire {
    pub v: u32,
    pub source: String,
    pub ids: Vec<String>,
}

/// A channel's sellable quantity of one sku after an applied group, on
/// `<prefix>.channels.<channel>.<sku>`. `version` is the ledger position of the sku's newest
/// change: several hub processes publish concurrently, so a consumer keeps the highest version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChannelUpdate {
    pub channel: String,
    pub sku: String,
    pub quantity: i64,
    pub version: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(adjust: bool) -> Event {
        let q = vec![("on_hand", -3), ("committed", -3)];
        Event::from_raw(&RawEvent {
            id: "ship:SO-1001:1",
            source: "wms",
            sku: "TEE BLK.M*",
            location: "DC1",
            occurred_at: "2026-11-27T10:00:00.123456789+01:00",
            seq: 7,
            adjust: adjust.then(|| q.clone()),
            set: (!adjust).then(|| q.clone()),
            uom: Some("CS"),
            reason: Some("shipment"),
            reference: None,
        })
        .unwrap()
    }

    #[test]
    fn an_event_reads_back_as_it_was_sent() {
        let now = Utc::now();
        for adjust in [true, false] {
            let e = event(adjust);
            let (at, back) = decode_event(&encode_event(now, &e)).unwrap();
            assert_eq!(back.fingerprint(), e.fingerprint());
            assert_eq!(at, now);
        }
    }

    #[test]
    fn a_message_of_another_version_or_shape_is_refused() {
        let bytes = encode_event(Utc::now(), &event(true));
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["v"] = 2.into();
        let e = decode_event(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        v["v"] = 1.into();
        v["q"] = serde_json::json!([["on_hand", "x"]]);
        assert!(decode_event(&serde_json::to_vec(&v).unwrap()).is_err());
        v["q"] = serde_json::json!([["bogus", 1]]);
        assert!(decode_event(&serde_json::to_vec(&v).unwrap()).is_err());
        assert!(decode_event(b"\xff").is_err());
    }
}
