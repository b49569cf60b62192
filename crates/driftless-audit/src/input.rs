//! Reading the audit's files: the baseline, one snapshot per system and optional change logs, as
//! CSV or JSON lines. Each row is validated (identifiers, whole numbers, timestamps, units),
//! converted to base units and handed to the partitioner as a compact record; every problem is
//! reported with its file, line and column, and reading goes on so that one run lists them all.

use crate::spill::{PartWriter, hash_bytes};
use crate::{InputError, MAX_ERRORS};
use chrono::DateTime;
use driftless_config::audit::{FileFormat, SnapshotSettings};
use driftless_core::{Glob, Sku, Unit, UnitTable};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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
/// Longest accepted change-log actor, in bytes.
const MAX_ACTOR: usize = 128;
/// Longest accepted line in a JSON-lines file.
const MAX_JSON_LINE: usize = 64 * 1024;
/// Longest accepted CSV line (a record, quotes included): far above any real row, low enough
/// that a file without line breaks (a binary export, a wrong delimiter setting) cannot make the
/// reader buffer gigabytes before anything is checked.
const MAX_CSV_LINE: u64 = 1024 * 1024;

/// Passes bytes through, failing once more than [`MAX_CSV_LINE`] bytes go by without a line
/// break.
struct LineLimit<R> {
    inner: R,
    run: u64,
}

impl<R: Read> Read for LineLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match buf[..n].iter().rposition(|b| *b == b'\n') {
            Some(i) => self.run = (n - i - 1) as u64,
            None => self.run += n as u64,
        }
        if self.run > MAX_CSV_LINE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_CSV_LINE} bytes (is this a CSV file?)"),
            ));
        }
        Ok(n)
    }
}

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

/// Appends `v` zigzag-encoded as a LEB128 varint: stock quantities are small, so a record is
/// mostly one or two bytes per value instead of eight, which halves the bytes partitioned,
/// spilled and joined.
#[inline]
pub(crate) fn put_varint(b: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        b.push((z as u8) | 0x80);
        z >>= 7;
    }
    b.push(z as u8);
}

/// Why an identifier field is refused, in the words of the id rules.
fn check_ident(b: &[u8], max: usize) -> Result<&[u8], String> {
    if b.is_empty() {
        return Err("must not be empty".into());
    }
    if b.len() > max {
        return Err(format!("must be at most {max} bytes (got {})", b.len()));
    }
    // Fast path, no UTF-8 decoding: printable ASCII without surrounding spaces is by far the
    // common case (and is valid UTF-8 by construction).
    if b.iter().all(|c| (0x20..0x7f).contains(c)) && b[0] != b' ' && b[b.len() - 1] != b' ' {
        return Ok(b);
    }
    let s = std::str::from_utf8(b).map_err(|_| "is not valid UTF-8".to_owned())?;
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if s.trim() != s {
        return Err("must not have leading or trailing white space".into());
    }
    Ok(b)
}

/// A whole number: optional sign, digits, optionally `.0...` (ERP exports write `12.000`), with
/// surrounding spaces allowed. Anything else (`1,200`, `12.5`, `1e3`) is refused rather than guessed.
pub(crate) fn parse_int(b: &[u8]) -> Result<i64, String> {
    let mut s = b;
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    if s.is_empty() {
        return Err("is empty; expected a whole number".into());
    }
    let (neg, digits) = match s[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match digits.iter().position(|c| *c == b'.') {
        Some(i) => (&digits[..i], &digits[i + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    let shown = || String::from_utf8_lossy(b).into_owned();
    if int.is_empty() || int.len() > 13 || !int.iter().all(u8::is_ascii_digit) {
        if int.len() > 13 && int.iter().all(u8::is_ascii_digit) {
            return Err(format!(
                "`{}` is out of range (at most {} in absolute value)",
                shown(),
                driftless_core::MAX_QUANTITY
            ));
        }
        return Err(format!("`{}` is not a whole number", shown()));
    }
    if !frac.iter().all(|c| *c == b'0') {
        return Err(format!("`{}` is not a whole number", shown()));
    }
    let mut v: i64 = 0;
    for c in int {
        v = v * 10 + i64::from(c - b'0');
    }
    if v > driftless_core::MAX_QUANTITY {
        return Err(format!(
            "`{}` is out of range (at most {} in absolute value)",
            shown(),
            driftless_core::MAX_QUANTITY
        ));
    }
    Ok(if neg { -v } else { v })
}

/// Milliseconds since the epoch of an RFC 3339 timestamp.
fn parse_time(b: &[u8]) -> Result<i64, String> {
    let s = std::str::from_utf8(b).map_err(|_| "is not valid UTF-8".to_owned())?;
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("`{s}` is not an RFC 3339 timestamp ({e})"))
}

/// Canonical column -> index in the file's header.
#[derive(Debug, Default)]
struct Columns {
    sku: usize,
    location: Option<usize>,
    slot: [Option<usize>; SLOTS],
    unit: Option<usize>,
    /// The baseline's velocity class column (`class` or `velocity`).
    class: Option<usize>,
    at: usize,
    source_at: Option<usize>,
    actor: usize,
    quantity: usize,
    /// A change log's `committed` column: the system's committed quantity after the change.
    committed: Option<usize>,
    width: usize,
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
fn columns(spec: &FileSpec, header: &[String], info: &mut FileInfo) -> Result<Columns, InputError> {
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
struct Units<'a> {
    table: &'a UnitTable,
    default: Option<&'a Unit>,
    by_sku: &'a [(Glob, Unit)],
}

impl Units<'_> {
    fn to_base(&self, sku: &[u8], row_unit: Option<&[u8]>, qty: i64) -> Result<i64, String> {
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

fn name_of(spec: &FileSpec) -> &str {
    &spec.name
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
        FileFormat::Csv => read_csv(file, &mut row, &mut info),
        FileFormat::JsonLines => read_jsonl(file, &mut row, &mut info),
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

/// Turns one row's fields into a partition record.
struct RowEncoder<'a, 'b> {
    spec: &'a FileSpec,
    units: &'a Units<'a>,
    sink: Sink<'b>,
    problems: &'a mut Problems,
    reported_bytes: u64,
}

impl RowEncoder<'_, '_> {
    fn progress(&mut self, pos: u64) {
        if pos >= self.reported_bytes + (1 << 20) {
            self.sink
                .bytes_done
                .fetch_add(pos - self.reported_bytes, Ordering::Relaxed);
            self.reported_bytes = pos;
        }
    }

    fn finish_progress(&mut self, end: u64) {
        if end > self.reported_bytes {
            self.sink
                .bytes_done
                .fetch_add(end - self.reported_bytes, Ordering::Relaxed);
            self.reported_bytes = end;
        }
    }

    /// Encodes one row; `field(i)` is the `i`th field (empty when absent). Problems are recorded
    /// and the row skipped.
    fn row<'f>(&mut self, cols: &Columns, line: u64, field: impl Fn(usize) -> &'f [u8]) {
        let name = &self.spec.name;
        let col = |i: usize| i as u64 + 1;
        let sku = match check_ident(field(cols.sku), 128) {
            Ok(s) => s,
            Err(m) => {
                self.problems
                    .push(name, line, col(cols.sku), format!("sku {m}"));
                return;
            }
        };
        let loc: &[u8] = match cols.location {
            None => b"",
            Some(i) if field(i).is_empty() => b"",
            Some(i) => match check_ident(field(i), 128) {
                Ok(l) => l,
                Err(m) => {
                    self.problems
                        .push(name, line, col(i), format!("location {m}"));
                    return;
                }
            },
        };
        if matches!(self.spec.kind, Kind::Baseline) && loc.is_empty() {
            self.problems.push(
                name,
                line,
                col(cols.location.unwrap_or(0)),
                "location is empty; a count is always at a location".into(),
            );
            return;
        }
        let unit = cols.unit.map(&field);
        let units = self.units;
        let convert = |problems: &mut Problems, i: usize, required: bool| -> Result<i64, ()> {
            let raw = field(i);
            if !required && raw.iter().all(|c| *c == b' ') {
                return Ok(0);
            }
            parse_int(raw)
                .and_then(|v| units.to_base(sku, unit, v))
                .map_err(|m| problems.push(name, line, col(i), m))
        };
        let p = crate::spill::bucket(hash_bytes(sku) >> 32, self.sink.writer.parts());
        match self.spec.kind {
            Kind::Baseline | Kind::Snapshot(_) => {
                let mut vals = [0i64; SLOTS];
                let mut mask = 0u8;
                let mut bad = false;
                for (s, c) in cols.slot.iter().enumerate() {
                    let Some(c) = *c else { continue };
                    // The reported column is usually also a state column: parse it once.
                    if s == REPORTED
                        && let Some(same) = cols.slot[..REPORTED].iter().position(|x| *x == Some(c))
                    {
                        if mask & (1 << same) != 0 {
                            vals[s] = vals[same];
                            mask |= 1 << s;
                        }
                        continue;
                    }
                    let required = s == REPORTED || Some(c) == cols.slot[REPORTED];
                    match convert(self.problems, c, required) {
                        Ok(v) => {
                            vals[s] = v;
                            mask |= 1 << s;
                        }
                        Err(()) => bad = true,
                    }
                }
                // The baseline may name each row's velocity class: 0 none, else index + 1.
                let mut class = 0u8;
                if let Some(c) = cols.class {
                    let name = String::from_utf8_lossy(field(c));
                    let name = name.trim();
                    if !name.is_empty() {
                        match self.spec.classes.iter().position(|x| x == name) {
                            Some(i) => class = (i + 1).min(255) as u8,
                            None => {
                                let known = if self.spec.classes.is_empty() {
                                    "none are configured under [[audit.classes]]".to_owned()
                                } else {
                                    format!("configured: {}", self.spec.classes.join(", "))
                                };
                                self.problems.push(
                                    name_of(self.spec),
                                    line,
                                    col(c),
                                    format!("unknown velocity class `{name}` ({known})"),
                                );
                                return;
                            }
                        }
                    }
                }
                if bad {
                    return;
                }
                let is_baseline = matches!(self.spec.kind, Kind::Baseline);
                let b = self.sink.writer.buf(p);
                b.push(self.sink.file_index);
                b.extend_from_slice(&(line as u32).to_le_bytes());
                b.push(sku.len() as u8);
                b.extend_from_slice(sku);
                b.push(loc.len() as u8);
                b.extend_from_slice(loc);
                b.push(mask);
                for (s, v) in vals.iter().enumerate() {
                    if mask & (1 << s) != 0 {
                        put_varint(b, *v);
                    }
                }
                if is_baseline {
                    b.push(class);
                }
            }
            Kind::Changes(_) => {
                let at = match parse_time(field(cols.at)) {
                    Ok(t) => t,
                    Err(m) => {
                        self.problems
                            .push(name, line, col(cols.at), format!("at {m}"));
                        return;
                    }
                };
                let source_at = match cols.source_at.map(|i| (i, field(i))) {
                    None => None,
                    Some((_, [])) => None,
                    Some((i, b)) => match parse_time(b) {
                        Ok(t) => Some(t),
                        Err(m) => {
                            self.problems
                                .push(name, line, col(i), format!("source_at {m}"));
                            return;
                        }
                    },
                };
                let Ok(qty) = convert(self.problems, cols.quantity, true) else {
                    return;
                };
                // Optional per row too: an empty cell says the row does not know it.
                let committed = match cols.committed {
                    Some(i) if !field(i).iter().all(|c| *c == b' ') => {
                        let Ok(v) = convert(self.problems, i, true) else {
                            return;
                        };
                        Some(v)
                    }
                    _ => None,
                };
                let actor = match check_ident(field(cols.actor), MAX_ACTOR) {
                    Ok(a) => a,
                    Err(m) => {
                        self.problems
                            .push(name, line, col(cols.actor), format!("actor {m}"));
                        return;
                    }
                };
                let b = self.sink.writer.buf(p);
                b.push(self.sink.file_index);
                b.extend_from_slice(&(line as u32).to_le_bytes());
                b.push(sku.len() as u8);
                b.extend_from_slice(sku);
                b.push(loc.len() as u8);
                b.extend_from_slice(loc);
                b.extend_from_slice(&at.to_le_bytes());
                match source_at {
                    Some(t) => {
                        b.push(1);
                        b.extend_from_slice(&t.to_le_bytes());
                    }
                    None => b.push(0),
                }
                b.extend_from_slice(&qty.to_le_bytes());
                match committed {
                    Some(c) => {
                        b.push(1);
                        b.extend_from_slice(&c.to_le_bytes());
                    }
                    None => b.push(0),
                }
                b.push(actor.len() as u8);
                b.extend_from_slice(actor);
            }
        }
        if let Err(e) = self.sink.writer.done(p) {
            self.problems
                .push(name, 0, 0, format!("cannot write a spill file: {e}"));
        }
    }
}

fn header_strings(raw: &[&[u8]]) -> Vec<String> {
    raw.iter()
        .enumerate()
        .map(|(i, f)| {
            let f = if i == 0 {
                f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f)
            } else {
                f
            };
            String::from_utf8_lossy(f).trim().to_owned()
        })
        .collect()
}

fn read_csv(
    file: File,
    row: &mut RowEncoder<'_, '_>,
    info: &mut FileInfo,
) -> Result<(), InputError> {
    let name = row.spec.name.clone();
    let err = |line: u64, column: u64, message: String| InputError {
        file: name.clone(),
        line,
        column,
        message,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_reader(LineLimit {
            inner: file,
            run: 0,
        });
    let mut rec = csv::ByteRecord::new();
    let read = |rdr: &mut csv::Reader<LineLimit<File>>,
                rec: &mut csv::ByteRecord|
     -> Result<bool, InputError> {
        rdr.read_byte_record(rec).map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            err(line, 0, format!("unreadable CSV: {e}"))
        })
    };
    if !read(&mut rdr, &mut rec)? {
        return Err(err(
            1,
            0,
            "the file is empty; expected a header line".into(),
        ));
    }
    let header = header_strings(&rec.iter().collect::<Vec<_>>());
    let cols = columns(row.spec, &header, info)?;
    let mut rows = 0u64;
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                // A malformed quote or invalid record: report it and stop; later positions
                // would not mean much.
                let line = e.position().map_or(0, |p| p.line());
                row.problems
                    .push(&row.spec.name, line, 0, format!("unreadable CSV: {e}"));
                break;
            }
        }
        let pos = rec.position().map_or(0, |p| p.line());
        if rec.len() == 1 && rec.get(0).is_some_and(<[u8]>::is_empty) {
            continue; // a blank line
        }
        rows += 1;
        if rows > MAX_ROWS {
            return Err(err(pos, 0, format!("more than {MAX_ROWS} rows")));
        }
        if rec.len() != cols.width {
            row.problems.push(
                &row.spec.name,
                pos,
                0,
                format!(
                    "row has {} fields but the header has {}",
                    rec.len(),
                    cols.width
                ),
            );
            continue;
        }
        row.row(&cols, pos, |i| rec.get(i).unwrap_or(b""));
        if rows.is_multiple_of(4096) {
            let byte = rec.position().map_or(0, |p| p.byte());
            row.progress(byte);
        }
    }
    row.finish_progress(std::fs::metadata(&row.spec.path).map_or(0, |m| m.len()));
    info.rows = rows;
    Ok(())
}

fn read_jsonl(
    file: File,
    row: &mut RowEncoder<'_, '_>,
    info: &mut FileInfo,
) -> Result<(), InputError> {
    let name = row.spec.name.clone();
    // The canonical columns a JSON object may carry; the "header" is the list of mapped names.
    let canonical: &[&str] = match row.spec.kind {
        Kind::Changes(_) => &[
            "sku",
            "location",
            "at",
            "quantity",
            "actor",
            "source_at",
            "unit",
            "committed",
        ],
        _ => &[
            "sku",
            "location",
            "on_hand",
            "committed",
            "reserved",
            "unavailable",
            "available",
            "quantity",
            "unit",
        ],
    };
    let header: Vec<String> = canonical
        .iter()
        .map(|c| {
            row.spec
                .settings
                .columns
                .get(*c)
                .cloned()
                .unwrap_or_else(|| (*c).to_owned())
        })
        .collect();
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line = 0u64;
    let mut bytes = 0u64;
    let mut cols: Option<Columns> = None;
    let mut fields: Vec<Vec<u8>> = vec![Vec::new(); header.len()];
    loop {
        buf.clear();
        let n = reader
            .by_ref()
            .take(MAX_JSON_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| InputError {
                file: name.clone(),
                line: line + 1,
                column: 0,
                message: format!("cannot read: {e}"),
            })?;
        if n == 0 {
            break;
        }
        line += 1;
        bytes += n as u64;
        if buf.len() > MAX_JSON_LINE {
            return Err(InputError {
                file: name.clone(),
                line,
                column: 0,
                message: format!("line longer than {MAX_JSON_LINE} bytes"),
            });
        }
        let text = if line == 1 {
            buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf)
        } else {
            &buf[..]
        };
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line > MAX_ROWS {
            return Err(InputError {
                file: name.clone(),
                line,
                column: 0,
                message: format!("more than {MAX_ROWS} rows"),
            });
        }
        let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(text) {
            Ok(o) => o,
            Err(e) => {
                row.problems.push(
                    &name,
                    line,
                    e.column() as u64,
                    format!("not a JSON object: {e}"),
                );
                continue;
            }
        };
        if cols.is_none() {
            // The first object decides which optional columns the file has.
            let present: Vec<String> = header
                .iter()
                .map(|h| {
                    if obj.contains_key(h) {
                        h.clone()
                    } else {
                        String::new()
                    }
                })
                .collect();
            cols = Some(columns(row.spec, &present, info).map_err(|mut e| {
                e.line = line;
                e.message = e.message.replace("column", "key");
                e
            })?);
        }
        let Some(c) = &cols else { continue };
        for (i, h) in header.iter().enumerate() {
            fields[i].clear();
            match obj.get(h) {
                None | Some(serde_json::Value::Null) => {}
                Some(serde_json::Value::String(s)) => fields[i].extend_from_slice(s.as_bytes()),
                Some(v) => fields[i].extend_from_slice(v.to_string().as_bytes()),
            }
        }
        info.rows += 1;
        row.row(c, line, |i| fields.get(i).map_or(&b""[..], Vec::as_slice));
        row.progress(bytes);
    }
    row.finish_progress(bytes);
    if cols.is_none() {
        return Err(InputError {
            file: name,
            line: 1,
            column: 0,
            message: "the file is empty; expected one JSON object per line".into(),
        });
    }
    Ok(())
}

/// The format of `path` when the configuration does not say: `.jsonl`/`.ndjson` are JSON lines.
pub(crate) fn format_of(path: &Path, configured: Option<FileFormat>) -> FileFormat {
    configured.unwrap_or_else(|| match path.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "ndjson") => FileFormat::JsonLines,
        _ => FileFormat::Csv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers() {
        assert_eq!(parse_int(b"12"), Ok(12));
        assert_eq!(parse_int(b" -3 "), Ok(-3));
        assert_eq!(parse_int(b"+7"), Ok(7));
        assert_eq!(parse_int(b"12.000"), Ok(12));
        assert!(parse_int(b"12.5").is_err());
        assert!(parse_int(b"1,200").is_err());
        assert!(parse_int(b"1e3").is_err());
        assert!(parse_int(b"").is_err());
        assert!(parse_int(b"-").is_err());
        assert!(parse_int(b"99999999999999999999999").is_err());
        assert!(parse_int(b"1000000000001").is_err());
        assert_eq!(parse_int(b"1000000000000"), Ok(1_000_000_000_000));
    }

    #[test]
    fn identifiers() {
        assert!(check_ident(b"TEE-1", 128).is_ok());
        assert!(check_ident(b"TEE 1", 128).is_ok());
        assert!(check_ident(b" TEE", 128).is_err());
        assert!(check_ident(b"T\tE", 128).is_err());
        assert!(check_ident(b"\xff", 128).is_err());
        assert!(check_ident("ñandú".as_bytes(), 128).is_ok());
        assert!(check_ident(&[b'x'; 129], 128).is_err());
    }
}
