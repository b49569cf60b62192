//! The fan-out half of the SQLite store: dirty rows and their versions, coalescing through the
//! version check, pins, dead letters and replay, observations and the divergence clock.

use super::Backend;
use super::common;
use chrono::{Duration, Utc};
use driftless_core::event::RawEvent;
use driftless_core::{Authority, ChannelSpec, Event, Location, Ppm, Rules, Sku, State, SystemId};

use common::acked;
use driftless_store::outbox::{FailedPush, PushRecord, RebasedPush, Scan, ScanFrom};
use driftless_store::{Incident, Incoming, Outbox, Store};

fn rules() -> Rules {
    let mut authority = Authority::default();
    authority.set_writers(State::OnHand, vec![SystemId::parse("wms").unwrap()]);
    Rules {
        authority,
        systems: vec![SystemId::parse("wms").unwrap()].into_iter().collect(),
        ..Rules::default()
    }
}

fn channel() -> ChannelSpec {
    ChannelSpec {
        id: SystemId::parse("shop").unwrap(),
        locations: vec![Location::parse("DC1").unwrap()],
        safety_stock: 0,
        allocation: Ppm::ONE,
        pack: 1,
        rules: vec![],
    }
}

async fn set(store: &impl Store, r: &Rules, id: &str, sku: &str, loc: &str, q: i64, seq: u64) {
    let e = Event::from_raw(&RawEvent {
        id,
        source: "wms",
        sku,
        location: loc,
        occurred_at: "2026-11-27T10:00:00Z",
        seq,
        set: Some(vec![("on_hand", q)]),
        ..RawEvent::default()
    })
    .unwrap();
    let p = r.prepare(e).unwrap();
    store
        .apply(Utc::now(), vec![Incoming::Event(Box::new(p))])
        .await
        .unwrap();
}

fn scan(from: ScanFrom) -> Scan {
    Scan {
        channel: "shop".into(),
        locations: channel().locations,
        from,
        limit: 100,
    }
}

fn all() -> Scan {
    scan(ScanFrom::After(i64::MIN, None))
}

pub async fn versions_coalesce_and_only_the_current_one_cleans<B: Backend>(b: &B) {
    let dir = b.place().await;
    let r = rules();
    let store = b.open(&dir, r.clone(), vec![channel()]).await;
    for (i, q) in [5, 9, 12].into_iter().enumerate() {
        set(&store, &r, &format!("e{i}"), "A", "DC1", q, i as u64 + 1).await;
    }
    // A location the channel does not sell from marks nothing.
    set(&store, &r, "other", "B", "DC9", 4, 1).await;
    let rows = store.outbox_scan(&all()).await.unwrap();
    assert_eq!(rows.len(), 1);
    let a = &rows[0];
    assert_eq!(
        (a.sku.as_str(), a.version, a.atp, a.dirty),
        ("A", 3, 12, true)
    );
    assert_eq!((a.basis, a.pinned, a.attempts), (None, None, 0));
    assert_eq!(a.source.as_ref().map(SystemId::as_str), Some("wms"));
    // Acknowledging an older version leaves the row dirty, and says so.
    let again = store
        .outbox_record("shop", &[acked("A", 2, 9)])
        .await
        .unwrap();
    assert_eq!(again, vec![Sku::parse("A").unwrap()]);
    let rows = store.outbox_scan(&all()).await.unwrap();
    assert_eq!((rows[0].basis, rows[0].version), (Some(9), 3));
    let again = store
        .outbox_record("shop", &[acked("A", 3, 12)])
        .await
        .unwrap();
    assert!(again.is_empty());
    assert!(store.outbox_scan(&all()).await.unwrap().is_empty());
    let status = store.channel_status("shop").await.unwrap();
    assert_eq!(status.pending, 0);
    assert_eq!(status.last_push.unwrap().quantity, 12);
    // A targeted read returns clean rows too, with the new compare basis.
    let rows = store
        .outbox_scan(&scan(ScanFrom::Skus(vec![Sku::parse("A").unwrap()])))
        .await
        .unwrap();
    assert_eq!((rows[0].dirty, rows[0].basis), (false, Some(12)));
}

pub async fn pins_dead_letters_and_replay_survive_a_restart<B: Backend>(b: &B) {
    let dir = b.place().await;
    let r = rules();
    {
        let store = b.open(&dir, r.clone(), vec![channel()]).await;
        set(&store, &r, "e1", "A", "DC1", 3, 1).await;
        set(&store, &r, "e2", "B", "DC1", 4, 1).await;
        let dead = Incident {
            kind: "dead_letter".into(),
            sku: Some(Sku::parse("B").unwrap()),
            location: None,
            system: Some("shop".into()),
            actor: None,
            event_id: None,
            detail: "gave up".into(),
            at: Utc::now(),
        };
        store
            .outbox_record(
                "shop",
                &[
                    PushRecord::Failed(FailedPush {
                        sku: Sku::parse("A").unwrap(),
                        version: 1,
                        pinned: Some((1, 3)),
                        attempts: 1,
                        next_attempt: Utc::now() + Duration::seconds(60),
                        error: "timed out".into(),
                        dead: None,
                    }),
                    PushRecord::Failed(FailedPush {
                        sku: Sku::parse("B").unwrap(),
                        version: 1,
                        pinned: None,
                        attempts: 8,
                        next_attempt: Utc::now(),
                        error: "HTTP 500".into(),
                        dead: Some(dead),
                    }),
                ],
            )
            .await
            .unwrap();
        store.close().await;
    }
    let store = b.open(&dir, r.clone(), vec![channel()]).await;
    let rows = store.outbox_scan(&all()).await.unwrap();
    let a = rows.iter().find(|x| x.sku.as_str() == "A").unwrap();
    assert_eq!((a.pinned, a.attempts), (Some((1, 3)), 1));
    assert!(a.next_attempt_nanos > Utc::now().timestamp_nanos_opt().unwrap());
    let b = rows.iter().find(|x| x.sku.as_str() == "B").unwrap();
    assert_eq!(b.dead_version, Some(1));
    let status = store.channel_status("shop").await.unwrap();
    assert_eq!(status.pending, 2);
    assert_eq!(status.dead_letters.len(), 1);
    assert_eq!(status.errors.len(), 1);
    assert_eq!(store.outbox_replay("shop", None).await.unwrap(), 1);
    let rows = store.outbox_scan(&all()).await.unwrap();
    let b = rows.iter().find(|x| x.sku.as_str() == "B").unwrap();
    assert_eq!((b.dead_version, b.attempts), (None, 0));
    assert!(
        store
            .channel_status("shop")
            .await
            .unwrap()
            .dead_letters
            .is_empty()
    );
}

pub async fn observations_start_and_stop_the_divergence_clock<B: Backend>(b: &B) {
    let dir = b.place().await;
    let r = rules();
    let store = b.open(&dir, r.clone(), vec![channel()]).await;
    set(&store, &r, "e1", "A", "DC1", 10, 1).await;
    store
        .outbox_record("shop", &[acked("A", 1, 10)])
        .await
        .unwrap();
    let t0 = Utc::now();
    let o = store.observe("shop", "A", 10, None, t0).await.unwrap();
    assert_eq!((o.acked_quantity, o.diverged_since), (Some(10), None));
    let o = store
        .observe("shop", "A", 7, Some("staff:ann"), t0 + Duration::seconds(1))
        .await
        .unwrap();
    let since = o.diverged_since.unwrap();
    // A second differing report does not restart the clock.
    let o = store
        .observe("shop", "A", 6, None, t0 + Duration::seconds(2))
        .await
        .unwrap();
    assert_eq!(o.diverged_since, Some(since));
    assert!(
        store
            .divergences("shop", since - Duration::seconds(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let d = store
        .divergences("shop", since + Duration::seconds(5), 10)
        .await
        .unwrap();
    assert_eq!((d[0].observed, d[0].acked_quantity), (6, Some(10)));
    // Holding stops the clock's consequences and lists the sku.
    store
        .outbox_record(
            "shop",
            &[PushRecord::Rebased(RebasedPush {
                sku: Sku::parse("A").unwrap(),
                basis: Some(6),
                hold: true,
                incident: Incident {
                    kind: "channel_override".into(),
                    sku: Some(Sku::parse("A").unwrap()),
                    location: None,
                    system: Some("shop".into()),
                    actor: None,
                    event_id: None,
                    detail: "shows 6".into(),
                    at: Utc::now(),
                },
            })],
        )
        .await
        .unwrap();
    assert_eq!(
        store.channel_status("shop").await.unwrap().held,
        vec![Sku::parse("A").unwrap()]
    );
    assert!(
        store
            .divergences("shop", Utc::now() + Duration::hours(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// An observation that arrives after a newer one (a late report) does not overwrite it; a
/// channel override names its channel as the system and its actor apart, whether the actor comes
/// in its own field or inside the system (`channel:actor`, as the fan-out has written it), so
/// `incidents?system=shop` finds it.
pub async fn late_observations_and_override_actors<B: Backend>(b: &B) {
    let dir = b.place().await;
    let r = rules();
    let store = b.open(&dir, r.clone(), vec![channel()]).await;
    set(&store, &r, "e1", "A", "DC1", 10, 1).await;
    store
        .outbox_record("shop", &[acked("A", 1, 10)])
        .await
        .unwrap();
    let t0 = Utc::now() + Duration::seconds(5);
    store
        .observe("shop", "A", 7, Some("staff:ann"), t0 + Duration::seconds(2))
        .await
        .unwrap();
    // Made a second earlier, reported a moment later: the newer 7 stays.
    store
        .observe("shop", "A", 3, Some("staff:bob"), t0 + Duration::seconds(1))
        .await
        .unwrap();
    let d = store
        .divergences("shop", t0 + Duration::seconds(60), 10)
        .await
        .unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].observed, d[0].actor.as_deref()),
        (7, Some("staff:ann"))
    );

    let incident = |system: &str, actor: Option<&str>| Incident {
        kind: "channel_override".into(),
        sku: Some(Sku::parse("A").unwrap()),
        location: None,
        system: Some(system.into()),
        actor: actor.map(str::to_owned),
        event_id: None,
        detail: "shows 7".into(),
        at: Utc::now(),
    };
    store
        .record_incident(&incident("shop:merch.anna", None))
        .await
        .unwrap();
    store
        .record_incident(&incident("shop", Some("merch.bob")))
        .await
        .unwrap();
    let found = store
        .incidents(&driftless_store::IncidentFilter {
            kind: Some("channel_override".into()),
            system: Some("shop".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut actors: Vec<(Option<String>, Option<String>)> =
        found.into_iter().map(|i| (i.system, i.actor)).collect();
    actors.sort();
    assert_eq!(
        actors,
        vec![
            (Some("shop".into()), Some("merch.anna".into())),
            (Some("shop".into()), Some("merch.bob".into())),
        ]
    );
    store.close().await;
}
