//! The canonical JSON event (version 1) on the wire, and request bodies holding one event, an array
//! or NDJSON. Parsing goes through `serde_json::Value` and checks each field by hand so that every
//! error names the event (by index) and the field, as an operator needs to fix a feed.

use driftless_core::event::RawEvent;
use driftless_core::{Event, EventError};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};
use std::cell::RefCell;

/// A body that does not match the schema. Nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// Index of the event in the request (0-based), when the error is inside one.
    pub index: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.index, &self.field) {
            (Some(i), Some(field)) => write!(f, "events[{i}].{field}: {}", self.message),
            (Some(i), None) => write!(f, "events[{i}]: {}", self.message),
            (None, Some(field)) => write!(f, "{field}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// How the events arrived: a single object answers 409/422 for conflict/rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Single,
    Many,
}

const FIELDS: [&str; 11] = [
    "id",
    "source",
    "sku",
    "location",
    "occurred_at",
    "seq",
    "adjust",
    "set",
    "uom",
    "reason",
    "ref",
];

/// Parses a request body into validated events, refusing the whole body on the first error.
pub fn parse_body(
    body: &[u8],
    ndjson: bool,
    max_events: usize,
) -> Result<(Shape, Vec<Event>), SchemaError> {
    let whole = |message: String| SchemaError {
        index: None,
        field: None,
        message,
    };
    let values: Vec<Value>;
    let shape;
    if ndjson {
        shape = Shape::Many;
        let mut v = Vec::new();
        for (n, line) in body.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if v.len() == max_events {
                return Err(whole(format!(
                    "more than {max_events} events in one request; split the batch"
                )));
            }
            let at = v.len();
            v.push(strict_json(line).map_err(|e| match e {
                Invalid::Json(e) => whole(format!("line {}: not valid JSON: {e}", n + 1)),
                Invalid::Twice(path) => twice(Some(at), path),
            })?);
        }
        values = v;
    } else {
        match strict_json(body) {
            Ok(Value::Array(a)) => {
                if a.len() > max_events {
                    return Err(whole(format!(
                        "{} events in one request; at most {max_events}, split the batch",
                        a.len()
                    )));
                }
                shape = Shape::Many;
                values = a;
            }
            Ok(v @ Value::Object(_)) => {
                shape = Shape::Single;
                values = vec![v];
            }
            Ok(_) => {
                return Err(whole(
                    "expected an event object, an array of events, or NDJSON".into(),
                ));
            }
            Err(Invalid::Json(e)) => return Err(whole(format!("not valid JSON: {e}"))),
            Err(Invalid::Twice(mut path)) => {
                // In an array the outermost step is the event's index; a single object is event 0.
                let index = match path.first() {
                    Some(Step::Index(i)) => {
                        let i = *i;
                        path.remove(0);
                        i
                    }
                    _ => 0,
                };
                return Err(twice(Some(index), path));
            }
        }
    }
    if values.is_empty() {
        return Err(whole("no events in the request".into()));
    }
    let events = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            parse_event(v).map_err(|e| SchemaError {
                index: Some(i),
                field: Some(e.field),
                message: e.message,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((shape, events))
}

/// Why a body is not a JSON document the hub takes.
enum Invalid {
    Json(serde_json::Error),
    /// An object names a key twice; the path leads to it from the document's root.
    Twice(Vec<Step>),
}

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Index(usize),
    Key(String),
}

fn twice(index: Option<usize>, path: Vec<Step>) -> SchemaError {
    let mut field = String::new();
    for step in path {
        match step {
            Step::Index(i) => field.push_str(&format!("[{i}]")),
            Step::Key(k) if field.is_empty() => field.push_str(&k),
            Step::Key(k) => {
                field.push('.');
                field.push_str(&k);
            }
        }
    }
    SchemaError {
        index,
        field: Some(field),
        message: "given twice; each key may appear only once in an object".into(),
    }
}

/// Parses one JSON document as `serde_json::from_slice::<Value>` does, except that an object naming
/// a key twice is refused. serde_json keeps the last value silently, so `{"on_hand": 1,
/// "on_hand": 5}` would store 5 while the sender's other reader (a log, a test) sees 1; which one
/// the sender meant is not the hub's guess to make. One pass, as cheap as the plain parse: the
/// path to a duplicate is only assembled while the error unwinds.
fn strict_json(bytes: &[u8]) -> Result<Value, Invalid> {
    let path = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict { path: &path }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if !path.borrow().is_empty() => {
            let mut p = path.into_inner();
            p.reverse();
            Err(Invalid::Twice(p))
        }
        Err(e) => Err(Invalid::Json(e)),
    }
}

/// Builds a [`Value`], refusing duplicate keys. `path` stays empty unless a duplicate is found; then
/// it holds the steps to it, innermost first, each level adding its own as the error passes.
#[derive(Clone, Copy)]
struct Strict<'p> {
    path: &'p RefCell<Vec<Step>>,
}

impl Strict<'_> {
    fn step<E>(self, step: impl FnOnce() -> Step) -> impl FnOnce(E) -> E {
        move |e| {
            if !self.path.borrow().is_empty() {
                self.path.borrow_mut().push(step());
            }
            e
        }
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq
            .next_element_seed(self)
            .map_err(self.step(|| Step::Index(out.len())))?
        {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match out.entry(key) {
                Entry::Occupied(o) => {
                    self.path.borrow_mut().push(Step::Key(o.key().clone()));
                    return Err(de::Error::custom("duplicate key"));
                }
                Entry::Vacant(slot) => {
                    let v = map
                        .next_value_seed(self)
                        .map_err(self.step(|| Step::Key(slot.key().clone())))?;
                    slot.insert(v);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn string<'a>(
    o: &'a Map<String, Value>,
    field: &str,
    required: bool,
) -> Result<Option<&'a str>, EventError> {
    match o.get(field) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(EventError::new(field, "is required")),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::new(
            field,
            format!("must be a string, not {}", type_name(other)),
        )),
    }
}

fn quantities<'a>(
    o: &'a Map<String, Value>,
    field: &str,
) -> Result<Option<Vec<(&'a str, i64)>>, EventError> {
    let Some(v) = o.get(field) else {
        return Ok(None);
    };
    let Value::Object(m) = v else {
        return Err(EventError::new(
            field,
            format!(
                "must be an object of state -> integer, not {}",
                type_name(v)
            ),
        ));
    };
    m.iter()
        .map(|(k, v)| match v.as_i64() {
            Some(n) => Ok((k.as_str(), n)),
            None => Err(EventError::new(
                format!("{field}.{k}"),
                format!(
                    "must be a whole number, not {}",
                    match v {
                        Value::Number(n) => n.to_string(),
                        other => type_name(other).to_owned(),
                    }
                ),
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// One event object to a validated [`Event`].
pub fn parse_event(v: &Value) -> Result<Event, EventError> {
    let Value::Object(o) = v else {
        return Err(EventError::new(
            "event",
            format!("must be an object, not {}", type_name(v)),
        ));
    };
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(EventError::new(
            k.clone(),
            "unknown field (event version 1 has id, source, sku, location, occurred_at, seq, adjust, set, uom, reason, ref)",
        ));
    }
    let seq = match o.get("seq") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| EventError::new("seq", "must be an unsigned integer"))?,
    };
    let raw = RawEvent {
        id: string(o, "id", true)?.unwrap_or_default(),
        source: string(o, "source", true)?.unwrap_or_default(),
        sku: string(o, "sku", true)?.unwrap_or_default(),
        location: string(o, "location", true)?.unwrap_or_default(),
        occurred_at: string(o, "occurred_at", true)?.unwrap_or_default(),
        seq,
        adjust: quantities(o, "adjust")?,
        set: quantities(o, "set")?,
        uom: string(o, "uom", false)?,
        reason: string(o, "reason", false)?,
        reference: string(o, "ref", false)?,
    };
    Event::from_raw(&raw)
}

/// An event back to canonical JSON (the simulator's and the tests' senders use this).
pub fn event_json(e: &Event) -> Value {
    let q: Map<String, Value> = e
        .change
        .quantities()
        .iter()
        .map(|(s, v)| (s.as_str().to_owned(), Value::from(v)))
        .collect();
    let mut o = Map::new();
    o.insert("id".into(), e.id.as_str().into());
    o.insert("source".into(), e.source.as_str().into());
    o.insert("sku".into(), e.sku.as_str().into());
    o.insert("location".into(), e.location.as_str().into());
    o.insert(
        "occurred_at".into(),
        e.position.occurred_at_rfc3339().into(),
    );
    o.insert("seq".into(), e.position.seq.into());
    o.insert(e.change.kind().into(), Value::Object(q));
    if let Some(u) = &e.uom {
        o.insert("uom".into(), u.as_str().into());
    }
    if let Some(r) = &e.reason {
        o.insert("reason".into(), r.as_str().into());
    }
    if let Some(r) = &e.reference {
        o.insert("ref".into(), r.as_str().into());
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"id":"ship:SO-1001:1","source":"wms","sku":"TEE-BLK-M","location":"DC1",
        "occurred_at":"2026-11-27T10:00:00Z","seq":1042,"adjust":{"on_hand":-3,"committed":-3},
        "uom":"EA","reason":"shipment","ref":"SO-1001"}"#;

    #[test]
    fn parses_the_three_shapes() {
        let (shape, ev) = parse_body(ONE.as_bytes(), false, 10).unwrap();
        assert_eq!((shape, ev.len()), (Shape::Single, 1));
        let arr = format!("[{ONE},{}]", ONE.replace("SO-1001:1", "SO-1001:2"));
        assert_eq!(parse_body(arr.as_bytes(), false, 10).unwrap().1.len(), 2);
        let nd = format!("{}\r\n\n{}\n", ONE.replace('\n', ""), ONE.replace('\n', ""));
        assert_eq!(parse_body(nd.as_bytes(), true, 10).unwrap().1.len(), 2);
        let back = parse_event(&event_json(&ev[0])).unwrap();
        assert_eq!(back, ev[0]);
    }

    #[test]
    fn a_key_given_twice_is_refused_not_last_wins() {
        let twice = |body: &str, nd: bool| parse_body(body.as_bytes(), nd, 10).unwrap_err();
        let set = ONE.replace(
            "\"adjust\":{\"on_hand\":-3,\"committed\":-3}",
            "\"set\":{\"on_hand\":1,\"on_hand\":5}",
        );
        let e = twice(&set, false);
        assert_eq!(
            (e.index, e.field.as_deref()),
            (Some(0), Some("set.on_hand"))
        );
        let e = twice(&format!("[{ONE},{set}]"), false);
        assert_eq!(
            e.to_string(),
            "events[1].set.on_hand: given twice; each key may appear only once in an object"
        );
        let e = twice(
            &format!("{}\n{}\n", ONE.replace('\n', ""), set.replace('\n', "")),
            true,
        );
        assert_eq!(
            (e.index, e.field.as_deref()),
            (Some(1), Some("set.on_hand"))
        );
        // Top-level keys too: which sku did the sender mean?
        let e = twice(&ONE.replace("\"sku\":", "\"sku\":\"X\",\"sku\":"), false);
        assert_eq!((e.index, e.field.as_deref()), (Some(0), Some("sku")));
        // The same key in two different objects is not a duplicate.
        assert!(
            parse_body(
                format!("[{ONE},{}]", ONE.replace("SO-1001:1", "SO-1001:2")).as_bytes(),
                false,
                10
            )
            .is_ok()
        );
    }

    #[test]
    fn names_index_and_field() {
        let bad = ONE.replace("-3,\"committed\"", "\"3\",\"committed\"");
        let e = parse_body(format!("[{ONE},{bad}]").as_bytes(), false, 10).unwrap_err();
        assert_eq!(
            e.to_string(),
            "events[1].adjust.on_hand: must be a whole number, not a string"
        );
        let e = parse_body(
            ONE.replace("\"seq\":1042", "\"seq\":-1").as_bytes(),
            false,
            10,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("seq"));
        let e = parse_body(ONE.replace("\"uom\"", "\"unit\"").as_bytes(), false, 10).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("unit"));
        let e = parse_body(ONE.replace("-3}", "1.5}").as_bytes(), false, 10).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("adjust.committed"));
        assert!(parse_body(b"{", false, 10).is_err());
        let e = parse_body(
            ONE.replace("-3}", "-3,\"committed\":5}").as_bytes(),
            false,
            10,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "events[0].adjust.committed: given twice; each key may appear only once in an object"
        );
        assert!(parse_body(b"[]", false, 10).is_err());
        assert!(parse_body(b"42", false, 10).is_err());
        let many = format!("[{}]", [ONE; 11].join(","));
        assert!(
            parse_body(many.as_bytes(), false, 10)
                .unwrap_err()
                .message
                .contains("at most 10")
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever arrives, parsing answers; it never panics.
        #[test]
        fn any_bytes(body in prop::collection::vec(any::<u8>(), 0..2048), nd in any::<bool>()) {
            let _ = parse_body(&body, nd, 100);
        }

        /// Near-miss events: valid JSON with fields of the wrong kind or value.
        #[test]
        fn near_misses(
            id in prop::option::of("\\PC{0,300}"),
            sku in prop::option::of("\\PC{0,200}"),
            at in prop::option::of("[0-9TZ:.+-]{0,40}"),
            seq in any::<i128>(),
            q in any::<i64>(),
            state in "[a-z_]{0,12}",
        ) {
            let mut o = serde_json::Map::new();
            if let Some(id) = id { o.insert("id".into(), id.into()); }
            if let Some(sku) = sku { o.insert("sku".into(), sku.into()); }
            if let Some(at) = at { o.insert("occurred_at".into(), at.into()); }
            o.insert("source".into(), "wms".into());
            o.insert("location".into(), "DC1".into());
            o.insert("seq".into(), serde_json::Number::from_i128(seq).map_or(Value::Null, Value::Number));
            o.insert("adjust".into(), serde_json::json!({ state: q }));
            let body = Value::Object(o).to_string();
            if let Ok((_, ev)) = parse_body(body.as_bytes(), false, 10) {
                prop_assert_eq!(ev.len(), 1);
                prop_assert!(ev[0].change.quantities().iter().all(|(_, v)| v.unsigned_abs() <= driftless_core::MAX_QUANTITY as u64));
            }
        }
    }
}
