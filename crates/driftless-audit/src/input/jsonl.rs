//! The JSON-lines reader: one object per line, whose keys stand in for a header; the first
//! object decides which optional columns the file has.

use super::columns::{Columns, columns};
use super::encode::RowEncoder;
use super::{FileInfo, Kind, MAX_ROWS};
use crate::InputError;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};

/// Longest accepted line in a JSON-lines file.
const MAX_JSON_LINE: usize = 64 * 1024;

pub(super) fn read_jsonl(
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
