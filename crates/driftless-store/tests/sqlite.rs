//! The SQLite backend runs the storage test story (`story/`), and the tests only it needs (its
//! own data directories of earlier versions).

mod story;

use chrono::Utc;
use driftless_core::{ChannelSpec, Event, MemoryLedger, Rules, Sku};
use driftless_store::sqlite::SqliteOptions;
use driftless_store::{Outbox, SqliteStore, Store};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use story::Backend;
use story::ledger::{apply_both, assert_levels, channels, incoming, rules, stream};

struct Sqlite;

impl Backend for Sqlite {
    type S = SqliteStore;
    type Place = tempfile::TempDir;

    async fn place(&self) -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    async fn open(
        &self,
        dir: &tempfile::TempDir,
        rules: Rules,
        channels: Vec<ChannelSpec>,
    ) -> SqliteStore {
        SqliteStore::open(dir.path(), rules, channels)
            .await
            .unwrap()
    }

    async fn open_crashy(
        &self,
        dir: &tempfile::TempDir,
        rules: Rules,
        channels: Vec<ChannelSpec>,
        held: usize,
    ) -> SqliteStore {
        let opts = SqliteOptions {
            max_dirty_slots: held,
            max_unindexed_events: held,
            ..crashy()
        };
        SqliteStore::open_with(dir.path(), rules, channels, opts)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_rule_rejects_or_warns_at_the_decision() {
    story::checkpoints::a_rule_rejects_or_warns_at_the_decision(&Sqlite).await;
}

#[tokio::test]
async fn an_older_observation_never_replaces_a_newer() {
    story::checkpoints::an_older_observation_never_replaces_a_newer(&Sqlite).await;
}

#[tokio::test]
async fn matches_the_reference_across_groups_and_restart() {
    story::ledger::matches_the_reference_across_groups_and_restart(&Sqlite).await;
}

#[tokio::test]
async fn unwritten_cells_are_read_and_survive_a_crash() {
    story::ledger::unwritten_cells_are_read_and_survive_a_crash(&Sqlite).await;
}

#[tokio::test]
async fn records_incidents_and_history() {
    story::ledger::records_incidents_and_history(&Sqlite).await;
}

#[tokio::test]
async fn audits_and_outside_incidents_are_kept() {
    story::ledger::audits_and_outside_incidents_are_kept(&Sqlite).await;
}

#[tokio::test]
async fn large_groups_are_seen_once_acknowledged_with_a_dispatcher_beside_them() {
    story::ledger::large_groups_are_seen_once_acknowledged_with_a_dispatcher_beside_them(&Sqlite)
        .await;
}

#[tokio::test]
async fn identity_is_source_and_id() {
    story::ledger::identity_is_source_and_id(&Sqlite).await;
}

#[tokio::test]
async fn late_observations_and_override_actors() {
    story::outbox::late_observations_and_override_actors(&Sqlite).await;
}

#[tokio::test]
async fn versions_coalesce_and_only_the_current_one_cleans() {
    story::outbox::versions_coalesce_and_only_the_current_one_cleans(&Sqlite).await;
}

#[tokio::test]
async fn pins_dead_letters_and_replay_survive_a_restart() {
    story::outbox::pins_dead_letters_and_replay_survive_a_restart(&Sqlite).await;
}

#[tokio::test]
async fn observations_start_and_stop_the_divergence_clock() {
    story::outbox::observations_start_and_stop_the_divergence_clock(&Sqlite).await;
}

/// A data directory of the build that kept the per-cell index on `events` (no `event_keys`, no
/// `keys_watermark`) gets the index built from the ledger on its first open, and the old index
/// dropped: history and re-bases read the same as before.
#[tokio::test]
async fn a_ledger_without_event_keys_gets_them_on_open() {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    let events = stream(400, 5);
    let mut reference = MemoryLedger::new(rules());
    let store = SqliteStore::open(dir.path(), rules(), channels())
        .await
        .unwrap();
    apply_both(&store, &mut reference, &events, 11).await;
    let skus: Vec<Sku> = (0..4)
        .map(|i| Sku::parse(format!("S{i}")).unwrap())
        .collect();
    let mut want = Vec::new();
    for sku in &skus {
        want.push(store.history(sku, 10_000).await.unwrap());
    }
    store.close().await;

    // Back to the earlier layout.
    let file = dir.path().join("driftless.sqlite3");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .connect()
        .await
        .unwrap();
    for stmt in [
        "DROP TABLE event_keys",
        "DROP TABLE key_slices",
        "DELETE FROM meta WHERE key IN ('keys_watermark', 'key_slices_from')",
        "CREATE INDEX events_by_cell ON events (sku, location, at_nanos, seq, id)",
    ] {
        sqlx::query(stmt).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let store = SqliteStore::open(dir.path(), rules(), channels())
        .await
        .unwrap();
    for (sku, want) in skus.iter().zip(&want) {
        let have = store.history(sku, 10_000).await.unwrap();
        let key = |v: &[driftless_store::HistoryEntry]| {
            v.iter()
                .map(|e| (e.id.clone(), e.outcome))
                .collect::<Vec<_>>()
        };
        assert!(want.len() > 50);
        assert_eq!(key(&have), key(want), "{sku}");
    }
    assert_levels(&store, &reference, "after the index was rebuilt").await;
    // More events, late counts among them, after the rebuild still re-base over it.
    let more: Vec<Event> = stream(200, 77)
        .into_iter()
        .map(|mut e| {
            e.id = driftless_core::EventId::parse(format!("more-{}", e.id.as_str())).unwrap();
            e
        })
        .collect();
    apply_both(&store, &mut reference, &more, 9).await;
    assert_levels(&store, &reference, "after more events").await;
    store.close().await;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .connect()
        .await
        .unwrap();
    let (indexed, stored, old): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM event_keys), (SELECT COUNT(*) FROM events), \
         (SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_by_cell')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((indexed, old), (stored, 0));
}

/// Options that make every group commit write a slice of each kind beside its events.
fn slicing() -> SqliteOptions {
    SqliteOptions {
        max_dirty_slots: 1,
        max_unindexed_events: 1,
        idle_flush: std::time::Duration::from_secs(3600),
        ..Default::default()
    }
}

/// A slice written behind a group that fails (here: the index table refuses every insert, as it
/// did when a second process had written the same entries) must fail neither the group nor the
/// groups after it; once the table takes rows again, the held entries are written and nothing is
/// lost.
#[tokio::test]
async fn a_failed_slice_fails_no_group_and_the_writer_does_not_stay_wedged() {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    let events = stream(600, 11);
    let mut reference = MemoryLedger::new(rules());
    let store = open_in(dir.path(), slicing()).await;
    apply_both(&store, &mut reference, &events[..100], 10).await;
    let mut side = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("driftless.sqlite3"))
        .busy_timeout(std::time::Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON event_keys BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(&mut side)
    .await
    .unwrap();
    // Every one of these groups writes an index slice that fails.
    apply_both(&store, &mut reference, &events[100..400], 10).await;
    assert_levels(&store, &reference, "while slices fail").await;
    sqlx::query("DROP TRIGGER refuse")
        .execute(&mut side)
        .await
        .unwrap();
    side.close().await.unwrap();
    apply_both(&store, &mut reference, &events[400..], 10).await;
    assert_levels(&store, &reference, "after slices work again").await;
    store.close().await;
    let store = SqliteStore::open(dir.path(), rules(), channels())
        .await
        .unwrap();
    assert_levels(&store, &reference, "after a restart").await;
    // History as a twin's that never met a failing slice: every stored event once.
    let twin_dir = tempfile::tempdir().unwrap();
    let twin = SqliteStore::open(twin_dir.path(), rules(), channels())
        .await
        .unwrap();
    let mut twin_reference = MemoryLedger::new(rules());
    apply_both(&twin, &mut twin_reference, &events, 10).await;
    let sku = Sku::parse("S1").unwrap();
    let ids = |h: Vec<driftless_store::HistoryEntry>| {
        h.into_iter()
            .map(|e| (e.source, e.id, e.outcome))
            .collect::<Vec<_>>()
    };
    let all = store.history(&sku, 100_000).await.unwrap();
    assert_eq!(
        ids(all.clone()),
        ids(twin.history(&sku, 100_000).await.unwrap()),
        "every stored event once in history"
    );
    twin.close().await;
    assert!(all.len() > 100, "{}", all.len());
    store.close().await;
}

/// A reader opened beside a serving hub sees what the hub holds unwritten, refuses writes, writes
/// nothing on open or close, and the hub goes on committing (and restarts) as if it had not been
/// there.
#[tokio::test]
async fn a_reader_beside_the_hub_sees_everything_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let events = stream(900, 21);
    let mut reference = MemoryLedger::new(rules());
    let held = SqliteOptions {
        idle_flush: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let hub = SqliteStore::open_with(dir.path(), rules(), channels(), held)
        .await
        .unwrap();
    let file = dir.path().join("driftless.sqlite3");
    for (round, part) in events.chunks(300).enumerate() {
        apply_both(&hub, &mut reference, part, 9).await;
        let before = written(&file).await;
        let reader = SqliteStore::open_reader(dir.path(), rules(), channels())
            .await
            .unwrap();
        assert_levels(&reader, &reference, &format!("reader, round {round}")).await;
        assert!(matches!(
            reader.apply(Utc::now(), vec![]).await,
            Err(driftless_store::StoreError::ReadOnly)
        ));
        assert!(matches!(
            reader.outbox_replay("shop", None).await,
            Err(driftless_store::StoreError::ReadOnly)
        ));
        reader.close().await;
        assert_eq!(
            written(&file).await,
            before,
            "the reader wrote (round {round})"
        );
        assert_levels(&hub, &reference, &format!("hub, round {round}")).await;
    }
    hub.close().await;
    let hub = SqliteStore::open(dir.path(), rules(), channels())
        .await
        .unwrap();
    assert_levels(&hub, &reference, "after a restart").await;
    hub.close().await;
}

/// A read-only connection to the ledger file, beside the store, to look at what it wrote.
async fn read_only(file: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true)
        .connect()
        .await
        .unwrap()
}

/// What the tables written behind hold: rows per table and the watermarks.
async fn written(file: &Path) -> Vec<(String, i64)> {
    let mut conn = read_only(file).await;
    let mut out = Vec::new();
    for t in [
        "events",
        "event_keys",
        "cells",
        "outbox",
        "incidents",
        "audits",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        out.push((t.to_owned(), n));
    }
    let meta: Vec<(String, i64)> = sqlx::query_as("SELECT key, value FROM meta ORDER BY key")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    out.extend(meta);
    out
}

/// A data directory of the version whose event ids were one deployment-wide namespace
/// (`events.id` unique on its own, the index keyed without the position) is migrated on open and
/// keeps working: the same levels and history, and another source may now use a stored id.
#[tokio::test]
async fn a_ledger_with_ids_unique_alone_is_migrated_on_open() {
    use driftless_core::event::RawEvent;
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    // One override policy does not apply (erp may not write on_hand): stored once, as the
    // earlier version did, its id claimed then and free after the migration.
    let overridden = Event::from_raw(&RawEvent {
        id: "ov-1",
        source: "erp",
        sku: "S1",
        location: "L0",
        occurred_at: "2026-11-27T10:30:00Z",
        set: Some(vec![("on_hand", 7)]),
        ..RawEvent::default()
    })
    .unwrap();
    let mut events: Vec<Event> = stream(300, 8)
        .into_iter()
        .filter(|e| e.source.as_str() == "wms")
        .collect();
    events.push(overridden.clone());
    let mut reference = MemoryLedger::new(rules());
    let store = SqliteStore::open(dir.path(), rules(), channels())
        .await
        .unwrap();
    apply_both(&store, &mut reference, &events, 10).await;
    let sku = Sku::parse("S1").unwrap();
    let ids = |h: Vec<driftless_store::HistoryEntry>| {
        h.into_iter()
            .map(|e| (e.source, e.id, e.outcome))
            .collect::<Vec<_>>()
    };
    let before = ids(store.history(&sku, 100_000).await.unwrap());
    assert!(before.len() > 20);
    store.close().await;
    // The earlier schema, built here: ids unique on their own, the old index key.
    let file = dir.path().join("driftless.sqlite3");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .connect()
        .await
        .unwrap();
    for stmt in [
        "ALTER TABLE events RENAME TO events_now",
        "CREATE TABLE events (lsn INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, \
         fingerprint BLOB NOT NULL, source TEXT NOT NULL, sku TEXT NOT NULL, \
         location TEXT NOT NULL, at_nanos INTEGER NOT NULL, seq INTEGER NOT NULL, \
         kind TEXT NOT NULL, on_hand INTEGER, committed INTEGER, reserved INTEGER, \
         incoming INTEGER, unavailable INTEGER, uom TEXT, reason TEXT, ref TEXT, \
         received_nanos INTEGER NOT NULL, outcome TEXT NOT NULL, effective INTEGER NOT NULL, \
         detail TEXT)",
        "INSERT INTO events SELECT lsn, id, fingerprint, source, sku, location, at_nanos, seq, \
         kind, on_hand, committed, reserved, incoming, unavailable, uom, reason, ref, \
         received_nanos, outcome, effective, detail FROM events_now",
        "DROP TABLE events_now",
        "ALTER TABLE event_keys RENAME TO keys_now",
        "CREATE TABLE event_keys (sku TEXT NOT NULL, location TEXT NOT NULL, \
         at_nanos INTEGER NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, lsn INTEGER NOT NULL, \
         PRIMARY KEY (sku, location, at_nanos, seq, id)) WITHOUT ROWID",
        "INSERT INTO event_keys SELECT * FROM keys_now",
        "DROP TABLE keys_now",
        // Incidents without an actor of their own: a channel override as `channel:actor`.
        "ALTER TABLE incidents RENAME TO incidents_now",
        "CREATE TABLE incidents (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, \
         sku TEXT, location TEXT, system TEXT, event_id TEXT, detail TEXT NOT NULL, \
         at_nanos INTEGER NOT NULL)",
        "INSERT INTO incidents SELECT id, kind, sku, location, system, event_id, detail, \
         at_nanos FROM incidents_now",
        "DROP TABLE incidents_now",
        "INSERT INTO incidents (kind, sku, system, detail, at_nanos) \
         VALUES ('channel_override', 'S1', 'shop:merch.anna', 'shows 7', 1)",
    ] {
        sqlx::query(stmt).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let store = SqliteStore::open(dir.path(), rules(), channels())
        .await
        .unwrap();
    assert_levels(&store, &reference, "after the migration").await;
    assert_eq!(ids(store.history(&sku, 100_000).await.unwrap()), before);
    let overrides = store
        .incidents(&driftless_store::IncidentFilter {
            kind: Some("channel_override".into()),
            system: Some("shop".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(overrides.len(), 1);
    assert_eq!(overrides[0].actor.as_deref(), Some("merch.anna"));
    // A stored id, sent by the other source: its own event now, not a conflict.
    let taken = events.iter().find(|e| e.source.as_str() == "wms").unwrap();
    let other = if taken.source.as_str() == "wms" {
        "erp"
    } else {
        "wms"
    };
    let e = Event::from_raw(&RawEvent {
        id: taken.id.as_str(),
        source: other,
        sku: "S1",
        location: "L1",
        occurred_at: "2026-11-27T11:00:00Z",
        adjust: Some(vec![("committed", 4)]),
        ..RawEvent::default()
    })
    .unwrap();
    let got = store
        .apply(
            Utc::now(),
            story::ledger::incoming(&rules(), std::slice::from_ref(&e)),
        )
        .await
        .unwrap();
    assert_eq!(got[0].outcome, reference.apply(e).outcome);
    assert_eq!(got[0].outcome, driftless_core::Outcome::Applied);
    assert_levels(&store, &reference, "after a shared id").await;
    // The refused override's id is free again: erp, corrected, is applied under it.
    let corrected = Event::from_raw(&RawEvent {
        id: "ov-1",
        source: "erp",
        sku: "S1",
        location: "L0",
        occurred_at: "2026-11-27T10:30:00Z",
        adjust: Some(vec![("committed", 1)]),
        ..RawEvent::default()
    })
    .unwrap();
    let got = store
        .apply(
            Utc::now(),
            story::ledger::incoming(&rules(), std::slice::from_ref(&corrected)),
        )
        .await
        .unwrap();
    assert_eq!(got[0].outcome, driftless_core::Outcome::Applied);
    reference.apply(corrected);
    assert_levels(&store, &reference, "after the corrected event").await;
    store.close().await;
    // And it opens again, already migrated.
    let store = SqliteStore::open(dir.path(), rules(), channels())
        .await
        .unwrap();
    assert_levels(&store, &reference, "reopened").await;
    store.close().await;
}

/// Options under which closing is a crash: nothing is written behind when idle or on close, so
/// the next open replays whatever was held.
fn crashy() -> SqliteOptions {
    SqliteOptions {
        idle_flush: std::time::Duration::from_secs(3600),
        flush_on_exit: false,
        ..Default::default()
    }
}

/// The store in `dir` under `opts`, with the suite's rules and channels.
async fn open_in(dir: &Path, opts: SqliteOptions) -> SqliteStore {
    SqliteStore::open_with(dir, rules(), channels(), opts)
        .await
        .unwrap()
}

/// An open after a crash writes nothing (what the tail holds is held in memory as the writer held
/// it), so a second crash right after it replays the same tail again: the levels are the
/// reference's after each crash and after more events, and a clean stop writes everything.
#[tokio::test]
async fn an_open_after_a_crash_writes_nothing_and_a_second_crash_replays_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("driftless.sqlite3");
    let events = stream(900, 31);
    let mut reference = MemoryLedger::new(rules());
    let store = open_in(dir.path(), crashy()).await;
    apply_both(&store, &mut reference, &events[..450], 9).await;
    store.close().await;
    let before = written(&file).await;
    let store = open_in(dir.path(), crashy()).await;
    assert_eq!(written(&file).await, before, "the open wrote");
    assert_levels(&store, &reference, "after the first crash").await;
    apply_both(&store, &mut reference, &events[450..], 9).await;
    store.close().await;
    let store = open_in(dir.path(), crashy()).await;
    assert_levels(&store, &reference, "after the second crash").await;
    store.close().await;
    assert_clean_restart(dir.path(), &reference).await;
}

/// A tail longer than one window of the replay's index lookups (100,000 positions; pages of
/// 20,000), some of it duplicates, with part of the index written behind past its watermark:
/// after a crash every page is replayed once and every entry the table already holds is known
/// as such; the levels are the reference's, and a clean stop indexes every event exactly once.
#[tokio::test]
async fn a_tail_of_several_pages_replays_each_page_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("driftless.sqlite3");
    let events = stream(130_000, 59);
    let mut reference = MemoryLedger::new(rules());
    let opts = || SqliteOptions {
        max_unindexed_events: 20_000,
        ..crashy()
    };
    let store = open_in(dir.path(), opts()).await;
    apply_both(&store, &mut reference, &events, 2_000).await;
    store.close().await;
    let needed = replay_needed(&file).await;
    assert!(needed > 100_000, "the crash left a tail of {needed} events");
    assert!(
        indexed_past_watermark(&file).await > 0,
        "no index entry was written past the watermark"
    );
    let store = open_in(dir.path(), opts()).await;
    assert_levels(&store, &reference, "after the crash").await;
    store.close().await;
    assert_clean_restart(dir.path(), &reference).await;
}

/// A ledger whose index was written past its watermark by a version that kept no record of its
/// slices (no `key_slices`), crashed, then crashed again under this one: the replay asks the table
/// about the first writer's positions and trusts the records for the rest; every level is the
/// reference's and a clean stop indexes every event exactly once.
#[tokio::test]
async fn a_tail_indexed_partly_without_slice_records_replays_right() {
    use sqlx::{ConnectOptions, Connection};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("driftless.sqlite3");
    let events = stream(60_000, 61);
    let mut reference = MemoryLedger::new(rules());
    let opts = || SqliteOptions {
        max_unindexed_events: 5_000,
        ..crashy()
    };
    let store = open_in(dir.path(), opts()).await;
    apply_both(&store, &mut reference, &events[..30_000], 1_000).await;
    store.close().await;
    assert!(indexed_past_watermark(&file).await > 0);
    let mut conn = read_only(&file).await;
    let from: Option<i64> =
        sqlx::query_scalar("SELECT value FROM meta WHERE key = 'key_slices_from'")
            .fetch_optional(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        from,
        Some(0),
        "a new ledger's replay asks the table about nothing"
    );
    conn.close().await.unwrap();
    // Back to a writer that kept no records.
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&file)
        .connect()
        .await
        .unwrap();
    for stmt in [
        "DROP TABLE key_slices",
        "DELETE FROM meta WHERE key = 'key_slices_from'",
    ] {
        sqlx::query(stmt).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let store = open_in(dir.path(), opts()).await;
    assert_levels(&store, &reference, "after the first crash").await;
    apply_both(&store, &mut reference, &events[30_000..], 1_000).await;
    store.close().await;
    let mut conn = read_only(&file).await;
    let (from, records): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT value FROM meta WHERE key = 'key_slices_from'), \
         (SELECT COUNT(*) FROM key_slices)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(from > 0 && records > 0, "from {from}, {records} records");
    let store = open_in(dir.path(), opts()).await;
    assert_levels(&store, &reference, "after the second crash").await;
    store.close().await;
    assert_clean_restart(dir.path(), &reference).await;
}

/// Index entries the table holds past `meta.keys_watermark`.
async fn indexed_past_watermark(file: &Path) -> i64 {
    let mut conn = read_only(file).await;
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM event_keys WHERE lsn > \
         (SELECT COALESCE(MAX(value), 0) FROM meta WHERE key = 'keys_watermark')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

/// Events a crash would replay now: from the oldest of the three watermarks to the newest event.
async fn replay_needed(file: &Path) -> i64 {
    let mut conn = read_only(file).await;
    let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(lsn), 0) FROM events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let mut oldest = last;
    for k in ["cells_watermark", "outbox_watermark", "keys_watermark"] {
        let wm: Option<i64> = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(k)
            .fetch_optional(&mut conn)
            .await
            .unwrap();
        oldest = oldest.min(wm.unwrap_or(0));
    }
    last - oldest
}

/// Once the replay a crash would need outgrows `max_replay_events`, each group writes the oldest
/// of what is held (for the index, the oldest entries of each slot, not whole skus): the replay
/// stays within the bound and a group, and after a crash the levels are the reference's, before
/// and after more events, and every event is indexed once everything is written.
#[tokio::test]
async fn the_replay_a_crash_would_need_stays_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("driftless.sqlite3");
    let events = stream(1600, 47);
    let mut reference = MemoryLedger::new(rules());
    let (max_replay, per) = (120, 10);
    // Fewer index entries held than the replay allows, so slices of the oldest entries are only
    // part of what is held.
    let bounded = || SqliteOptions {
        max_unindexed_events: 60,
        max_replay_events: max_replay,
        ..crashy()
    };
    let store = open_in(dir.path(), bounded()).await;
    for chunk in events[..1000].chunks(100) {
        apply_both(&store, &mut reference, chunk, per).await;
        let needed = replay_needed(&file).await;
        assert!(
            needed <= max_replay + 2 * per as i64,
            "a crash would replay {needed} events"
        );
    }
    store.close().await;
    let store = open_in(dir.path(), bounded()).await;
    assert_levels(&store, &reference, "after the crash").await;
    apply_both(&store, &mut reference, &events[1000..], per).await;
    assert_levels(&store, &reference, "after more events").await;
    store.close().await;
    assert_clean_restart(dir.path(), &reference).await;
}

/// Two clean stops after whatever came before: the levels still match `reference`, and with
/// nothing left behind every event is indexed.
async fn assert_clean_restart(dir: &Path, reference: &MemoryLedger) {
    let store = SqliteStore::open(dir, rules(), channels()).await.unwrap();
    store.close().await;
    let store = SqliteStore::open(dir, rules(), channels()).await.unwrap();
    assert_levels(&store, reference, "after a clean stop").await;
    let clean = written(&dir.join("driftless.sqlite3")).await;
    let held = |m: &[(String, i64)], k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert_eq!(
        held(&clean, "event_keys"),
        held(&clean, "events"),
        "every event indexed"
    );
    store.close().await;
}

/// Under groups that never pause, the WAL still starts over once it is longer than
/// `max_wal_bytes` (SQLite alone starts it over only when a group begins with all of it copied),
/// and the ledger is the reference's after a crash.
#[tokio::test]
async fn the_wal_starts_over_while_groups_keep_coming() {
    let dir = tempfile::tempdir().unwrap();
    let wal = dir.path().join("driftless.sqlite3-wal");
    let short = || SqliteOptions {
        fsync: false,
        max_wal_bytes: 64 << 10,
        ..crashy()
    };
    let store = open_in(dir.path(), short()).await;
    // One stream in four parts: ids are unique to a stream, and its duplicates carry the same
    // event, so the order the four senders interleave in does not change the levels.
    let events = stream(160_000, 101);
    let streams: Vec<&[Event]> = events.chunks(40_000).collect();
    // Until the WAL has started over three times, or the stream ends (or a deadline for a stuck
    // run): without the checkpointer's turn it never does while the senders keep the writer busy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let enough = AtomicBool::new(false);
    let watch = async {
        let mut starts = std::collections::BTreeSet::new();
        while !enough.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            starts.extend(wal_generation(&wal));
            if starts.len() > 3 {
                enough.store(true, Ordering::Relaxed);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        starts.len()
    };
    let (a, b, c, d, generations) = tokio::join!(
        send_until(&store, streams[0], &enough),
        send_until(&store, streams[1], &enough),
        send_until(&store, streams[2], &enough),
        send_until(&store, streams[3], &enough),
        watch
    );
    store.close().await;
    assert!(
        generations > 3,
        "the WAL started over {} times",
        generations.saturating_sub(1)
    );
    let mut reference = MemoryLedger::new(rules());
    for (s, n) in streams.iter().zip([a, b, c, d]) {
        for e in &s[..n] {
            reference.apply(e.clone());
        }
    }
    let store = open_in(dir.path(), short()).await;
    assert_levels(&store, &reference, "after the crash").await;
    store.close().await;
}

/// Sends `events` in requests of 200 until `enough`; returns how many it sent.
async fn send_until(store: &SqliteStore, events: &[Event], enough: &AtomicBool) -> usize {
    let mut sent = 0;
    for chunk in events.chunks(200) {
        if enough.load(Ordering::Relaxed) {
            break;
        }
        store
            .apply(Utc::now(), incoming(&rules(), chunk))
            .await
            .unwrap();
        sent += chunk.len();
    }
    sent
}

/// The WAL header's salt, which SQLite changes each time it starts the WAL over.
fn wal_generation(wal: &Path) -> Option<u32> {
    use std::io::Read;
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(wal).ok()?;
    f.read_exact(&mut head).ok()?;
    Some(u32::from_be_bytes([head[16], head[17], head[18], head[19]]))
}
