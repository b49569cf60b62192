//! Which column holds what: a file's header mapped to the audit's canonical columns, and the
//! conversion of quantities to base units; shared by the CSV and JSON-lines readers.

use super::{FileInfo, FileSpec, Kind, ON_HAND, REPORTED, SLOTS};
use crate::InputError;
use driftless_config::audit::SnapshotSettings;
use driftless_core::{Glob, Sku, Unit, UnitTable};

/// Canonical column -> index in the file's header.
#[derive(Debug, Default)]
pub(super) struct Columns {
    pub(super) sku: usize,
    pub(super) location: Option<usize>,
    pub(super) slot: [Option<usize>; SLOTS],
    pub(super) unit: Option<usize>,
    /// The baseline's velocity class column (`class` or `velocity`).
    pub(super) class: Option<usize>,
    pub(super) at: usize,
    pub(super) source_at: Option<usize>,
    pub(super) actor: usize,
    pub(super) quantity: usize,
    /// A change log's `committed` column: the system's committed quantity after the change.
    pub(super) committed: Option<usize>,
    pub(super) width: usize,
}

fn find(header: &[String], settings: &SnapshotSettings, canonical: &str) -> Option<usize> {
    let want = settings
        .columns
        .get(canonical)
        .map_or(canonical, String::as_str);
    header
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case(want.trim()))
}

fn missing(spec: &FileSpec, header: &[String], canonical: &str) -> InputError {
    let want = spec
        .settings
        .columns
        .get(canonical)
        .map_or(canonical, String::as_str);
    InputError {
        file: spec.name.clone(),
        line: 1,
        column: 1,
        message: format!(
            "missing column `{want}` (the header has: {})",
            header.join(", ")
        ),
    }
}

/// Resolves the header; `Err` when a required column is missing.
pub(super) fn columns(
    spec: &FileSpec,
    header: &[String],
    info: &mut FileInfo,
) -> Result<Columns, InputError> {
    let s = &spec.settings;
    let need = |c: &str| find(header, s, c).ok_or_else(|| missing(spec, header, c));
    let mut cols = Columns {
        sku: need("sku")?,
        location: find(header, s, "location"),
        unit: find(header, s, "unit"),
        width: header.len(),
        ..Columns::default()
    };
    info.has_location = cols.location.is_some();
    match spec.kind {
        Kind::Baseline => {
            if cols.location.is_none() {
                return Err(missing(spec, header, "location"));
            }
            let q = find(header, s, "quantity")
                .or_else(|| find(header, s, "on_hand"))
                .ok_or_else(|| missing(spec, header, "quantity"))?;
            cols.slot[ON_HAND] = Some(q);
            cols.slot[REPORTED] = Some(q);
            cols.class = find(header, s, "class").or_else(|| find(header, s, "velocity"));
            info.reports = Some("quantity");
        }
        Kind::Snapshot(_) => {
            for (i, name) in [
                "on_hand",
                "committed",
                "reserved",
                "unavailable",
                "available",
            ]
            .iter()
            .enumerate()
            {
                cols.slot[i] = find(header, s, name);
            }
            let quantity = find(header, s, "quantity");
            let reports: &'static str = match (spec.reports, spec.channel_like) {
                (Some(r), _) => r,
                (None, true) => ["quantity", "available", "on_hand"]
                    .into_iter()
                    .find(|c| find(header, s, c).is_some())
                    .unwrap_or("quantity"),
                (None, false) => ["on_hand", "quantity", "available"]
                    .into_iter()
                    .find(|c| find(header, s, c).is_some())
                    .unwrap_or("on_hand"),
            };
            let r = find(header, s, reports).ok_or_else(|| missing(spec, header, reports))?;
            cols.slot[REPORTED] = Some(r);
            // A stock system's `quantity` is its on-hand when it has no on_hand column.
            if !spec.channel_like && cols.slot[ON_HAND].is_none() && quantity.is_some() {
                cols.slot[ON_HAND] = quantity;
            }
            info.reports = Some(reports);
        }
        Kind::Changes(_) => {
            cols.at = need("at")?;
            cols.quantity = need("quantity")?;
            cols.actor = need("actor")?;
            cols.source_at = find(header, s, "source_at");
            cols.committed = find(header, s, "committed");
        }
    }
    info.mask = cols
        .slot
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_some())
        .fold(0u8, |m, (i, _)| m | (1 << i));
    Ok(cols)
}

/// Converts `qty` in the row's (or the system's) unit to base units.
pub(super) struct Units<'a> {
    pub(super) table: &'a UnitTable,
    pub(super) default: Option<&'a Unit>,
    pub(super) by_sku: &'a [(Glob, Unit)],
}

impl Units<'_> {
    pub(super) fn to_base(
        &self,
        sku: &[u8],
        row_unit: Option<&[u8]>,
        qty: i64,
    ) -> Result<i64, String> {
        let row_unit = row_unit.filter(|u| !u.is_empty());
        if row_unit.is_none() && self.by_sku.is_empty() && self.default.is_none() {
            return Ok(qty);
        }
        // Validated identifiers are UTF-8.
        let sku = std::str::from_utf8(sku).unwrap_or_default();
        let unit = match row_unit {
            Some(u) => {
                let u = std::str::from_utf8(u).map_err(|_| "unit is not UTF-8".to_owned())?;
                Some(Unit::parse(u.trim()).map_err(|e| format!("unit {e}"))?)
            }
            None => self
                .by_sku
                .iter()
                .find(|(g, _)| g.matches(sku))
                .map(|(_, u)| u.clone())
                .or_else(|| self.default.cloned()),
        };
        match unit {
            None => Ok(qty),
            Some(u) if u.is_base() => Ok(qty),
            Some(u) => {
                let sku = Sku::parse(sku).map_err(|e| format!("sku {e}"))?;
                let v = self
                    .table
                    .to_base(&sku, &u, qty)
                    .map_err(|e| e.to_string())?;
                if v.abs() > driftless_core::MAX_QUANTITY {
                    return Err(format!("{qty} {u} is out of range in base units"));
                }
                Ok(v)
            }
        }
    }
}
