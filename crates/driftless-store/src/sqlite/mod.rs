//! Embedded SQLite. One writer task owns the only write connection: SQLite has a single writer
//! anyway, and owning it lets the writer keep the hot cells in memory and commit many requests in
//! one transaction (group commit: one fsync for everything that queued while the previous commit
//! was on disk). Readers use a separate pool; WAL mode lets them run beside the writer.
//!
//! No statement binds its `LIMIT` as a bare parameter: SQLite reads that parameter while it
//! plans, and so prepares the statement again at every execution (measured: the consistency
//! rules' read, once per count, took ~55 µs instead of ~7). A constant limit is written into the
//! text; a limit that varies is bound as `LIMIT (SELECT ?)`, which the planner does not read.
//!
//! # Layout
//! - this module: the store's handles, its options, opening it. `wal`: the WAL's checkpointer.
//! - `writer`: the writer task and the group commit, as named phases.
//! - `behind`: the one write-behind protocol; `cells`, `marks`, `keys`: what the writer holds in
//!   memory and writes behind by it; `sweep`: the writer writing their slices; `keyslices`: the
//!   record of the index's slices, so a replay knows which entries are written.
//! - `recovery`: replaying the ledger tail on open; `tail`: reading it in pages.
//! - `reads`: the [`crate::Store`] face: reads over the tables and what the writer holds.
//! - `outbox`: the [`crate::Outbox`] face.
//! - `sql`: statements the others share. [`schema`]: the tables.

mod behind;
mod cells;
mod checkpoints;
mod checks;
mod keys;
mod keyslices;
mod marks;
mod outbox;
mod positions;
mod reads;
mod recovery;
pub mod schema;
mod skumap;
mod sql;
mod sweep;
mod tail;
mod wal;
mod writer;

use crate::{Incoming, Receipt, StoreError};
use cells::{CellCache, Overlay};
use chrono::{DateTime, TimeZone, Utc};
use driftless_core::{ChannelSpec, Rules};
use keys::KeyTail;
use marks::Marks;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use writer::Writer;

/// The writer's in-memory maps: keyed by skus and event ids that senders choose, but never
/// exposed to a hash-flooding peer (a request is bounded and the maps hold validated ids), so a
/// fast non-cryptographic hasher, not SipHash.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Knobs with production defaults; tests and benchmarks may change them.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Requests queued for the writer before `apply` answers [`StoreError::Overloaded`].
    pub max_pending: usize,
    /// Most events one group commit takes.
    pub max_group_events: usize,
    /// Most `(sku, location)` slots the writer keeps in memory.
    pub max_cached_slots: usize,
    /// `synchronous = FULL`: a commit survives power loss, not only a process crash.
    pub fsync: bool,
    /// Changed `(sku, location)` slots the writer keeps unwritten (see `cells.rs`); above this, each
    /// group commit also writes a slice of them.
    pub max_dirty_slots: usize,
    /// The replay a crash may need, in events: once a kind's watermark is further behind, each
    /// group commit writes the oldest of what that kind holds (see `behind.rs`). A replay costs
    /// a few microseconds an event on open, before the hub is ready.
    pub max_replay_events: i64,
    /// How long the writer waits idle before writing every waiting cell.
    pub idle_flush: Duration,
    /// Whether the writer writes the waiting cells when the store is dropped or closed. Off only
    /// in tests that stand in for a crash.
    pub flush_on_exit: bool,
    /// Events whose per-cell index entries the writer keeps unwritten (see `keys.rs`); above
    /// this, each group commit also writes a slice of them.
    pub max_unindexed_events: usize,
    /// The WAL's length, in bytes, past which the checkpointer starts it over between two groups
    /// (see `wal.rs`): a crash leaves at most about this much for the open to read back.
    pub max_wal_bytes: u64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_pending: 1024,
            max_group_events: 20_000,
            max_cached_slots: 1_000_000,
            fsync: true,
            max_dirty_slots: 100_000,
            max_replay_events: 1_000_000,
            idle_flush: Duration::from_millis(500),
            flush_on_exit: true,
            max_unindexed_events: 200_000,
            max_wal_bytes: 256 << 20,
        }
    }
}

pub(crate) struct Request {
    received_at: DateTime<Utc>,
    batch: Vec<Incoming>,
    reply: oneshot::Sender<Result<Vec<Receipt>, StoreError>>,
}

pub(crate) enum Job {
    Apply(Request),
    /// Write every waiting cell, then answer (shutdown).
    Flush(oneshot::Sender<()>),
}

/// The embedded store.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    pub(crate) read: SqlitePool,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    /// Fan-out's write connection (`outbox.rs`), opened on first use.
    pub(crate) side: tokio::sync::OnceCell<SqlitePool>,
    /// Held by every writer of the process for the length of its transaction: waiting here is a
    /// queue, where SQLite's busy handler would sleep and poll.
    pub(crate) gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Told by the writer after a commit that marked outbox rows dirty (see
    /// [`crate::Outbox::outbox_changes`]).
    pub(crate) changes: crate::outbox::OutboxSignal,
    /// Cells not written to the table yet (see `cells.rs`).
    pub(crate) overlay: std::sync::Arc<Overlay>,
    /// Outbox rows not written to the table yet (see `marks.rs`).
    pub(crate) marks: std::sync::Arc<std::sync::Mutex<Marks>>,
    /// Per-cell index entries not written to the table yet (see `keys.rs`).
    pub(crate) keys: std::sync::Arc<std::sync::RwLock<KeyTail>>,
    /// Opened with [`SqliteStore::open_reader`]: no writer, and nothing of the ledger is written.
    pub(crate) reader: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

pub(crate) fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

pub(crate) fn from_nanos(n: i64) -> DateTime<Utc> {
    Utc.timestamp_nanos(n)
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/driftless.sqlite3`.
    pub async fn open(
        dir: &Path,
        rules: Rules,
        channels: Vec<ChannelSpec>,
    ) -> Result<SqliteStore, StoreError> {
        Self::open_with(dir, rules, channels, SqliteOptions::default()).await
    }

    pub async fn open_with(
        dir: &Path,
        rules: Rules,
        channels: Vec<ChannelSpec>,
        opts: SqliteOptions,
    ) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Database(sqlx::Error::Configuration(
                format!("cannot create data directory {}: {e}", dir.display()).into(),
            ))
        })?;
        let file = dir.join("driftless.sqlite3");
        let base = SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if opts.fsync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(10))
            // A small page cache over memory-mapped reads, not a large cache. A B-tree balance
            // renumbers pages through the lock-byte page's number (1 GiB / page size), so in a
            // file under 1 GiB every commit that split a page ends by walking the whole page
            // cache's hash table to drop pages past the file's end: with 256 MiB of cache that
            // walk was a third of SQLite's thread under single events. Clean pages the cache no
            // longer holds are read through the mapping (up to the 2 GiB SQLite maps), without a
            // read call or a copy. See docs/performance.md, "The page cache's walk at commit".
            .pragma("cache_size", "-16384")
            .pragma("mmap_size", "2147418112")
            // A large group's dirty pages stay in memory until its commit rather than spilling
            // into the WAL before it (pages written twice, a longer WAL to recover after a crash).
            .pragma("cache_spill", "false")
            // No automatic checkpoints: one would run inside whichever commit crossed the
            // threshold and stall every request of that group; a task of its own does them.
            .pragma("wal_autocheckpoint", "0")
            .pragma("temp_store", "memory");
        // Opening, migrating and the replay after a crash run on a connection of their own, with
        // 256 MiB of cache and plain reads: the replay revisits the pages of every cell it folds
        // (through the mapping it was 1.1-1.4x slower after SIGKILL at 20-30M events), and it
        // commits too seldom for the walk to matter. The groups then run on a fresh connection.
        let mut conn = base
            .clone()
            .pragma("cache_size", "-262144")
            .pragma("mmap_size", "0")
            .pragma("cache_spill", "true")
            .connect()
            .await?;
        let earlier: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM sqlite_master WHERE name = 'events') \
             - (SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'lsn')",
        )
        .fetch_one(&mut conn)
        .await?;
        if earlier > 0 {
            return Err(StoreError::Corrupt(format!(
                "{} holds a ledger in the schema of an earlier development version (events \
                 without positions); start with an empty data directory",
                file.display()
            )));
        }
        migrate(&mut conn).await?;
        let keys_kept = table_exists(&mut conn, "event_keys").await?;
        let records_kept = table_exists(&mut conn, "key_slices").await?;
        if records_kept && !keys_kept {
            // The index is about to be built from nothing: no record of the one before may
            // outlive it, even if the open stops before the index's table exists again.
            sqlx::query("DELETE FROM key_slices")
                .execute(&mut conn)
                .await?;
        }
        for stmt in schema::SQLITE {
            sqlx::query(*stmt).execute(&mut conn).await?;
        }
        slice_records_from(&mut conn, keys_kept, records_kept).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(base.clone().read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(opts.max_pending);
        let shared = Shared::new();
        let wal_frames = wal::frames(opts.max_wal_bytes);
        let mut writer = shared.writer(conn, rules, channels, opts);
        writer.recover().await?;
        let opened = std::mem::replace(&mut writer.conn, base.clone().connect().await?);
        opened.close().await?;
        let handle = tokio::spawn(writer.run(rx));
        let checkpointer = tokio::spawn(wal::checkpoint(
            base.clone().connect().await?,
            shared.gate.clone(),
            wal_frames,
        ));
        Ok(shared.store(tx, read, Some((handle, checkpointer))))
    }

    /// Opens an existing ledger only to read it, safe beside a hub serving the same directory
    /// (`audit --live`, `trend`, `matrix`): the connections are read-only (`mode=ro`,
    /// `query_only`), nothing is created or migrated, and nothing is written on open or on
    /// close. What the hub holds unwritten (cells, outbox rows, index entries) is read back from
    /// the ledger tail into this store's memory, from one snapshot, as recovery would, so the
    /// reads see every event the ledger held when it was opened. `apply` and the fan-out's writes
    /// answer [`StoreError::ReadOnly`]; [`crate::Store::save_audit`] appends to `audits` only, through a
    /// connection of its own that SQLite's lock serialises with the hub's writer.
    ///
    /// A directory without a ledger gets an empty one first (nobody serves it yet).
    pub async fn open_reader(
        dir: &Path,
        rules: Rules,
        channels: Vec<ChannelSpec>,
    ) -> Result<SqliteStore, StoreError> {
        let file = dir.join("driftless.sqlite3");
        if !file.exists() {
            let fresh = SqliteStore::open(dir, rules.clone(), channels.clone()).await?;
            crate::Store::close(&fresh).await;
        }
        let ro = SqliteConnectOptions::new()
            .filename(&file)
            .read_only(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("query_only", "1");
        let mut conn = ro.clone().connect().await?;
        let current: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pragma_table_info('events') WHERE name = 'lsn'",
        )
        .fetch_one(&mut conn)
        .await?;
        if current == 0 {
            return Err(StoreError::Corrupt(format!(
                "{} holds no ledger of this version; open it once with `driftless serve`",
                file.display()
            )));
        }
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(ro)
            .await?;
        // No receiver: every `apply` finds the writer gone.
        let (tx, _) = mpsc::channel(1);
        let shared = Shared::new();
        // One snapshot for the whole replay, so it cannot mix a slice the hub writes meanwhile.
        sqlx::query("BEGIN").execute(&mut conn).await?;
        let opts = SqliteOptions {
            flush_on_exit: false,
            ..SqliteOptions::default()
        };
        let mut replay = shared.writer(conn, rules, channels, opts);
        replay.read_tail().await?;
        replay.held.publish_held_cells();
        sqlx::query("COMMIT").execute(&mut replay.conn).await?;
        Ok(shared.store(tx, read, None))
    }
}

/// Brings a data directory of an earlier version to this schema (see `schema.rs`), each step in
/// one transaction.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    if lacks(conn, "events", "factor").await? {
        apply(conn, &[schema::SQLITE_MIGRATE_FACTOR]).await?;
    }
    if lacks(conn, "incidents", "actor").await? {
        apply(conn, schema::SQLITE_MIGRATE_INCIDENT_ACTORS).await?;
    }
    // `id` unique on its own: the index SQLite made for the column's UNIQUE constraint.
    let ids_alone: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pragma_index_list('events') WHERE origin = 'u'")
            .fetch_one(&mut *conn)
            .await?;
    if ids_alone > 0 {
        apply(conn, schema::SQLITE_MIGRATE_SOURCE_IDS).await?;
        tracing::info!("event identity is now (source, id); the per-cell index is rebuilt");
    }
    Ok(())
}

/// Where the index's slice records (`keyslices.rs`) start, for a ledger whose index or records
/// were just created: an index built from nothing holds no entry (its records were dropped before
/// it), so the replay need ask the table about none; an index written before the records were kept
/// holds entries no record describes, so the replay asks the table about every position up to
/// the newest event (none, for a new ledger).
async fn slice_records_from(
    conn: &mut SqliteConnection,
    keys_kept: bool,
    records_kept: bool,
) -> Result<(), StoreError> {
    let from = if !keys_kept {
        0
    } else if !records_kept {
        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(lsn) FROM events")
            .fetch_one(&mut *conn)
            .await?
            .unwrap_or(0)
    } else {
        return Ok(());
    };
    sql::set_meta(conn, sql::KEY_SLICES_FROM, from).await
}

/// Whether `table` exists (a ledger of an earlier version may lack it).
async fn table_exists(conn: &mut SqliteConnection, table: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = ?1")
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

/// Whether `table` exists without `column` (a table of an earlier version).
async fn lacks(conn: &mut SqliteConnection, table: &str, column: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1) \
         - (SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2)",
    )
    .bind(table)
    .bind(column)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

/// Runs the statements of one migration step in one transaction.
async fn apply(conn: &mut SqliteConnection, stmts: &[&str]) -> Result<(), StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    for stmt in stmts {
        sqlx::query(sqlx::AssertSqlSafe(*stmt))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What a store's handles share with its writer (or a reader's replay).
struct Shared {
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    changes: crate::outbox::OutboxSignal,
    overlay: std::sync::Arc<Overlay>,
    marks: std::sync::Arc<std::sync::Mutex<Marks>>,
    keys: std::sync::Arc<std::sync::RwLock<KeyTail>>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            gate: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            changes: crate::outbox::OutboxSignal::new(),
            overlay: std::sync::Arc::new(Overlay::default()),
            marks: std::sync::Arc::new(std::sync::Mutex::new(Marks::default())),
            keys: std::sync::Arc::new(std::sync::RwLock::new(KeyTail::default())),
        }
    }

    /// A writer over `conn` that holds its memory in these handles.
    fn writer(
        &self,
        conn: SqliteConnection,
        rules: Rules,
        channels: Vec<ChannelSpec>,
        opts: SqliteOptions,
    ) -> Writer {
        Writer {
            conn,
            held: writer::Held {
                keys: self.keys.clone(),
                changes: self.changes.clone(),
                rules,
                channels,
                cache: CellCache::default(),
                overlay: self.overlay.clone(),
                marks: self.marks.clone(),
                next_lsn: 1,
                opts,
                gate: self.gate.clone(),
                lookup_groups: 0,
                stored_meta: FastMap::default(),
                installing: None,
            },
        }
    }

    /// The store's handle; a reader has no writer task and no checkpointer.
    fn store(
        self,
        jobs: mpsc::Sender<Job>,
        read: SqlitePool,
        tasks: Option<(JoinHandle<()>, JoinHandle<()>)>,
    ) -> SqliteStore {
        let reader = tasks.is_none();
        let (writer, checkpointer) = tasks.unzip();
        SqliteStore {
            jobs,
            read,
            writer: Mutex::new(writer),
            checkpointer: Mutex::new(checkpointer),
            side: tokio::sync::OnceCell::new(),
            gate: self.gate,
            changes: self.changes,
            overlay: self.overlay,
            marks: self.marks,
            keys: self.keys,
            reader,
        }
    }
}

#[cfg(test)]
mod tests {
    /// The module's rule on `LIMIT`, checked over this module's sources.
    #[test]
    fn no_statement_binds_a_bare_limit() {
        let bare = ["LIMIT", "?"].join(" ");
        let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sqlite")];
        let mut found = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    if line.contains(&bare) {
                        found.push(format!("{}:{}", path.display(), i + 1));
                    }
                }
            }
        }
        assert!(found.is_empty(), "a bare parameter as `LIMIT` at {found:?}");
    }
}
