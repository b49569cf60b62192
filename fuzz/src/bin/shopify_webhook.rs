//! Shopify `inventory_levels/update` webhook bodies and their signature header: any bytes are
//! parsed or refused with a reason, and any header verified or not, never a panic.

use driftless_connectors::shopify::webhook::{parse, verify};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        // The first line is the X-Shopify-Hmac-Sha256 header, the rest the raw body.
        let (header, body) = match data.iter().position(|&b| b == b'\n') {
            Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
            None => (None, data),
        };
        let _ = verify(&[b"hush".as_slice()], body, header);
        if let Ok(level) = parse(body) {
            let _ = format!("{level:?}");
        }
    });
}
