//! The live checkpoints' rows on SQLite: an older observation never replaces a newer one (the
//! guard is in the store, so two requests racing for one key cannot undo each other), incidents
//! go with the rows stored, and the rows page in key order, drifting ones alone when asked.

use chrono::{TimeZone, Utc};
use driftless_core::Rules;
use driftless_store::{CheckpointFilter, CheckpointRow, Incident, SqliteStore, Store};

fn row(sku: &str, quantity: i64, at: i64, diverged: bool) -> CheckpointRow {
    CheckpointRow {
        system: "erp".into(),
        sku: sku.into(),
        location: "DC1".into(),
        state: "on_hand".into(),
        quantity,
        observed_at: Utc.timestamp_opt(at, 0).unwrap(),
        expected: 100,
        diverged_since: diverged.then(|| Utc.timestamp_opt(at, 0).unwrap()),
        open: false,
        handoff: "wms->erp".into(),
        cause: String::new(),
    }
}

fn incident(detail: &str) -> Incident {
    Incident {
        kind: "handoff_drift".into(),
        sku: Some("A".into()),
        location: Some("DC1".into()),
        system: Some("erp".into()),
        actor: None,
        event_id: None,
        detail: detail.into(),
        at: Utc.timestamp_opt(0, 0).unwrap(),
    }
}

#[tokio::test]
async fn an_older_observation_never_replaces_a_newer() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Rules::default(), vec![])
        .await
        .unwrap();
    let key = [(
        "erp".to_owned(),
        "A".to_owned(),
        "DC1".to_owned(),
        "on_hand".to_owned(),
    )];
    assert!(store.checkpoint_rows(&key).await.unwrap().is_empty());
    assert_eq!(
        store
            .save_checkpoints(&[(row("A", 90, 200, true), Some(incident("newer")))])
            .await
            .unwrap(),
        1
    );
    // Older, and as old: nothing stored, and their incidents neither.
    let n = store
        .save_checkpoints(&[
            (row("A", 100, 100, false), Some(incident("older"))),
            (row("A", 100, 200, true), None),
        ])
        .await
        .unwrap();
    assert_eq!(n, 0);
    let got = store.checkpoint_rows(&key).await.unwrap();
    assert_eq!(got, vec![row("A", 90, 200, true)]);
    let inc = store
        .incidents(&driftless_store::IncidentFilter {
            kind: Some("handoff_drift".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0].detail, "newer");

    // The same observation opening its incident (the overdue sweep) is stored.
    let mut opened = row("A", 90, 200, true);
    opened.open = true;
    assert_eq!(
        store
            .save_checkpoints(&[(opened.clone(), None)])
            .await
            .unwrap(),
        1
    );

    store
        .save_checkpoints(&[
            (row("B", 100, 300, false), None),
            (row("C", 5, 300, true), None),
        ])
        .await
        .unwrap();
    let all = store
        .checkpoints(&CheckpointFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let skus: Vec<&str> = all.iter().map(|r| r.sku.as_str()).collect();
    assert_eq!(skus, ["A", "B", "C"]);
    let drifting = store
        .checkpoints(&CheckpointFilter {
            drifting: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let skus: Vec<&str> = drifting.iter().map(|r| r.sku.as_str()).collect();
    assert_eq!(skus, ["A", "C"]);
    let after_a = store
        .checkpoints(&CheckpointFilter {
            after: Some(("erp".into(), "A".into(), "DC1".into(), "on_hand".into())),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after_a[0].sku, "B");
    store.close().await;
}
