//! One capture request to canonical events: the document walk, the identifiers by configuration,
//! quantities and units, the table's row, idempotency and retractions. Every EPCIS event gets one
//! [`Captured`] answer; only a body that is not an EPCIS document or event at all (or breaks the
//! schema: a quantity as text, an event without `eventTime`) is refused whole.
//!
//! Ids: an EPCIS event is identified by its `eventID`, else by its GS1 event hash; each sku it
//! moves becomes one canonical event `<that id>#<gtin14>` (`#in:`/`#out:` for a transformation's
//! sides), so the same EPCIS event delivered again, however serialised, is a `duplicate`. An
//! `errorDeclaration` becomes, for each of those, `<id>#retracted` with the opposite deltas at the
//! same position: the fold then sums to what it would be had the event never happened, in
//! whichever order the event and its retraction arrive, and a second declaration is a duplicate.

use super::gs1::{self, Gln};
use super::hash::{self, HashContext, Ordered};
use super::table::{self, Effect, Kind, Side};
use driftless_config::Settings;
use driftless_core::event::Change;
use driftless_core::{
    Event, EventId, Location, MAX_QUANTITY, Position, Sku, State, StateMap, SystemId, Unit,
    UnitTable,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// `[[items]] gtin` and `[[locations]] sgln` as lookups.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    items: HashMap<String, Sku>,
    locations: HashMap<Gln, Location>,
    /// Configured `sgln` values that are not GS1 identifiers, matched as written.
    literal: HashMap<String, Location>,
    /// Where stock moves when an event names neither `bizLocation` nor `readPoint` (the capture
    /// route's `?location=`); without it such an event is rejected.
    pub default_location: Option<Location>,
    /// Configured values that cannot match anything, for the operator's log.
    pub problems: Vec<String>,
    /// `[[epcis.rules]]`, tried before the built-in table.
    pub rules: Vec<driftless_config::EpcisRule>,
}

impl Mapping {
    pub fn from_settings(s: &Settings) -> Mapping {
        let mut m = Mapping {
            rules: s.epcis_rules.clone(),
            ..Mapping::default()
        };
        for i in &s.items {
            let Some(g) = i.gtin.as_deref() else {
                continue;
            };
            match gs1::gtin14(g.trim()) {
                Ok(g) => {
                    if let Some(other) = m.items.insert(g.clone(), i.sku.clone()) {
                        m.problems.push(format!(
                            "[[items]] `{}` and `{other}` have the same gtin {g}; EPCIS maps it to `{}`",
                            i.sku, i.sku
                        ));
                    }
                }
                Err(e) => m.problems.push(format!(
                    "[[items]] `{}`: gtin {e}; EPCIS events cannot map to it",
                    i.sku
                )),
            }
        }
        for l in &s.locations {
            if let Some(sgln) = &l.sgln {
                match gs1::gln_of(sgln) {
                    Some(g) => {
                        m.locations.insert(g, l.id.clone());
                    }
                    None => {
                        m.problems.push(format!(
                            "[[locations]] `{}`: sgln `{sgln}` is neither an SGLN URN nor a Digital Link with a valid GLN; it matches only when written the same way",
                            l.id
                        ));
                        m.literal.insert(sgln.trim().to_owned(), l.id.clone());
                    }
                }
            }
        }
        m
    }

    pub fn add_item(&mut self, gtin: &str, sku: Sku) -> Result<(), String> {
        self.items.insert(gs1::gtin14(gtin)?, sku);
        Ok(())
    }

    pub fn add_location(&mut self, sgln: &str, location: Location) {
        match gs1::gln_of(sgln) {
            Some(g) => self.locations.insert(g, location),
            None => self.literal.insert(sgln.to_owned(), location),
        };
    }

    fn location(&self, id: &str) -> Option<&Location> {
        match gs1::gln_of(id) {
            Some(g) => self.locations.get(&g),
            None => self.literal.get(id.trim()),
        }
    }
}

/// What became of one EPCIS event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Canonical events for the ledger (their outcomes are the ledger's).
    Events(Vec<Event>),
    /// Stock does not change (an event type or step that moves nothing, no quantities).
    Ignored(String),
    /// It would change stock but cannot be mapped (unknown class or location, a unit without a
    /// conversion, a quantity that is not whole in base units). Nothing is stored.
    Rejected(String),
}

/// One EPCIS event's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Captured {
    /// Place in the request.
    pub index: usize,
    pub event_type: String,
    pub event_id: Option<String>,
    /// The GS1 event hash (`None` where the reference algorithm has none either).
    pub event_hash: Option<String>,
    /// What identifies it: the `eventID`, else the hash.
    pub key: String,
    /// The mapping table's row (`R4`...), when one decided.
    pub rule: Option<String>,
    /// Whether it is an error declaration (its events are retractions).
    pub retraction: bool,
    pub verdict: Verdict,
}

/// A whole request.
#[derive(Debug, Clone, PartialEq)]
pub struct Capture {
    /// One bare event (not a document): the HTTP answer uses 409/422 as for one canonical event.
    pub single: bool,
    pub events: Vec<Captured>,
}

/// A body refused whole (HTTP 400). Nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    pub path: String,
    pub message: String,
}

fn schema(path: impl Into<String>, message: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.into(),
        message: message.into(),
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

const EVENT_TYPES: [&str; 5] = [
    "ObjectEvent",
    "AggregationEvent",
    "TransformationEvent",
    "TransactionEvent",
    "AssociationEvent",
];

/// An event of the body: its path, and the event as a value and with its key order.
type Located<'a> = (String, &'a Value, &'a Ordered);

/// The events of a body with their paths, in document order, and whether it was one bare event.
fn events_of<'a>(
    doc: &'a Value,
    ordered: &'a Ordered,
) -> Result<(bool, Vec<Located<'a>>), SchemaError> {
    let Value::Object(o) = doc else {
        return Err(schema(
            "body",
            format!(
                "must be an EPCISDocument or an EPCIS event object, not {}",
                type_name(doc)
            ),
        ));
    };
    let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
    if EVENT_TYPES.contains(&ty) || (ty.ends_with("Event") && !o.contains_key("epcisBody")) {
        return Ok((true, vec![("event".into(), doc, ordered)]));
    }
    if ty != "EPCISDocument" && ty != "EPCISQueryDocument" {
        return Err(schema(
            "type",
            format!(
                "expected `EPCISDocument` or an event type ({}), got {}",
                EVENT_TYPES.join(", "),
                o.get("type").map_or("nothing".into(), |t| t.to_string())
            ),
        ));
    }
    let body_path;
    let (body, obody) = match (doc.get("epcisBody"), ordered.get("epcisBody")) {
        (Some(b), Some(ob)) if ty == "EPCISDocument" => {
            body_path = "epcisBody";
            (b, ob)
        }
        (Some(b), Some(ob)) => {
            body_path = "epcisBody.queryResults.resultsBody";
            match (
                b.pointer("/queryResults/resultsBody"),
                ob.get("queryResults").and_then(|q| q.get("resultsBody")),
            ) {
                (Some(r), Some(or)) => (r, or),
                _ => return Err(schema(body_path, "is required in an EPCISQueryDocument")),
            }
        }
        _ => return Err(schema("epcisBody", "is required")),
    };
    if let (Some(e), Some(oe)) = (body.get("event"), obody.get("event")) {
        return Ok((false, vec![(format!("{body_path}.event"), e, oe)]));
    }
    match (body.get("eventList"), obody.get("eventList")) {
        (Some(Value::Array(list)), Some(Ordered::Array(olist))) => Ok((
            false,
            list.iter()
                .zip(olist)
                .enumerate()
                .map(|(i, (e, oe))| (format!("{body_path}.eventList[{i}]"), e, oe))
                .collect(),
        )),
        (Some(other), _) => Err(schema(
            format!("{body_path}.eventList"),
            format!("must be an array, not {}", type_name(other)),
        )),
        _ => Err(schema(body_path, "holds neither `eventList` nor `event`")),
    }
}

/// One quantity element, checked against the schema.
struct Quantity<'a> {
    path: String,
    class: &'a str,
    amount: Option<&'a serde_json::Number>,
    uom: Option<&'a str>,
}

fn quantities<'a>(
    e: &'a Map<String, Value>,
    path: &str,
    list: &str,
) -> Result<Vec<Quantity<'a>>, SchemaError> {
    let Some(v) = e.get(list) else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = v else {
        return Err(schema(
            format!("{path}.{list}"),
            format!("must be an array, not {}", type_name(v)),
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let p = format!("{path}.{list}[{i}]");
            let Value::Object(q) = q else {
                return Err(schema(
                    p,
                    format!("must be an object, not {}", type_name(q)),
                ));
            };
            let class = match q.get("epcClass") {
                Some(Value::String(s)) => s.as_str(),
                Some(other) => {
                    return Err(schema(
                        format!("{p}.epcClass"),
                        format!("must be a string, not {}", type_name(other)),
                    ));
                }
                None => return Err(schema(format!("{p}.epcClass"), "is required")),
            };
            let amount = match q.get("quantity") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => Some(n),
                Some(other) => {
                    return Err(schema(
                        format!("{p}.quantity"),
                        format!("must be a number, not {}", type_name(other)),
                    ));
                }
            };
            let uom = match q.get("uom") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => {
                    return Err(schema(
                        format!("{p}.uom"),
                        format!("must be a UN/ECE rec 20 code, not {}", type_name(other)),
                    ));
                }
            };
            Ok(Quantity {
                path: p,
                class,
                amount,
                uom,
            })
        })
        .collect()
}

fn text<'a>(
    e: &'a Map<String, Value>,
    path: &str,
    field: &str,
) -> Result<Option<&'a str>, SchemaError> {
    match e.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(schema(
            format!("{path}.{field}"),
            format!("must be a string, not {}", type_name(other)),
        )),
    }
}

/// `eventTime` with `eventTimeZoneOffset` as the event's position.
fn position(e: &Map<String, Value>, path: &str) -> Result<Result<Position, String>, SchemaError> {
    let t = text(e, path, "eventTime")?
        .ok_or_else(|| schema(format!("{path}.eventTime"), "is required"))?;
    let offset = text(e, path, "eventTimeZoneOffset")?;
    let parsed = chrono::DateTime::parse_from_rfc3339(t).or_else(|first| match offset {
        // A time without its offset takes the event's declared one.
        Some(o) => chrono::DateTime::parse_from_rfc3339(&format!("{t}{o}")).map_err(|_| first),
        None => Err(first),
    });
    match parsed {
        Ok(d) => Ok(Position::from_datetime(d.with_timezone(&chrono::Utc), 0)
            .map_err(|m| format!("eventTime {t}: {m}"))),
        Err(err) => Err(schema(
            format!("{path}.eventTime"),
            format!(
                "not an ISO 8601 time with offset ({err}); example: 2026-11-27T10:00:00.000+01:00"
            ),
        )),
    }
}

/// A JSON number as an exact decimal `mantissa / 10^scale`.
fn decimal(n: &serde_json::Number) -> Option<(i128, u32)> {
    if let Some(i) = n.as_i64() {
        return Some((i128::from(i), 0));
    }
    if let Some(u) = n.as_u64() {
        return Some((i128::from(u), 0));
    }
    let s = n.to_string();
    let (num, exp) = match s.split_once(['e', 'E']) {
        Some((a, b)) => (a.to_owned(), b.parse::<i32>().ok()?),
        None => (s.clone(), 0),
    };
    let (int, frac) = num.split_once('.').unwrap_or((&num, ""));
    let mut mantissa: i128 = format!("{int}{frac}").parse().ok()?;
    let mut scale = frac.len() as i32 - exp;
    while scale < 0 {
        mantissa = mantissa.checked_mul(10)?;
        scale += 1;
    }
    Some((mantissa, scale as u32))
}

/// UN/ECE rec 20 codes that mean "one item", taken as the base unit.
const ONE_ITEM: [&str; 3] = ["EA", "H87", "C62"];

/// A quantity in base units, or why it cannot be.
fn base_units(q: &Quantity<'_>, sku: &Sku, units: &UnitTable) -> Result<i64, String> {
    let amount = q
        .amount
        .ok_or_else(|| format!("{}: has no quantity", q.path))?;
    let (mantissa, scale) =
        decimal(amount).ok_or_else(|| format!("{}.quantity: {amount} is out of range", q.path))?;
    if mantissa < 0 {
        return Err(format!("{}.quantity: must not be negative", q.path));
    }
    let (factor, unit) = match q.uom {
        None => (1, "items (no uom)".to_owned()),
        Some(u) if ONE_ITEM.contains(&u) => (1, u.to_owned()),
        Some(u) => {
            let unit = Unit::parse(u).map_err(|e| format!("{}.uom: {e}", q.path))?;
            let f = units.factor(sku, &unit).map_err(|e| {
                format!(
                    "{}.uom: {e}; add a [[units]] rule for sku `{sku}` and unit `{u}`",
                    q.path
                )
            })?;
            (i128::from(f), u.to_owned())
        }
    };
    let pow = 10i128
        .checked_pow(scale)
        .ok_or("quantity has too many decimals")?;
    let scaled = mantissa
        .checked_mul(factor)
        .ok_or_else(|| format!("{}.quantity: out of range", q.path))?;
    if scaled % pow != 0 {
        return Err(format!(
            "{}: {amount} {unit} is not a whole number of EA (factor {factor})",
            q.path
        ));
    }
    let base = scaled / pow;
    if base > i128::from(MAX_QUANTITY) {
        return Err(format!(
            "{}: {base} EA is above the hub's bound of {MAX_QUANTITY}",
            q.path
        ));
    }
    Ok(base as i64)
}

/// The location of an event: `bizLocation`, else `readPoint`.
fn location_id(e: &Map<String, Value>) -> Option<(&'static str, &str)> {
    for field in ["bizLocation", "readPoint"] {
        if let Some(id) = e
            .get(field)
            .and_then(|l| l.get("id"))
            .and_then(Value::as_str)
        {
            return Some((field, id));
        }
    }
    None
}

/// Longest canonical id before it is replaced by its digest.
fn canonical_id(raw: String) -> Result<EventId, String> {
    let id = if raw.len() > EventId::MAX_LEN {
        format!(
            "epcis:sha256:{}",
            hex::encode(Sha256::digest(raw.as_bytes()))
        )
    } else {
        raw
    };
    EventId::parse(&id).map_err(|e| format!("id `{id}`: {e}"))
}

struct Context<'a> {
    source: &'a SystemId,
    map: &'a Mapping,
    units: &'a UnitTable,
}

/// Maps one event (already known to be an object) to its verdict.
fn map_event(
    cx: &Context<'_>,
    e: &Map<String, Value>,
    path: &str,
    key: &str,
) -> Result<(Option<String>, bool, Verdict), SchemaError> {
    let ty = e.get("type").and_then(Value::as_str).unwrap_or("");
    let action = text(e, path, "action")?;
    let step = text(e, path, "bizStep")?;
    let disposition = text(e, path, "disposition")?;
    let retraction = e.get("errorDeclaration").is_some_and(|d| !d.is_null());
    let pos = position(e, path)?;
    let Some(kind) = table::Kind::parse(ty) else {
        return Ok((
            None,
            retraction,
            Verdict::Ignored(format!("event type `{ty}` does not change stock")),
        ));
    };
    let lists: Vec<(Option<Side>, Vec<Quantity<'_>>)> = match kind {
        Kind::Transformation => vec![
            (Some(Side::Input), quantities(e, path, "inputQuantityList")?),
            (
                Some(Side::Output),
                quantities(e, path, "outputQuantityList")?,
            ),
        ],
        Kind::Aggregation | Kind::Association => {
            vec![(None, quantities(e, path, "childQuantityList")?)]
        }
        Kind::Object | Kind::Transaction => vec![(None, quantities(e, path, "quantityList")?)],
    };
    let mut rows = Vec::new();
    for (side, list) in &lists {
        if list.is_empty() {
            continue;
        }
        let row = table::decide(&cx.map.rules, kind, *side, action, step, disposition);
        if row.effect == Effect::None {
            return Ok((Some(row.id), retraction, Verdict::Ignored(row.reason)));
        }
        rows.push((*side, list, row));
    }
    if rows.is_empty() {
        let row = table::decide(&cx.map.rules, kind, None, action, step, disposition);
        let why = if row.effect == Effect::None {
            row.reason
        } else {
            "carries no quantity list (quantityList, childQuantityList, inputQuantityList, outputQuantityList); instance EPCs are not counted".into()
        };
        return Ok((None, retraction, Verdict::Ignored(why)));
    }
    let rule = rows.first().map(|(_, _, r)| r.id.clone());
    let reject = |m: String| Ok((rule.clone(), retraction, Verdict::Rejected(m)));
    let position = match pos {
        Ok(p) => p,
        Err(m) => return reject(m),
    };
    let location = match location_id(e) {
        None => match &cx.map.default_location {
            Some(l) => l.clone(),
            None => return reject("has neither bizLocation nor readPoint: the hub cannot tell where stock moved (name one, or capture with ?location=)".into()),
        },
        Some((field, id)) => match cx.map.location(id) {
            Some(l) => l.clone(),
            None => {
                let gln = gs1::gln_of(id).map_or(String::new(), |g| {
                    format!(
                        " (GLN {}{})",
                        g.gln,
                        g.extension
                            .map_or(String::new(), |x| format!(", extension {x}"))
                    )
                });
                return reject(format!(
                    "{field} `{id}`{gln} is not under any [[locations]] sgln"
                ));
            }
        },
    };
    let mut out: Vec<Event> = Vec::new();
    for (side, list, row) in rows {
        // One canonical event per sku and side: lots of one GTIN add up.
        let mut per_sku: Vec<(String, Sku, i64)> = Vec::new();
        for q in list.iter() {
            let gtin = match gs1::gtin_of(q.class) {
                Ok(g) => g,
                Err(m) => return reject(format!("{}.epcClass: {m}", q.path)),
            };
            let Some(sku) = cx.map.items.get(&gtin) else {
                return reject(format!(
                    "{}.epcClass `{}`: GTIN {gtin} is not under any [[items]] gtin",
                    q.path, q.class
                ));
            };
            let n = match base_units(q, sku, cx.units) {
                Ok(n) => n,
                Err(m) => return reject(m),
            };
            match per_sku.iter_mut().find(|(g, _, _)| *g == gtin) {
                Some(slot) => slot.2 = slot.2.saturating_add(n).min(MAX_QUANTITY + 1),
                None => per_sku.push((gtin, sku.clone(), n)),
            }
        }
        for (gtin, sku, n) in per_sku {
            if n > MAX_QUANTITY {
                return reject(format!(
                    "GTIN {gtin}: the quantities add up beyond {MAX_QUANTITY}"
                ));
            }
            let mut q = StateMap::new();
            let change = match &row.effect {
                Effect::Adjust(pairs) => {
                    for (s, sign) in pairs {
                        q.insert(*s, sign * n * if retraction { -1 } else { 1 });
                    }
                    Change::Adjust(q)
                }
                Effect::Set(s) => {
                    if retraction {
                        return reject(
                            "a count cannot be retracted by a compensating event; send the corrected count as a new event".into(),
                        );
                    }
                    q.insert(*s, n);
                    Change::Set(q)
                }
                Effect::None => continue,
            };
            let side_tag = match side {
                Some(Side::Input) => "in:",
                Some(Side::Output) => "out:",
                None => "",
            };
            let mut raw = format!("{key}#{side_tag}{gtin}");
            if retraction {
                raw.push_str("#retracted");
            }
            let id = match canonical_id(raw) {
                Ok(id) => id,
                Err(m) => return reject(m),
            };
            let reason = if retraction {
                format!("epcis {} retracted (errorDeclaration)", row.id)
            } else {
                format!("epcis {}: {}", row.id, row.reason)
            };
            out.push(Event {
                id,
                source: cx.source.clone(),
                sku,
                location: location.clone(),
                position,
                change,
                uom: None,
                reason: Some(truncate(reason, driftless_core::event::MAX_TEXT)),
                reference: Some(truncate(key.to_owned(), driftless_core::event::MAX_TEXT)),
            });
        }
    }
    Ok((rule, retraction, Verdict::Events(out)))
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Maps a capture body. `max_events` bounds the events of one request.
pub fn capture(
    body: &[u8],
    source: &SystemId,
    map: &Mapping,
    units: &UnitTable,
    max_events: usize,
) -> Result<Capture, SchemaError> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| schema("body", format!("not valid JSON: {e}")))?;
    let ordered: Ordered =
        serde_json::from_slice(body).map_err(|e| schema("body", format!("not valid JSON: {e}")))?;
    let (single, events) = events_of(&doc, &ordered)?;
    if events.len() > max_events {
        return Err(schema(
            "epcisBody.eventList",
            format!(
                "{} events in one request; at most {max_events}, split the document",
                events.len()
            ),
        ));
    }
    let ctx = HashContext::of_document(&ordered);
    let cx = Context { source, map, units };
    let mut out = Vec::with_capacity(events.len());
    for (index, (path, e, oe)) in events.into_iter().enumerate() {
        let Value::Object(o) = e else {
            return Err(schema(
                path,
                format!("must be an event object, not {}", type_name(e)),
            ));
        };
        let event_type = o
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| schema(format!("{path}.type"), "is required"))?
            .to_owned();
        let event_id = text(o, &path, "eventID")?
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let event_hash = hash::event_hash(oe, &ctx);
        let key = match (&event_id, &event_hash) {
            (Some(id), _) => id.clone(),
            (None, Some(h)) => h.clone(),
            (None, None) => {
                // The reference cannot hash it; a digest of the event with sorted keys still
                // makes a re-serialisation the same event.
                let mut v = o.clone();
                v.remove("recordTime");
                v.remove("errorDeclaration");
                format!(
                    "epcis:sha256:{}",
                    hex::encode(Sha256::digest(Value::Object(v).to_string().as_bytes()))
                )
            }
        };
        let (rule, retraction, verdict) = map_event(&cx, o, &path, &key)?;
        out.push(Captured {
            index,
            event_type,
            event_id,
            event_hash,
            key,
            rule,
            retraction,
            verdict,
        });
    }
    Ok(Capture {
        single,
        events: out,
    })
}

/// The states an answer lists for a canonical event, for callers that print them.
pub fn states_of(e: &Event) -> Vec<(State, i64)> {
    e.change.quantities().iter().collect()
}
