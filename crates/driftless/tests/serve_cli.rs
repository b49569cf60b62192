//! The binary's own surface: `check-config` errors with file, line, column and a fix; `serve`
//! refusing an unusable configuration; SIGTERM draining and exiting cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;

use common::driftless;

#[test]
fn check_config_names_line_column_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(
        &f,
        "[[systems]]\nid = \"wms\"\nrole = \"wms\"\n\n[[units]]\nsku = \"TEE-*\"\nunit = \"CS\"\nfactor = -12\n",
    )
    .unwrap();
    let out = driftless().arg("check-config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:8:10: factor must be a whole number from 1 to 1000000 (got -12)"),
        "{err}"
    );

    std::fs::write(&f, "[server]\nlisten = \"127.0.0.1:1\"\nport = 3\n").unwrap();
    let out = driftless().arg("check-config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:1") && err.contains("fix: remove `port`"),
        "{err}"
    );

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../driftless.example.toml");
    let out = driftless()
        .arg("check-config")
        .arg(example)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_auth_none_off_loopback() {
    let out = driftless()
        .args([
            "serve",
            "--auth",
            "none",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = driftless()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("DRIFTLESS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on http://127.0.0.1:"), "{line}");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `[audit] schedule`: the running hub audits itself and stores the audit for `trend`.
#[test]
fn the_hub_audits_itself_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("driftless.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n\n[[systems]]\nid = \"wms\"\nrole = \"wms\"\n\n\
         [[channels]]\nid = \"shop\"\nlocations = [\"DC1\"]\nconnector = \"none\"\n\n\
         [audit]\nschedule = \"every 1s\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (mut child, _) = common::serve(&config, &data);
    let mut stored = 0;
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = driftless()
            .args(["trend", "--days", "1", "--format", "json", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        stored = v["series"].as_array().map_or(0, Vec::len);
        if stored >= 2 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(stored >= 2, "the schedule stored {stored} audits in 10 s");
}

#[test]
fn serve_refuses_the_public_demo_tokens_off_loopback() {
    // The shipped example configuration carries the demo tokens.
    let out = driftless()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("public demo tokens are refused on 0.0.0.0:0")
            && err.contains("system `wms` (wms-demo-token)")
            && err.contains("fix:"),
        "{err}"
    );
}

#[test]
fn token_hash_reads_standard_input() {
    use std::io::Write;
    let mut child = driftless()
        .arg("token-hash")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"wms-demo-token\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35"
    );
    // As an argument it still works.
    let out = driftless()
        .args(["token-hash", "wms-demo-token"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("79e15b7a"));
}

#[test]
fn check_config_warns_about_open_states_and_refuses_a_shared_token() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    let wms = "[[systems]]\nid = \"wms\"\nrole = \"wms\"\n\
               token_sha256 = \"79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35\"\n";
    std::fs::write(&f, format!("{wms}\n[authority]\non_hand = [\"wms\"]\n")).unwrap();
    let out = driftless().arg("check-config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: ")
            && err.contains("c.toml:6:1: state `committed` has no writer list"),
        "{err}"
    );
    assert_eq!(err.matches("warning: ").count(), 4, "{err}");

    std::fs::write(
        &f,
        format!(
            "[server]\nread_token_sha256 = [\"79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35\"]\n\n{wms}"
        ),
    )
    .unwrap();
    let out = driftless().arg("check-config").arg(&f).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("c.toml:7:16: this token digest is already a read token's (line 2)")
            && err.contains("fix: give system `wms` a token of its own"),
        "{err}"
    );
}
