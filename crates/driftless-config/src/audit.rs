//! The `[audit]` section: the chain of systems the auditor walks, thresholds (with per-sku-glob
//! velocity classes), who counts as an integration in change logs, how each system's snapshot file
//! is read (format, column names, reported column, unit), and the self-audit schedule.

use crate::error::Locator;
use crate::{Role, parse_duration};
use driftless_core::{Glob, SystemId, Unit};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub chain: Option<Vec<Spanned<String>>>,
    pub threshold_units: Option<Spanned<i64>>,
    pub threshold_pct: Option<Spanned<f64>>,
    pub integration_actors: Option<Vec<String>>,
    pub schedule: Option<Spanned<String>>,
    #[serde(default)]
    pub classes: Vec<RawClass>,
    #[serde(default)]
    pub snapshots: BTreeMap<Spanned<String>, RawSnapshot>,
}

/// `[[audit.classes]]`: thresholds for the skus a pattern matches (first match wins).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClass {
    pub name: Option<String>,
    pub sku: Spanned<String>,
    pub threshold_units: Option<Spanned<i64>>,
    pub threshold_pct: Option<Spanned<f64>>,
}

/// `[audit.snapshots.<system>]`: how one system's snapshot file is read.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshot {
    pub format: Option<Spanned<String>>,
    pub reports: Option<Spanned<String>>,
    pub unit: Option<Spanned<String>>,
    #[serde(default)]
    pub columns: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub units: Vec<RawSnapshotUnit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSnapshotUnit {
    pub sku: Spanned<String>,
    pub unit: Spanned<String>,
}

/// Thresholds for one velocity class. A delta is drift when `|delta| > units` **and**
/// `|delta| > pct` percent of the expected value.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub units: i64,
    pub pct: f64,
}

/// A named velocity class: the skus `sku` matches use `threshold`.
#[derive(Debug, Clone)]
pub struct ClassSettings {
    pub name: String,
    pub sku: Glob,
    pub threshold: Threshold,
}

/// File format of a snapshot or change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Csv,
    /// One JSON object per line, with the same keys as the CSV columns.
    JsonLines,
}

/// The columns a snapshot may carry, by their canonical names.
pub const SNAPSHOT_COLUMNS: [&str; 9] = [
    "sku",
    "location",
    "on_hand",
    "committed",
    "reserved",
    "unavailable",
    "available",
    "quantity",
    "unit",
];

/// What a snapshot's reported column means, and so what it is compared with.
pub const REPORTED: [&str; 6] = [
    "on_hand",
    "committed",
    "reserved",
    "unavailable",
    "available",
    "quantity",
];

/// How one system's snapshot is read.
#[derive(Debug, Clone, Default)]
pub struct SnapshotSettings {
    /// `None`: decided by the file's extension (`.jsonl`/`.ndjson` are JSON lines, the rest CSV).
    pub format: Option<FileFormat>,
    /// The reported column (one of [`REPORTED`]); `None`: `quantity` for storefronts and
    /// marketplaces, `on_hand` for the others.
    pub reports: Option<String>,
    /// Canonical column name -> the name in this system's file.
    pub columns: HashMap<String, String>,
    /// Unit of every quantity unless a row says otherwise (default: base unit).
    pub unit: Option<Unit>,
    /// Per-sku-glob units (first match wins), before `unit`.
    pub units: Vec<(Glob, Unit)>,
}

/// The validated `[audit]` section.
#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    /// Systems in hand-off order, upstream first (`wms`, `erp`, `shop`).
    pub chain: Vec<SystemId>,
    pub threshold_units: i64,
    pub threshold_pct: f64,
    /// Velocity classes, first matching sku pattern wins; the thresholds above apply otherwise.
    pub classes: Vec<ClassSettings>,
    /// Change-log actors that are machines (integrations); any other actor is a person.
    pub integration_actors: Vec<String>,
    /// How often a running hub audits itself (`"weekly"`, `"daily"`, `"every 6h"`).
    pub schedule: Option<String>,
    /// `schedule` as an interval.
    pub every: Option<Duration>,
    /// Per-system snapshot formats; a system not listed uses the defaults.
    pub snapshots: HashMap<SystemId, SnapshotSettings>,
}

impl AuditSettings {
    /// The thresholds that apply to `sku`.
    pub fn threshold_for(&self, sku: &str) -> Threshold {
        self.classes
            .iter()
            .find(|c| c.sku.matches(sku))
            .map(|c| c.threshold.clone())
            .unwrap_or(Threshold {
                units: self.threshold_units,
                pct: self.threshold_pct,
            })
    }

    /// Whether a change-log actor is an integration (a machine) rather than a person.
    pub fn is_integration(&self, actor: &str) -> bool {
        self.integration_actors.iter().any(|a| a == actor)
    }
}

fn units_value(loc: &mut Locator<'_>, v: &Option<Spanned<i64>>, default: i64) -> i64 {
    match v {
        Some(v) if *v.get_ref() < 0 => {
            loc.err(v.span(), "threshold_units must be 0 or more", None);
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    }
}

fn pct_value(loc: &mut Locator<'_>, v: &Option<Spanned<f64>>, default: f64) -> f64 {
    match v {
        Some(v) if !(0.0..=1000.0).contains(v.get_ref()) => {
            loc.err(
                v.span(),
                "threshold_pct must be between 0 and 1000 (percent)",
                None,
            );
            default
        }
        Some(v) => *v.get_ref(),
        None => default,
    }
}

/// `"hourly"`, `"daily"`, `"weekly"` or a duration (`"every 6h"`).
pub(crate) fn schedule_every(s: &str) -> Option<Duration> {
    match s.trim() {
        "hourly" => Some(Duration::from_secs(3_600)),
        "daily" => Some(Duration::from_secs(86_400)),
        "weekly" => Some(Duration::from_secs(604_800)),
        other => parse_duration(other).filter(|d| !d.is_zero()),
    }
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
    let mut chain: Vec<SystemId> = Vec::new();
    for c in raw.chain.iter().flatten() {
        match SystemId::parse(c.get_ref().clone()) {
            Ok(id) if chain.contains(&id) => loc.err(
                c.span(),
                format!("audit chain names `{id}` twice"),
                Some("each system appears once, upstream first".into()),
            ),
            Ok(id) if systems.contains_key(&id) => chain.push(id),
            Ok(id) => loc.err(
                c.span(),
                format!("audit chain names unknown system `{id}`"),
                Some("declare it under [[systems]]".into()),
            ),
            Err(e) => loc.err(c.span(), format!("system id {e}"), None),
        }
    }
    let threshold_units = units_value(loc, &raw.threshold_units, 2);
    let threshold_pct = pct_value(loc, &raw.threshold_pct, 1.0);

    let mut classes = Vec::new();
    for (i, c) in raw.classes.iter().enumerate() {
        let sku = match Glob::new(c.sku.get_ref().clone()) {
            Ok(g) => g,
            Err(e) => {
                loc.err(c.sku.span(), format!("sku pattern {e}"), None);
                continue;
            }
        };
        classes.push(ClassSettings {
            name: c.name.clone().unwrap_or_else(|| format!("class {}", i + 1)),
            sku,
            threshold: Threshold {
                units: units_value(loc, &c.threshold_units, threshold_units),
                pct: pct_value(loc, &c.threshold_pct, threshold_pct),
            },
        });
    }

    let (schedule, every) = match &raw.schedule {
        None => (None, None),
        Some(s) => match schedule_every(s.get_ref()) {
            Some(d) => (Some(s.get_ref().clone()), Some(d)),
            None => {
                loc.err(
                    s.span(),
                    format!("audit schedule {:?} is not a schedule", s.get_ref()),
                    Some("\"hourly\", \"daily\", \"weekly\" or \"every 6h\"".into()),
                );
                (None, None)
            }
        },
    };

    let mut snapshots = HashMap::new();
    for (name, s) in &raw.snapshots {
        let id = match SystemId::parse(name.get_ref().clone()) {
            Ok(id) if systems.contains_key(&id) => id,
            Ok(id) => {
                loc.err(
                    name.span(),
                    format!("[audit.snapshots.{id}] names unknown system `{id}`"),
                    Some("declare it under [[systems]]".into()),
                );
                continue;
            }
            Err(e) => {
                loc.err(name.span(), format!("system id {e}"), None);
                continue;
            }
        };
        snapshots.insert(id, snapshot(loc, s));
    }

    AuditSettings {
        chain,
        threshold_units,
        threshold_pct,
        classes,
        integration_actors: raw.integration_actors.clone().unwrap_or_default(),
        schedule,
        every,
        snapshots,
    }
}

fn unit(loc: &mut Locator<'_>, v: &Spanned<String>) -> Option<Unit> {
    match Unit::parse(v.get_ref().clone()) {
        Ok(u) => Some(u),
        Err(e) => {
            loc.err(v.span(), format!("unit {e}"), None);
            None
        }
    }
}

fn snapshot(loc: &mut Locator<'_>, s: &RawSnapshot) -> SnapshotSettings {
    let format = s.format.as_ref().and_then(|f| match f.get_ref().as_str() {
        "csv" => Some(FileFormat::Csv),
        "jsonl" | "ndjson" => Some(FileFormat::JsonLines),
        other => {
            loc.err(
                f.span(),
                format!("snapshot format must be \"csv\" or \"jsonl\", not {other:?}"),
                None,
            );
            None
        }
    });
    let reports = s.reports.as_ref().and_then(|r| {
        if REPORTED.contains(&r.get_ref().as_str()) {
            Some(r.get_ref().clone())
        } else {
            loc.err(
                r.span(),
                format!("unknown reported column {:?}", r.get_ref()),
                Some(format!("one of {}", REPORTED.join(", "))),
            );
            None
        }
    });
    let mut columns = HashMap::new();
    for (k, v) in &s.columns {
        if !SNAPSHOT_COLUMNS.contains(&k.get_ref().as_str()) {
            loc.err(
                k.span(),
                format!("unknown snapshot column {:?}", k.get_ref()),
                Some(format!("one of {}", SNAPSHOT_COLUMNS.join(", "))),
            );
            continue;
        }
        if v.get_ref().is_empty() || v.get_ref().len() > 256 {
            loc.err(v.span(), "a column name must be 1 to 256 bytes", None);
            continue;
        }
        columns.insert(k.get_ref().clone(), v.get_ref().clone());
    }
    let mut units = Vec::new();
    for u in &s.units {
        let g = match Glob::new(u.sku.get_ref().clone()) {
            Ok(g) => Some(g),
            Err(e) => {
                loc.err(u.sku.span(), format!("sku pattern {e}"), None);
                None
            }
        };
        if let (Some(g), Some(unit)) = (g, unit(loc, &u.unit)) {
            units.push((g, unit));
        }
    }
    SnapshotSettings {
        format,
        reports,
        columns,
        unit: s.unit.as_ref().and_then(|u| unit(loc, u)),
        units,
    }
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    const BASE: &str = "[[systems]]\nid = \"wms\"\nrole = \"wms\"\n[[systems]]\nid = \"shop\"\nrole = \"storefront\"\n";

    #[test]
    fn classes_snapshots_and_schedule() {
        let text = format!(
            "{BASE}[audit]\nchain = [\"wms\", \"shop\"]\nschedule = \"weekly\"\n\
             [[audit.classes]]\nname = \"fast\"\nsku = \"HOT-*\"\nthreshold_units = 0\nthreshold_pct = 0.5\n\
             [audit.snapshots.wms]\nreports = \"on_hand\"\nunit = \"EA\"\ncolumns = {{ sku = \"Item\", on_hand = \"Qty\" }}\n\
             [[audit.snapshots.wms.units]]\nsku = \"TEE-*\"\nunit = \"CS\"\n"
        );
        let s = Settings::parse("f.toml", &text).unwrap();
        let a = &s.audit;
        assert_eq!(a.every, Some(std::time::Duration::from_secs(604_800)));
        assert_eq!(a.threshold_for("HOT-1").units, 0);
        assert_eq!(a.threshold_for("HOT-1").pct, 0.5);
        assert_eq!(a.threshold_for("TEE-1").units, 2);
        let w = &a.snapshots[&driftless_core::SystemId::parse("wms").unwrap()];
        assert_eq!(w.columns["sku"], "Item");
        assert_eq!(w.units.len(), 1);
    }

    #[test]
    fn audit_errors_are_located() {
        let text = format!("{BASE}[audit]\nschedule = \"sometimes\"\n");
        let e = Settings::parse("f.toml", &text).unwrap_err();
        assert_eq!(e.0[0].line, 8, "{e}");

        let text = format!("{BASE}[audit.snapshots.ghost]\nreports = \"on_hand\"\n");
        let e = Settings::parse("f.toml", &text).unwrap_err();
        assert!(e.0[0].message.contains("ghost"), "{e}");
        assert_eq!(e.0[0].line, 7, "{e}");

        let text = format!("{BASE}[audit.snapshots.wms]\nreports = \"onhand\"\n");
        let e = Settings::parse("f.toml", &text).unwrap_err();
        assert_eq!((e.0[0].line, e.0[0].column), (8, 11), "{e}");

        let text = format!("{BASE}[audit.snapshots.wms]\ncolumns = {{ qty = \"x\" }}\n");
        let e = Settings::parse("f.toml", &text).unwrap_err();
        assert!(e.0[0].message.contains("qty"), "{e}");

        let text = format!("{BASE}[audit]\nchain = [\"wms\", \"wms\"]\n");
        assert!(Settings::parse("f.toml", &text).is_err());

        let text = format!("{BASE}[audit.snapshots.wms]\nrepors = \"on_hand\"\n");
        let e = Settings::parse("f.toml", &text).unwrap_err();
        assert_eq!(e.0[0].line, 8, "{e}");
    }
}
