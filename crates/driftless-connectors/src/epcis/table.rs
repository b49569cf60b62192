//! What an EPCIS event does to stock: its type, `action`, `bizStep` and `disposition` to the states
//! it moves and their signs. Every row is in `docs/epcis.md`; the row ids (`R1`...) appear in the
//! answer so an operator can see which row decided.
//!
//! EPCIS dispositions are states, not transitions, and one shipment is often reported by several
//! steps (`staging_outbound`, `loading`, `departing`, `shipping`). So stock moves at one step per
//! direction (`receiving` in, `shipping` out), counts set, and every other step changes nothing;
//! a disposition of the unsellable kind (`damaged`, `expired`, ...) also moves `unavailable`.

use driftless_config::{EpcisEffect, EpcisRule};
use driftless_core::State;

/// The EPCIS event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Aggregation,
    Transformation,
    Transaction,
    Association,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "ObjectEvent" => Kind::Object,
            "AggregationEvent" => Kind::Aggregation,
            "TransformationEvent" => Kind::Transformation,
            "TransactionEvent" => Kind::Transaction,
            "AssociationEvent" => Kind::Association,
            _ => return None,
        })
    }
}

/// Which quantity list of a transformation a quantity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Input,
    Output,
}

/// What one quantity does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Each state moves by `sign * quantity`.
    Adjust(Vec<(State, i64)>),
    /// The state is set to the quantity (a count).
    Set(State),
    /// Stock does not change; the reason says why.
    None,
}

/// The row that decided, with its effect and a sentence for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: String,
    pub effect: Effect,
    pub reason: String,
}

/// Dispositions under which stock is on hand but cannot be sold.
pub const UNAVAILABLE: [&str; 7] = [
    "damaged",
    "expired",
    "recalled",
    "non_sellable_other",
    "non_conformant",
    "needs_replacement",
    "unavailable",
];

/// Dispositions under which the goods are gone from the location.
pub const GONE: [&str; 5] = [
    "destroyed",
    "disposed",
    "stolen",
    "retail_sold",
    "dispensed",
];

/// Steps that bring stock in.
pub const INBOUND: [&str; 1] = ["receiving"];
/// Steps that take stock out (`void_shipping` undoes a shipment).
pub const OUTBOUND: [&str; 3] = ["shipping", "retail_selling", "dispensing"];
/// Steps that count.
pub const COUNTING: [&str; 2] = ["cycle_counting", "stock_taking"];

/// The bare CBV word of a `bizStep` or `disposition` in any of its spellings: `shipping`,
/// `urn:epcglobal:cbv:bizstep:shipping`, `https://ref.gs1.org/cbv/BizStep-shipping`,
/// `cbv:BizStep-shipping`. A value of someone else's vocabulary is kept whole (it matches no row).
pub fn bare_word(v: &str) -> &str {
    for marker in [
        "BizStep-",
        "Disp-",
        "urn:epcglobal:cbv:bizstep:",
        "urn:epcglobal:cbv:disp:",
    ] {
        if let Some(i) = v.rfind(marker)
            && (v.starts_with("https://ref.gs1.org/cbv/")
                || v.starts_with("cbv:")
                || v.starts_with("urn:epcglobal:cbv:"))
        {
            return &v[i + marker.len()..];
        }
    }
    v
}

fn adjust(pairs: &[(State, i64)]) -> Effect {
    Effect::Adjust(pairs.to_vec())
}

/// The first configured override (`[[epcis.rules]]`) that matches, as row `O<n>`.
fn overridden(
    overrides: &[EpcisRule],
    action: Option<&str>,
    step: &str,
    disp: &str,
) -> Option<Row> {
    let (i, r) = overrides.iter().enumerate().find(|(_, r)| {
        r.action.as_deref().is_none_or(|a| Some(a) == action)
            && r.biz_step.as_deref().is_none_or(|b| bare_word(b) == step)
            && r.disposition
                .as_deref()
                .is_none_or(|d| bare_word(d) == disp)
    })?;
    let what = format!(
        "configured [[epcis.rules]] #{} ({} {}{})",
        i + 1,
        action.unwrap_or("no action"),
        if step.is_empty() {
            "without bizStep"
        } else {
            step
        },
        if disp.is_empty() {
            String::new()
        } else {
            format!(", {disp}")
        }
    );
    let (effect, reason) = match &r.effect {
        EpcisEffect::Adjust(p) => (Effect::Adjust(p.clone()), format!("{what}: adjusts")),
        EpcisEffect::Set(s) => (Effect::Set(*s), format!("{what}: sets {}", s.as_str())),
        EpcisEffect::Ignore => (Effect::None, format!("{what}: does not change stock")),
    };
    Some(Row {
        id: format!("O{}", i + 1),
        effect,
        reason,
    })
}

/// The row for one quantity of an event; `overrides` are tried first (ObjectEvent and
/// AggregationEvent only).
pub fn decide(
    overrides: &[EpcisRule],
    kind: Kind,
    side: Option<Side>,
    action: Option<&str>,
    biz_step: Option<&str>,
    disposition: Option<&str>,
) -> Row {
    let step = biz_step.map(bare_word).unwrap_or("");
    let disp = disposition.map(bare_word).unwrap_or("");
    let unsellable = UNAVAILABLE.contains(&disp);
    let row = |id: &str, effect: Effect, reason: String| Row {
        id: id.to_owned(),
        effect,
        reason,
    };
    // In and out carry `unavailable` along when the goods are unsellable.
    let inward = |id, why: String| {
        if unsellable {
            row(
                id,
                adjust(&[(State::OnHand, 1), (State::Unavailable, 1)]),
                format!("{why}, {disp}: on_hand and unavailable up"),
            )
        } else {
            row(
                id,
                adjust(&[(State::OnHand, 1)]),
                format!("{why}: on_hand up"),
            )
        }
    };
    let outward = |id, why: String| {
        if unsellable {
            row(
                id,
                adjust(&[(State::OnHand, -1), (State::Unavailable, -1)]),
                format!("{why}, {disp}: on_hand and unavailable down"),
            )
        } else {
            row(
                id,
                adjust(&[(State::OnHand, -1)]),
                format!("{why}: on_hand down"),
            )
        }
    };
    match kind {
        Kind::Transaction => {
            return row(
                "R0",
                Effect::None,
                "a TransactionEvent links goods to a business transaction; the ObjectEvent of the same move changes stock".into(),
            );
        }
        Kind::Association => {
            return row(
                "R0",
                Effect::None,
                "an AssociationEvent links assets to a parent; it does not move stock".into(),
            );
        }
        Kind::Transformation => {
            return match side {
                Some(Side::Input) => row(
                    "R10",
                    adjust(&[(State::OnHand, -1)]),
                    "transformation input consumed: on_hand down".into(),
                ),
                _ => row(
                    "R11",
                    adjust(&[(State::OnHand, 1)]),
                    "transformation output produced: on_hand up".into(),
                ),
            };
        }
        Kind::Object | Kind::Aggregation => {
            if let Some(r) = overridden(overrides, action, step, disp) {
                return r;
            }
        }
    }
    match kind {
        Kind::Aggregation if action != Some("OBSERVE") => {
            return row(
                "R9",
                Effect::None,
                format!(
                    "an AggregationEvent {} packs or unpacks goods in place; stock does not change",
                    action.unwrap_or("without action")
                ),
            );
        }
        _ => {}
    }
    match action.unwrap_or("") {
        "ADD" => inward("R1", "ADD (goods come into being or are added here)".into()),
        "DELETE" => outward("R2", "DELETE (goods cease to exist or leave)".into()),
        "OBSERVE" if COUNTING.contains(&step) => {
            let state = if unsellable {
                State::Unavailable
            } else {
                State::OnHand
            };
            row(
                "R3",
                Effect::Set(state),
                format!("OBSERVE {step}: the count sets {}", state.as_str()),
            )
        }
        "OBSERVE" if INBOUND.contains(&step) => inward("R4", format!("OBSERVE {step}")),
        "OBSERVE" if OUTBOUND.contains(&step) => outward("R5", format!("OBSERVE {step}")),
        "OBSERVE" if step == "void_shipping" => {
            inward("R6", "OBSERVE void_shipping (a shipment undone)".into())
        }
        "OBSERVE" if GONE.contains(&disp) => row(
            "R7",
            adjust(&[(State::OnHand, -1)]),
            format!("OBSERVE with disposition {disp}: on_hand down"),
        ),
        "OBSERVE" if unsellable => row(
            "R8",
            adjust(&[(State::Unavailable, 1)]),
            format!("OBSERVE with disposition {disp}: unavailable up"),
        ),
        a => row(
            "R12",
            Effect::None,
            format!(
                "{} {}{}: a step that does not change stock (stock moves at receiving, shipping, counts, ADD and DELETE)",
                if a.is_empty() { "no action" } else { a },
                if step.is_empty() {
                    "without bizStep"
                } else {
                    step
                },
                if disp.is_empty() {
                    String::new()
                } else {
                    format!(" ({disp})")
                }
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_word() {
        for s in [
            "shipping",
            "urn:epcglobal:cbv:bizstep:shipping",
            "https://ref.gs1.org/cbv/BizStep-shipping",
            "cbv:BizStep-shipping",
        ] {
            assert_eq!(bare_word(s), "shipping");
        }
        assert_eq!(
            bare_word("http://example.com/vocab/BizStep-shipping"),
            "http://example.com/vocab/BizStep-shipping"
        );
    }

    #[test]
    fn every_row() {
        use Effect::{Adjust, Set};
        use State::*;
        let d = |k, side, a, s, disp| decide(&[], k, side, a, s, disp);
        let o = Kind::Object;
        let case = |r: Row| (&*r.id.leak(), r.effect);
        assert_eq!(
            case(d(o, None, Some("ADD"), Some("commissioning"), None)),
            ("R1", Adjust(vec![(OnHand, 1)]))
        );
        assert_eq!(
            case(d(o, None, Some("ADD"), Some("receiving"), Some("damaged"))),
            ("R1", Adjust(vec![(OnHand, 1), (Unavailable, 1)]))
        );
        assert_eq!(
            case(d(o, None, Some("DELETE"), Some("destroying"), None)),
            ("R2", Adjust(vec![(OnHand, -1)]))
        );
        assert_eq!(
            case(d(o, None, Some("OBSERVE"), Some("cycle_counting"), None)),
            ("R3", Set(OnHand))
        );
        assert_eq!(
            case(d(
                o,
                None,
                Some("OBSERVE"),
                Some("cycle_counting"),
                Some("expired")
            )),
            ("R3", Set(Unavailable))
        );
        assert_eq!(
            case(d(o, None, Some("OBSERVE"), Some("receiving"), None)),
            ("R4", Adjust(vec![(OnHand, 1)]))
        );
        assert_eq!(
            case(d(
                o,
                None,
                Some("OBSERVE"),
                Some("shipping"),
                Some("in_transit")
            )),
            ("R5", Adjust(vec![(OnHand, -1)]))
        );
        assert_eq!(
            case(d(o, None, Some("OBSERVE"), Some("void_shipping"), None)),
            ("R6", Adjust(vec![(OnHand, 1)]))
        );
        assert_eq!(
            case(d(
                o,
                None,
                Some("OBSERVE"),
                Some("inspecting"),
                Some("stolen")
            )),
            ("R7", Adjust(vec![(OnHand, -1)]))
        );
        assert_eq!(
            case(d(
                o,
                None,
                Some("OBSERVE"),
                Some("inspecting"),
                Some("damaged")
            )),
            ("R8", Adjust(vec![(Unavailable, 1)]))
        );
        assert_eq!(
            case(d(
                Kind::Aggregation,
                None,
                Some("ADD"),
                Some("packing"),
                None
            )),
            ("R9", Effect::None)
        );
        assert_eq!(
            case(d(
                Kind::Aggregation,
                None,
                Some("OBSERVE"),
                Some("shipping"),
                None
            )),
            ("R5", Adjust(vec![(OnHand, -1)]))
        );
        assert_eq!(
            case(d(Kind::Transformation, Some(Side::Input), None, None, None)),
            ("R10", Adjust(vec![(OnHand, -1)]))
        );
        assert_eq!(
            case(d(
                Kind::Transformation,
                Some(Side::Output),
                None,
                None,
                None
            )),
            ("R11", Adjust(vec![(OnHand, 1)]))
        );
        assert_eq!(
            case(d(o, None, Some("OBSERVE"), Some("departing"), None)),
            ("R12", Effect::None)
        );
        assert_eq!(
            case(d(
                Kind::Transaction,
                None,
                Some("ADD"),
                Some("shipping"),
                None
            )),
            ("R0", Effect::None)
        );
        assert_eq!(
            case(d(Kind::Association, None, Some("ADD"), None, None)),
            ("R0", Effect::None)
        );
    }
}
