//! Reading the audit's files: the baseline, one snapshot per system and optional change logs, as
//! CSV or JSON lines. Each row is validated (identifiers, whole numbers, timestamps, units),
//! converted to base units and handed to the partitioner as a compact record; every problem is
//! reported with its file, line and column, and reading goes on so that one run lists them all.

mod columns;
mod csv;
mod encode;
mod fields;
mod jsonl;

use crate::spill::PartWriter;
use crate::{InputError, MAX_ERRORS};
use columns::Units;
use driftless_config::audit::{FileFormat, SnapshotSettings};
use driftless_core::UnitTable;
use encode::RowEncoder;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicU64;

/// Slots of a level record, in base units.
pub(crate) const ON_HAND: usize = 0;
pub(crate) const COMMITTED: usize = 1;
pub(crate) const RESERVED: usize = 2;
pub(crate) const UNAVAILABLE: usize = 3;
pub(crate) const AVAILABLE: usize = 4;
/// The reported column's value: what the system is judged on.
pub(crate) const REPORTED: usize = 5;
pub(crate) const SLOTS: usize = 6;

/// Most rows accepted in one file: far above any real snapshot, low enough that a runaway export
/// cannot fill the disk with spill files.
pub(crate) const MAX_ROWS: u64 = 500_000_000;

/// What a file is to the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Baseline,
    /// A snapshot of the chain's system at this index.
    Snapshot(usize),
    /// A change log of the chain's system at this index.
    Changes(usize),
}

/// One input file and how to read it.
#[derive(Debug, Clone)]
pub(crate) struct FileSpec {
    pub name: String,
    pub path: std::path::PathBuf,
    pub kind: Kind,
    pub format: FileFormat,
    /// Snapshot settings of the system (column names, units), default for the baseline.
    pub settings: SnapshotSettings,
    /// The reported column's canonical name (snapshots only).
    pub reports: Option<&'static str>,
    /// Storefront or marketplace: its `quantity` is a channel quantity, not on-hand.
    pub channel_like: bool,
    /// Velocity class names (`[[audit.classes]] name`), for the baseline's `class` column.
    pub classes: Vec<String>,
}

/// What reading one file found out about its layout.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileInfo {
    /// The file has a location column.
    pub has_location: bool,
    /// Bit `i` set: slot `i` is present in every row of this file.
    pub mask: u8,
    /// The reported column the file turned out to use (defaults depend on the header).
    pub reports: Option<&'static str>,
    pub rows: u64,
}

/// Errors of one file: the first [`MAX_ERRORS`] kept, all counted.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub errors: Vec<InputError>,
    pub total: u64,
}

impl Problems {
    fn push(&mut self, file: &str, line: u64, column: u64, message: String) {
        self.total += 1;
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(InputError {
                file: file.to_owned(),
                line,
                column,
                message,
            });
        }
    }
}

/// Where a reader reports its progress.
pub(crate) struct Sink<'a> {
    pub writer: &'a mut PartWriter,
    pub file_index: u8,
    pub bytes_done: &'a AtomicU64,
}

/// Reads one file into the partitions; returns its layout, or the problems found.
pub(crate) fn read_file(
    spec: &FileSpec,
    table: &UnitTable,
    sink: Sink<'_>,
) -> Result<FileInfo, Problems> {
    let mut problems = Problems::default();
    let file = match File::open(&spec.path) {
        Ok(f) => f,
        Err(e) => {
            problems.push(&spec.name, 0, 0, format!("cannot read: {e}"));
            return Err(problems);
        }
    };
    let units = Units {
        table,
        default: spec.settings.unit.as_ref(),
        by_sku: &spec.settings.units,
    };
    let mut info = FileInfo::default();
    let mut row = RowEncoder {
        spec,
        units: &units,
        sink,
        problems: &mut problems,
        reported_bytes: 0,
    };
    let result = match spec.format {
        FileFormat::Csv => csv::read_csv(file, &mut row, &mut info),
        FileFormat::JsonLines => jsonl::read_jsonl(file, &mut row, &mut info),
    };
    if let Err(e) = result {
        problems.push(&spec.name, e.line, e.column, e.message);
    }
    if problems.total > 0 {
        Err(problems)
    } else {
        Ok(info)
    }
}

/// The format of `path` when the configuration does not say: `.jsonl`/`.ndjson` are JSON lines.
pub(crate) fn format_of(path: &Path, configured: Option<FileFormat>) -> FileFormat {
    configured.unwrap_or_else(|| match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson") => FileFormat::JsonLines,
        _ => FileFormat::Csv,
    })
}
