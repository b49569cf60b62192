//! The CSV files of `driftless import`. The reader lives in the binary (`cmd/import.rs`), so this
//! target drives the same library calls in the same way: the `csv` reader with a fixed width, each
//! row through `Event::from_raw`, then the canonical JSON the command sends, which the hub must
//! parse back to the same event. Whatever the file holds, nothing panics.

use driftless_core::event::RawEvent;
use driftless_core::{Event, State};
use driftless_server::wire::{event_json, parse_event};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&flags, text)) = data.split_first() else {
            return;
        };
        let mut rdr = csv::ReaderBuilder::new().flexible(false).from_reader(text);
        let Ok(headers) = rdr.headers().cloned() else {
            return;
        };
        let find = |name: &str| headers.iter().position(|h| h.trim() == name);
        let states: Vec<(State, usize)> = State::ALL
            .iter()
            .filter_map(|s| find(s.as_str()).map(|i| (*s, i)))
            .collect();
        let (Some(key), Some(sku), Some(location), Some(occurred_at)) = (
            find("id"),
            find("sku"),
            find("location"),
            find("occurred_at"),
        ) else {
            return;
        };
        if states.is_empty() {
            return;
        }
        let (seq, kind, uom, reason, reference) = (
            find("seq"),
            find("kind"),
            find("uom"),
            find("reason"),
            find("ref"),
        );
        let mut record = csv::StringRecord::new();
        for _ in 0..1000 {
            match rdr.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let _ = e.position().map(|p| p.line());
                    continue;
                }
            }
            let get = |i: usize| record.get(i).unwrap_or("").trim();
            let opt = |i: Option<usize>| i.map(get).filter(|v| !v.is_empty());
            let Ok(seq) = opt(seq).map_or(Ok(0), str::parse::<u64>) else {
                continue;
            };
            let set = match opt(kind) {
                None => flags & 1 == 1,
                Some("adjust") => false,
                Some("set") => true,
                Some(_) => continue,
            };
            let mut quantities = Vec::new();
            for (s, i) in &states {
                match get(*i) {
                    "" => {}
                    v => match v.parse::<i64>() {
                        Ok(q) => quantities.push((s.as_str(), q)),
                        Err(_) => continue,
                    },
                }
            }
            let raw = RawEvent {
                id: get(key),
                source: "wms",
                sku: get(sku),
                location: get(location),
                occurred_at: get(occurred_at),
                seq,
                adjust: (!set).then(|| quantities.clone()),
                set: set.then_some(quantities),
                uom: opt(uom),
                reason: opt(reason),
                reference: opt(reference),
            };
            if let Ok(e) = Event::from_raw(&raw) {
                let back = parse_event(&event_json(&e)).expect("what import sends, the hub parses");
                assert_eq!(back, e);
            }
        }
    });
}
