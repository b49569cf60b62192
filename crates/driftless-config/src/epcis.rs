//! `[[epcis.rules]]`: overrides of the EPCIS capture's mapping table (`docs/epcis.md`), tried in
//! file order before the built-in rows. A rule matches an ObjectEvent's or AggregationEvent's
//! `action`, `biz_step` and `disposition` (each omitted = any; CBV words in any spelling) and says
//! what one unit of quantity does: `adjust` (states to signs, `-1` or `1`), `set` (a state the
//! quantity counts) or `ignore = true`.

use crate::error::Locator;
use driftless_core::State;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawEpcis {
    #[serde(default)]
    pub rules: Vec<Spanned<RawEpcisRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEpcisRule {
    pub action: Option<Spanned<String>>,
    pub biz_step: Option<String>,
    pub disposition: Option<String>,
    pub adjust: Option<BTreeMap<String, Spanned<i64>>>,
    pub set: Option<Spanned<String>>,
    pub ignore: Option<bool>,
}

/// What a matching rule does to one unit of quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpcisEffect {
    Adjust(Vec<(State, i64)>),
    Set(State),
    Ignore,
}

/// One validated override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpcisRule {
    pub action: Option<String>,
    pub biz_step: Option<String>,
    pub disposition: Option<String>,
    pub effect: EpcisEffect,
}

pub(crate) fn validate(loc: &mut Locator<'_>, raw: Option<&RawEpcis>) -> Vec<EpcisRule> {
    let mut out = Vec::new();
    for r in raw.map(|r| r.rules.as_slice()).unwrap_or_default() {
        let span = r.span();
        let r = r.get_ref();
        if let Some(a) = &r.action
            && !["ADD", "OBSERVE", "DELETE"].contains(&a.get_ref().as_str())
        {
            loc.err(
                a.span(),
                format!(
                    "action must be ADD, OBSERVE or DELETE (got `{}`)",
                    a.get_ref()
                ),
                None,
            );
            continue;
        }
        let effect = match (&r.adjust, &r.set, r.ignore.unwrap_or(false)) {
            (Some(m), None, false) if !m.is_empty() => {
                let mut pairs = Vec::new();
                for (k, v) in m {
                    match (k.parse::<State>(), *v.get_ref()) {
                        (Ok(s), sign @ (-1 | 1)) => pairs.push((s, sign)),
                        (Err(e), _) => loc.err(v.span(), format!("adjust.{k}: {e}"), None),
                        (_, n) => loc.err(
                            v.span(),
                            format!("adjust.{k} must be -1 or 1 (the sign per unit), got {n}"),
                            None,
                        ),
                    }
                }
                EpcisEffect::Adjust(pairs)
            }
            (None, Some(s), false) => match s.get_ref().parse::<State>() {
                Ok(st) => EpcisEffect::Set(st),
                Err(e) => {
                    loc.err(s.span(), format!("set: {e}"), None);
                    continue;
                }
            },
            (None, None, true) => EpcisEffect::Ignore,
            _ => {
                loc.err(
                    span,
                    "an [[epcis.rules]] entry needs exactly one of `adjust = { on_hand = -1 }`, `set = \"on_hand\"` or `ignore = true`",
                    None,
                );
                continue;
            }
        };
        out.push(EpcisRule {
            action: r.action.as_ref().map(|a| a.get_ref().clone()),
            biz_step: r.biz_step.clone(),
            disposition: r.disposition.clone(),
            effect,
        });
    }
    out
}
