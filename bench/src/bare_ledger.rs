//! The flat-ingest peers: the rows a ledger keeps for each event, written with nothing but SQL,
//! into an empty database and into a copy of the full ledger, in the same run as the hubs.
//!
//! For each event the ledger keeps an `events` row (unique on `(source, id)`), an `event_keys` row
//! (the per-cell index a late count re-bases over, keyed by cell), the cell's level in `cells` and,
//! for a sku a channel sells, its `outbox` row. Writing those rows costs what the B-trees cost: in
//! a 10M-event ledger the cells (2M slots) and the index (10M entries) are far larger than the
//! page cache, and each group's keys land on pages spread over them. This writes the same rows for
//! the same load with multi-row statements, one durable transaction per group, no HTTP, no JSON, no
//! fold and no reads of its own (the upserts find their rows inside SQLite): its full / empty ratio
//! is what a ledger that writes these rows as they come gets on this machine. The `events` rows
//! alone are the floor of the work: what must be durable before an event is answered.

use crate::{Row, insert_rows, open_bare};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Events per transaction: what the hub's groups held in this load (four requests of 1,000 in
/// flight commit as one group of ~2,000).
const GROUP: usize = 2000;
/// Rows per statement: under SQLite's limit on bound parameters (13 a row).
const STATEMENT: usize = 1000;
/// The benchmark channel's locations (`CONFIG`): an event at one of them changes the sku's outbox row.
const CHANNEL_LOCATIONS: usize = 10;

/// Opens `file` (created with the ledger's schema when new) with the hub's settings for serving:
/// WAL, `synchronous = FULL`, a 16 MiB page cache over the memory-mapped file, no spilling.
async fn open(file: &Path) -> anyhow::Result<SqliteConnection> {
    let serving = [
        ("cache_size", "-16384"),
        ("mmap_size", "2147418112"),
        ("cache_spill", "false"),
    ];
    open_bare(file, &serving).await
}

/// What a group's transaction writes.
#[derive(Clone, Copy, PartialEq)]
pub enum Rows {
    /// Every row a ledger keeps for the events: a ledger that writes nothing behind.
    All,
    /// The `events` rows alone: the least any ledger must make durable before it answers.
    EventsOnly,
}

impl Rows {
    pub const ALL: [Rows; 2] = [Rows::All, Rows::EventsOnly];

    pub fn name(self) -> &'static str {
        match self {
            Rows::All => "every row",
            Rows::EventsOnly => "events only",
        }
    }
}

/// Writes `rows` into the ledger in `file`, a durable transaction per group; returns rows/s.
pub async fn write(file: &Path, rows: &[Row], what: Rows) -> anyhow::Result<f64> {
    let mut conn = open(file).await?;
    let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(lsn), 0) FROM events")
        .fetch_one(&mut conn)
        .await?;
    let start = Instant::now();
    for (g, group) in rows.chunks(GROUP).enumerate() {
        let first = last + 1 + (g * GROUP) as i64;
        let mut tx = conn.begin().await?;
        for (s, part) in group.chunks(STATEMENT).enumerate() {
            let lsn = first + (s * STATEMENT) as i64;
            insert_rows(&mut tx, part, Some(lsn)).await?;
            if what == Rows::All {
                insert_keys(&mut tx, part, lsn).await?;
            }
        }
        if what == Rows::All {
            upsert_cells(&mut tx, group, first).await?;
            upsert_outbox(&mut tx, group, first).await?;
        }
        tx.commit().await?;
    }
    let rate = rows.len() as f64 / start.elapsed().as_secs_f64();
    conn.close().await?;
    Ok(rate)
}

async fn insert_keys(conn: &mut SqliteConnection, rows: &[Row], lsn: i64) -> anyhow::Result<()> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO event_keys (sku, location, at_nanos, seq, id, lsn) ",
    );
    q.push_values(rows.iter().enumerate(), |mut b, (i, r)| {
        b.push_bind(r.sku.as_str())
            .push_bind(r.location.as_str())
            .push_bind(r.at_nanos)
            .push_bind(0i64)
            .push_bind(r.id.as_str())
            .push_bind(lsn + i as i64);
    });
    q.build().execute(&mut *conn).await?;
    Ok(())
}

/// Each touched cell's on-hand level once per group: a count sets it, an adjustment moves it.
async fn upsert_cells(conn: &mut SqliteConnection, rows: &[Row], lsn: i64) -> anyhow::Result<()> {
    // (sku, location) -> (set by a count in this group, value or delta)
    let mut cells: BTreeMap<(&str, &str), (bool, i64)> = BTreeMap::new();
    for r in rows {
        let c = cells.entry((&r.sku, &r.location)).or_insert((false, 0));
        *c = if r.set {
            (true, r.qty)
        } else {
            (c.0, c.1 + r.qty)
        };
    }
    let cells: Vec<_> = cells.into_iter().collect();
    for part in cells.chunks(STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO cells (sku, location, state, value, set_nanos, lsn) ",
        );
        q.push_values(part, |mut b, ((sku, loc), (set, v))| {
            b.push_bind(*sku)
                .push_bind(*loc)
                .push_bind(0i64)
                .push_bind(*v)
                .push_bind(set.then_some(lsn))
                .push_bind(lsn);
        });
        q.push(
            " ON CONFLICT (sku, location, state) DO UPDATE SET value = CASE WHEN \
             excluded.set_nanos IS NULL THEN value + excluded.value ELSE excluded.value END, \
             lsn = excluded.lsn",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The channel's row of each sku touched at one of its locations: a new version, marked dirty.
async fn upsert_outbox(conn: &mut SqliteConnection, rows: &[Row], lsn: i64) -> anyhow::Result<()> {
    let skus: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| {
            r.location[1..]
                .parse::<usize>()
                .is_ok_and(|l| l < CHANNEL_LOCATIONS)
        })
        .map(|r| r.sku.as_str())
        .collect();
    let skus: Vec<&str> = skus.into_iter().collect();
    for part in skus.chunks(STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO outbox (channel, sku, version, lsn, dirty, changed_nanos, atp) ",
        );
        q.push_values(part, |mut b, sku| {
            b.push_bind("shop")
                .push_bind(*sku)
                .push_bind(1i64)
                .push_bind(lsn)
                .push_bind(1i64)
                .push_bind(lsn)
                .push_bind(0i64);
        });
        q.push(
            " ON CONFLICT (channel, sku) DO UPDATE SET version = version + 1, lsn = excluded.lsn, \
             dirty = 1, changed_nanos = excluded.changed_nanos",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}
