//! The GS1 EPCIS event hash (`ni:///sha-256;<hex>?ver=CBV2.0`): the identity of an event that has no
//! `eventID`, the same however the event is serialised (key order, whitespace, URN or Digital Link,
//! bare CBV words or their URIs, time zone of `eventTime`).
//!
//! This follows the reference generator (RalphTro/epcis-event-hash-generator 1.9.3) step by step,
//! including its quirks, because an id is only useful if other systems compute the same one:
//! the document becomes a tree of `(key, value, children)` nodes (children sorted, except inside
//! `bizTransaction`/`source`/`destination` objects, which keep their key order); JSON lists are
//! renamed to the XML model (`epcList` holds `epc`, quantity lists hold `quantityElement`); the
//! pre-hash string concatenates the fields in the canonical property order, each value canonised
//! (CBV URNs to web vocabulary, numbers without trailing zeros, GS1 keys to Digital Links, times to
//! UTC milliseconds), then every remaining field, sorted. Bare CBV words (`shipping`) become their
//! vocabulary URIs as JSON-LD expansion would make them, without fetching any context.
//!
//! One deliberate difference: in `bizTransactionList`, `sourceList` and `destinationList` entries
//! `type` is taken first whatever the key order, where the reference hashes the order as written
//! (so reordering keys there would change its hash). On documents that write `type` first, as all
//! of GS1's do, the two agree.

use super::gs1;
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};

/// JSON with the key order of the document, which the hash needs in three places.
#[derive(Debug, Clone, PartialEq)]
pub enum Ordered {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Ordered>),
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    pub fn get(&self, key: &str) -> Option<&Ordered> {
        match self {
            Ordered::Object(m) => m.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Ordered::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_none<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Ordered, E> {
                Ok(serde_json::Number::from_f64(n).map_or(Ordered::Null, Ordered::Number))
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Ordered, E> {
                Ok(Ordered::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Ordered::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut v: Vec<(String, Ordered)> = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Ordered>()? {
                    // A repeated key keeps its first place and its last value, as Python's dict.
                    match v.iter_mut().find(|(key, _)| *key == k) {
                        Some(slot) => slot.1 = x,
                        None => v.push((k, x)),
                    }
                }
                Ok(Ordered::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// What the hash needs from the whole document: the namespaces its `@context` declares and the
/// CBV/GS1 vocabulary URIs that JSON-LD expansion would find in it.
#[derive(Debug, Clone, Default)]
pub struct HashContext {
    namespaces: HashMap<String, String>,
    expanded: BTreeSet<String>,
}

const CBV: &str = "https://ref.gs1.org/cbv/";
const VOC: &str = "https://gs1.org/voc/";

include!("vocab.rs");

impl HashContext {
    /// From a document (or a single event with its own `@context`).
    pub fn of_document(doc: &Ordered) -> HashContext {
        let mut ctx = HashContext::default();
        if let Some(Ordered::Array(list)) = doc.get("@context") {
            for c in list {
                match c {
                    Ordered::String(s) => {
                        ctx.namespaces.insert(s.clone(), format!("{{{s}}}"));
                    }
                    Ordered::Object(m) => {
                        for (k, v) in m {
                            if let Ordered::String(v) = v {
                                ctx.namespaces.insert(k.clone(), format!("{{{v}}}"));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        collect_expanded(doc, None, &mut ctx.expanded);
        ctx
    }

    fn namespace_key(&self, key: &str) -> String {
        match key.split_once(':') {
            Some((p, rest)) if self.namespaces.contains_key(p) => {
                format!("{}{rest}", self.namespaces[p])
            }
            _ => key.to_owned(),
        }
    }

    fn namespace_value(&self, v: &str) -> String {
        match v.split_once(':') {
            Some((p, rest)) if self.namespaces.contains_key(p) => {
                format!("{}{rest}", self.namespaces[p].replace(['{', '}'], ""))
            }
            _ => v.to_owned(),
        }
    }

    /// A bare string replaced by the one expanded vocabulary URI that ends with `-value` or
    /// `/value`, if exactly one does.
    fn bare(&self, v: &str) -> String {
        let dash = format!("-{v}");
        let slash = format!("/{v}");
        let mut m = self
            .expanded
            .iter()
            .filter(|x| x.ends_with(&dash) || x.ends_with(&slash));
        match (m.next(), m.next()) {
            (Some(one), None) => one.clone(),
            _ => v.to_owned(),
        }
    }
}

/// The vocabulary a field's bare words expand to, by its key and the key of the object holding it.
fn vocabulary(key: &str, parent: Option<&str>) -> Option<(&'static [&'static str], String)> {
    match (key, parent) {
        ("bizStep", _) => Some((BIZ_STEPS, format!("{CBV}BizStep-"))),
        ("disposition", _) | ("set" | "unset", Some("persistentDisposition")) => {
            Some((DISPOSITIONS, format!("{CBV}Disp-")))
        }
        ("type", Some("sourceList" | "destinationList")) => Some((SDT, format!("{CBV}SDT-"))),
        ("type", Some("bizTransactionList")) => Some((BTT, format!("{CBV}BTT-"))),
        ("type", Some("sensorReport")) => Some((MEASUREMENTS, VOC.to_owned())),
        ("exception", Some("sensorReport")) => Some((EXCEPTIONS, VOC.to_owned())),
        ("component", Some("sensorReport")) => Some((COMPONENTS, format!("{CBV}Comp-"))),
        ("reason", Some("errorDeclaration")) => Some((ERROR_REASONS, format!("{CBV}ER-"))),
        _ => None,
    }
}

fn collect_expanded(v: &Ordered, field: Option<(&str, Option<&str>)>, out: &mut BTreeSet<String>) {
    match v {
        Ordered::String(s) => {
            let vocab = field.and_then(|(k, p)| vocabulary(k, p));
            let full = if let Some(rest) = s.strip_prefix("cbv:") {
                format!("{CBV}{rest}")
            } else if let Some(rest) = s.strip_prefix("gs1:") {
                format!("{VOC}{rest}")
            } else if let Some((terms, prefix)) = &vocab
                && terms.contains(&s.as_str())
            {
                format!("{prefix}{s}")
            } else {
                s.clone()
            };
            if full.starts_with("https://ref.gs1.org/cbv")
                || full.starts_with("https://gs1.org/voc")
            {
                out.insert(full);
            }
        }
        Ordered::Array(a) => {
            for x in a {
                collect_expanded(x, field, out);
            }
        }
        Ordered::Object(m) => {
            let parent = field.map(|(k, _)| k);
            for (k, x) in m {
                if k == "@context" {
                    continue;
                }
                collect_expanded(x, Some((k, parent)), out);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Node {
    key: String,
    value: String,
    children: Vec<Node>,
    /// A `(type, bizTransaction|source|destination)` pair of the three lists that keep key order.
    pair: bool,
}

impl Node {
    fn new(key: impl Into<String>, value: impl Into<String>, children: Vec<Node>) -> Node {
        Node {
            key: key.into(),
            value: value.into(),
            children,
            pair: false,
        }
    }
}

const UNSORTED: [&str; 3] = ["bizTransaction", "source", "destination"];
const PAIR_LISTS: [&str; 3] = ["sourceList", "destinationList", "bizTransactionList"];

/// Python's `str()` of a float (shortest round trip, exponent outside 1e-4..1e16).
fn py_float(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let e = format!("{x:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') { s } else { format!("{s}.0") }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    }
}

fn scalar(v: &Ordered, ctx: &HashContext) -> String {
    match v {
        Ordered::Null => "None".to_owned(),
        Ordered::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
        Ordered::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => py_float(f),
            _ => n.to_string(),
        },
        Ordered::String(s) => ctx.namespace_value(&ctx.bare(s)),
        _ => String::new(),
    }
}

fn to_node(v: &Ordered, ctx: &HashContext) -> Node {
    match v {
        Ordered::Array(a) => {
            let mut n = Node::new("", "", a.iter().map(|x| to_node(x, ctx)).collect());
            let keeps = a
                .iter()
                .any(|x| x.as_str().is_some_and(|s| UNSORTED.contains(&s)));
            if !keeps {
                n.children.sort();
            }
            n
        }
        Ordered::Object(m) => {
            let key = match v.get("type") {
                Some(t @ Ordered::String(_)) => scalar(t, ctx),
                Some(other) => scalar(other, ctx),
                None => String::new(),
            };
            let value = v.get("#text").map(|t| scalar(t, ctx)).unwrap_or_default();
            let mut children = Vec::new();
            for (k, x) in m {
                if ["#text", "rdfs:comment", "comment"].contains(&k.as_str())
                    || k.starts_with("@xmlns")
                {
                    continue;
                }
                let child = to_node(x, ctx);
                let key = ctx.namespace_key(k);
                if matches!(x, Ordered::Array(_)) {
                    for el in child.children {
                        children.push(Node::new(key.clone(), el.value, el.children));
                    }
                } else {
                    children.push(Node::new(key, child.value, child.children));
                }
            }
            if !m.iter().any(|(k, _)| UNSORTED.contains(&k.as_str())) {
                children.sort();
            } else {
                // The reference keeps these objects' key order, so its hash changes when a sender
                // writes `bizTransaction` before `type`. `type` first is what GS1's examples
                // write (and equals the reference on them); any other order hashes the same.
                children.sort_by_key(|c| c.key != "type");
            }
            Node::new(key, value, children)
        }
        other => Node::new("", scalar(other, ctx), Vec::new()),
    }
}

/// The JSON data model made the XML one, as the reference does.
fn correct(node: Node) -> Option<Node> {
    let mut rest = Vec::new();
    let mut lists: Vec<(String, Vec<Node>)> = Vec::new();
    for e in node.children {
        if !e.pair && e.key.ends_with("List") {
            let short = e.key[..e.key.len() - 4].to_owned();
            let renamed = Node::new(short, e.value, e.children);
            match lists.iter_mut().find(|(n, _)| *n == e.key) {
                Some((_, v)) => v.push(renamed),
                None => lists.push((e.key, vec![renamed])),
            }
        } else {
            rest.push(e);
        }
    }
    for (name, elems) in lists {
        if PAIR_LISTS.contains(&name.as_str()) {
            let mut pairs = Vec::new();
            for e in elems {
                let mut it = e.children.into_iter();
                let (a, b) = (it.next()?, it.next()?);
                pairs.push(Node {
                    key: String::new(),
                    value: String::new(),
                    children: vec![a, b],
                    pair: true,
                });
            }
            rest.push(Node::new(name, "", pairs));
        } else {
            rest.push(Node::new(name, "", elems));
        }
    }
    let (epcs, mut rest): (Vec<Node>, Vec<Node>) = rest
        .into_iter()
        .partition(|e| !e.pair && e.key == "childEPCs");
    if !epcs.is_empty() {
        rest.push(Node::new(
            "childEPCs",
            "",
            epcs.into_iter()
                .map(|e| Node::new("epc", e.value, Vec::new()))
                .collect(),
        ));
    }
    let mut children = Vec::with_capacity(rest.len());
    for e in rest {
        if PAIR_LISTS.contains(&e.key.as_str()) || e.pair {
            children.push(e);
        } else {
            children.push(correct(e)?);
        }
    }
    let key = match node.key.as_str() {
        "inputEPC" | "outputEPC" => "epc".to_owned(),
        "inputQuantity" | "outputQuantity" | "childQuantity" => "quantityElement".to_owned(),
        "quantity" if !children.is_empty() => "quantityElement".to_owned(),
        _ => node.key,
    };
    Some(Node {
        key,
        value: node.value,
        children,
        pair: node.pair,
    })
}

/// The canonical property order; `None` marks the pair lists' entry, which matches nothing.
enum Order {
    Leaf(&'static str),
    Sub(&'static str, &'static [Order]),
    Never,
}

const QUANTITY: &[Order] = &[Order::Sub(
    "quantityElement",
    &[
        Order::Leaf("epcClass"),
        Order::Leaf("quantity"),
        Order::Leaf("uom"),
    ],
)];
const EPC: &[Order] = &[Order::Leaf("epc")];

const PROP_ORDER: &[Order] = &[
    Order::Leaf("eventTime"),
    Order::Leaf("eventTimeZoneOffset"),
    Order::Leaf("certificationInfo"),
    Order::Leaf("parentID"),
    Order::Sub("epcList", EPC),
    Order::Sub("inputEPCList", EPC),
    Order::Sub("childEPCs", EPC),
    Order::Sub("quantityList", QUANTITY),
    Order::Sub("childQuantityList", QUANTITY),
    Order::Sub("inputQuantityList", QUANTITY),
    Order::Sub("outputEPCList", EPC),
    Order::Sub("outputQuantityList", QUANTITY),
    Order::Leaf("action"),
    Order::Leaf("transformationID"),
    Order::Leaf("bizStep"),
    Order::Leaf("disposition"),
    Order::Sub(
        "persistentDisposition",
        &[Order::Leaf("set"), Order::Leaf("unset")],
    ),
    Order::Sub("readPoint", &[Order::Leaf("id")]),
    Order::Sub("bizLocation", &[Order::Leaf("id")]),
    Order::Sub("bizTransactionList", &[Order::Never]),
    Order::Sub("sourceList", &[Order::Never]),
    Order::Sub("destinationList", &[Order::Never]),
    Order::Sub(
        "sensorElementList",
        &[Order::Sub(
            "sensorElement",
            &[
                Order::Sub(
                    "sensorMetadata",
                    &[
                        Order::Leaf("time"),
                        Order::Leaf("startTime"),
                        Order::Leaf("endTime"),
                        Order::Leaf("deviceID"),
                        Order::Leaf("deviceMetadata"),
                        Order::Leaf("rawData"),
                        Order::Leaf("dataProcessingMethod"),
                        Order::Leaf("bizRules"),
                    ],
                ),
                Order::Sub(
                    "sensorReport",
                    &[
                        Order::Leaf("type"),
                        Order::Leaf("exception"),
                        Order::Leaf("deviceID"),
                        Order::Leaf("deviceMetadata"),
                        Order::Leaf("rawData"),
                        Order::Leaf("dataProcessingMethod"),
                        Order::Leaf("time"),
                        Order::Leaf("microorganism"),
                        Order::Leaf("chemicalSubstance"),
                        Order::Leaf("value"),
                        Order::Leaf("component"),
                        Order::Leaf("stringValue"),
                        Order::Leaf("booleanValue"),
                        Order::Leaf("hexBinaryValue"),
                        Order::Leaf("uriValue"),
                        Order::Leaf("minValue"),
                        Order::Leaf("maxValue"),
                        Order::Leaf("meanValue"),
                        Order::Leaf("sDev"),
                        Order::Leaf("percRank"),
                        Order::Leaf("percValue"),
                        Order::Leaf("uom"),
                        Order::Leaf("coordinateReferenceSystem"),
                    ],
                ),
            ],
        )],
    ),
];

/// Python's `float()` then `int` when whole: `10.50` -> `10.5`, `12.0` -> `12`, `007` -> `7`.
fn numeric(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    if lower.contains("inf") || lower.contains("nan") {
        return text.to_owned();
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => {
            if x.fract() == 0.0 {
                let s = format!("{x:.0}");
                if s == "-0" { "0".to_owned() } else { s }
            } else {
                py_float(x)
            }
        }
        _ => text.to_owned(),
    }
}

fn canonize(text: &str) -> String {
    let t = text
        .replace(
            "urn:epcglobal:cbv:bizstep:",
            "https://ref.gs1.org/cbv/BizStep-",
        )
        .replace("urn:epcglobal:cbv:disp:", "https://ref.gs1.org/cbv/Disp-")
        .replace("urn:epcglobal:cbv:btt:", "https://ref.gs1.org/cbv/BTT-")
        .replace("urn:epcglobal:cbv:sdt:", "https://ref.gs1.org/cbv/SDT-")
        .replace("urn:epcglobal:cbv:er:", "https://ref.gs1.org/cbv/ER-");
    let t = numeric(&t);
    gs1::canonical_dl(&t).unwrap_or(t)
}

/// A timestamp in UTC at millisecond precision (`2019-10-21T10:00:30.000Z`), rounding half to
/// even as the reference does; anything that is not a timestamp is left as it is.
fn fix_time(text: &str) -> String {
    use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc())
        });
    let Ok(t) = parsed else {
        return text.to_owned();
    };
    let micros = t.nanosecond() / 1000;
    let (mut ms, rem) = (micros / 1000, micros % 1000);
    if rem > 500 || (rem == 500 && ms % 2 == 1) {
        ms += 1;
    }
    let base = t.with_nanosecond(0).unwrap_or(t);
    let t = base + chrono::Duration::milliseconds(i64::from(ms));
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn gather_extensions(list: &mut Vec<Node>) -> Vec<Node> {
    if list.len() <= 1
        || list
            .iter()
            .any(|c| !c.pair && (c.key.contains("eventTime") || c.key.contains("action")))
    {
        return Vec::new();
    }
    let (ext, keep): (Vec<Node>, Vec<Node>) = std::mem::take(list)
        .into_iter()
        .partition(|c| !c.pair && c.key.contains('{') && c.key.contains("/}"));
    *list = keep;
    ext
}

fn child_prehash(child: &mut Node, sub: Option<&'static [Order]>) -> String {
    let grand = match sub {
        Some(s) => in_order(&mut child.children, s),
        None => String::new(),
    };
    let mut text = String::new();
    if !child.value.is_empty() {
        let v = child.value.trim();
        let lk = child.key.to_lowercase();
        text = if lk.contains("time") && !lk.contains("offset") {
            fix_time(v)
        } else {
            canonize(v)
        };
        if !text.is_empty() {
            text.insert(0, '=');
        }
    }
    if text.is_empty() && grand.is_empty() {
        return String::new();
    }
    format!("{}{text}{grand}", child.key)
}

fn in_order(list: &mut Vec<Node>, order: &'static [Order]) -> String {
    let ext = gather_extensions(list);
    let mut pre = String::new();
    for o in order {
        let (name, sub) = match o {
            Order::Leaf(n) => (*n, None),
            Order::Sub(n, s) => (*n, Some(*s)),
            Order::Never => continue,
        };
        let mut values = Vec::new();
        let mut i = 0;
        while i < list.len() {
            if list[i].pair || list[i].key != name {
                i += 1;
                continue;
            }
            let s = child_prehash(&mut list[i], sub);
            if !s.is_empty() {
                values.push(s);
            }
            if list[i].children.is_empty() {
                list.remove(i);
            } else {
                i += 1;
            }
        }
        values.sort();
        pre.push_str(&values.concat());
    }
    if !ext.is_empty() {
        pre.push_str(&generic(&ext));
    }
    pre
}

fn generic(children: &[Node]) -> String {
    let mut values: Vec<String> = children
        .iter()
        .map(|c| {
            if c.pair {
                return generic(&c.children);
            }
            let v = c.value.trim();
            let text = if v.is_empty() {
                String::new()
            } else {
                format!("={}", canonize(v))
            };
            format!("{}{text}{}", c.key, generic(&c.children))
        })
        .collect();
    let sort = !children
        .iter()
        .any(|c| !c.pair && UNSORTED.contains(&c.key.as_str()));
    if children.len() > 1 && sort {
        values.sort();
    }
    values.concat()
}

/// The canonical pre-hash string of one event, or `None` where the reference fails on it too (a
/// `bizTransactionList` entry without its two fields).
pub fn prehash(event: &Ordered, ctx: &HashContext) -> Option<String> {
    let node = correct(to_node(event, ctx))?;
    let mut children = node.children;
    let ordered = in_order(&mut children, PROP_ORDER);
    let rest: Vec<Node> = children
        .into_iter()
        .filter(|c| {
            c.pair
                || !["recordTime", "eventID", "type", "errorDeclaration"].contains(&c.key.as_str())
        })
        .collect();
    let rest = if rest.is_empty() {
        String::new()
    } else {
        generic(&rest)
    };
    Some(format!("eventType={}{ordered}{rest}", node.key))
}

/// `ni:///sha-256;<hex>?ver=CBV2.0` of one event.
pub fn event_hash(event: &Ordered, ctx: &HashContext) -> Option<String> {
    let pre = prehash(event, ctx)?;
    Some(format!(
        "ni:///sha-256;{}?ver=CBV2.0",
        hex::encode(Sha256::digest(pre.as_bytes()))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_number_forms() {
        assert_eq!(numeric("10.50"), "10.5");
        assert_eq!(numeric("12.0"), "12");
        assert_eq!(numeric("007"), "7");
        assert_eq!(numeric("1e-05"), "1e-05");
        assert_eq!(numeric("abc"), "abc");
        assert_eq!(py_float(0.00001), "1e-05");
        assert_eq!(py_float(1.5), "1.5");
    }

    #[test]
    fn times_to_utc_millis() {
        assert_eq!(
            fix_time("2019-10-21T11:00:30.000+01:00"),
            "2019-10-21T10:00:30.000Z"
        );
        assert_eq!(
            fix_time("2020-01-01T00:00:00.0005Z"),
            "2020-01-01T00:00:00.000Z"
        );
        assert_eq!(
            fix_time("2020-01-01T00:00:00.0015Z"),
            "2020-01-01T00:00:00.002Z"
        );
        assert_eq!(fix_time("soon"), "soon");
    }
}
