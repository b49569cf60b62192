//! The `[audit]` section: the chain of systems the auditor walks, thresholds, and how each system's
//! snapshot files are read.

use crate::{Locator, Role};
use driftless_core::SystemId;
use serde::Deserialize;
use std::collections::HashMap;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub chain: Option<Vec<Spanned<String>>>,
    pub threshold_units: Option<Spanned<i64>>,
    pub threshold_pct: Option<Spanned<f64>>,
    pub integration_actors: Option<Vec<String>>,
    pub schedule: Option<String>,
}

/// The validated `[audit]` section.
#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    /// Systems in hand-off order, upstream first (`wms`, `erp`, `shop`).
    pub chain: Vec<SystemId>,
    pub threshold_units: i64,
    pub threshold_pct: f64,
    /// Change-log actors that are machines (integrations); any other actor is a person.
    pub integration_actors: Vec<String>,
    pub schedule: Option<String>,
}

pub(crate) fn validate(
    loc: &mut Locator<'_>,
    raw: Option<&RawAudit>,
    systems: &HashMap<SystemId, Role>,
) -> AuditSettings {
    let Some(raw) = raw else {
        return AuditSettings {
            threshold_units: 2,
            threshold_pct: 1.0,
            ..AuditSettings::default()
        };
    };
    let mut chain = Vec::new();
    for c in raw.chain.iter().flatten() {
        match SystemId::parse(c.get_ref().clone()) {
            Ok(id) if systems.contains_key(&id) => chain.push(id),
            Ok(id) => loc.err(
                c.span(),
                format!("audit chain names unknown system `{id}`"),
                Some("declare it under [[systems]]".into()),
            ),
            Err(e) => loc.err(c.span(), format!("system id {e}"), None),
        }
    }
    let threshold_units = match &raw.threshold_units {
        Some(v) if *v.get_ref() < 0 => {
            loc.err(v.span(), "threshold_units must be 0 or more", None);
            0
        }
        Some(v) => *v.get_ref(),
        None => 2,
    };
    let threshold_pct = match &raw.threshold_pct {
        Some(v) if !(0.0..=1000.0).contains(v.get_ref()) => {
            loc.err(
                v.span(),
                "threshold_pct must be between 0 and 1000 (percent)",
                None,
            );
            0.0
        }
        Some(v) => *v.get_ref(),
        None => 1.0,
    };
    AuditSettings {
        chain,
        threshold_units,
        threshold_pct,
        integration_actors: raw.integration_actors.clone().unwrap_or_default(),
        schedule: raw.schedule.clone(),
    }
}
