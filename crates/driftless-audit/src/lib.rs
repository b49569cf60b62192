//! The drift auditor: three-way reconciliation of every system's snapshot against a physical count,
//! attribution of each drifting sku to the hand-off where the drift entered, and its probable cause.
//!
//! # Layout
//! - this module: the entry point [`run_files`] and the values that cross it.
//! - [`report`]: the report (DESIGN §13 JSON shape).
//!
//! The engine is pure given its inputs: it reads the files it is given, never the clock or the
//! network, and never needs an async runtime.

pub mod report;

use chrono::{DateTime, Utc};
use driftless_config::Settings;
use driftless_core::SystemId;
use std::fmt;
use std::path::PathBuf;

pub use report::{HandoffSummary, Report, Row, Values};

/// What one audit reads.
#[derive(Debug, Clone)]
pub struct AuditInput {
    /// The physical count: `sku,location,quantity[,unit]`.
    pub baseline: PathBuf,
    /// One snapshot per system of the chain.
    pub snapshots: Vec<(SystemId, PathBuf)>,
    /// Optional change logs: `sku,location,at,quantity,actor[,source_at][,ref]`.
    pub changes: Vec<(SystemId, PathBuf)>,
    /// When the snapshots were taken; lag windows are judged against it.
    pub at: DateTime<Utc>,
}

/// One problem in an input file, located by line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: String,
    /// 1-based; 0 when the problem concerns the whole file.
    pub line: u64,
    /// 1-based CSV column (field number) or JSON character column; 0 when not applicable.
    pub column: u64,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.message),
            (l, 0) => write!(f, "{}:{}: {}", self.file, l, self.message),
            (l, c) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
        }
    }
}

/// Why an audit could not run. Every variant is bad input (exit status 2).
#[derive(Debug)]
pub enum AuditError {
    /// Problems in the input files; `total` counts all of them, `errors` holds the first ones.
    Input { errors: Vec<InputError>, total: u64 },
    /// The configuration cannot drive an audit (no chain, a snapshot for a system not in it, ...).
    Config(String),
    /// A file could not be read or a spill file written.
    Io { file: String, error: std::io::Error },
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditError::Input { errors, total } => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{e}")?;
                }
                let shown = errors.len() as u64;
                if *total > shown {
                    write!(f, "\n... and {} more problem(s)", total - shown)?;
                }
                Ok(())
            }
            AuditError::Config(m) => write!(f, "configuration: {m}"),
            AuditError::Io { file, error } => write!(f, "{file}: {error}"),
        }
    }
}

impl std::error::Error for AuditError {}

/// Audits the files of `input` against the chain, thresholds and transforms of `settings`.
pub fn run_files(settings: &Settings, input: &AuditInput) -> Result<Report, AuditError> {
    let _ = (settings, input);
    Err(AuditError::Config("not implemented yet".into()))
}
