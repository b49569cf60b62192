//! The live checkpoints' rows: an older observation never replaces a newer one (the guard is in
//! the store, so two requests or hubs racing for one key cannot undo each other), incidents go
//! with the rows stored, and the rows page in key order, drifting ones alone when asked.

use super::Backend;
use chrono::{TimeZone, Utc};
use driftless_core::{Location, Rules, Sku, SystemId};
use driftless_store::{CheckpointFilter, CheckpointRow, Incident, Store};

fn row(sku: &str, quantity: i64, at: i64, diverged: bool) -> CheckpointRow {
    CheckpointRow {
        system: SystemId::parse("erp").unwrap(),
        sku: Sku::parse(sku).unwrap(),
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
        sku: Some(Sku::parse("A").unwrap()),
        location: Some(Location::parse("DC1").unwrap()),
        system: Some("erp".into()),
        actor: None,
        event_id: None,
        detail: detail.into(),
        at: Utc.timestamp_opt(0, 0).unwrap(),
    }
}

pub async fn an_older_observation_never_replaces_a_newer<B: Backend>(b: &B) {
    let place = b.place().await;
    let store = b.open(&place, Rules::default(), vec![]).await;
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
    assert_eq!(after_a[0].sku.as_str(), "B");
    store.close().await;
}

/// A consistency rule in `reject` refuses the event at the backend's decision point: the level
/// stays, the id stays free (the corrected event is applied), and the refusal is an incident of
/// the rule's kind; in `warn` the event is applied with the incident beside it.
pub async fn a_rule_rejects_or_warns_at_the_decision<B: Backend>(b: &B) {
    use driftless_core::checkpoint::Mode;
    use driftless_core::{Event, RawEvent, State};
    let place = b.place().await;
    let mut rules = super::ledger::rules();
    rules.checkpoints.negative_stock = Mode::Reject;
    rules.checkpoints.overcommitted = Mode::Warn;
    let store = b.open(&place, rules.clone(), vec![]).await;
    let ev = |id: &str, at: &str, set: bool, state: &'static str, q: i64| {
        let v = vec![(state, q)];
        Event::from_raw(&RawEvent {
            id,
            source: "wms",
            sku: "TEE",
            location: "L0",
            occurred_at: at,
            adjust: (!set).then(|| v.clone()),
            set: set.then_some(v),
            ..RawEvent::default()
        })
        .unwrap()
    };
    let at = Utc::now();
    let batch = [
        ev("a", "2026-01-01T10:00:00Z", true, "on_hand", 10),
        ev("b", "2026-01-01T10:01:00Z", false, "on_hand", -25),
    ];
    let got = store
        .apply(at, super::ledger::incoming(&rules, &batch))
        .await
        .unwrap();
    let outcomes: Vec<&str> = got.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["applied", "rejected"]);
    assert!(
        got[1]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("negative_stock")
    );
    let on_hand =
        |levels: Vec<driftless_store::LocationLevels>| levels[0].levels.get(State::OnHand);
    let sku = driftless_core::Sku::parse("TEE").unwrap();
    assert_eq!(on_hand(store.inventory(&sku).await.unwrap().unwrap()), 10);
    // The id was not claimed: the corrected event is applied, and shipping more than is
    // committed-free warns as overcommitted without refusing.
    let fixed = [
        ev("b", "2026-01-01T10:01:00Z", false, "on_hand", -5),
        ev("c", "2026-01-01T10:02:00Z", false, "committed", 8),
    ];
    let got = store
        .apply(at, super::ledger::incoming(&rules, &fixed))
        .await
        .unwrap();
    let outcomes: Vec<&str> = got.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["applied", "applied"]);
    assert_eq!(on_hand(store.inventory(&sku).await.unwrap().unwrap()), 5);
    for kind in ["negative_stock", "overcommitted"] {
        let found = store
            .incidents(&driftless_store::IncidentFilter {
                kind: Some(kind.into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{kind}: {found:?}");
    }
    store.close().await;
}
