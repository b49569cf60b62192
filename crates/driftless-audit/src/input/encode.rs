//! The row encoder: one validated row becomes a compact partition record, whichever format it
//! came from; the record layout the engine reads back is written here and only here.

use super::columns::{Columns, Units};
use super::fields::{check_ident, parse_int, parse_time, put_varint};
use super::{FileSpec, Kind, Problems, REPORTED, SLOTS, Sink};
use crate::spill::hash_bytes;
use std::sync::atomic::Ordering;

/// Longest accepted change-log actor, in bytes.
const MAX_ACTOR: usize = 128;

fn name_of(spec: &FileSpec) -> &str {
    &spec.name
}

/// Turns one row's fields into a partition record.
pub(super) struct RowEncoder<'a, 'b> {
    pub(super) spec: &'a FileSpec,
    pub(super) units: &'a Units<'a>,
    pub(super) sink: Sink<'b>,
    pub(super) problems: &'a mut Problems,
    pub(super) reported_bytes: u64,
}

impl RowEncoder<'_, '_> {
    pub(super) fn progress(&mut self, pos: u64) {
        if pos >= self.reported_bytes + (1 << 20) {
            self.sink
                .bytes_done
                .fetch_add(pos - self.reported_bytes, Ordering::Relaxed);
            self.reported_bytes = pos;
        }
    }

    pub(super) fn finish_progress(&mut self, end: u64) {
        if end > self.reported_bytes {
            self.sink
                .bytes_done
                .fetch_add(end - self.reported_bytes, Ordering::Relaxed);
            self.reported_bytes = end;
        }
    }

    /// Encodes one row; `field(i)` is the `i`th field (empty when absent). Problems are recorded
    /// and the row skipped.
    pub(super) fn row<'f>(&mut self, cols: &Columns, line: u64, field: impl Fn(usize) -> &'f [u8]) {
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
