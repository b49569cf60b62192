//! The configuration file (`check-config`, `serve --config`): any text gives settings or located
//! errors, never a panic, and every error's line and column lie inside the file.

use driftless_config::Settings;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        if let Err(errors) = Settings::parse("fuzz.toml", text) {
            let lines = text.lines().count() + 1;
            for e in &errors.0 {
                assert!(e.line <= lines, "line {} of {lines}: {e}", e.line);
            }
            let _ = errors.to_string();
        }
    });
}
