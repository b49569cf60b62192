//! Fan-out on PostgreSQL when commits land out of order: a change that another hub committed
//! behind this hub's dispatcher's cursor (its clock is behind, or its transaction committed after
//! later ones) is pushed at once, because that hub's notice says where its marks are, rather than
//! at the next full rescan of the outbox (every 30 s).
//!
//! The database is a fresh `dl_pg_fault_*` on the server of `DRIFTLESS_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`). Without a reachable server the test
//! skips, saying so; under `CI=true` it fails.

mod common;
#[path = "common/faults.rs"]
mod faults;

use driftless_connectors::standin::Faults;
use faults::{Database, psql, serve, webhook_standin, write_config};
use serde_json::json;
use std::time::{Duration, Instant};

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_committed_behind_the_cursor_is_pushed_without_waiting_for_the_rescan() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(db) = Database::create("PostgreSQL late-commit fan-out run") else {
        return;
    };
    let standin = webhook_standin(Faults::none()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &standin);
    let (mut hub, base) = serve(&cfg, &db.url, &dir.path().join("unused"), &[]);
    let http = reqwest::Client::new();
    let set = |id: &str, sku: &str, q: i64| {
        json!([{"id": id, "source": "wms", "sku": sku, "location": "DC1",
                "occurred_at": "2026-11-27T10:00:00Z", "set": {"on_hand": q}}])
    };
    let resp = http
        .post(format!("{base}/v1/events"))
        .json(&set("now-1", "NOW", 5))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    eventually("NOW pushed", Duration::from_secs(10), || {
        standin.get("NOW") == Some(5)
    })
    .await;
    // The dispatcher's cursor is past NOW's row. Another hub, whose clock is a minute behind,
    // commits a change of LATE and says so, as every hub's commit of outbox marks does.
    let now_at = psql(
        &db.url,
        "SELECT changed_nanos FROM outbox WHERE channel = 'shop' AND sku = 'NOW'",
    )
    .unwrap();
    let late_at: i64 = now_at.parse::<i64>().unwrap() - 60_000_000_000;
    psql(
        &db.url,
        &format!(
            "BEGIN; \
             INSERT INTO outbox (channel, sku, version, dirty, changed_nanos, atp) \
             VALUES ('shop', 'LATE', 1, TRUE, {late_at}, 42); \
             SELECT pg_notify('driftless_outbox', '{late_at} another-hub'); \
             COMMIT;"
        ),
    )
    .unwrap();
    eventually(
        "LATE pushed without waiting for the rescan",
        Duration::from_secs(5),
        || standin.get("LATE") == Some(42),
    )
    .await;
    let _ = hub.kill();
    let _ = hub.wait();
}
