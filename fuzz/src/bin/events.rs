//! `POST /v1/events` bodies: one canonical JSON event, an array, or NDJSON. The first byte picks
//! the shape (odd: NDJSON), the rest is the body. Whatever arrives, parsing answers without a
//! panic, and every accepted event comes back unchanged through the canonical JSON the hub and
//! `driftless import` send.

use driftless_server::wire::{event_json, parse_body, parse_event};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&first, body)) = data.split_first() else {
            return;
        };
        if let Ok((_, events)) = parse_body(body, first & 1 == 1, 100) {
            assert!(!events.is_empty() && events.len() <= 100);
            for e in &events {
                let back = parse_event(&event_json(e)).expect("canonical JSON parses back");
                assert_eq!(&back, e);
            }
        }
    });
}
