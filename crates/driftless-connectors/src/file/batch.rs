//! CSV batch files from systems that only write files (`driftless import`): every row read and
//! validated into a canonical [`Event`] before anything is sent, with every problem located as
//! `file:line:column`. The key column is the idempotency key; a key used twice is a problem.

use driftless_core::event::RawEvent;
use driftless_core::{Event, State};
use std::collections::BTreeMap;
use std::path::Path;

/// At most this many rows; a larger file should be split (or sent as a stream of requests).
const MAX_ROWS: usize = 5_000_000;
/// Problems listed before the rest are only counted.
pub const MAX_LISTED: usize = 20;

struct Columns {
    key: usize,
    sku: usize,
    location: usize,
    occurred_at: usize,
    seq: Option<usize>,
    kind: Option<usize>,
    uom: Option<usize>,
    reason: Option<usize>,
    reference: Option<usize>,
    states: Vec<(State, usize)>,
}

fn columns(headers: &csv::StringRecord, key: &str, file: &str) -> Result<Columns, String> {
    let find = |name: &str| headers.iter().position(|h| h.trim() == name);
    let need = |name: &str| {
        find(name).ok_or_else(|| {
            format!(
                "{file}:1:1: missing column `{name}` (header has: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let states: Vec<(State, usize)> = State::ALL
        .iter()
        .filter_map(|s| find(s.as_str()).map(|i| (*s, i)))
        .collect();
    if states.is_empty() {
        return Err(format!(
            "{file}:1:1: no state column (need one or more of on_hand, committed, reserved, incoming, unavailable)"
        ));
    }
    Ok(Columns {
        key: need(key)?,
        sku: need("sku")?,
        location: need("location")?,
        occurred_at: need("occurred_at")?,
        seq: find("seq"),
        kind: find("kind"),
        uom: find("uom"),
        reason: find("reason"),
        reference: find("ref"),
        states,
    })
}

/// How the rows of a batch file are read.
#[derive(Debug, Clone)]
pub struct BatchOptions<'a> {
    /// The system the file comes from.
    pub source: &'a str,
    /// Column holding the idempotency key.
    pub key: &'a str,
    /// Rows without a `kind` column are absolute values (a stock file) instead of deltas.
    pub set: bool,
}

/// Reads and validates every row of the CSV batch file at `path`; returns each event through `to`
/// (in file order), or every problem (`file:line:column: message`). `Err` of the outer result when
/// the file cannot be opened or its header read.
pub fn read_batch<T>(
    path: &Path,
    opts: &BatchOptions<'_>,
    mut to: impl FnMut(&Event) -> T,
) -> Result<Result<Vec<T>, Vec<String>>, String> {
    let file = path.display().to_string();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .map_err(|e| format!("cannot open {file}: {e}"))?;
    let headers = rdr
        .headers()
        .map_err(|e| format!("{file}: cannot read the header: {e}"))?
        .clone();
    let cols = match columns(&headers, opts.key, &file) {
        Ok(c) => c,
        Err(e) => return Ok(Err(vec![e])),
    };
    let col_of = |i: usize| i + 1;
    let mut events = Vec::new();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let at = e.position().map_or(line, |p| p.line());
                problems.push(format!("{file}:{at}:1: {e}"));
                if problems.len() > MAX_LISTED * 10 {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map_or(line, |p| p.line());
        if events.len() + problems.len() >= MAX_ROWS {
            problems.push(format!(
                "{file}:{line}:1: more than {MAX_ROWS} rows; split the file"
            ));
            break;
        }
        let get = |i: usize| record.get(i).unwrap_or("").trim();
        let opt = |i: Option<usize>| i.map(get).filter(|v| !v.is_empty());
        let mut bad = |col: usize, msg: String| {
            problems.push(format!("{file}:{line}:{}: {msg}", col_of(col)))
        };
        let seq = match opt(cols.seq).map(str::parse::<u64>) {
            None => 0,
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                bad(
                    cols.seq.unwrap_or(0),
                    format!(
                        "seq must be an unsigned integer, not {:?}",
                        get(cols.seq.unwrap_or(0))
                    ),
                );
                continue;
            }
        };
        let set = match opt(cols.kind) {
            None => opts.set,
            Some("adjust") => false,
            Some("set") => true,
            Some(other) => {
                bad(
                    cols.kind.unwrap_or(0),
                    format!("kind must be adjust or set, not {other:?}"),
                );
                continue;
            }
        };
        let mut quantities = Vec::new();
        let mut ok = true;
        for (s, i) in &cols.states {
            let v = get(*i);
            if v.is_empty() {
                continue;
            }
            match v.parse::<i64>() {
                Ok(q) => quantities.push((s.as_str(), q)),
                Err(_) => {
                    bad(
                        *i,
                        format!("{} must be a whole number, not {v:?}", s.as_str()),
                    );
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
        let raw = RawEvent {
            id: get(cols.key),
            source: opts.source,
            sku: get(cols.sku),
            location: get(cols.location),
            occurred_at: get(cols.occurred_at),
            seq,
            adjust: (!set).then(|| quantities.clone()),
            set: set.then_some(quantities),
            uom: opt(cols.uom),
            reason: opt(cols.reason),
            reference: opt(cols.reference),
        };
        match Event::from_raw(&raw) {
            Ok(e) => {
                if let Some(first) = seen.insert(e.id.to_string(), line) {
                    bad(
                        cols.key,
                        format!("key {:?} already used on line {first}", e.id.as_str()),
                    );
                    continue;
                }
                events.push(to(&e));
            }
            Err(e) => {
                let col = match e.field.split('.').next().unwrap_or("") {
                    "id" => cols.key,
                    "sku" => cols.sku,
                    "location" => cols.location,
                    "occurred_at" => cols.occurred_at,
                    "seq" => cols.seq.unwrap_or(0),
                    "uom" => cols.uom.unwrap_or(0),
                    "reason" => cols.reason.unwrap_or(0),
                    "ref" => cols.reference.unwrap_or(0),
                    _ => cols.states[0].1,
                };
                let field = if e.field == "id" {
                    opts.key.to_owned()
                } else {
                    e.field.clone()
                };
                bad(col, format!("{field}: {}", e.message));
            }
        }
    }
    if problems.is_empty() {
        if events.is_empty() {
            return Ok(Err(vec![format!("{file}: no rows")]));
        }
        Ok(Ok(events))
    } else {
        Ok(Err(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<String>, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, text).unwrap();
        let opts = BatchOptions {
            source: "wms",
            key: "id",
            set: false,
        };
        read_batch(&path, &opts, |e| e.id.to_string())
            .unwrap()
            .map_err(|p| {
                p.into_iter()
                    .map(|m| m.rsplit_once("in.csv").unwrap().1.to_owned())
                    .collect()
            })
    }

    #[test]
    fn rows_become_events_and_problems_are_located() {
        let head = "id,sku,location,occurred_at,on_hand\n";
        let ok = read(&format!(
            "{head}a,SKU-1,DC1,2026-11-20T12:00:00Z,5\nb,SKU-1,DC1,2026-11-20T12:01:00Z,-2\n"
        ));
        assert_eq!(ok, Ok(vec!["a".to_owned(), "b".to_owned()]));
        let bad = read(&format!(
            "{head}a,SKU-1,DC1,2026-11-20T12:00:00Z,x\na,SKU-1,DC1,2026-11-20T12:00:00Z,1\na,SKU-1,DC1,2026-11-20T12:00:00Z,1\n"
        ))
        .unwrap_err();
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(
            bad[0].starts_with(":2:5: on_hand must be a whole number"),
            "{bad:?}"
        );
        assert!(
            bad[1].starts_with(":4:1: key \"a\" already used on line 3"),
            "{bad:?}"
        );
        assert_eq!(read("id,sku\n").unwrap_err().len(), 1);
        assert_eq!(read(head), Err(vec![": no rows".to_owned()]));
    }
}
