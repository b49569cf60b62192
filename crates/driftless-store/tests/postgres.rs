//! The PostgreSQL backend runs the storage test story (`story/`), each ledger in a fresh
//! database `dl_pg_<random>` created on the server of `DRIFTLESS_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped afterwards; and what only it
//! needs: several store instances (hub processes) applying to one database at once.
//!
//! Without a reachable server the tests skip, saying so once on standard error; under
//! `CI=true` they fail instead.

// Some of the story's helpers serve only the SQLite runner's own tests.
#[allow(dead_code)]
mod story;

use chrono::Utc;
use driftless_core::{ChannelSpec, Event, Location, MemoryLedger, Rules, Sku};
use driftless_store::outbox::{Scan, ScanFrom};
use driftless_store::{Outbox, PgStore, Store};
use sqlx::{ConnectOptions, Connection};
use std::io::Write;
use std::str::FromStr;
use story::Backend;
use story::ledger::{assert_levels, channels, incoming, one as one_event, rules, stream};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

struct Postgres {
    /// Connects to the server's administrative database (where databases are created).
    admin: sqlx::postgres::PgConnectOptions,
}

/// A database of its own, dropped (with any connection still open to it) when this is dropped.
struct Database {
    admin: sqlx::postgres::PgConnectOptions,
    name: String,
    url: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut c = admin.connect().await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await
                .ok()?;
                c.close().await.ok()
            })
        })
        .join();
    }
}

impl Postgres {
    /// The server to test against, or `None` (said once) when it cannot be reached outside CI.
    async fn new() -> Option<Postgres> {
        let url =
            std::env::var("DRIFTLESS_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let opts = sqlx::postgres::PgConnectOptions::from_str(&url)
            .unwrap_or_else(|e| panic!("DRIFTLESS_TEST_DATABASE_URL {url}: {e}"))
            .database("postgres");
        match opts.connect().await {
            Ok(c) => {
                let _ = c.close().await;
                Some(Postgres { admin: opts })
            }
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    // Straight to the process's stderr: the test harness captures `eprintln!`.
                    let _ = writeln!(
                        std::io::stderr(),
                        "driftless-store: PostgreSQL tests skipped: no server at {url} ({e}); \
                         set DRIFTLESS_TEST_DATABASE_URL or run .ci/run"
                    );
                });
                None
            }
            Err(e) => panic!("CI=true and PostgreSQL is unreachable at {url}: {e}"),
        }
    }
}

fn fresh_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
    format!(
        "dl_pg_{:x}_{}_{}",
        t ^ (u64::from(std::process::id()) << 32),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl Backend for Postgres {
    type S = PgStore;
    type Place = Database;

    async fn place(&self) -> Database {
        let name = fresh_name();
        let mut c = self.admin.connect().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        let _ = c.close().await;
        let url = self
            .admin
            .clone()
            .database(&name)
            .to_url_lossy()
            .to_string();
        Database {
            admin: self.admin.clone(),
            name,
            url,
        }
    }

    async fn open(&self, db: &Database, rules: Rules, channels: Vec<ChannelSpec>) -> PgStore {
        PgStore::open(&db.url, rules, channels).await.unwrap()
    }

    /// Nothing is held in memory: a crash is a close.
    async fn open_crashy(
        &self,
        db: &Database,
        rules: Rules,
        channels: Vec<ChannelSpec>,
        _held: usize,
    ) -> PgStore {
        self.open(db, rules, channels).await
    }
}

macro_rules! story {
    ($($name:ident => $path:path;)*) => {$(
        #[tokio::test]
        async fn $name() {
            let Some(b) = Postgres::new().await else { return };
            $path(&b).await;
        }
    )*};
}

story! {
    matches_the_reference_across_groups_and_restart => story::ledger::matches_the_reference_across_groups_and_restart;
    unwritten_cells_are_read_and_survive_a_crash => story::ledger::unwritten_cells_are_read_and_survive_a_crash;
    records_incidents_and_history => story::ledger::records_incidents_and_history;
    audits_and_outside_incidents_are_kept => story::ledger::audits_and_outside_incidents_are_kept;
    large_groups_are_seen_once_acknowledged_with_a_dispatcher_beside_them => story::ledger::large_groups_are_seen_once_acknowledged_with_a_dispatcher_beside_them;
    identity_is_source_and_id => story::ledger::identity_is_source_and_id;
    an_older_observation_never_replaces_a_newer => story::checkpoints::an_older_observation_never_replaces_a_newer;
    a_rule_rejects_or_warns_at_the_decision => story::checkpoints::a_rule_rejects_or_warns_at_the_decision;
    late_observations_and_override_actors => story::outbox::late_observations_and_override_actors;
    versions_coalesce_and_only_the_current_one_cleans => story::outbox::versions_coalesce_and_only_the_current_one_cleans;
    pins_dead_letters_and_replay_survive_a_restart => story::outbox::pins_dead_letters_and_replay_survive_a_restart;
    observations_start_and_stop_the_divergence_clock => story::outbox::observations_start_and_stop_the_divergence_clock;
}

/// Two store instances on one database (two hub processes) apply overlapping streams at once:
/// every event is delivered to both, some several times, in different orders and request sizes.
/// The ledger must equal the reference applied once: each `(source, id)` stored once, the
/// levels and each channel row's quantity the reference's.
#[tokio::test]
async fn two_hubs_on_one_database_apply_each_event_once() {
    let Some(b) = Postgres::new().await else {
        return;
    };
    let db = b.place().await;
    let events = stream(3_000, 5);
    let mut reference = MemoryLedger::new(rules());
    for e in &events {
        reference.apply(e.clone());
    }
    let one = std::sync::Arc::new(b.open(&db, rules(), channels()).await);
    let two = std::sync::Arc::new(b.open(&db, rules(), channels()).await);
    // Hub one takes the stream in order in requests of 50; hub two the same events backwards in
    // requests of 37; a third client redelivers every fifth event to hub one in requests of 11.
    let forward: Vec<Event> = events.clone();
    let backward: Vec<Event> = events.iter().rev().cloned().collect();
    let again: Vec<Event> = events.iter().step_by(5).cloned().collect();
    let send = |store: std::sync::Arc<PgStore>, evs: Vec<Event>, per: usize| {
        tokio::spawn(async move {
            let mut applied = 0usize;
            for c in evs.chunks(per) {
                // Several requests in flight at once, so each hub also groups them.
                let r = store
                    .apply(Utc::now(), incoming(&rules(), c))
                    .await
                    .unwrap();
                applied += r
                    .iter()
                    .filter(|r| r.outcome == driftless_core::Outcome::Applied)
                    .count();
            }
            applied
        })
    };
    let tasks = [
        send(one.clone(), forward, 50),
        send(two.clone(), backward, 37),
        send(one.clone(), again, 11),
    ];
    // Outcomes depend on arrival order (a count arriving after a newer one is stale); the
    // state does not.
    let mut applied = 0;
    for t in tasks {
        applied += t.await.unwrap();
    }
    assert!(applied > 0);
    assert_levels(one.as_ref(), &reference, "hub one").await;
    assert_levels(two.as_ref(), &reference, "hub two").await;
    // Each event stored at most once under its identity.
    let mut c = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let doubled: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT source, id FROM events WHERE claims \
         GROUP BY source, id HAVING COUNT(*) > 1) d",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(doubled, 0);
    let claimed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE claims")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(claimed as usize, reference.events_seen());
    let _ = c.close().await;
    // The channel rows carry the reference's quantity.
    let l0 = Location::parse("L0").unwrap();
    let skus: Vec<Sku> = (0..4)
        .map(|i| Sku::parse(format!("S{i}")).unwrap())
        .collect();
    let rows = two
        .outbox_scan(&Scan {
            channel: "shop".into(),
            locations: vec![l0.clone()],
            from: ScanFrom::Skus(skus),
            limit: 100,
        })
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        let sku = r.sku.clone();
        assert_eq!(r.atp, reference.levels(&sku, &l0).available(), "{sku} atp");
    }
    one.close().await;
    two.close().await;
}

/// The version a reader sees grows by one with every change, whichever hub stored it. Each
/// process's connections take ledger positions from the sequence in blocks, so a change one hub
/// stores after the other hub's can hold the lower position: a version that was the newest
/// position stood still then, and a reader took a changed sku for unchanged.
#[tokio::test]
async fn the_version_grows_with_every_change_whichever_hub_stores_it() {
    let Some(b) = Postgres::new().await else {
        return;
    };
    let db = b.place().await;
    let one = b.open(&db, rules(), channels()).await;
    let two = b.open(&db, rules(), channels()).await;
    let tee = Sku::parse("TEE").unwrap();
    let mut versions = Vec::new();
    for i in 0..6 {
        let hub = if i % 2 == 0 { &one } else { &two };
        let at = format!("2026-01-01T0{i}:00:00Z");
        let e = one_event(&format!("v{i}"), "wms", &at, "on_hand", false, 1);
        let r = hub
            .apply(Utc::now(), incoming(&rules(), &[e]))
            .await
            .unwrap();
        assert_eq!(r[0].outcome, driftless_core::Outcome::Applied);
        versions.push((
            one.sku_version(&tee).await.unwrap(),
            two.sku_version(&tee).await.unwrap(),
        ));
    }
    let want: Vec<_> = (1..=6).map(|n| (Some(n), Some(n))).collect();
    assert_eq!(versions, want);
    one.close().await;
    two.close().await;
}

/// Only one process holds a channel's lease; when its connection ends, another takes it.
#[tokio::test]
async fn one_dispatcher_per_channel_across_processes() {
    let Some(b) = Postgres::new().await else {
        return;
    };
    let db = b.place().await;
    let one = b.open(&db, rules(), channels()).await;
    let two = b.open(&db, rules(), channels()).await;
    let lease = one.channel_lease("shop").await.unwrap().expect("free");
    assert!(lease.is_held());
    assert!(two.channel_lease("shop").await.unwrap().is_none());
    // Another channel is independent.
    assert!(two.channel_lease("other").await.unwrap().is_some());
    drop(lease);
    let mut taken = None;
    for _ in 0..50 {
        if let Some(l) = two.channel_lease("shop").await.unwrap() {
            taken = Some(l);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut taken = taken.expect("the released lease is taken by the other process");
    // Cut the lease's connection from the server: the holder learns it lost the lease.
    let mut c = sqlx::postgres::PgConnectOptions::from_str(&db.url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
         WHERE l.locktype = 'advisory' AND l.database = \
         (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .execute(&mut c)
    .await
    .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), taken.lost())
        .await
        .expect("the lost lease is noticed");
    assert!(!taken.is_held());
    let _ = c.close().await;
    one.close().await;
    two.close().await;
}

/// Another process claims an event's `(source, id)` for another slot while a group holds its own
/// slot's lock and has already looked the id up (not there yet): the group's insert meets the
/// other's row in the `(source, id)` index, and the group runs again, finds the claim and answers
/// `conflict`, storing nothing under the id and leaving the cells as they were.
#[tokio::test]
async fn an_id_claimed_by_another_process_mid_group_is_a_conflict() {
    let Some(b) = Postgres::new().await else {
        return;
    };
    let db = b.place().await;
    let store = std::sync::Arc::new(b.open(&db, rules(), channels()).await);
    let connect = || async {
        sqlx::postgres::PgConnectOptions::from_str(&db.url)
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    // The other process's claim, not committed yet: the group's lookup cannot see it.
    let mut other = connect().await;
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query(
        "INSERT INTO events (id, fingerprint, source, sku, location, at_nanos, seq, kind, \
         on_hand, received_nanos, outcome, effective, claims) \
         VALUES ('race-1', $1, 'wms', 'ELSEWHERE', 'L1', 0, 0, 'adjust', 1, 0, 'applied', \
         TRUE, TRUE)",
    )
    .bind(vec![0xabu8; 32])
    .execute(&mut other)
    .await
    .unwrap();
    let ev = Event::from_raw(&driftless_core::event::RawEvent {
        id: "race-1",
        source: "wms",
        sku: "S0",
        location: "L0",
        occurred_at: "2026-11-27T10:00:00Z",
        adjust: Some(vec![("on_hand", 5)]),
        ..Default::default()
    })
    .unwrap();
    let applying = {
        let store = store.clone();
        tokio::spawn(async move { store.apply(Utc::now(), incoming(&rules(), &[ev])).await })
    };
    // Wait until the group's insert waits on the other's uncommitted index entry.
    let mut watch = connect().await;
    let mut waiting = false;
    for _ in 0..200 {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'COPY events%'",
        )
        .fetch_one(&mut watch)
        .await
        .unwrap();
        if n > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        waiting,
        "the group's insert never waited on the other claim"
    );
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let receipts = applying.await.unwrap().unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].outcome, driftless_core::Outcome::Conflict);
    let claims: Vec<String> = sqlx::query_scalar(
        "SELECT sku FROM events WHERE source = 'wms' AND id = 'race-1' AND claims",
    )
    .fetch_all(&mut watch)
    .await
    .unwrap();
    assert_eq!(claims, ["ELSEWHERE"]);
    let s0 = Sku::parse("S0").unwrap();
    let l0 = Location::parse("L0").unwrap();
    let levels = store.inventory(&s0).await.unwrap().unwrap_or_default();
    assert!(
        levels
            .iter()
            .all(|l| l.location != l0 || l.levels.on_hand == 0),
        "the conflicting event changed the cells"
    );
    let _ = (other.close().await, watch.close().await);
    store.close().await;
}

/// A database whose `synchronous_commit` is `off` (a common setting of write-heavy servers)
/// would let a commit, and so an acknowledgement, return before its WAL is flushed: the store's
/// connections set it `on` for themselves, and still apply events. A durable value the operator
/// chose (`local` here) is left as it is.
#[tokio::test]
async fn an_unflushed_commit_setting_is_pinned_on_for_the_hubs_connections() {
    let Some(b) = Postgres::new().await else {
        return;
    };
    for (set, seen) in [("off", "on"), ("local", "local")] {
        let db = b.place().await;
        let mut admin = sqlx::postgres::PgConnectOptions::from_str(&db.url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} SET synchronous_commit = {set}",
            db.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let _ = admin.close().await;
        let store = b.open(&db, rules(), channels()).await;
        assert_eq!(store.server_settings().synchronous_commit, seen, "{set}");
        assert!(!store.server_settings().commits_unflushed());
        let events = stream(5, 7);
        let receipts = store
            .apply(Utc::now(), incoming(&rules(), &events))
            .await
            .unwrap();
        assert_eq!(receipts.len(), 5);
        store.close().await;
    }
}

/// A commit in one process tells every other process's dispatchers where its outbox marks are:
/// a floor no later than any `changed_nanos` it wrote. Commits land in any order (several
/// appliers, several processes, clocks that differ between hosts), so a row can become visible
/// behind a cursor that already passed its position; the floor is how a dispatcher finds it
/// without waiting for its next full rescan.
#[tokio::test]
async fn a_commit_tells_the_other_processes_where_its_marks_are() {
    use driftless_store::outbox::{FROM_THE_START, WAKE_ONLY};
    let Some(b) = Postgres::new().await else {
        return;
    };
    let db = b.place().await;
    let one = b.open(&db, rules(), channels()).await;
    let two = b.open(&db, rules(), channels()).await;
    let mut heard = one.outbox_changes();
    let event = |k: usize| {
        driftless_core::Event::from_raw(&driftless_core::event::RawEvent {
            id: &format!("floor-{k}"),
            source: "wms",
            sku: "S1",
            location: "L0",
            occurred_at: "2026-11-27T10:00:00Z",
            adjust: Some(vec![("on_hand", 1)]),
            ..driftless_core::event::RawEvent::default()
        })
        .unwrap()
    };
    // `one`'s listener may not be listening yet when `two` first commits (that notice would be
    // lost, and the listener says "from the start" once it listens): commit again until a floor
    // arrives.
    let mut floor = None;
    for k in 0..20 {
        let before = Utc::now().timestamp_nanos_opt().unwrap();
        two.apply(Utc::now(), incoming(&rules(), &[event(k)]))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        while let Ok(Ok(f)) = tokio::time::timeout_at(deadline, heard.recv()).await {
            if f != FROM_THE_START {
                assert_ne!(f, WAKE_ONLY, "a commit that marked rows says where");
                assert!(
                    f >= before,
                    "the floor {f} is this commit's, made after {before}"
                );
                floor = Some(f);
                break;
            }
        }
        if floor.is_some() {
            break;
        }
    }
    let floor = floor.expect("the other process's commit was heard");
    let mut scan = Scan {
        channel: "shop".into(),
        locations: channels()[0].locations.clone(),
        from: ScanFrom::After(i64::MIN, None),
        limit: 100,
    };
    let rows = one.outbox_scan(&scan).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].changed_nanos >= floor, "{rows:?} behind {floor}");
    // A cursor past the row finds it again from the floor.
    scan.from = ScanFrom::After(rows[0].changed_nanos, Some(rows[0].sku.clone()));
    assert!(one.outbox_scan(&scan).await.unwrap().is_empty());
    scan.from = ScanFrom::After(floor, None);
    assert_eq!(one.outbox_scan(&scan).await.unwrap().len(), 1);
    one.close().await;
    two.close().await;
}
