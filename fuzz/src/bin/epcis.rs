//! `POST /v1/epcis/capture` bodies: any bytes give a capture (an answer per EPCIS event) or a
//! located schema error, never a panic, with the example configuration's identifiers (so events
//! with its GTINs and SGLNs map all the way to canonical events).

use driftless_config::Settings;
use driftless_connectors::epcis::{Mapping, capture};
use driftless_core::SystemId;
use std::sync::OnceLock;

fn main() {
    static SETUP: OnceLock<(Settings, Mapping)> = OnceLock::new();
    let (settings, mapping) = SETUP.get_or_init(|| {
        let text = include_str!("../../../driftless.example.toml");
        let settings = Settings::parse("driftless.example.toml", text).expect("example parses");
        let mapping = Mapping::from_settings(&settings);
        (settings, mapping)
    });
    let source = SystemId::parse("wms".to_owned()).expect("valid id");
    afl::fuzz!(|data: &[u8]| {
        if let Ok(c) = capture(data, &source, mapping, &settings.rules.units, 100) {
            let _ = format!("{c:?}");
        }
    });
}
