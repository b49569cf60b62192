//! The EPCIS transform against documents written by others: GS1's examples, the openepcis test
//! resources and the reference event-hash generator's test vectors, read where they lie
//! (`../shared/fixtures`, next to the repository), plus this project's own fixtures
//! (`tests/fixtures/epcis/`) for every row of the mapping table and for invalid input.

use driftless_connectors::epcis::hash::{self, HashContext, Ordered};
use std::path::{Path, PathBuf};

/// `../shared/fixtures` beside the repository root (in a worktree further up, the nearest
/// ancestor that has one).
fn shared(rel: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.ancestors()
        .map(|a| a.join("../shared/fixtures"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no ../shared/fixtures above {}", root.display()))
        .join(rel)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn event_list(doc: &Ordered) -> Vec<&Ordered> {
    let body = doc.get("epcisBody").expect("epcisBody");
    let body = body
        .get("queryResults")
        .and_then(|q| q.get("resultsBody"))
        .unwrap_or(body);
    match (body.get("eventList"), body.get("event")) {
        (Some(Ordered::Array(a)), _) => a.iter().collect(),
        (_, Some(e)) => vec![e],
        _ => vec![],
    }
}

#[test]
fn event_hashes_equal_the_reference_generators() {
    let mut failed = Vec::new();
    let mut checked = 0;
    for dir in [
        "epcis-gs1/hash-vectors",
        "epcis-gs1/hash-vectors-post-1.9.3",
    ] {
        for f in files(&shared(dir), "jsonld") {
            let expected_file = f.with_extension("hashes");
            let Ok(expected) = std::fs::read_to_string(&expected_file) else {
                continue;
            };
            // `repository-x:ignoreFields` is one repository's extension, not the standard's.
            if f.to_string_lossy().contains("IgnoreFields") {
                continue;
            }
            let doc: Ordered = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
            let ctx = HashContext::of_document(&doc);
            let got: Vec<String> = event_list(&doc)
                .into_iter()
                .map(|e| hash::event_hash(e, &ctx).unwrap_or_default())
                .collect();
            let want: Vec<&str> = expected.lines().filter(|l| l.starts_with("ni:")).collect();
            checked += 1;
            if got != want {
                let pre: Vec<String> = event_list(&doc)
                    .into_iter()
                    .map(|e| hash::prehash(e, &ctx).unwrap_or_default())
                    .collect();
                failed.push(format!(
                    "{}:\n  got  {got:?}\n  want {want:?}\n  prehash {pre:#?}",
                    f.display()
                ));
            }
        }
    }
    assert!(checked >= 20, "only {checked} vector documents found");
    assert!(
        failed.is_empty(),
        "{} of {checked} differ:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

use driftless_connectors::epcis::{self, Mapping, Verdict};
use driftless_core::units::UnitRule;
use driftless_core::{Change, Glob, Location, Sku, State, SystemId, Unit, UnitTable};
use serde_json::Value;

fn own(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/epcis")
            .join(name),
    )
    .unwrap()
}

fn units(list: &[(&str, u32)]) -> UnitTable {
    UnitTable::new(
        list.iter()
            .map(|(u, f)| UnitRule {
                sku: Glob::new("*").unwrap(),
                unit: Unit::parse(*u).unwrap(),
                factor: *f,
            })
            .collect(),
    )
}

/// The configuration of this project's own fixtures: one item, one location, cases of 12.
fn tee() -> (Mapping, UnitTable) {
    let mut m = Mapping::default();
    m.add_item("04012345123456", Sku::parse("TEE-1").unwrap())
        .unwrap();
    m.add_location(
        "urn:epc:id:sgln:4012345.00001.0",
        Location::parse("DC1").unwrap(),
    );
    (m, units(&[("CS", 12)]))
}

fn wms() -> SystemId {
    SystemId::parse("wms").unwrap()
}

fn run(body: &[u8], m: &Mapping, u: &UnitTable) -> epcis::Capture {
    epcis::capture(body, &wms(), m, u, 10_000).unwrap()
}

#[test]
fn every_row_of_the_table_on_its_own_fixture() {
    let (m, u) = tee();
    let c = run(&own("rows.jsonld"), &m, &u);
    let want: Vec<String> = serde_json::from_slice(&own("rows.expected.json")).unwrap();
    assert_eq!(c.events.len(), want.len());
    for (got, rule) in c.events.iter().zip(&want) {
        assert_eq!(
            got.rule.as_deref().unwrap_or("none"),
            rule.as_str(),
            "event {}: {:?}",
            got.index,
            got.verdict
        );
    }
    let q = |i: usize| match &c.events[i].verdict {
        Verdict::Events(e) => e
            .iter()
            .map(|e| (e.id.to_string(), e.change))
            .collect::<Vec<_>>(),
        other => panic!("event {i}: {other:?}"),
    };
    let adj = |pairs: &[(State, i64)]| {
        let mut m = driftless_core::StateMap::new();
        for (s, v) in pairs {
            m.insert(*s, *v);
        }
        Change::Adjust(m)
    };
    let set = |s: State, v: i64| {
        let mut m = driftless_core::StateMap::new();
        m.insert(s, v);
        Change::Set(m)
    };
    assert_eq!(
        q(0),
        vec![(
            "urn:uuid:00000000-0000-4000-8000-000000000001#04012345123456".into(),
            adj(&[(State::OnHand, 5)])
        )]
    );
    assert_eq!(
        q(1)[0].1,
        adj(&[(State::OnHand, 5), (State::Unavailable, 5)])
    );
    assert_eq!(q(2)[0].1, adj(&[(State::OnHand, -5)]));
    assert_eq!(q(3)[0].1, set(State::OnHand, 40));
    assert_eq!(q(4)[0].1, set(State::Unavailable, 2));
    assert_eq!(q(5)[0].1, adj(&[(State::OnHand, 12)]), "1 CS is 12 EA");
    assert_eq!(q(6)[0].1, adj(&[(State::OnHand, -5)]));
    assert_eq!(q(7)[0].1, adj(&[(State::OnHand, 5)]));
    assert_eq!(q(8)[0].1, adj(&[(State::OnHand, -5)]));
    assert_eq!(q(9)[0].1, adj(&[(State::Unavailable, 5)]));
    assert!(matches!(c.events[10].verdict, Verdict::Ignored(_)));
    assert_eq!(q(11)[0].1, adj(&[(State::OnHand, -5)]));
    let t = q(12);
    assert_eq!(t.len(), 2, "input and output of one GTIN are two events");
    assert!(t[0].0.ends_with("#in:04012345123456") && t[1].0.ends_with("#out:04012345123456"));
    assert_eq!(
        (t[0].1, t[1].1),
        (adj(&[(State::OnHand, -24)]), adj(&[(State::OnHand, 24)]))
    );
    assert!(matches!(c.events[13].verdict, Verdict::Ignored(_)));
    assert!(matches!(c.events[14].verdict, Verdict::Ignored(_)));
    // The position is eventTime with its offset.
    match &c.events[0].verdict {
        Verdict::Events(e) => {
            assert_eq!(e[0].position.occurred_at_rfc3339(), "2026-11-27T09:01:00Z")
        }
        _ => unreachable!(),
    }
}

#[test]
fn invalid_input_is_refused_or_answered_per_event() {
    let (m, u) = tee();
    let e =
        epcis::capture(&own("invalid-quantity-as-text.jsonld"), &wms(), &m, &u, 100).unwrap_err();
    assert_eq!(
        e.to_string(),
        "epcisBody.eventList[0].quantityList[0].quantity: must be a number, not a string"
    );
    // Without uom a quantity counts items: whole is applied in EA, a fraction is refused.
    let c = run(&own("missing-uom.jsonld"), &m, &u);
    assert!(
        matches!(&c.events[0].verdict, Verdict::Events(e) if e.len() == 1 && e[0].change.quantities().get(State::OnHand) == Some(5))
    );
    assert!(
        matches!(&c.events[1].verdict, Verdict::Rejected(r) if r.contains("not a whole number")),
        "{:?}",
        c.events[1].verdict
    );
    let c = run(&own("unknown-class.jsonld"), &m, &u);
    assert!(
        matches!(&c.events[0].verdict, Verdict::Rejected(r) if r.contains("GTIN 04012345999990 is not under any [[items]] gtin")),
        "{:?}",
        c.events[0].verdict
    );
    let c = run(&own("unknown-location.jsonld"), &m, &u);
    assert!(
        matches!(&c.events[0].verdict, Verdict::Rejected(r) if r.contains("is not under any [[locations]] sgln")),
        "{:?}",
        c.events[0].verdict
    );
    // 1.5 CS is 18 EA; 0.1 CS is not a whole number of EA.
    let c = run(&own("fractional-cases.jsonld"), &m, &u);
    assert!(
        matches!(&c.events[0].verdict, Verdict::Events(e) if e[0].change.quantities().get(State::OnHand) == Some(18)),
        "{:?}",
        c.events[0].verdict
    );
    assert!(
        matches!(&c.events[1].verdict, Verdict::Rejected(r) if r.contains("not a whole number"))
    );
    assert!(epcis::capture(b"{", &wms(), &m, &u, 10).is_err());
    assert!(epcis::capture(b"[]", &wms(), &m, &u, 10).is_err());
    assert!(epcis::capture(br#"{"type":"EPCISDocument"}"#, &wms(), &m, &u, 10).is_err());
}

/// Rewrites a document: keys in reverse order, other whitespace, no eventID.
fn reserialised(doc: &Value) -> Vec<u8> {
    fn rev(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                out.push_str("{ ");
                let keys: Vec<_> = m.keys().rev().filter(|k| *k != "eventID").collect();
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push_str(" ,\n\t");
                    }
                    out.push_str(&Value::from(k.as_str()).to_string());
                    out.push_str(" :  ");
                    rev(&m[*k], out);
                }
                out.push_str(" }");
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\r\n");
                    }
                    rev(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    rev(doc, &mut s);
    s.into_bytes()
}

#[test]
fn a_reserialised_event_without_event_id_keeps_its_id() {
    let (m, u) = tee();
    let doc: Value = serde_json::from_slice(&own("rows.jsonld")).unwrap();
    let mut plain = doc.clone();
    for e in plain["epcisBody"]["eventList"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("eventID");
    }
    let a = run(plain.to_string().as_bytes(), &m, &u);
    let b = run(&reserialised(&doc), &m, &u);
    for (x, y) in a.events.iter().zip(&b.events) {
        assert!(x.key.starts_with("ni:///sha-256;"), "{}", x.key);
        assert_eq!(x.key, y.key);
        assert_eq!(x.verdict, y.verdict);
    }
}

#[test]
fn an_error_declaration_retracts_with_a_compensating_event() {
    let (m, u) = tee();
    let doc: Value = serde_json::from_slice(&own("rows.jsonld")).unwrap();
    let original = doc["epcisBody"]["eventList"][5].clone();
    let mut declared = original.clone();
    declared["errorDeclaration"] = serde_json::json!({
        "declarationTime": "2026-11-28T10:00:00.000+01:00", "reason": "incorrect_data"
    });
    let body = |e: &Value| {
        serde_json::json!({"type": "EPCISDocument", "epcisBody": {"eventList": [e]}}).to_string()
    };
    let a = run(body(&original).as_bytes(), &m, &u);
    let r = run(body(&declared).as_bytes(), &m, &u);
    let (Verdict::Events(a), Verdict::Events(r)) = (&a.events[0].verdict, &r.events[0].verdict)
    else {
        panic!("{a:?} {r:?}");
    };
    assert!(r[0].id.as_str().ends_with("#retracted"));
    assert_eq!(r[0].position, a[0].position);
    assert_eq!(r[0].change.quantities().get(State::OnHand), Some(-12));
    // Without eventID the declaration hashes like the event it declares.
    let strip = |e: &Value| {
        let mut e = e.clone();
        e.as_object_mut().unwrap().remove("eventID");
        e
    };
    let a2 = run(body(&strip(&original)).as_bytes(), &m, &u);
    let r2 = run(body(&strip(&declared)).as_bytes(), &m, &u);
    assert_eq!(a2.events[0].key, r2.events[0].key);
    assert!(r2.events[0].retraction);
}

/// Every quantity element's GTIN, every location, every unit of a document.
fn identifiers(
    v: &Value,
    gtins: &mut Vec<String>,
    places: &mut Vec<String>,
    uoms: &mut Vec<String>,
) {
    match v {
        Value::Object(o) => {
            if let (Some(Value::String(c)), true) = (o.get("epcClass"), o.contains_key("quantity"))
            {
                if let Ok(g) = epcis::gs1::gtin_of(c) {
                    gtins.push(g);
                }
                if let Some(Value::String(u)) = o.get("uom") {
                    uoms.push(u.clone());
                }
            }
            for k in ["bizLocation", "readPoint"] {
                if let Some(id) = o.get(k).and_then(|l| l.get("id")).and_then(Value::as_str) {
                    places.push(id.to_owned());
                }
            }
            for x in o.values() {
                identifiers(x, gtins, places, uoms);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| identifiers(x, gtins, places, uoms)),
        _ => {}
    }
}

#[test]
fn every_published_document_maps_once_its_identifiers_are_configured() {
    let mut docs = files(&shared("epcis/openepcis-test-resources"), "json");
    docs.extend(files(&shared("epcis-gs1/examples"), "jsonld"));
    assert!(docs.len() >= 50, "{} documents", docs.len());
    let mut mapped = 0;
    for f in &docs {
        let body = std::fs::read(f).unwrap();
        let doc: Value = serde_json::from_slice(&body).unwrap();
        let (mut gtins, mut places, mut uoms) = (vec![], vec![], vec![]);
        identifiers(&doc, &mut gtins, &mut places, &mut uoms);
        let mut m = Mapping::default();
        m.default_location = Some(Location::parse("SITE").unwrap());
        for (i, g) in gtins.iter().enumerate() {
            m.add_item(g, Sku::parse(format!("SKU-{i}")).unwrap())
                .unwrap();
        }
        for (i, p) in places.iter().enumerate() {
            m.add_location(p, Location::parse(format!("LOC-{i}")).unwrap());
        }
        // Measures in thousandths of their unit (grams of KGM...), so decimals are whole.
        let u: Vec<(&str, u32)> = uoms.iter().map(|u| (u.as_str(), 1000)).collect();
        let c = epcis::capture(&body, &wms(), &m, &units(&u), 10_000)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for e in &c.events {
            if let Verdict::Rejected(r) = &e.verdict {
                panic!("{} event {} ({}): {r}", f.display(), e.index, e.event_type);
            }
            if let Verdict::Events(list) = &e.verdict {
                mapped += list.len();
            }
        }
    }
    assert!(mapped >= 20, "only {mapped} canonical events");
}

#[test]
fn configured_identifiers_that_cannot_match_are_named() {
    let s = driftless_config::Settings::parse(
        "t.toml",
        "[[systems]]\nid = \"wms\"\nrole = \"wms\"\n\n[[items]]\nsku = \"A\"\ngtin = \"04012345000017\"\n\n\
         [[items]]\nsku = \"B\"\ngtin = \"4012345000016\"\n\n[[locations]]\nid = \"DC1\"\nsgln = \"dock one\"\n",
    )
    .unwrap();
    let m = Mapping::from_settings(&s);
    assert_eq!(m.problems.len(), 2, "{:?}", m.problems);
    assert!(m.problems[0].contains("`A`: gtin GTIN `04012345000017` has a wrong check digit"));
    assert!(m.problems[1].contains("sgln `dock one`"));
}

#[test]
fn configured_rules_come_before_the_table() {
    let text = r#"
[[systems]]
id = "wms"
role = "wms"

[[items]]
sku = "TEE-1"
gtin = "04012345123456"

[[locations]]
id = "DC1"
sgln = "https://id.gs1.org/414/4012345000016"

[[epcis.rules]]                 # this site reports shipments only as departing
biz_step = "departing"
action = "OBSERVE"
adjust = { on_hand = -1 }

[[epcis.rules]]
biz_step = "receiving"
disposition = "damaged"
ignore = true

[[epcis.rules]]
biz_step = "urn:epcglobal:cbv:bizstep:inspecting"
set = "unavailable"
"#;
    let s = driftless_config::Settings::parse("t.toml", text).unwrap();
    let m = Mapping::from_settings(&s);
    let c = run(&own("rows.jsonld"), &m, &UnitTable::default());
    let rule = |i: usize| c.events[i].rule.clone().unwrap_or_default();
    assert_eq!(rule(13), "O1");
    assert!(
        matches!(&c.events[13].verdict, Verdict::Events(e) if e[0].change.quantities().get(State::OnHand) == Some(-5))
    );
    // No action in the rule: any action.
    assert_eq!(rule(1), "O2");
    assert!(
        matches!(&c.events[1].verdict, Verdict::Ignored(r) if r.contains("[[epcis.rules]] #2"))
    );
    assert_eq!(
        rule(5),
        "R4",
        "receiving without damage still follows the table"
    );
    assert_eq!(rule(9), "O3");
    assert!(matches!(&c.events[9].verdict, Verdict::Events(e) if e[0].change.is_set()));

    let bad = driftless_config::Settings::parse(
        "t.toml",
        "[[epcis.rules]]\nbiz_step = \"x\"\nadjust = { on_hand = 2 }\n\n[[epcis.rules]]\nset = \"on_hand\"\nignore = true\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("t.toml:3:22: adjust.on_hand must be -1 or 1"),
        "{bad}"
    );
    assert!(
        bad.contains("t.toml:5:1: an [[epcis.rules]] entry needs exactly one of"),
        "{bad}"
    );
}
