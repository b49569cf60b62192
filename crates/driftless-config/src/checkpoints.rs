//! `[checkpoints]`: the consistency rules judged at ingest and the bounds on observations
//! (DESIGN §7a). Every rule defaults to `warn`: an operator learns what the rules would refuse
//! before choosing `reject`.

use crate::error::Locator;
use driftless_core::checkpoint::{Checkpoints, Mode};
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCheckpoints {
    pub negative_stock: Option<Spanned<String>>,
    pub overcommitted: Option<Spanned<String>>,
    pub jump: Option<Spanned<String>>,
    pub cross_source_cover: Option<Spanned<String>>,
    pub max_jump: Option<Spanned<i64>>,
    pub cover_window: Option<Spanned<String>>,
    pub max_observations_per_second: Option<Spanned<i64>>,
}

/// The validated `[checkpoints]`: the core's rules plus the observation bounds the server keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointSettings {
    pub rules: Checkpoints,
    /// Observations one system may report per second (a token bucket of one second's worth),
    /// beyond which `POST /v1/observations` answers 429: observations are cheap but not free, and
    /// one chatty system must not slow the ledger's writer for the others.
    pub max_observations_per_second: u32,
}

pub const DEFAULT_MAX_OBSERVATIONS_PER_SECOND: u32 = 10_000;

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            rules: Checkpoints::warn_all(),
            max_observations_per_second: DEFAULT_MAX_OBSERVATIONS_PER_SECOND,
        }
    }
}

pub(crate) fn validate(loc: &mut Locator<'_>, raw: Option<&RawCheckpoints>) -> CheckpointSettings {
    let mut out = CheckpointSettings::default();
    let Some(raw) = raw else {
        return out;
    };
    let mode = |loc: &mut Locator<'_>, name: &str, v: &Option<Spanned<String>>, slot: &mut Mode| {
        if let Some(v) = v {
            match Mode::parse(v.get_ref()) {
                Some(m) => *slot = m,
                None => loc.err(
                    v.span(),
                    format!("{name} {:?} is not a rule mode", v.get_ref()),
                    Some(format!(
                        "{name} = \"warn\" (applied, incident), \"reject\" (refused) or \"off\""
                    )),
                ),
            }
        }
    };
    mode(
        loc,
        "negative_stock",
        &raw.negative_stock,
        &mut out.rules.negative_stock,
    );
    mode(
        loc,
        "overcommitted",
        &raw.overcommitted,
        &mut out.rules.overcommitted,
    );
    mode(loc, "jump", &raw.jump, &mut out.rules.jump);
    mode(
        loc,
        "cross_source_cover",
        &raw.cross_source_cover,
        &mut out.rules.cross_source_cover,
    );
    if let Some(v) = &raw.max_jump {
        let n = *v.get_ref();
        if (1..=driftless_core::MAX_QUANTITY).contains(&n) {
            out.rules.max_jump = Some(n);
        } else {
            loc.err(
                v.span(),
                format!("max_jump {n} is out of range"),
                Some(format!(
                    "a whole number of base units, 1..={}",
                    driftless_core::MAX_QUANTITY
                )),
            );
        }
    } else if let Some(j) = &raw.jump
        && Mode::parse(j.get_ref()).is_some_and(|m| m != Mode::Off)
    {
        loc.warn(
            j.span(),
            "jump is set but max_jump is not: no event is judged a jump".into(),
            Some("add max_jump = <units> under [checkpoints]".into()),
        );
    }
    if let Some(v) = &raw.cover_window {
        match crate::parse_duration(v.get_ref()).and_then(|d| i64::try_from(d.as_nanos()).ok()) {
            Some(n) => out.rules.cover_window_nanos = n,
            None => loc.err(
                v.span(),
                format!("cover_window {:?} is not a duration", v.get_ref()),
                Some("e.g. \"15m\", \"1h\" (the default)".into()),
            ),
        }
    }
    if let Some(v) = &raw.max_observations_per_second {
        match u32::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => out.max_observations_per_second = n,
            _ => loc.err(
                v.span(),
                format!(
                    "max_observations_per_second {} is out of range",
                    v.get_ref()
                ),
                Some("a whole number, 1..=4294967295".into()),
            ),
        }
    }
    out
}
