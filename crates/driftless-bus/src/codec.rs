//! What travels on the bus: events with the instant the hub received them, an outcome batch, a
//! channel quantity. JSON, versioned with `v`, so a hub process of the next version can refuse a
//! message it does not understand instead of misreading it. Events are re-validated through
//! [`Event::from_raw`] when they are read back, so a message on the bus is never trusted more than
//! an HTTP body.
//!
//! An event message (version 2) carries the events of one request that fall in one partition, up
//! to [`MAX_EVENTS_PER_MESSAGE`] and the stream's message size: the bus's cost is per message
//! (a publish, its acknowledgement, the stream's write, a delivery, an acknowledgement back), so a
//! request of a thousand events is a few dozen messages, not a thousand. Version 1 (one event a
//! message, written by earlier builds) is still read, so a stream that holds some drains after an
//! upgrade.

use crate::BusError;
use chrono::{DateTime, TimeZone, Utc};
use driftless_core::{Event, RawEvent};
use serde::{Deserialize, Serialize};

/// The event message version this build writes (it reads this one and version 1).
const VERSION: u32 = 2;
/// The outcome, accepted-ids and channel messages' version.
const NOTICE_VERSION: u32 = 1;
/// Events in one message at most: an applier's group is counted in events, and a message is
/// never split between groups.
pub const MAX_EVENTS_PER_MESSAGE: usize = 250;

/// One event, as it travels.
#[derive(Debug, Serialize, Deserialize)]
struct EventBody {
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

/// Version 2: the events of one request in one partition. Read with `events` defaulted, so a
/// version 1 message parses far enough to show its `v`.
#[derive(Debug, Deserialize)]
struct EventsWire {
    v: u32,
    /// When the API process received the request (nanoseconds since the epoch): the clock the
    /// `max_future_skew` check is made against, so a backlog on the bus does not change outcomes.
    received_at: i64,
    #[serde(default)]
    events: Vec<EventBody>,
}

/// Version 1: one event, its fields beside `v` and `received_at`.
#[derive(Debug, Deserialize)]
struct EventWireV1 {
    received_at: i64,
    #[serde(flatten)]
    body: EventBody,
}

/// One message to publish: which of the caller's events it carries, and its bytes.
#[derive(Debug)]
pub struct Packed {
    pub indices: Vec<usize>,
    pub payload: Vec<u8>,
}

fn body(e: &Event) -> EventBody {
    EventBody {
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
    }
}

/// Packs events (of one partition, in request order) into as few messages as the bounds allow:
/// at most [`MAX_EVENTS_PER_MESSAGE`] each, and at most `max_bytes` unless a single event is
/// larger (it then travels alone, and the stream refuses it as it would have before).
pub fn pack<'a>(
    received_at: DateTime<Utc>,
    events: impl IntoIterator<Item = (usize, &'a Event)>,
    max_bytes: usize,
) -> Vec<Packed> {
    let head = format!(
        r#"{{"v":{VERSION},"received_at":{},"events":["#,
        received_at.timestamp_nanos_opt().unwrap_or(i64::MAX)
    );
    let tail = b"]}";
    let mut out = Vec::new();
    let mut cur = Packed {
        indices: Vec::new(),
        payload: head.clone().into_bytes(),
    };
    for (i, e) in events {
        // A struct of strings and integers always serializes.
        let bytes = serde_json::to_vec(&body(e)).unwrap_or_default();
        let full = cur.indices.len() == MAX_EVENTS_PER_MESSAGE
            || cur.payload.len() + 1 + bytes.len() + tail.len() > max_bytes;
        if !cur.indices.is_empty() && full {
            cur.payload.extend_from_slice(tail);
            out.push(std::mem::replace(
                &mut cur,
                Packed {
                    indices: Vec::new(),
                    payload: head.clone().into_bytes(),
                },
            ));
        }
        if !cur.indices.is_empty() {
            cur.payload.push(b',');
        }
        cur.payload.extend_from_slice(&bytes);
        cur.indices.push(i);
    }
    if !cur.indices.is_empty() {
        cur.payload.extend_from_slice(tail);
        out.push(cur);
    }
    out
}

/// Reads an event message back (this version or version 1), validating every event as an HTTP
/// body would be. One event that does not validate refuses the whole message: it was validated
/// before it was published, so it was not written by a hub of this format.
pub fn decode_events(bytes: &[u8]) -> Result<(DateTime<Utc>, Vec<Event>), BusError> {
    let w: EventsWire = serde_json::from_slice(bytes)
        .map_err(|e| BusError::Decode(format!("event message: {e}")))?;
    let (received_at, bodies) = match w.v {
        VERSION => (w.received_at, w.events),
        1 => {
            let one: EventWireV1 = serde_json::from_slice(bytes)
                .map_err(|e| BusError::Decode(format!("event message: {e}")))?;
            (one.received_at, vec![one.body])
        }
        other => {
            return Err(BusError::Decode(format!(
                "event message version {other} (this build reads 1 and {VERSION})"
            )));
        }
    };
    if bodies.is_empty() {
        return Err(BusError::Decode("an event message without events".into()));
    }
    let events = bodies.iter().map(event_of).collect::<Result<Vec<_>, _>>()?;
    Ok((Utc.timestamp_nanos(received_at), events))
}

fn event_of(w: &EventBody) -> Result<Event, BusError> {
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
    Event::from_raw(&raw).map_err(|e| BusError::Decode(format!("event: {e}")))
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
            v: NOTICE_VERSION,
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
/// `<prefix>.channels.<channel>.<sku>`. `version` is the `(channel, sku)` outbox version the
/// quantity was computed at (the one the channel's pushes carry): it grows by the marking events
/// of each committed group, in commit order across every hub process, and each process publishes
/// after its own commit, so a consumer keeps the highest version it has seen. Versions of
/// different `(channel, sku)` pairs are not comparable. Always present; optional on the wire for
/// the messages of earlier versions.
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

    fn packed(events: &[Event], max_bytes: usize) -> Vec<Packed> {
        pack(Utc::now(), events.iter().enumerate(), max_bytes)
    }

    #[test]
    fn events_read_back_as_they_were_sent() {
        let now = Utc::now();
        let events = vec![event(true), event(false)];
        let msgs = pack(now, events.iter().enumerate(), 64 * 1024);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].indices, [0, 1]);
        let (at, back) = decode_events(&msgs[0].payload).unwrap();
        assert_eq!(at, now);
        assert_eq!(back.len(), 2);
        for (b, e) in back.iter().zip(&events) {
            assert_eq!(b.fingerprint(), e.fingerprint());
        }
    }

    #[test]
    fn messages_are_bounded_in_events_and_bytes_and_keep_the_order() {
        let many: Vec<Event> = (0..600).map(|i| event(i % 2 == 0)).collect();
        let msgs = packed(&many, 1 << 20);
        let sizes: Vec<usize> = msgs.iter().map(|m| m.indices.len()).collect();
        assert_eq!(sizes, [250, 250, 100]);
        let order: Vec<usize> = msgs.iter().flat_map(|m| m.indices.clone()).collect();
        assert_eq!(order, (0..600).collect::<Vec<_>>());

        let one = packed(&many[..1], 1 << 20)[0].payload.len();
        let msgs = packed(&many[..10], one * 3);
        assert!(msgs.iter().all(|m| m.payload.len() <= one * 3), "{msgs:?}");
        assert!(msgs.len() >= 4);
        let mut read = 0;
        for m in &msgs {
            read += decode_events(&m.payload).unwrap().1.len();
        }
        assert_eq!(read, 10);
        // An event larger than the bound travels alone rather than not at all.
        assert_eq!(packed(&many[..2], 10).len(), 2);
    }

    #[test]
    fn a_version_1_message_still_reads() {
        let e = event(true);
        let v1 = serde_json::json!({
            "v": 1, "received_at": 1_700_000_000_000_000_000i64,
            "id": "ship:SO-1001:1", "source": "wms", "sku": "TEE BLK.M*", "location": "DC1",
            "occurred_at": "2026-11-27T10:00:00.123456789+01:00", "seq": 7, "kind": "adjust",
            "q": [["on_hand", -3], ["committed", -3]], "uom": "CS", "reason": "shipment"
        });
        let (at, back) = decode_events(&serde_json::to_vec(&v1).unwrap()).unwrap();
        assert_eq!(at.timestamp(), 1_700_000_000);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].fingerprint(), e.fingerprint());
    }

    #[test]
    fn a_message_of_another_version_or_shape_is_refused() {
        let bytes = packed(&[event(true)], 1 << 16).remove(0).payload;
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["v"] = 3.into();
        let e = decode_events(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("version 3"), "{e}");
        v["v"] = 2.into();
        v["events"][0]["q"] = serde_json::json!([["on_hand", "x"]]);
        assert!(decode_events(&serde_json::to_vec(&v).unwrap()).is_err());
        v["events"][0]["q"] = serde_json::json!([["bogus", 1]]);
        assert!(decode_events(&serde_json::to_vec(&v).unwrap()).is_err());
        v["events"] = serde_json::json!([]);
        assert!(decode_events(&serde_json::to_vec(&v).unwrap()).is_err());
        assert!(decode_events(b"\xff").is_err());
    }
}
