//! The SQLite store against the in-memory reference ledger: the same events must give the same
//! outcomes and the same levels, across group commits and across a restart.

use super::Backend;
use super::common;
use chrono::Utc;
use driftless_core::event::RawEvent;
use driftless_core::{
    Authority, ChannelSpec, Event, Location, MemoryLedger, Outcome, Ppm, Rules, Sku, State,
    SystemId,
};
use driftless_store::{IncidentFilter, Incoming, Outbox, Store};

pub fn rules() -> Rules {
    let mut authority = Authority::default();
    authority.set_writers(State::OnHand, vec![SystemId::parse("wms").unwrap()]);
    Rules {
        authority,
        systems: ["wms", "erp"]
            .iter()
            .map(|s| SystemId::parse(*s).unwrap())
            .collect(),
        ..Rules::default()
    }
}

pub fn channels() -> Vec<ChannelSpec> {
    vec![ChannelSpec {
        id: SystemId::parse("shop").unwrap(),
        locations: vec![Location::parse("L0").unwrap()],
        safety_stock: 0,
        allocation: Ppm::ONE,
        pack: 1,
        rules: vec![],
    }]
}

/// A deterministic pseudo-random event stream with many re-deliveries, late sets and ties.
pub fn stream(n: usize, seed: u64) -> Vec<Event> {
    let mut x = seed | 1;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut out: Vec<Event> = Vec::new();
    for i in 0..n {
        if !out.is_empty() && next(5) == 0 {
            let j = next(out.len() as u64) as usize;
            out.push(out[j].clone());
            continue;
        }
        let set = next(6) == 0;
        let states = [
            ("on_hand", next(40) as i64 - 10),
            ("committed", next(9) as i64),
        ];
        let pick: Vec<(&str, i64)> = match next(3) {
            0 => vec![states[0]],
            1 => vec![states[1]],
            _ => states.to_vec(),
        };
        let pick: Vec<(&str, i64)> = pick
            .into_iter()
            .map(|(s, q)| (s, if set { q.abs() } else { q }))
            .collect();
        let id = format!("ev-{i}");
        let sku = format!("S{}", next(4));
        let loc = format!("L{}", next(2));
        let at = format!("2026-11-27T10:{:02}:00Z", next(20));
        let source = if next(8) == 0 { "erp" } else { "wms" };
        out.push(
            Event::from_raw(&RawEvent {
                id: &id,
                source,
                sku: &sku,
                location: &loc,
                occurred_at: &at,
                seq: next(2),
                adjust: (!set).then(|| pick.clone()),
                set: set.then_some(pick),
                ..RawEvent::default()
            })
            .unwrap(),
        );
    }
    out
}

pub fn incoming(rules: &Rules, events: &[Event]) -> Vec<Incoming> {
    events
        .iter()
        .map(|e| match rules.prepare(e.clone()) {
            Ok(p) => Incoming::Event(Box::new(p)),
            Err(refused) => {
                let (event, r) = *refused;
                Incoming::Rejected {
                    event: Box::new(event),
                    reason: r.0,
                }
            }
        })
        .collect()
}

pub async fn matches_the_reference_across_groups_and_restart<B: Backend>(b: &B) {
    for seed in [1u64, 7, 42, 1234] {
        let events = stream(600, seed);
        let sub = b.place().await;
        let mut reference = MemoryLedger::new(rules());
        let expected: Vec<Outcome> = events
            .iter()
            .map(|e| reference.apply(e.clone()).outcome)
            .collect();

        // Deliver in requests of varying size, several in flight at once so the writer groups
        // them, and restart the store half way.
        let half = events.len() / 2;
        let mut got = Vec::new();
        for (part, range) in [(0, 0..half), (1, half..events.len())] {
            let store = b.open(&sub, rules(), channels()).await;
            let chunks: Vec<&[Event]> = events[range].chunks(7 + part * 13).collect();
            for group in chunks.chunks(4) {
                // Requests in one group are in flight together, so the writer commits them as one
                // group; join_all polls them in order, so they queue in order.
                let futs = group
                    .iter()
                    .map(|c| store.apply(Utc::now(), incoming(&rules(), c)));
                for r in futures::future::join_all(futs).await {
                    got.extend(r.unwrap().into_iter().map(|r| r.outcome));
                }
            }
            store.close().await;
        }
        assert_eq!(got, expected, "seed {seed}");

        let store = b.open(&sub, rules(), channels()).await;
        assert_levels(&store, &reference, &format!("seed {seed}")).await;
        store.close().await;
    }
}

pub async fn assert_levels(store: &impl Store, reference: &MemoryLedger, what: &str) {
    for (sku, loc) in reference.all_levels().keys() {
        let want = reference.levels(sku, loc);
        let have = store
            .inventory(sku)
            .await
            .unwrap()
            .and_then(|v| v.into_iter().find(|l| &l.location == loc))
            .map(|l| l.levels)
            .unwrap_or_default();
        assert_eq!(have, want, "{what}: {sku} {loc}");
    }
    let page = store.inventory_page(None, 100).await.unwrap();
    for (sku, locs) in page {
        for l in locs {
            assert_eq!(
                l.levels,
                reference.levels(&sku, &l.location),
                "{what}: page {sku}"
            );
        }
    }
}

/// Cells, outbox rows and the per-cell index are written behind the events. Every read must still
/// show every acknowledged change, and a crash that leaves them unwritten (some slices written,
/// some not) must lose nothing: the next open replays the ledger tail. Late counts re-base over the
/// index, so a lost or doubled index entry shows as wrong levels.
pub async fn unwritten_cells_are_read_and_survive_a_crash<B: Backend>(b: &B) {
    for (case, max_dirty) in [(0, 3usize), (1, 1_000_000)] {
        for seed in [3u64, 99] {
            let events = stream(500, seed);
            let sub = b.place().await;
            let mut reference = MemoryLedger::new(rules());
            for (round, part) in events.chunks(170).enumerate() {
                let store = b.open_crashy(&sub, rules(), channels(), max_dirty).await;
                let what = format!("case {case} seed {seed} round {round}");
                assert_levels(&store, &reference, &format!("{what} after restart")).await;
                for group in part.chunks(9).collect::<Vec<_>>().chunks(3) {
                    let futs = group
                        .iter()
                        .map(|c| store.apply(Utc::now(), incoming(&rules(), c)));
                    for r in futures::future::join_all(futs).await {
                        r.unwrap();
                    }
                    for c in group {
                        for e in c.iter() {
                            reference.apply(e.clone());
                        }
                    }
                    assert_levels(&store, &reference, &what).await;
                }
                // Stops without writing the waiting cells, as a crash would.
                store.close().await;
            }
            let store = b.open(&sub, rules(), channels()).await;
            assert_levels(
                &store,
                &reference,
                &format!("case {case} seed {seed} final"),
            )
            .await;
            // The outbox too: the same versions and quantities as a twin that never crashed.
            let twin_dir = b.place().await;
            let twin = b.open(&twin_dir, rules(), channels()).await;
            for part in events.chunks(170) {
                for group in part.chunks(9).collect::<Vec<_>>().chunks(3) {
                    let futs = group
                        .iter()
                        .map(|c| twin.apply(Utc::now(), incoming(&rules(), c)));
                    for r in futures::future::join_all(futs).await {
                        r.unwrap();
                    }
                }
            }
            let skus: Vec<Sku> = (0..4)
                .map(|i| Sku::parse(format!("S{i}")).unwrap())
                .collect();
            let scan = driftless_store::outbox::Scan {
                channel: "shop".into(),
                locations: vec![Location::parse("L0").unwrap()],
                from: driftless_store::outbox::ScanFrom::Skus(skus.clone()),
                limit: 100,
            };
            let key = |r: &driftless_store::outbox::OutboxRow| {
                (r.sku.clone(), r.version, r.atp, r.dirty, r.source.clone())
            };
            let mut got: Vec<_> = store
                .outbox_scan(&scan)
                .await
                .unwrap()
                .iter()
                .map(key)
                .collect();
            let mut want: Vec<_> = twin
                .outbox_scan(&scan)
                .await
                .unwrap()
                .iter()
                .map(key)
                .collect();
            got.sort();
            want.sort();
            assert!(!want.is_empty());
            assert_eq!(got, want, "case {case} seed {seed} outbox");
            // History, read through the index: every stored event once, in fold order.
            for sku in &skus {
                let sku = Sku::parse(sku.clone()).unwrap();
                let h = |v: Vec<driftless_store::HistoryEntry>| {
                    v.into_iter()
                        .map(|e| (e.id, e.location, e.outcome))
                        .collect::<Vec<_>>()
                };
                let want = h(twin.history(&sku, 10_000).await.unwrap());
                assert!(want.len() > 50, "{sku}: {}", want.len());
                assert_eq!(
                    h(store.history(&sku, 10_000).await.unwrap()),
                    want,
                    "case {case} seed {seed} history {sku}"
                );
                assert_eq!(
                    h(store.history(&sku, 7).await.unwrap()),
                    want[want.len() - 7..].to_vec(),
                    "case {case} seed {seed} newest history {sku}"
                );
            }
            for (sku, _, atp, _, _) in &got {
                let l0 = Location::parse("L0").unwrap();
                let sku = Sku::parse(sku.clone()).unwrap();
                assert_eq!(*atp, reference.levels(&sku, &l0).available(), "{sku} atp");
            }
            twin.close().await;
            store.close().await;
            // Closed normally, everything is written: the next open replays nothing and agrees.
            let store = b.open(&sub, rules(), channels()).await;
            assert_levels(
                &store,
                &reference,
                &format!("case {case} seed {seed} clean"),
            )
            .await;
            store.close().await;
        }
    }
}

/// Applies `events` to the store in requests of `per` and to the reference.
pub async fn apply_both(
    store: &impl Store,
    reference: &mut MemoryLedger,
    events: &[Event],
    per: usize,
) {
    for c in events.chunks(per) {
        store
            .apply(Utc::now(), incoming(&rules(), c))
            .await
            .unwrap();
        for e in c {
            reference.apply(e.clone());
        }
    }
}

pub async fn records_incidents_and_history<B: Backend>(b: &B) {
    let dir = b.place().await;
    let store = b.open(&dir, rules(), channels()).await;
    let ev = |id: &str, source: &str, at: &str, set: bool, q: i64| {
        let v = vec![("on_hand", q)];
        Event::from_raw(&RawEvent {
            id,
            source,
            sku: "TEE",
            location: "L0",
            occurred_at: at,
            adjust: (!set).then(|| v.clone()),
            set: set.then_some(v),
            ..RawEvent::default()
        })
        .unwrap()
    };
    let batch = vec![
        ev("c2", "wms", "2026-01-01T02:00:00Z", true, 50),
        ev("a1", "wms", "2026-01-01T01:00:00Z", false, 5),
        ev("c1", "wms", "2026-01-01T01:30:00Z", true, 9),
        ev("o1", "erp", "2026-01-01T03:00:00Z", false, 5),
        ev("u1", "pos", "2026-01-01T03:00:00Z", false, 5),
    ];
    let r = store
        .apply(Utc::now(), incoming(&rules(), &batch))
        .await
        .unwrap();
    let outcomes: Vec<Outcome> = r.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Applied,
            Outcome::Covered,
            Outcome::Stale,
            Outcome::Override,
            Outcome::Rejected
        ]
    );
    let inc = store
        .incidents(&IncidentFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let kinds: Vec<&str> = inc.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(kinds, ["rejected", "override", "stale", "covered"]);
    let only = IncidentFilter {
        kind: Some("override".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        store.incidents(&only).await.unwrap()[0].system.as_deref(),
        Some("erp")
    );
    let h = store
        .history(&Sku::parse("TEE").unwrap(), 100)
        .await
        .unwrap();
    let ids: Vec<&str> = h.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a1", "c1", "c2", "o1"],
        "position order; the rejected event is not in the ledger"
    );
    // The version counts the entries that changed a cell: of the five, only the applied count
    // (covered, stale, a held-back override and a rejected event changed nothing). A later
    // change adds one; its redelivery nothing.
    let tee = Sku::parse("TEE").unwrap();
    assert_eq!(store.sku_version(&tee).await.unwrap(), Some(1));
    let later = [ev("a2", "wms", "2026-01-01T04:00:00Z", false, -2)];
    for _ in 0..2 {
        store
            .apply(Utc::now(), incoming(&rules(), &later))
            .await
            .unwrap();
        assert_eq!(store.sku_version(&tee).await.unwrap(), Some(2));
    }
    assert_eq!(
        store.inventory(&Sku::parse("NOPE").unwrap()).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .sku_version(&Sku::parse("NOPE").unwrap())
            .await
            .unwrap(),
        None
    );
    store.close().await;
}

pub async fn audits_and_outside_incidents_are_kept<B: Backend>(b: &B) {
    use driftless_store::{AuditRecord, Incident};
    let dir = b.place().await;
    let store = b.open(&dir, rules(), channels()).await;
    let day = |d: u32| chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, d, 12, 0, 0).unwrap();
    for d in [1, 8, 15] {
        let a = AuditRecord {
            at: day(d),
            skus_compared: 100,
            drifting: i64::from(d),
            handoffs: vec![("wms->erp".into(), i64::from(d), 10 * i64::from(d))],
            report_json: format!("{{\"day\":{d}}}"),
        };
        store.save_audit(&a).await.unwrap();
    }
    let since = store.audits_since(day(8)).await.unwrap();
    assert_eq!(
        since.iter().map(|a| a.drifting).collect::<Vec<_>>(),
        [8, 15]
    );
    assert_eq!(since[1].handoffs, vec![("wms->erp".to_owned(), 15, 150)]);
    let incident = Incident {
        kind: "channel_override".into(),
        sku: Some(Sku::parse("TEE").unwrap()),
        location: None,
        system: Some("shop".into()),
        actor: None,
        event_id: None,
        detail: "shop showed 12, hub pushed 9".into(),
        at: day(2),
    };
    store.record_incident(&incident).await.unwrap();
    let got = store
        .incidents(&IncidentFilter {
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(got, vec![incident]);
    store.close().await;
    // Still there after a restart.
    let store = b.open(&dir, rules(), channels()).await;
    assert_eq!(store.audits_since(day(1)).await.unwrap().len(), 3);
    store.close().await;
}

/// A large group's overlay levels and outbox marks are installed on a thread of their own while
/// the writer takes the next group. Once a request is answered, every read and the fan-out must
/// still see its events, and a dispatcher acknowledging rows meanwhile must not lose a change.
pub async fn large_groups_are_seen_once_acknowledged_with_a_dispatcher_beside_them<B: Backend>(
    b: &B,
) {
    use driftless_store::outbox::{Scan, ScanFrom};
    let dir = b.place().await;
    let events = stream(4_000, 99);
    let store = std::sync::Arc::new(b.open(&dir, rules(), channels()).await);
    let scan = |from| Scan {
        channel: "shop".into(),
        locations: channels()[0].locations.clone(),
        from,
        limit: 100,
    };
    // The dispatcher: acknowledges whatever version it finds dirty, as fast as it can.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dispatcher = {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acks = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = store
                    .outbox_scan(&scan(ScanFrom::After(i64::MIN, None)))
                    .await
                    .unwrap();
                let records: Vec<_> = rows
                    .iter()
                    .map(|r| common::acked(r.sku.as_str(), r.version, r.atp))
                    .collect();
                acks += records.len();
                store.outbox_record("shop", &records).await.unwrap();
                tokio::task::yield_now().await;
            }
            acks
        })
    };
    let mut reference = MemoryLedger::new(rules());
    let l0 = Location::parse("L0").unwrap();
    // Requests of 300 events, three in flight: groups of up to 900, over the threshold.
    for group in events.chunks(900) {
        let futs = group
            .chunks(300)
            .map(|c| store.apply(Utc::now(), incoming(&rules(), c)));
        let mut got = Vec::new();
        for r in futures::future::join_all(futs).await {
            got.extend(r.unwrap().into_iter().map(|r| r.outcome));
        }
        let want: Vec<Outcome> = group
            .iter()
            .map(|e| reference.apply(e.clone()).outcome)
            .collect();
        assert_eq!(got, want);
        // Answered, so visible: the levels, and for the fan-out the channel quantity, either
        // still to push or pushed and acknowledged.
        assert_levels(store.as_ref(), &reference, "after a large group").await;
        let skus: Vec<Sku> = reference
            .all_levels()
            .keys()
            .filter(|(_, l)| *l == l0)
            .map(|(s, _)| s.clone())
            .collect();
        let rows = store
            .outbox_scan(&scan(ScanFrom::Skus(skus.clone())))
            .await
            .unwrap();
        assert_eq!(rows.len(), skus.len());
        for r in rows {
            let atp = reference.levels(&r.sku, &l0).available();
            assert_eq!(r.atp, atp, "{}: the row's quantity", r.sku);
            if !r.dirty {
                assert_eq!(
                    r.basis,
                    Some(atp),
                    "{}: a clean row was pushed at it",
                    r.sku
                );
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        dispatcher.await.unwrap() > 0,
        "the dispatcher acknowledged rows meanwhile"
    );
    store.close().await;
}

/// One event on `TEE` at `L0`, for the identity story.
pub fn one(id: &str, source: &str, at: &str, state: &'static str, set: bool, q: i64) -> Event {
    let v = vec![(state, q)];
    Event::from_raw(&RawEvent {
        id,
        source,
        sku: "TEE",
        location: "L0",
        occurred_at: at,
        adjust: (!set).then(|| v.clone()),
        set: set.then_some(v),
        ..RawEvent::default()
    })
    .unwrap()
}

/// An event's identity is `(source, id)`: two systems may use the same id, and an override that
/// policy does not apply claims nothing, so the id's owner (or the same sender, corrected) is not
/// refused as a conflict. The outcomes and levels are the reference's.
pub async fn identity_is_source_and_id<B: Backend>(b: &B) {
    let dir = b.place().await;
    let store = b.open(&dir, rules(), channels()).await;
    let mut reference = MemoryLedger::new(rules());
    let steps = [
        // erp may not write on_hand (policy: reject): not applied, and the id stays free.
        (
            one(
                "ship:SO-9:1",
                "erp",
                "2026-01-01T01:00:00Z",
                "on_hand",
                true,
                3,
            ),
            Outcome::Override,
        ),
        // wms's real count under the same id.
        (
            one(
                "ship:SO-9:1",
                "wms",
                "2026-01-01T01:00:00Z",
                "on_hand",
                true,
                50,
            ),
            Outcome::Applied,
        ),
        // erp, corrected, under the id its refused override did not claim.
        (
            one(
                "ship:SO-9:1",
                "erp",
                "2026-01-01T01:00:00Z",
                "committed",
                false,
                2,
            ),
            Outcome::Applied,
        ),
        // Each source's own redelivery is a duplicate; a different payload a conflict.
        (
            one(
                "ship:SO-9:1",
                "wms",
                "2026-01-01T01:00:00Z",
                "on_hand",
                true,
                50,
            ),
            Outcome::Duplicate,
        ),
        (
            one(
                "ship:SO-9:1",
                "erp",
                "2026-01-01T01:00:00Z",
                "committed",
                false,
                9,
            ),
            Outcome::Conflict,
        ),
    ];
    for (i, (e, want)) in steps.iter().enumerate() {
        let got = store
            .apply(Utc::now(), incoming(&rules(), std::slice::from_ref(e)))
            .await
            .unwrap();
        assert_eq!(got[0].outcome, *want, "step {i}: {:?}", got[0].detail);
        assert_eq!(
            reference.apply(e.clone()).outcome,
            *want,
            "reference, step {i}"
        );
    }
    assert_levels(&store, &reference, "identity").await;
    let tee = Sku::parse("TEE").unwrap();
    let l0 = Location::parse("L0").unwrap();
    let levels = store.inventory(&tee).await.unwrap().unwrap();
    let at = levels.iter().find(|l| l.location == l0).unwrap().levels;
    assert_eq!((at.on_hand, at.committed), (50, 2));
    // One event by its identity: the one that holds it.
    let id = driftless_core::EventId::parse("ship:SO-9:1").unwrap();
    let wms = SystemId::parse("wms").unwrap();
    let erp = SystemId::parse("erp").unwrap();
    let got = store.event(&wms, &id).await.unwrap().unwrap();
    assert_eq!((got.outcome, got.sku.as_str()), (Outcome::Applied, "TEE"));
    assert_eq!(got.quantities, vec![("on_hand".to_owned(), 50)]);
    let got = store.event(&erp, &id).await.unwrap().unwrap();
    assert_eq!(got.outcome, Outcome::Applied);
    let nobody = SystemId::parse("shop").unwrap();
    assert!(store.event(&nobody, &id).await.unwrap().is_none());
    // The same again in one request: the writer decides a group with both sources' ids at once.
    let dir2 = b.place().await;
    let store2 = b.open(&dir2, rules(), channels()).await;
    let all: Vec<Event> = steps.iter().map(|(e, _)| e.clone()).collect();
    let got: Vec<Outcome> = store2
        .apply(Utc::now(), incoming(&rules(), &all))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    let want: Vec<Outcome> = steps.iter().map(|(_, o)| *o).collect();
    assert_eq!(got, want);
    store.close().await;
    store2.close().await;
}
