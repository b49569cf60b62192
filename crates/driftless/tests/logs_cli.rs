//! `DRIFTLESS_LOG_FORMAT=json`: `driftless serve` writes one JSON object per log line; every line
//! a request causes carries its request id (the caller's `x-request-id` or one the hub made, sent
//! back in the response header), and a bearer token never reaches the log.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;

mod common;

use common::driftless;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
read_token_sha256 = ["bf4d572bbc8e6a798375037e718180370d2ee05441bb9109bdb679e9558f7a95"] # read-demo-token

[[systems]]
id = "wms"
role = "wms"
token_sha256 = "79e15b7a2f65165aa05b1cee28bff8347d1cb8bcc3bce44422badbb90f080b35" # wms-demo-token
"#;

/// One HTTP/1.1 exchange; returns the raw response.
fn exchange(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn json_logs_carry_the_request_id_and_never_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("driftless.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut child = driftless()
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("DRIFTLESS_LOG", "debug,sqlx=warn,hyper=warn,h2=warn")
        .env("DRIFTLESS_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();

    let body = r#"{"id":"e1","source":"wms","sku":"A-1","location":"DC1","occurred_at":"2026-11-20T10:00:00Z","set":{"on_hand":5}}"#;
    let posted = exchange(
        &addr,
        &format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wms-demo-token\r\n\
             x-request-id: log-test-post\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert!(posted.starts_with("HTTP/1.1 200"), "{posted}");
    assert!(
        posted
            .to_lowercase()
            .contains("x-request-id: log-test-post")
    );
    let read = exchange(
        &addr,
        "GET /v1/inventory/NOPE?at=2026-11-20T10:00:00Z HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer read-demo-token\r\nConnection: close\r\n\r\n",
    );
    assert!(read.starts_with("HTTP/1.1 404"), "{read}");
    let made = read
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("x-request-id: ")
                .map(str::to_owned)
        })
        .expect("a request id header");
    let refused = exchange(
        &addr,
        "GET /v1/channels HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not-a-real-token\r\n\
         Connection: close\r\n\r\n",
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{logs}");

    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty());
    for token in ["wms-demo-token", "read-demo-token", "not-a-real-token"] {
        assert!(!logs.contains(token), "a token reached the log:\n{logs}");
    }
    // Every line written while a request ran names it.
    let answered: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "answered")
        .collect();
    assert_eq!(answered.len(), 3, "{logs}");
    for l in &answered {
        assert!(l["span"]["request_id"].is_string(), "{l}");
    }
    let ids: Vec<&str> = answered
        .iter()
        .map(|l| l["span"]["request_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"log-test-post") && ids.contains(&made.as_str()),
        "{ids:?}"
    );
    for l in lines.iter().filter(|l| l["span"]["name"] == "request") {
        assert!(l["span"]["request_id"].is_string(), "{l}");
    }
}
