//! The drift auditor: three-way reconciliation of every system's snapshot against a physical count,
//! attribution of each drifting sku to the hand-off where the drift entered, and its probable cause.
//!
//! # Layout
//! - this module: the entry point [`run_files`] and the values that cross it.
//! - [`report`]: the report (DESIGN §13 JSON shape).
//! - `input`: reading and validating CSV / JSON-lines files into compact records.
//! - `spill`: hash partitioning by sku, in memory or spilled to temporary files.
//! - `engine`: the join, expected values, thresholds and attribution.
//! - [`cause`]: the probable-cause rules and their precedence.
//! - [`render`]: terminal table, CSV and HTML (with inline SVG charts).
//! - [`trend`]: drift per hand-off over stored audits, and the repair-or-rebuild reading.
//!
//! # How it stays fast and bounded
//! Reading is the expensive part, so the files are parsed on all cores at once, each row turned
//! into a small binary record (varint quantities) and routed by a hash of its sku to one of `P`
//! partitions (about 24 MB of input each; spilled to a temporary directory, `$TMPDIR`, when the
//! input exceeds 192 MB). Each partition is then read back, cut by other hash bits into 64 KB
//! sub-partitions whose hash tables stay in the CPU caches, and joined on its own. Memory is
//! bounded by one partition per core, not by the size of the files (about 200 MB for four
//! 10M-row files), and sorted and shuffled inputs cost the same.
//!
//! The engine is pure given its inputs: it reads the files it is given (and writes only its own
//! spill files), never the clock or the network, and never needs an async runtime. Its report is
//! the same whether or not it spilled, which the tests check on every case.

pub mod cause;
pub mod checkpoint;
mod engine;
mod input;
pub mod live;
pub mod render;
pub mod report;
mod spill;
mod svg;
pub mod trend;

use chrono::{DateTime, Utc};
use driftless_config::Settings;
use driftless_core::SystemId;
use std::fmt;
use std::path::PathBuf;

pub use cause::Cause;
pub use report::{Absent, HandoffSummary, Report, Row, Values};

use driftless_config::Role;
use driftless_config::audit::FileFormat;
use driftless_core::{ChannelSpec, Ppm};
use engine::{Ctx, Measure, PartResult, SysInfo};
use input::{FileInfo, FileSpec, Kind, Problems, Sink};
use spill::{PartReader, PartWriter, SpillDir};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Problems reported per file (and per partition) before the rest are only counted.
pub(crate) const MAX_ERRORS: usize = 20;
/// Input above this many bytes is spilled to temporary files instead of kept in memory.
const SPILL_ABOVE: u64 = 192 * 1024 * 1024;
/// Input bytes per partition: small enough that one partition's join stays in tens of MB.
const PART_BYTES: u64 = 24 * 1024 * 1024;

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

/// How far an audit has got, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// `"reading"` then `"joining"`.
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// Audits the files of `input` against the chain, thresholds and transforms of `settings`.
pub fn run_files(settings: &Settings, input: &AuditInput) -> Result<Report, AuditError> {
    run_files_with(settings, input, &|_| {})
}

/// [`run_files`], calling `progress` now and then (from any thread).
pub fn run_files_with(
    settings: &Settings,
    input: &AuditInput,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, AuditError> {
    run_files_tuned(settings, input, progress, &Tuning::default())
}

/// Sizes of the partitioned join. The defaults suit any input; tests shrink them so that small
/// files take the spilled, split paths that only large inputs take otherwise.
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Input above this many bytes is spilled to temporary files.
    pub spill_above: u64,
    /// Input bytes per partition.
    pub part_bytes: u64,
    /// Bytes of records joined at once.
    pub sub_bytes: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            spill_above: SPILL_ABOVE,
            part_bytes: PART_BYTES,
            sub_bytes: engine::SUB_BYTES,
        }
    }
}

#[doc(hidden)]
pub fn run_files_tuned(
    settings: &Settings,
    input: &AuditInput,
    progress: &(dyn Fn(Progress) + Sync),
    tuning: &Tuning,
) -> Result<Report, AuditError> {
    let audit = &settings.audit;
    let chain = &audit.chain;
    if chain.is_empty() {
        return Err(AuditError::Config(
            "no audit chain: set [audit] chain = [\"wms\", \"erp\", \"shop\"]".into(),
        ));
    }
    let index = |id: &SystemId, what: &str| -> Result<usize, AuditError> {
        chain.iter().position(|c| c == id).ok_or_else(|| {
            AuditError::Config(format!(
                "{what} for `{id}`, which is not in the audit chain ({})",
                chain_text(chain)
            ))
        })
    };
    let mut files = vec![spec_for(settings, &input.baseline, Kind::Baseline, None)];
    let mut seen = vec![false; chain.len()];
    for (id, path) in &input.snapshots {
        let i = index(id, "a snapshot")?;
        if seen[i] {
            return Err(AuditError::Config(format!("two snapshots for `{id}`")));
        }
        seen[i] = true;
        files.push(spec_for(settings, path, Kind::Snapshot(i), Some(id)));
    }
    if let Some(i) = seen.iter().position(|s| !s) {
        return Err(AuditError::Config(format!(
            "no snapshot for `{}` (the chain is {}); give --snapshot {}=FILE",
            chain[i],
            chain_text(chain),
            chain[i]
        )));
    }
    for (id, path) in &input.changes {
        let i = index(id, "a change log")?;
        files.push(spec_for(settings, path, Kind::Changes(i), Some(id)));
    }
    if files.len() > 250 {
        return Err(AuditError::Config("more than 250 input files".into()));
    }

    // Partitioning: the bigger the input, the more partitions, so each stays small.
    let mut total_bytes = 0u64;
    for f in &files {
        let len = std::fs::metadata(&f.path)
            .map(|m| m.len())
            .map_err(|e| AuditError::Io {
                file: f.name.clone(),
                error: e,
            })?;
        total_bytes += len;
    }
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let parts = (total_bytes.div_ceil(tuning.part_bytes.max(1)) as usize).clamp(workers, 4096);
    let spill_dir = if total_bytes > tuning.spill_above {
        Some(SpillDir::create().map_err(|e| AuditError::Io {
            file: std::env::temp_dir().display().to_string(),
            error: e,
        })?)
    } else {
        None
    };

    let timing = std::env::var_os("DRIFTLESS_AUDIT_TIMING").is_some();
    let t0 = std::time::Instant::now();
    // In memory, each worker's share of a partition is at most the partition's size.
    let reserve = if spill_dir.is_some() {
        0
    } else {
        (total_bytes / parts as u64) as usize + 4096
    };
    // Phase 1: read every file, biggest first, on every core.
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|i| {
        std::cmp::Reverse(std::fs::metadata(&files[*i].path).map_or(0, |m| m.len()))
    });
    let next = AtomicUsize::new(0);
    let bytes_done = AtomicU64::new(0);
    let infos: Mutex<Vec<Option<FileInfo>>> = Mutex::new(vec![None; files.len()]);
    let problems: Mutex<Vec<InputError>> = Mutex::new(Vec::new());
    let problem_total = AtomicU64::new(0);
    let readers: Vec<std::io::Result<PartReader>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..workers.min(files.len()))
            .map(|w| {
                let (files, order, next, bytes_done) = (&files, &order, &next, &bytes_done);
                let (infos, problems, problem_total) = (&infos, &problems, &problem_total);
                let dir = spill_dir.as_ref().map(SpillDir::path);
                sc.spawn(move || {
                    let mut writer = PartWriter::new(parts, dir, w, reserve);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&f) = order.get(i) else { break };
                        let sink = Sink {
                            writer: &mut writer,
                            file_index: f as u8,
                            bytes_done,
                        };
                        match input::read_file(&files[f], &settings.rules.units, sink) {
                            Ok(info) => lock(infos)[f] = Some(info),
                            Err(Problems { errors, total }) => {
                                problem_total.fetch_add(total, Ordering::Relaxed);
                                lock(problems).extend(errors);
                            }
                        }
                    }
                    writer.finish()
                })
            })
            .collect();
        let mut out = Vec::new();
        loop {
            let done = handles.iter().all(|h| h.is_finished());
            progress(Progress {
                phase: "reading",
                done: bytes_done.load(Ordering::Relaxed).min(total_bytes),
                total: total_bytes,
            });
            if done {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for h in handles {
            out.push(
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a reading thread failed"))),
            );
        }
        out
    });
    let total = problem_total.load(Ordering::Relaxed);
    if total > 0 {
        let mut errors = problems.into_inner().unwrap_or_else(|e| e.into_inner());
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        return Err(AuditError::Input { errors, total });
    }
    let mut readers = readers
        .into_iter()
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| AuditError::Io {
            file: "spill files".into(),
            error: e,
        })?;
    let infos = infos.into_inner().unwrap_or_else(|e| e.into_inner());

    if timing {
        eprintln!(
            "read: {:.3}s ({parts} partitions, spill: {})",
            t0.elapsed().as_secs_f64(),
            spill_dir.is_some()
        );
    }
    // The chain as the join sees it.
    let mut systems = Vec::new();
    for (i, id) in chain.iter().enumerate() {
        let f = files
            .iter()
            .position(|f| f.kind == Kind::Snapshot(i))
            .unwrap_or(0);
        let info = infos[f].clone().unwrap_or_default();
        systems.push(sys_info(settings, i, &files[f], &info));
        let _ = id;
    }
    let ctx = Ctx {
        systems,
        kinds: files.iter().map(|f| f.kind).collect(),
        file_names: files.iter().map(|f| f.name.clone()).collect(),
        audit,
        units: &settings.rules.units,
        at_ms: input.at.timestamp_millis(),
        any_sku: driftless_core::Sku::parse("any")
            .map_err(|e| AuditError::Config(e.to_string()))?,
    };

    // Phase 2: join each partition, on every core.
    let next = AtomicUsize::new(0);
    let parts_done = AtomicU64::new(0);
    let readers_lock = Mutex::new(&mut readers);
    let results: Vec<Result<PartResult, AuditError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (next, parts_done, readers_lock, ctx) =
                    (&next, &parts_done, &readers_lock, &ctx);
                sc.spawn(move || -> Result<PartResult, AuditError> {
                    let mut acc = PartResult {
                        handoffs: vec![(0, 0); ctx.systems.len()],
                        absent: vec![0; ctx.systems.len()],
                        ..PartResult::default()
                    };
                    let mut scratch = Vec::new();
                    let mut chunks: Vec<Vec<u8>> = Vec::new();
                    loop {
                        let p = next.fetch_add(1, Ordering::Relaxed);
                        if p >= parts {
                            break;
                        }
                        let claims: Vec<_> = {
                            let mut rs = lock(readers_lock);
                            rs.iter_mut().map(|r| r.claim(p)).collect()
                        };
                        chunks.resize_with(claims.len(), Vec::new);
                        for (c, buf) in claims.into_iter().zip(chunks.iter_mut()) {
                            c.read_into(buf).map_err(|e| AuditError::Io {
                                file: "spill files".into(),
                                error: e,
                            })?;
                        }
                        let r = engine::run_partition(ctx, &chunks, &mut scratch, tuning.sub_bytes);
                        merge(&mut acc, r);
                        parts_done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(acc)
                })
            })
            .collect();
        loop {
            let done = handles.iter().all(|h| h.is_finished());
            progress(Progress {
                phase: "joining",
                done: parts_done.load(Ordering::Relaxed),
                total: parts as u64,
            });
            if done {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(AuditError::Config("a joining thread failed".into())))
            })
            .collect()
    });
    if timing {
        eprintln!("join: {:.3}s", t0.elapsed().as_secs_f64());
    }
    drop(spill_dir);
    let mut all = PartResult {
        handoffs: vec![(0, 0); ctx.systems.len()],
        absent: vec![0; ctx.systems.len()],
        ..PartResult::default()
    };
    for r in results {
        merge(&mut all, r?);
    }
    if all.error_total > 0 {
        all.errors
            .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        all.errors.truncate(MAX_ERRORS);
        return Err(AuditError::Input {
            errors: all.errors,
            total: all.error_total,
        });
    }
    all.rows
        .sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
    Ok(Report {
        at: input.at,
        skus_compared: all.compared,
        drifting: all.rows.len() as u64,
        handoffs: ctx
            .systems
            .iter()
            .zip(&all.handoffs)
            .map(|(s, (n, u))| HandoffSummary {
                handoff: s.handoff.clone(),
                drifting_skus: *n,
                abs_units: *u,
            })
            .collect(),
        rows: all.rows,
        absent: ctx
            .systems
            .iter()
            .zip(&all.absent)
            .filter(|(_, n)| **n > 0)
            .map(|(s, n)| Absent {
                system: s.id.clone(),
                keys: *n,
            })
            .collect(),
        not_counted: all.not_counted,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn merge(acc: &mut PartResult, r: PartResult) {
    acc.rows.extend(r.rows);
    acc.compared += r.compared;
    for (a, b) in acc.handoffs.iter_mut().zip(r.handoffs) {
        a.0 += b.0;
        a.1 += b.1;
    }
    for (a, b) in acc.absent.iter_mut().zip(r.absent) {
        *a += b;
    }
    acc.not_counted += r.not_counted;
    acc.error_total += r.error_total;
    let room = MAX_ERRORS.saturating_sub(acc.errors.len());
    acc.errors.extend(r.errors.into_iter().take(room));
}

fn chain_text(chain: &[SystemId]) -> String {
    chain
        .iter()
        .map(SystemId::as_str)
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn spec_for(
    settings: &Settings,
    path: &std::path::Path,
    kind: Kind,
    id: Option<&SystemId>,
) -> FileSpec {
    let snap = id
        .and_then(|i| settings.audit.snapshots.get(i))
        .cloned()
        .unwrap_or_default();
    let channel_like = id
        .and_then(|i| settings.system(i))
        .is_some_and(|s| s.role.is_channel_like());
    let reports = match kind {
        Kind::Snapshot(_) => snap.reports.as_deref().and_then(|r| {
            driftless_config::audit::REPORTED
                .iter()
                .copied()
                .find(|c| *c == r)
        }),
        _ => None,
    };
    let format = match kind {
        Kind::Baseline => input::format_of(path, None),
        _ => input::format_of(path, snap.format),
    };
    // A change log shares the system's column names and units but not its reported column.
    FileSpec {
        name: path.display().to_string(),
        path: path.to_path_buf(),
        kind,
        format: if format == FileFormat::JsonLines {
            FileFormat::JsonLines
        } else {
            FileFormat::Csv
        },
        settings: if kind == Kind::Baseline {
            Default::default()
        } else {
            snap
        },
        reports,
        channel_like,
        classes: settings
            .audit
            .classes
            .iter()
            .map(|c| c.name.clone())
            .collect(),
    }
}

fn sys_info(settings: &Settings, i: usize, file: &FileSpec, info: &FileInfo) -> SysInfo {
    let id = &settings.audit.chain[i];
    let role = settings.system(id).map_or(Role::Other, |s| s.role);
    let channel_like = role.is_channel_like();
    let measure = match (info.reports.unwrap_or("on_hand"), channel_like) {
        ("quantity" | "available", true) => Measure::Channel,
        ("on_hand" | "quantity", _) => Measure::State(input::ON_HAND),
        ("available", false) => Measure::Atp,
        ("committed", _) => Measure::State(input::COMMITTED),
        ("reserved", _) => Measure::State(input::RESERVED),
        ("unavailable", _) => Measure::State(input::UNAVAILABLE),
        _ => Measure::State(input::ON_HAND),
    };
    let configured = settings.channel(id.as_str()).map(|c| c.spec.clone());
    let all_locations = configured.is_none();
    let spec = configured.unwrap_or(ChannelSpec {
        id: id.clone(),
        locations: Vec::new(),
        safety_stock: 0,
        allocation: Ppm::ONE,
        pack: 1,
        rules: Vec::new(),
    });
    let hop = (i > 0).then(|| {
        settings
            .hops
            .iter()
            .find(|h| h.from == settings.audit.chain[i - 1] && &h.to == id)
    });
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let window_ms = hop
        .flatten()
        .map(|h| ms(h.latency_sla + h.every.unwrap_or_default()));
    let every_ms = hop.flatten().and_then(|h| h.every).map(ms);
    let handoff = if i == 0 {
        format!("physical->{id}")
    } else {
        format!("{}->{id}", settings.audit.chain[i - 1])
    };
    let sku_of = |u: &driftless_core::Unit| {
        settings
            .rules
            .units
            .rules()
            .iter()
            .filter(|r| &r.unit == u)
            .map(|r| (Some(r.sku.clone()), r.factor))
            .collect::<Vec<_>>()
    };
    let mut unit_factors = Vec::new();
    for (_, u) in &file.settings.units {
        unit_factors.extend(sku_of(u));
    }
    if let Some(u) = &file.settings.unit {
        unit_factors.extend(sku_of(u));
    }
    SysInfo {
        id: id.to_string(),
        measure,
        channel_like,
        channel_level: channel_like && !info.has_location,
        spec,
        all_locations,
        window_ms,
        every_ms,
        handoff,
        unit_factors,
    }
}

/// The audit's threshold test ([`engine`]'s), for the live checkpoints.
pub(crate) fn engine_over(
    t: &driftless_config::audit::Threshold,
    delta: i64,
    expected: i64,
) -> bool {
    engine::over(t, delta, expected)
}
