//! The canonical event (version 1) as a validated domain value, its position and its fingerprint.

use crate::MAX_QUANTITY;
use crate::id::{EventId, Location, Sku, SystemId, Unit};
use crate::state::{State, StateMap};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::fmt;

/// When an event happened at its source: `(occurred_at, seq)`, compared lexicographically.
/// `occurred_at` is kept as nanoseconds since the Unix epoch so that it orders and stores as one
/// integer in every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub at_nanos: i64,
    pub seq: u64,
}

/// The earliest and latest `occurred_at` accepted. Outside this window a timestamp is a bug at the
/// source (a zeroed date, a year typed as 20266), and storing it would pin a cell's `set` forever.
pub const EARLIEST: &str = "2000-01-01T00:00:00Z";
pub const LATEST: &str = "2200-01-01T00:00:00Z";

impl Position {
    /// Parses an RFC 3339 timestamp (any offset; kept in UTC) and a sequence number.
    pub fn parse(occurred_at: &str, seq: u64) -> Result<Position, String> {
        let t = DateTime::parse_from_rfc3339(occurred_at).map_err(|e| {
            format!("not an RFC 3339 timestamp ({e}); example: 2026-11-27T10:00:00Z")
        })?;
        Self::from_datetime(t.with_timezone(&Utc), seq)
    }

    pub fn from_datetime(t: DateTime<Utc>, seq: u64) -> Result<Position, String> {
        let lo = DateTime::parse_from_rfc3339(EARLIEST).map(|d| d.with_timezone(&Utc));
        let hi = DateTime::parse_from_rfc3339(LATEST).map(|d| d.with_timezone(&Utc));
        match (lo, hi) {
            (Ok(lo), Ok(hi)) if t >= lo && t < hi => {}
            _ => return Err(format!("must be between {EARLIEST} and {LATEST}")),
        }
        let at_nanos = t
            .timestamp_nanos_opt()
            .ok_or_else(|| "timestamp out of range".to_owned())?;
        Ok(Position { at_nanos, seq })
    }

    pub fn occurred_at(&self) -> DateTime<Utc> {
        Utc.timestamp_nanos(self.at_nanos)
    }

    /// RFC 3339 in UTC with as many fractional digits as needed.
    pub fn occurred_at_rfc3339(&self) -> String {
        self.occurred_at()
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }
}

/// The total order the fold uses: the position, then the event id. Two events at the same position
/// are ordered by id so that which one is "newer" never depends on arrival order (the contract only
/// orders positions; without a tie-break the fold would not be a function of the set of events).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderKey {
    pub position: Position,
    pub id: EventId,
}

impl Ord for OrderKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.position.cmp(&other.position).then_with(|| {
            self.id
                .as_str()
                .as_bytes()
                .cmp(other.id.as_str().as_bytes())
        })
    }
}

impl PartialOrd for OrderKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What an event does to the states it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// Signed deltas.
    Adjust(StateMap<i64>),
    /// Absolute values.
    Set(StateMap<i64>),
}

impl Change {
    pub fn quantities(&self) -> &StateMap<i64> {
        match self {
            Change::Adjust(m) | Change::Set(m) => m,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Change::Adjust(_) => "adjust",
            Change::Set(_) => "set",
        }
    }

    pub fn is_set(&self) -> bool {
        matches!(self, Change::Set(_))
    }

    /// The same kind of change with other quantities (after unit conversion).
    pub fn with(&self, q: StateMap<i64>) -> Change {
        match self {
            Change::Adjust(_) => Change::Adjust(q),
            Change::Set(_) => Change::Set(q),
        }
    }
}

/// A field-level validation failure: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct EventError {
    pub field: String,
    pub message: String,
}

impl EventError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        EventError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `(state name, quantity)` pairs as a wire format hands them over.
type Quantities<'a> = Vec<(&'a str, i64)>;
/// `Change::Adjust` or `Change::Set`.
type MakeChange = fn(StateMap<i64>) -> Change;

/// Longest accepted `reason` / `ref`, in bytes.
pub const MAX_TEXT: usize = 512;

/// One inventory event, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub source: SystemId,
    pub sku: Sku,
    pub location: Location,
    pub position: Position,
    pub change: Change,
    /// The unit the quantities are expressed in; `None` means the base unit.
    pub uom: Option<Unit>,
    pub reason: Option<String>,
    pub reference: Option<String>,
}

/// The unvalidated parts of an event, as a wire format hands them over.
#[derive(Debug, Clone, Default)]
pub struct RawEvent<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub sku: &'a str,
    pub location: &'a str,
    pub occurred_at: &'a str,
    pub seq: u64,
    pub adjust: Option<Vec<(&'a str, i64)>>,
    pub set: Option<Vec<(&'a str, i64)>>,
    pub uom: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub reference: Option<&'a str>,
}

fn text(field: &str, v: Option<&str>) -> Result<Option<String>, EventError> {
    match v {
        None => Ok(None),
        Some(s) if s.len() > MAX_TEXT => Err(EventError::new(
            field,
            format!("must be at most {MAX_TEXT} bytes (got {})", s.len()),
        )),
        Some(s) if s.chars().any(|c| c.is_control() && c != '\t') => Err(EventError::new(
            field,
            "must not contain control characters",
        )),
        Some(s) => Ok(Some(s.to_owned())),
    }
}

impl Event {
    /// Validates every field, naming the first one that is wrong.
    pub fn from_raw(raw: &RawEvent<'_>) -> Result<Event, EventError> {
        let id = EventId::parse(raw.id).map_err(|e| EventError::new("id", e.to_string()))?;
        let source =
            SystemId::parse(raw.source).map_err(|e| EventError::new("source", e.to_string()))?;
        let sku = Sku::parse(raw.sku).map_err(|e| EventError::new("sku", e.to_string()))?;
        let location = Location::parse(raw.location)
            .map_err(|e| EventError::new("location", e.to_string()))?;
        if raw.seq > i64::MAX as u64 {
            return Err(EventError::new(
                "seq",
                format!("must be at most {}", i64::MAX),
            ));
        }
        let position = Position::parse(raw.occurred_at, raw.seq)
            .map_err(|e| EventError::new("occurred_at", e))?;
        let (field, list, make): (&str, &Quantities<'_>, MakeChange) = match (&raw.adjust, &raw.set)
        {
            (Some(a), None) => ("adjust", a, Change::Adjust),
            (None, Some(s)) => ("set", s, Change::Set),
            (Some(_), Some(_)) => {
                return Err(EventError::new(
                    "adjust",
                    "exactly one of `adjust` or `set` may be present, not both",
                ));
            }
            (None, None) => {
                return Err(EventError::new(
                    "adjust",
                    "exactly one of `adjust` or `set` is required",
                ));
            }
        };
        if list.is_empty() {
            return Err(EventError::new(field, "must name at least one state"));
        }
        let mut q = StateMap::new();
        for (name, v) in list {
            let st: State = name
                .parse()
                .map_err(|m: String| EventError::new(format!("{field}.{name}"), m))?;
            if v.unsigned_abs() > MAX_QUANTITY as u64 {
                return Err(EventError::new(
                    format!("{field}.{name}"),
                    format!("must be between -{MAX_QUANTITY} and {MAX_QUANTITY}"),
                ));
            }
            if q.insert(st, *v).is_some() {
                return Err(EventError::new(
                    format!("{field}.{name}"),
                    "state given twice",
                ));
            }
        }
        let uom = raw
            .uom
            .map(Unit::parse)
            .transpose()
            .map_err(|e| EventError::new("uom", e.to_string()))?;
        Ok(Event {
            id,
            source,
            sku,
            location,
            position,
            change: make(q),
            uom,
            reason: text("reason", raw.reason)?,
            reference: text("ref", raw.reference)?,
        })
    }

    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            position: self.position,
            id: self.id.clone(),
        }
    }

    /// A digest of everything the sender said, so that a redelivery is recognised as the same
    /// event (`duplicate`) and a different payload under a used id as a `conflict`. Computed over
    /// an unambiguous length-prefixed encoding, before unit conversion: the payload is what the
    /// sender sent, not what the configuration made of it.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut h = Sha256::new();
        let mut put = |s: &str| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        put(self.id.as_str());
        put(self.source.as_str());
        put(self.sku.as_str());
        put(self.location.as_str());
        put(&self.position.at_nanos.to_string());
        put(&self.position.seq.to_string());
        put(self.change.kind());
        for (s, v) in self.change.quantities().iter() {
            put(s.as_str());
            put(&v.to_string());
        }
        put(self.uom.as_ref().map_or("", |u| u.as_str()));
        put(self.reason.as_deref().unwrap_or("\u{1}none"));
        put(self.reference.as_deref().unwrap_or("\u{1}none"));
        Fingerprint(h.finalize().into())
    }
}

/// SHA-256 of an event's canonical payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", hex::encode(&self.0[..8]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawEvent<'static> {
        RawEvent {
            id: "ship:SO-1:1",
            source: "wms",
            sku: "TEE-1",
            location: "DC1",
            occurred_at: "2026-11-27T10:00:00Z",
            seq: 1,
            adjust: Some(vec![("on_hand", -3), ("committed", -3)]),
            ..RawEvent::default()
        }
    }

    #[test]
    fn accepts_the_design_example() {
        let e = Event::from_raw(&raw()).unwrap();
        assert_eq!(e.change.quantities().get(State::OnHand), Some(-3));
        assert_eq!(e.position.occurred_at_rfc3339(), "2026-11-27T10:00:00Z");
    }

    #[test]
    fn names_the_field_that_is_wrong() {
        let field = |r: RawEvent<'static>| Event::from_raw(&r).unwrap_err().field;
        assert_eq!(field(RawEvent { id: "", ..raw() }), "id");
        assert_eq!(
            field(RawEvent {
                sku: "a\tb",
                ..raw()
            }),
            "sku"
        );
        assert_eq!(
            field(RawEvent {
                occurred_at: "yesterday",
                ..raw()
            }),
            "occurred_at"
        );
        assert_eq!(
            field(RawEvent {
                occurred_at: "1999-12-31T23:59:59Z",
                ..raw()
            }),
            "occurred_at"
        );
        assert_eq!(
            field(RawEvent {
                adjust: None,
                ..raw()
            }),
            "adjust"
        );
        assert_eq!(
            field(RawEvent {
                set: Some(vec![("on_hand", 1)]),
                ..raw()
            }),
            "adjust"
        );
        assert_eq!(
            field(RawEvent {
                adjust: Some(vec![]),
                ..raw()
            }),
            "adjust"
        );
        assert_eq!(
            field(RawEvent {
                adjust: Some(vec![("onhand", 1)]),
                ..raw()
            }),
            "adjust.onhand"
        );
        assert_eq!(
            field(RawEvent {
                adjust: Some(vec![("on_hand", MAX_QUANTITY + 1)]),
                ..raw()
            }),
            "adjust.on_hand"
        );
        assert_eq!(
            field(RawEvent {
                uom: Some(""),
                ..raw()
            }),
            "uom"
        );
        let long = Box::leak("r".repeat(MAX_TEXT + 1).into_boxed_str());
        assert_eq!(
            field(RawEvent {
                reason: Some(long),
                ..raw()
            }),
            "reason"
        );
    }

    #[test]
    fn fingerprint_sees_every_field() {
        let a = Event::from_raw(&raw()).unwrap();
        let same = Event::from_raw(&raw()).unwrap();
        assert_eq!(a.fingerprint(), same.fingerprint());
        for other in [
            RawEvent { seq: 2, ..raw() },
            RawEvent {
                location: "DC2",
                ..raw()
            },
            RawEvent {
                adjust: Some(vec![("on_hand", -3)]),
                ..raw()
            },
            RawEvent {
                reason: Some("x"),
                ..raw()
            },
            RawEvent {
                uom: Some("EA"),
                ..raw()
            },
        ] {
            assert_ne!(
                a.fingerprint(),
                Event::from_raw(&other).unwrap().fingerprint()
            );
        }
    }

    #[test]
    fn same_position_orders_by_id() {
        let p = Position::parse("2026-01-01T00:00:00+01:00", 0).unwrap();
        let a = OrderKey {
            position: p,
            id: EventId::parse("a").unwrap(),
        };
        let b = OrderKey {
            position: p,
            id: EventId::parse("b").unwrap(),
        };
        assert!(a < b);
        assert_eq!(Position::parse("2025-12-31T23:00:00Z", 0).unwrap(), p);
    }
}
