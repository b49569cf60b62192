//! Shared by the binary's test files: starting `driftless serve` as a real process.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub fn driftless() -> Command {
    Command::new(env!("CARGO_BIN_EXE_driftless"))
}

/// Starts `driftless serve` on `config` and `data` and returns the process and its base URL, read
/// from the one line it prints once it listens.
pub fn serve(config: &Path, data: &Path) -> (Child, String) {
    let mut child = driftless()
        .args(["serve", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .env("DRIFTLESS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start driftless");
    let base = listening(&mut child);
    (child, base)
}

/// The base URL a started `serve` (its stdout piped) prints on its first line once it listens.
pub fn listening(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read address");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned()
}
