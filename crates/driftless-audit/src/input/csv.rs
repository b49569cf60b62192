//! The CSV reader: a header line, then one record per line, bounded in line length so that a
//! file that is not CSV fails early.

use super::columns::columns;
use super::encode::RowEncoder;
use super::{FileInfo, MAX_ROWS};
use crate::InputError;
use std::fs::File;
use std::io::Read;

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

pub(super) fn read_csv(
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
