//! Embedded SQLite. One writer task owns the only write connection: SQLite has a single writer
//! anyway, and owning it lets the writer keep the hot cells in memory and commit many requests in
//! one transaction (group commit: one fsync for everything that queued while the previous commit
//! was on disk). Readers use a separate pool; WAL mode lets them run beside the writer.

use crate::cells::{CellCache, FlushRows, Overlay, SkuCells, Slot, set_levels};
use crate::keys::{Entry, KeySlice, KeyTail};
use crate::marks::{Change, Mark, Marks};
use crate::schema;
use crate::{
    AuditRecord, BoxFuture, FastMap, FastSet, HistoryEntry, Incident, IncidentFilter, Incoming,
    LocationLevels, Receipt, SkuLevels, Store, StoreError, StoredAudit,
};
use chrono::{DateTime, TimeZone, Utc};
use driftless_core::{
    Cell, ChannelSpec, Effect, EventId, Fingerprint, Levels, Location, OrderKey, Outcome, Position,
    Prepared, Rules, Sku, State, StateMap, effects_of,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, QueryBuilder, Row, Sqlite};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

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
    /// Events a crash would have to replay before the writer writes every waiting cell.
    pub max_replay_events: i64,
    /// How long the writer waits idle before writing every waiting cell.
    pub idle_flush: Duration,
    /// Whether the writer writes the waiting cells when the store is dropped or closed. Off only
    /// in tests that stand in for a crash.
    pub flush_on_exit: bool,
    /// Events whose per-cell index entries the writer keeps unwritten (see `keys.rs`); above
    /// this, each group commit also writes a slice of them.
    pub max_unindexed_events: usize,
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
        }
    }
}

struct Request {
    received_at: DateTime<Utc>,
    batch: Vec<Incoming>,
    reply: oneshot::Sender<Result<Vec<Receipt>, StoreError>>,
}

enum Job {
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
    /// Bumped by the writer after a commit that marked outbox rows dirty (see
    /// [`crate::Outbox::outbox_changes`]).
    pub(crate) changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Cells not written to the table yet (see `cells.rs`).
    pub(crate) overlay: std::sync::Arc<Overlay>,
    /// Outbox rows not written to the table yet (see `marks.rs`).
    pub(crate) marks: std::sync::Arc<std::sync::Mutex<Marks>>,
    /// Per-cell index entries not written to the table yet (see `keys.rs`).
    pub(crate) keys: std::sync::Arc<std::sync::RwLock<KeyTail>>,
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
            // 256 MiB of page cache: random-key inserts into the index B-trees dirty many pages
            // per commit, and rereading them from the OS on every group costs more than the
            // memory. No automatic checkpoints: one would run inside whichever commit crossed the
            // threshold and stall every request of that group; a task of its own does them.
            .pragma("cache_size", "-262144")
            .pragma("wal_autocheckpoint", "0")
            .pragma("temp_store", "memory");
        let mut conn = base.clone().connect().await?;
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
        for stmt in schema::SQLITE {
            sqlx::query(*stmt).execute(&mut conn).await?;
        }
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(base.clone().read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(opts.max_pending);
        let gate = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let changes = std::sync::Arc::new(tokio::sync::watch::Sender::new(0u64));
        let overlay = std::sync::Arc::new(Overlay::default());
        let marks = std::sync::Arc::new(std::sync::Mutex::new(Marks::default()));
        let keys = std::sync::Arc::new(std::sync::RwLock::new(KeyTail::default()));
        let mut writer = Writer {
            keys: keys.clone(),
            changes: changes.clone(),
            conn,
            rules,
            channels,
            cache: CellCache::default(),
            overlay: overlay.clone(),
            marks: marks.clone(),
            next_lsn: 1,
            opts,
            gate: gate.clone(),
            lookup_groups: 0,
            stored_meta: FastMap::default(),
            installing: None,
        };
        writer.recover().await?;
        let handle = tokio::spawn(writer.run(rx));
        let checkpointer = tokio::spawn(checkpoint(base.clone().connect().await?));
        Ok(SqliteStore {
            jobs: tx,
            read,
            writer: Mutex::new(Some(handle)),
            checkpointer: Mutex::new(Some(checkpointer)),
            side: tokio::sync::OnceCell::new(),
            gate,
            changes,
            overlay,
            marks,
            keys,
        })
    }
}

struct Writer {
    conn: SqliteConnection,
    rules: Rules,
    channels: Vec<ChannelSpec>,
    cache: CellCache,
    overlay: std::sync::Arc<Overlay>,
    marks: std::sync::Arc<std::sync::Mutex<Marks>>,
    keys: std::sync::Arc<std::sync::RwLock<KeyTail>>,
    /// The position the next stored event gets.
    next_lsn: i64,
    opts: SqliteOptions,
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Groups left that look their ids up before deciding. Normally a group decides first and
    /// lets the unique index tell it whether any id was already stored (one lookup query fewer per
    /// group); when one was, the group is redone with lookups, and so are the next few, because
    /// redeliveries come in storms.
    lookup_groups: u32,
    /// The watermarks as last committed, so a group writes only those that moved (a small group
    /// usually moves none, and each is a statement).
    stored_meta: FastMap<&'static str, i64>,
    /// A large committed group's overlay and outbox changes being installed beside the next
    /// group's work, on a thread of their own (see [`Published`]); awaited before anything that
    /// reads or writes them.
    installing: Option<JoinHandle<()>>,
}

/// Groups that look ids up after a group found an already-stored id.
const LOOKUP_AFTER_DUPLICATE: u32 = 64;

/// Events in a group from which on its index entries, and then its overlay and outbox changes,
/// are added on threads of their own (a thread costs tens of microseconds; a small group's
/// bookkeeping takes less).
const PARALLEL_TAIL_EVENTS: usize = 256;

/// What a committed group changes for readers and the fan-out: the levels of the slots it
/// changed, the skus whose cells it wrote (they leave the overlay), and its outbox marks with the
/// channel quantities they carry.
///
/// Everything here is read from the writer's cache while the commit is on its way to the disk
/// (nothing changes the cache between a group's decisions and the next group's), and dropped if
/// the commit fails. Installing it only touches the overlay and the marks, so
/// for a large group it runs on a thread of its own while the writer takes the next group, and
/// the group's requests are answered once it is in (an acknowledged event is visible to readers
/// and to the fan-out, as before). The next group awaits it before it reads the marks or takes a
/// slice, so installs stay in commit order.
#[derive(Default)]
struct Published {
    /// Only changed slots go into the overlay (a sku's other locations are in the table already),
    /// so a change costs one slot's levels, not a copy of every location of its sku.
    levels: Vec<(Sku, Location, Levels)>,
    written: Vec<Sku>,
    /// Per marked `(channel, sku)`: the table's row when this group marks it first, and the change.
    marks: Vec<(driftless_core::SystemId, Sku, Option<Mark>, Change)>,
}

impl Published {
    fn install(
        self,
        overlay: &Overlay,
        marks: &std::sync::Mutex<Marks>,
        changes: &tokio::sync::watch::Sender<u64>,
    ) {
        {
            let mut ov = overlay.write().unwrap_or_else(|p| p.into_inner());
            for (sku, loc, levels) in &self.levels {
                set_levels(&mut ov, sku, loc, *levels);
            }
            for sku in &self.written {
                ov.remove(sku);
            }
        }
        if self.marks.is_empty() {
            return;
        }
        {
            // Outside the write gate, unlike the other changes to the marks (see `marks.rs`): a
            // mark commutes with a dispatcher's acknowledgement or re-dirtying.
            let mut m = marks.lock().unwrap_or_else(|p| p.into_inner());
            for (channel, sku, stored, change) in self.marks {
                m.mark(channel.as_str(), &sku, stored, change);
            }
        }
        changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

type Replies = Vec<(
    oneshot::Sender<Result<Vec<Receipt>, StoreError>>,
    Vec<Receipt>,
)>;

/// What readers and the fan-out are to see of a group once it commits (see [`Published`]), read
/// from the writer's cache after the group decided.
fn capture(
    cache: &CellCache,
    channels: &[ChannelSpec],
    pending: &Pending<'_>,
    slice: &FlushRows,
    mut stored: HashMap<(usize, Sku), Mark>,
) -> Published {
    let levels = pending
        .cells
        .keys()
        .filter_map(|(sku, loc)| {
            let levels = cache.get(sku).and_then(|c| c.levels_at(loc))?;
            Some(((*sku).clone(), (*loc).clone(), levels))
        })
        .collect();
    let now = nanos(Utc::now());
    let marks = pending
        .outbox
        .iter()
        .map(|((i, sku), (first, at, events))| {
            let c = &channels[*i];
            let change = Change {
                first: *first,
                lsn: *at,
                events: *events,
                now_nanos: now,
                atp: cache.channel_atp(sku, c),
                sample: pending
                    .samples
                    .get(sku)
                    .map(|(s, o, r)| (s.to_string(), *o, *r)),
            };
            let prior = stored.remove(&(*i, (*sku).clone()));
            (c.id.clone(), (*sku).clone(), prior, change)
        })
        .collect();
    Published {
        levels,
        written: slice.iter().map(|(sku, _)| sku.clone()).collect(),
        marks,
    }
}

/// Waits for the previous group's install (see [`Published`]); a free function, not a method, so
/// that it can also run while the writer's connection is borrowed by a transaction.
async fn settle(installing: &mut Option<JoinHandle<()>>) {
    if let Some(h) = installing.take()
        && let Err(e) = h.await
    {
        tracing::error!(error = %e, "installing a group's changes failed");
    }
}

/// Rows a group commit writes, gathered while deciding and written at the end with multi-row
/// statements (one statement per thousand rows instead of one per row).
#[derive(Default)]
struct Pending<'a> {
    events: Vec<EventRow<'a>>,
    /// Slots changed by this group, with a bit per state that changed.
    cells: FastMap<(&'a Sku, &'a Location), u8>,
    /// Marked `(channel index, sku)`: the first and newest marking events and how many.
    outbox: FastMap<(usize, &'a Sku), (i64, i64, i64)>,
    /// The newest applied event per sku in this group: `(source, occurred, received)`, for the
    /// integration matrix's latencies.
    samples: FastMap<&'a Sku, (&'a str, i64, i64)>,
    incidents: Vec<Incident>,
}

struct EventRow<'a> {
    lsn: i64,
    p: &'a Prepared,
    received: i64,
    outcome: Outcome,
    effective: bool,
    detail: Option<String>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut idle = false;
        loop {
            // While cells, outbox rows or index entries wait to be written, an idle moment writes
            // them all (a group still being installed brings outbox rows).
            let waiting = self.installing.is_some()
                || self.cache.dirty_slots() > 0
                || self.marks.lock().map(|m| m.len() > 0).unwrap_or(true)
                || self.keys.read().map(|k| k.len() > 0).unwrap_or(true);
            let first = if waiting {
                // Once idle, one slice at a time, looking for new work between slices.
                let wait = if idle {
                    Duration::from_millis(1)
                } else {
                    self.opts.idle_flush
                };
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(j) => j,
                    Err(_) => {
                        self.flush_slice(IDLE_SLICE).await;
                        idle = true;
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            idle = false;
            let first = match first {
                Some(Job::Apply(j)) => j,
                Some(Job::Flush(reply)) => {
                    settle(&mut self.installing).await;
                    if self.opts.flush_on_exit {
                        self.flush_all().await;
                    }
                    let _ = reply.send(());
                    continue;
                }
                None => {
                    settle(&mut self.installing).await;
                    if self.opts.flush_on_exit {
                        self.flush_all().await;
                    }
                    return;
                }
            };
            let mut jobs = vec![first];
            let mut n = jobs[0].batch.len();
            let mut flush_after: Option<oneshot::Sender<()>> = None;
            // Take everything that queued during the previous commit, up to the group limit.
            while n < self.opts.max_group_events {
                match rx.try_recv() {
                    Ok(Job::Apply(j)) => {
                        n += j.batch.len();
                        jobs.push(j);
                    }
                    Ok(Job::Flush(reply)) => {
                        flush_after = Some(reply);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let started = std::time::Instant::now();
            let lookup = self.lookup_groups > 0;
            self.lookup_groups = self.lookup_groups.saturating_sub(1);
            let mut result = self.commit_group(&jobs, lookup).await;
            if matches!(result, Ok(None)) {
                // An id in the group was already stored: the optimistic decisions are void.
                self.lookup_groups = LOOKUP_AFTER_DUPLICATE;
                result = self.commit_group(&jobs, true).await;
            }
            tracing::debug!(
                requests = jobs.len(),
                events = n,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "group commit"
            );
            match result.and_then(|r| {
                r.ok_or_else(|| {
                    StoreError::WriteFailed("an event id was stored by another writer".into())
                })
            }) {
                Ok((receipts, published)) => {
                    let replies: Replies =
                        jobs.into_iter().map(|j| j.reply).zip(receipts).collect();
                    let (overlay, marks, changes) = (
                        self.overlay.clone(),
                        self.marks.clone(),
                        self.changes.clone(),
                    );
                    let install = move || {
                        published.install(&overlay, &marks, &changes);
                        for (reply, r) in replies {
                            let _ = reply.send(Ok(r));
                        }
                    };
                    if n >= PARALLEL_TAIL_EVENTS {
                        self.installing = Some(tokio::task::spawn_blocking(install));
                    } else {
                        install();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "group commit failed");
                    let msg = e.to_string();
                    for job in jobs {
                        let _ = job.reply.send(Err(StoreError::WriteFailed(msg.clone())));
                    }
                }
            }
            if let Some(reply) = flush_after {
                settle(&mut self.installing).await;
                if self.opts.flush_on_exit {
                    self.flush_all().await;
                }
                let _ = reply.send(());
            }
        }
    }

    /// Decides and writes one group in one transaction. With `lookup` false, ids are assumed new
    /// and the insert checks it: `Ok(None)` means one was not, and nothing was written. Whatever
    /// does not commit leaves the cached cells as they were.
    async fn commit_group(
        &mut self,
        jobs: &[Request],
        lookup: bool,
    ) -> Result<Option<(Vec<Vec<Receipt>>, Published)>, StoreError> {
        let r = self.try_group(jobs, lookup).await;
        if matches!(r, Ok(Some(_))) {
            self.cache.commit_group();
        } else {
            self.cache.rollback_group();
        }
        if r.is_err() {
            // A failed commit may still have reached the disk: write every watermark next time.
            self.stored_meta.clear();
        }
        r
    }

    async fn try_group(
        &mut self,
        jobs: &[Request],
        lookup: bool,
    ) -> Result<Option<(Vec<Vec<Receipt>>, Published)>, StoreError> {
        let mut ids: Vec<&str> = Vec::new();
        let mut skus: FastSet<&Sku> = FastSet::default();
        for j in jobs {
            for item in &j.batch {
                if let Incoming::Event(p) = item {
                    ids.push(p.event.id.as_str());
                    skus.insert(&p.event.sku);
                }
            }
        }
        self.cache.evict_clean(self.opts.max_cached_slots);
        // IMMEDIATE: take the write lock up front, so a fan-out write between this transaction's
        // first read and first write makes it wait instead of failing with a stale snapshot.
        let gate = self.gate.clone();
        let _turn = gate.lock().await;
        let t0 = std::time::Instant::now();
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        // Ids already stored, then every id this group claims, borrowed from the requests.
        let mut seen: FastMap<&str, Fingerprint> =
            FastMap::with_capacity_and_hasher(ids.len(), Default::default());
        if lookup {
            let stored = lookup_ids(&mut tx, &ids).await?;
            for id in &ids {
                if let Some(f) = stored.get(*id) {
                    seen.insert(id, *f);
                }
            }
        }
        let missing: Vec<&Sku> = skus
            .into_iter()
            .filter(|k| !self.cache.contains(k))
            .collect();
        for (sku, cells, _) in load_skus(&mut tx, &missing).await? {
            self.cache.insert_loaded(sku, cells);
        }

        let t_load = t0.elapsed();
        let t0 = std::time::Instant::now();
        let mut lsn = self.next_lsn;
        let mut pending = Pending::default();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let received = nanos(job.received_at);
            let mut receipts = Vec::with_capacity(job.batch.len());
            for item in &job.batch {
                let p = match item {
                    Incoming::Rejected { event, reason } => {
                        pending.incidents.push(Incident {
                            kind: "rejected".into(),
                            sku: Some(event.sku.to_string()),
                            location: Some(event.location.to_string()),
                            system: Some(event.source.to_string()),
                            event_id: Some(event.id.to_string()),
                            detail: reason.clone(),
                            at: job.received_at,
                        });
                        receipts.push(Receipt {
                            outcome: Outcome::Rejected,
                            detail: Some(reason.clone()),
                        });
                        continue;
                    }
                    Incoming::Event(p) => p,
                };
                let ev = &p.event;
                let prior = seen.get(ev.id.as_str()).copied();
                let cells = self.cache.cells_mut(&ev.sku, &ev.location);
                let d = self.rules.decide(p, prior, cells);
                let mut mask = 0u8;
                for (state, effect) in &d.effects {
                    let cell = &mut cells[state.index()];
                    match effect {
                        Effect::Add(delta) => cell.value = cell.value.saturating_add(*delta),
                        Effect::Rebase { key: k, value } => {
                            let later = sum_after(
                                &mut tx,
                                &self.keys,
                                Some(&pending),
                                &ev.sku,
                                &ev.location,
                                *state,
                                k,
                                None,
                            )
                            .await?;
                            *cell = Cell {
                                value: value.saturating_add(later),
                                set: Some(k.clone()),
                            };
                        }
                    }
                    mask |= 1 << state.index();
                }
                if mask != 0 {
                    // Effects imply the event claims its id, so it is stored at `lsn`.
                    self.cache.mark_dirty(&ev.sku, &ev.location, mask, lsn);
                    *pending.cells.entry((&ev.sku, &ev.location)).or_default() |= mask;
                }
                // Every event that counts marks the outbox, even an accepted override that
                // changed nothing: a crash replay can then count versions from the stored outcome.
                if d.effective && matches!(d.outcome, Outcome::Applied | Outcome::Override) {
                    for (i, c) in self.channels.iter().enumerate() {
                        if c.feeds_from(&ev.location) {
                            let m = pending.outbox.entry((i, &ev.sku)).or_insert((lsn, lsn, 0));
                            m.1 = lsn;
                            m.2 += 1;
                        }
                    }
                    if d.outcome == Outcome::Applied {
                        pending.samples.insert(
                            &ev.sku,
                            (ev.source.as_str(), ev.position.at_nanos, received),
                        );
                    }
                }
                if matches!(
                    d.outcome,
                    Outcome::Conflict | Outcome::Stale | Outcome::Covered | Outcome::Override
                ) {
                    pending.incidents.push(Incident {
                        kind: d.outcome.as_str().into(),
                        sku: Some(ev.sku.to_string()),
                        location: Some(ev.location.to_string()),
                        system: Some(ev.source.to_string()),
                        event_id: Some(ev.id.to_string()),
                        detail: d.detail.clone().unwrap_or_default(),
                        at: job.received_at,
                    });
                }
                if d.claims_id {
                    seen.insert(ev.id.as_str(), p.fingerprint);
                    pending.events.push(EventRow {
                        lsn,
                        p,
                        received,
                        outcome: d.outcome,
                        effective: d.effective,
                        detail: d.detail.clone(),
                    });
                    lsn += 1;
                }
                receipts.push(Receipt {
                    outcome: d.outcome,
                    detail: d.detail,
                });
            }
            out.push(receipts);
        }
        let t_decide = t0.elapsed();
        let t0 = std::time::Instant::now();
        if !insert_events(&mut tx, &pending.events).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let t_events = t0.elapsed();
        let t0 = std::time::Instant::now();
        insert_incidents(&mut tx, &pending.incidents).await?;
        // The previous group's marks and overlay first: what follows reads the marks and takes
        // slices.
        settle(&mut self.installing).await;
        // Outbox rows are written behind too (see `marks.rs`): read the stored rows this group
        // marks for the first time, so versions continue from them.
        // The gate is held, so only this task changes the marks until it is released; the lock
        // is only for readers, and is never held across an await.
        let mut first: HashMap<usize, Vec<&Sku>> = HashMap::new();
        {
            let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            for (i, sku) in pending.outbox.keys() {
                if marks.get(self.channels[*i].id.as_str(), sku).is_none() {
                    first.entry(*i).or_default().push(sku);
                }
            }
        }
        let mut stored: HashMap<(usize, Sku), Mark> = HashMap::new();
        for (i, skus) in first {
            for (sku, m) in load_marks(&mut tx, self.channels[i].id.as_str(), &skus).await? {
                stored.insert((i, sku), m);
            }
        }
        // Write a slice of the cells that wait, once more of them wait than the writer keeps
        // unwritten, or once the replay a crash would need grows long.
        let last = lsn - 1;
        // Small slices, a little more than the group changed, keep every commit short; the
        // sweep's key order still puts many rows on each page because so many wait.
        let tail = last - self.cache.watermark(last);
        let want = if self.cache.dirty_slots() > self.opts.max_dirty_slots {
            (self.cache.dirty_slots() - self.opts.max_dirty_slots + 2 * pending.cells.len())
                .min(FLUSH_SLICE)
        } else if tail > self.opts.max_replay_events {
            FLUSH_SLICE
        } else {
            0
        };
        let slice = self.cache.take_slice(want);
        let t_marks = t0.elapsed();
        let t0 = std::time::Instant::now();
        write_cells(&mut tx, &slice, last).await?;
        let cells_wm = self.cache.watermark_after(&slice, last);
        // The same for outbox rows, leaving out those this group marks (they change after the
        // commit, and the slice must not write an older state over them).
        let (mark_slice, outbox_wm) = {
            let marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
            let over = marks.len().saturating_sub(self.opts.max_dirty_slots);
            let n = if over > 0 {
                (over + 2 * pending.outbox.len()).min(FLUSH_SLICE)
            } else if last - marks.watermark(last) > self.opts.max_replay_events {
                FLUSH_SLICE
            } else {
                0
            };
            // Taken with room for this group's rows, which are left out; none when none is due.
            let mark_slice: Vec<(String, Sku, Mark)> = marks
                .take_slice(if n == 0 { 0 } else { n + pending.outbox.len() })
                .into_iter()
                .filter(|(c, s, _)| {
                    !self
                        .channels
                        .iter()
                        .position(|x| x.id.as_str() == c)
                        .is_some_and(|i| pending.outbox.contains_key(&(i, s)))
                })
                .take(n)
                .collect();
            // This group's marks join after the commit, from its first position on.
            let outbox_wm = if pending.outbox.is_empty() {
                marks.watermark_after(mark_slice.len(), last)
            } else {
                marks.watermark(last).min(self.next_lsn - 1)
            };
            (mark_slice, outbox_wm)
        };
        write_marks(&mut tx, &mark_slice).await?;
        // And for the per-cell index: the sweep writes a little more than the group adds.
        let (key_slice, keys_wm, keys_max_at) = {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            let over = keys.len().saturating_sub(self.opts.max_unindexed_events);
            let n = if over > 0 {
                (over + 2 * pending.events.len()).min(FLUSH_SLICE)
            } else if last - keys.watermark_after(&KeySlice::new(), self.next_lsn)
                > self.opts.max_replay_events
            {
                FLUSH_SLICE
            } else {
                0
            };
            keys.take_slice_to_write(n, self.next_lsn)
        };
        write_keys(&mut tx, &key_slice, keys_max_at).await?;
        let moved: Vec<(&'static str, i64)> = [
            ("cells_watermark", cells_wm),
            ("outbox_watermark", outbox_wm),
            ("keys_watermark", keys_wm),
        ]
        .into_iter()
        .filter(|(k, v)| self.stored_meta.get(k) != Some(v))
        .collect();
        set_metas(&mut tx, &moved).await?;
        let t_slices = t0.elapsed();
        let t0 = std::time::Instant::now();
        // While SQLite syncs the commit, the writer reads what readers and the fan-out are to see
        // of the group (the cache no longer changes until the next group) and, for a large group,
        // a thread of its own adds the group's index entries, on the core SQLite's thread leaves
        // idle while it waits for the disk. Only the writer reads the index tail, so entries added
        // before the commit is known are seen by nobody; should it fail, they are taken back.
        let mut commit = std::pin::pin!(tx.commit());
        // One poll hands the commit to SQLite's thread.
        let early = std::future::poll_fn(|cx| Poll::Ready(commit.as_mut().poll(cx))).await;
        let tail = self.keys.clone();
        let events = &pending.events;
        let push_keys = move || {
            let mut keys = tail.write().unwrap_or_else(|p| p.into_inner());
            for r in events {
                let e = &r.p.event;
                keys.push(
                    &e.sku,
                    &e.location,
                    entry_of(r.lsn, e.order_key(), e.change.is_set(), r.effective, |s| {
                        r.p.base.get(s)
                    }),
                );
            }
        };
        let (cache, channels) = (&self.cache, &self.channels);
        let published = std::thread::scope(|scope| {
            if events.len() >= PARALLEL_TAIL_EVENTS {
                scope.spawn(push_keys);
            } else {
                push_keys();
            }
            capture(cache, channels, &pending, &slice, stored)
        });
        let committed = match early {
            Poll::Ready(r) => r,
            Poll::Pending => commit.await,
        };
        if let Err(e) = committed {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            for r in pending.events.iter().rev() {
                keys.pop(&r.p.event.sku, &r.p.event.location, r.lsn);
            }
            return Err(e.into());
        }
        let t_commit = t0.elapsed();
        self.stored_meta.extend(moved);
        self.next_lsn = lsn;
        self.cache.written(&slice);
        self.marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .written(&mark_slice);
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .written(&key_slice);
        tracing::debug!(
            load_ms = t_load.as_secs_f64() * 1e3,
            decide_ms = t_decide.as_secs_f64() * 1e3,
            events_ms = t_events.as_secs_f64() * 1e3,
            marks_ms = t_marks.as_secs_f64() * 1e3,
            slices_ms = t_slices.as_secs_f64() * 1e3,
            commit_ms = t_commit.as_secs_f64() * 1e3,
            after_commit_ms = (t0.elapsed() - t_commit).as_secs_f64() * 1e3,
            cells = slice.len(),
            outbox = mark_slice.len(),
            keys = key_slice
                .iter()
                .map(|(_, s)| s.iter().map(|(_, v)| v.len()).sum::<usize>())
                .sum::<usize>(),
            "group phases"
        );
        Ok(Some((out, published)))
    }

    /// Writes every waiting cell, outbox row and index entry, a slice per transaction.
    async fn flush_all(&mut self) {
        while self.flush_slice(FLUSH_SLICE).await {}
    }

    /// Writes one slice of waiting cells, or else of outbox rows, or else of index entries; false
    /// when nothing waits (or the write failed: the rows stay waiting, and a restart would replay
    /// them).
    async fn flush_slice(&mut self, n: usize) -> bool {
        // A slice's skus leave the overlay, so the previous group's levels must be in it first.
        settle(&mut self.installing).await;
        if self.cache.dirty_slots() > 0 {
            let slice = self.cache.take_slice(n);
            let last = self.next_lsn - 1;
            let r = async {
                let gate = self.gate.clone();
                let _turn = gate.lock().await;
                let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
                write_cells(&mut tx, &slice, last).await?;
                let wm = self.cache.watermark_after(&slice, last);
                set_meta(&mut tx, "cells_watermark", wm).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(wm)
            }
            .await;
            return match r {
                Ok(wm) => {
                    self.stored_meta.insert("cells_watermark", wm);
                    self.cache.written(&slice);
                    let written = Published {
                        written: slice.iter().map(|(sku, _)| sku.clone()).collect(),
                        ..Published::default()
                    };
                    written.install(&self.overlay, &self.marks, &self.changes);
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "writing cells failed; a restart would replay them");
                    false
                }
            };
        }
        let last = self.next_lsn - 1;
        if self.marks.lock().map(|m| m.len() == 0).unwrap_or(true) {
            return self.flush_keys(n).await;
        }
        let marks = self.marks.clone();
        let r = async {
            let gate = self.gate.clone();
            let _turn = gate.lock().await;
            // Taken under the gate: a dispatcher may have acknowledged a row since.
            let (slice, after) = {
                let m = marks.lock().unwrap_or_else(|p| p.into_inner());
                let slice = m.take_slice(n);
                let after = m.watermark_after(slice.len(), last);
                (slice, after)
            };
            let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
            write_marks(&mut tx, &slice).await?;
            set_meta(&mut tx, "outbox_watermark", after).await?;
            tx.commit().await?;
            marks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .written(&slice);
            Ok::<_, StoreError>(after)
        }
        .await;
        match r {
            Ok(after) => {
                self.stored_meta.insert("outbox_watermark", after);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing outbox rows failed; a restart would replay them");
                false
            }
        }
    }

    /// Writes one slice of waiting index entries; false when none wait or the write failed.
    async fn flush_keys(&mut self, n: usize) -> bool {
        let (slice, wm, max_at) = {
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            if keys.len() == 0 {
                return false;
            }
            keys.take_slice_to_write(n, self.next_lsn)
        };
        let r = async {
            let gate = self.gate.clone();
            let _turn = gate.lock().await;
            let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
            write_keys(&mut tx, &slice, max_at).await?;
            set_meta(&mut tx, "keys_watermark", wm).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        }
        .await;
        match r {
            Ok(()) => {
                self.stored_meta.insert("keys_watermark", wm);
                self.keys
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .written(&slice);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "writing index entries failed; a restart would replay them");
                false
            }
        }
    }

    /// Reads back into the tail (`keys.rs`) every event after the watermark whose index entry a
    /// crash left unwritten; a data directory of an earlier version, without `event_keys`, gets
    /// its whole index this way.
    async fn recover_keys(&mut self, last: i64) -> Result<(), StoreError> {
        // The table's newest position; a table written before it was kept is read once.
        let max_at = match meta_value(&mut self.conn, "keys_max_at").await? {
            Some(v) => v,
            None => sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(at_nanos) FROM event_keys")
                .fetch_one(&mut self.conn)
                .await?
                .unwrap_or(i64::MIN),
        };
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set_written_max_at(max_at);
        let watermark = get_meta(&mut self.conn, "keys_watermark").await?;
        if last <= watermark {
            return Ok(());
        }
        let mut after = watermark;
        let mut n = 0u64;
        loop {
            let rows = replay_page(
                &mut self.conn,
                "SELECT lsn, id, sku, location, at_nanos, seq, kind, effective, on_hand, committed, \
                 reserved, incoming, unavailable FROM events e WHERE lsn > ? AND NOT EXISTS \
                 (SELECT 1 FROM event_keys x WHERE x.sku = e.sku AND x.location = e.location \
                 AND x.at_nanos = e.at_nanos AND x.seq = e.seq AND x.id = e.id) \
                 ORDER BY lsn LIMIT 10000",
                &mut after,
            )
            .await?;
            if rows.is_empty() {
                break;
            }
            let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
            for r in &rows {
                let (lsn, sku, loc) = slot_of(r)?;
                let key = order_key_of(r)?;
                let is_set = r.try_get::<String, _>("kind")? == "set";
                let effective = r.try_get::<i64, _>("effective")? != 0;
                let mut base = [None; 5];
                for s in State::ALL {
                    base[s.index()] = r.try_get::<Option<i64>, _>(s.as_str())?;
                }
                keys.push(
                    &sku,
                    &loc,
                    entry_of(lsn, key, is_set, effective, |s| base[s.index()]),
                );
                n += 1;
            }
        }
        tracing::info!(events = n, "read the ledger tail back into the index");
        Ok(())
    }

    /// Brings what a crash left unwritten up to the ledger (cells first: the outbox rows' quantities
    /// come from them), then writes it all, so serving starts with nothing waiting.
    async fn recover(&mut self) -> Result<(), StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(lsn), 0) FROM events")
            .fetch_one(&mut self.conn)
            .await?;
        self.next_lsn = last + 1;
        // The index first: replaying the cells re-bases counts over it.
        self.recover_keys(last).await?;
        self.recover_cells(last).await?;
        self.recover_marks(last).await?;
        self.flush_all().await;
        Ok(())
    }

    /// Rebuilds the outbox rows a crash left unwritten: each applied event after the watermark
    /// that a stored row does not count yet (`outbox.lsn`) adds a version, as it did when it was
    /// decided; the quantity is the channel's ATP now (the cells are recovered first).
    async fn recover_marks(&mut self, last: i64) -> Result<(), StoreError> {
        let watermark = get_meta(&mut self.conn, "outbox_watermark").await?;
        if last <= watermark || self.channels.is_empty() {
            return Ok(());
        }
        // Per (channel index, sku): newest marking event, how many, newest applied sample.
        type Acc = (i64, i64, Option<(String, i64, i64)>);
        let mut acc: HashMap<(usize, Sku), Acc> = HashMap::new();
        let mut stored: HashMap<(usize, Sku), Option<Mark>> = HashMap::new();
        let mut after = watermark;
        loop {
            let rows = replay_page(
                &mut self.conn,
                "SELECT lsn, source, sku, location, at_nanos, received_nanos, outcome FROM events \
                 WHERE lsn > ? AND effective = 1 AND outcome IN ('applied', 'override') \
                 ORDER BY lsn LIMIT 10000",
                &mut after,
            )
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let (lsn, sku, loc) = slot_of(r)?;
                for i in 0..self.channels.len() {
                    if !self.channels[i].feeds_from(&loc) {
                        continue;
                    }
                    let key = (i, sku.clone());
                    if !stored.contains_key(&key) {
                        let m = load_marks(&mut self.conn, self.channels[i].id.as_str(), &[&sku])
                            .await?
                            .pop()
                            .map(|(_, m)| m);
                        stored.insert(key.clone(), m);
                    }
                    if stored[&key].as_ref().is_some_and(|m| m.lsn >= lsn) {
                        continue;
                    }
                    let a = acc.entry(key).or_default();
                    a.0 = lsn;
                    a.1 += 1;
                    if r.try_get::<String, _>("outcome")? == "applied" {
                        a.2 = Some((
                            r.try_get("source")?,
                            r.try_get("at_nanos")?,
                            r.try_get("received_nanos")?,
                        ));
                    }
                }
            }
        }
        let missing: Vec<Sku> = acc
            .keys()
            .map(|(_, s)| s.clone())
            .filter(|s| !self.cache.contains(s))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let refs: Vec<&Sku> = missing.iter().collect();
        for (sku, cells, _) in load_skus(&mut self.conn, &refs).await? {
            self.cache.insert_loaded(sku, cells);
        }
        let now = nanos(Utc::now());
        let n = acc.len();
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        for ((i, sku), (lsn, events, sample)) in acc {
            let c = &self.channels[i];
            let prior = stored.remove(&(i, sku.clone())).flatten();
            marks.mark(
                c.id.as_str(),
                &sku,
                prior,
                Change {
                    first: lsn - events + 1,
                    lsn,
                    events,
                    now_nanos: now,
                    atp: self.cache.channel_atp(&sku, c),
                    sample,
                },
            );
        }
        tracing::info!(rows = n, "replayed the ledger tail into the outbox");
        Ok(())
    }

    /// Rebuilds the cells a crash left unwritten: replays, in decision order, the effective events
    /// after the watermark, skipping per row what the row already holds. The stored outcome and
    /// `effective` flag are used, not the configuration, which may have changed since.
    async fn recover_cells(&mut self, last: i64) -> Result<(), StoreError> {
        let watermark = get_meta(&mut self.conn, "cells_watermark").await?;
        if last <= watermark {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut row_lsns: HashMap<(Sku, Location), [i64; 5]> = HashMap::new();
        let mut after = watermark;
        let mut replayed = 0u64;
        loop {
            let rows = replay_page(
                &mut self.conn,
                "SELECT lsn, id, sku, location, at_nanos, seq, kind, on_hand, committed, reserved, \
                 incoming, unavailable FROM events WHERE lsn > ? AND effective = 1 \
                 ORDER BY lsn LIMIT 10000",
                &mut after,
            )
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let (lsn, sku, loc) = slot_of(r)?;
                if !self.cache.contains(&sku) {
                    for (s, cells, lsns) in load_skus(&mut self.conn, &[&sku]).await? {
                        for (slot, l) in cells.slots.iter().zip(lsns) {
                            row_lsns.insert((s.clone(), slot.loc.clone()), l);
                        }
                        self.cache.insert_loaded(s, cells);
                    }
                }
                let key = order_key_of(r)?;
                let held = row_lsns
                    .get(&(sku.clone(), loc.clone()))
                    .copied()
                    .unwrap_or([0; 5]);
                let mut base = StateMap::new();
                for s in State::ALL {
                    if let Some(q) = r.try_get::<Option<i64>, _>(s.as_str())?
                        && held[s.index()] < lsn
                    {
                        base.insert(s, q);
                    }
                }
                let is_set = r.try_get::<String, _>("kind")? == "set";
                let cells = self.cache.cells_mut(&sku, &loc);
                let mut mask = 0u8;
                for (state, effect) in effects_of(is_set, &key, &base, cells) {
                    let cell = &mut cells[state.index()];
                    match effect {
                        Effect::Add(delta) => cell.value = cell.value.saturating_add(delta),
                        Effect::Rebase { key: k, value } => {
                            let later = sum_after(
                                &mut self.conn,
                                &self.keys,
                                None,
                                &sku,
                                &loc,
                                state,
                                &k,
                                Some(lsn),
                            )
                            .await?;
                            *cell = Cell {
                                value: value.saturating_add(later),
                                set: Some(k),
                            };
                        }
                    }
                    mask |= 1 << state.index();
                }
                if mask != 0 {
                    self.cache.mark_dirty(&sku, &loc, mask, lsn);
                }
                replayed += 1;
            }
            self.cache.commit_group();
        }
        tracing::info!(
            events = replayed,
            ms = started.elapsed().as_millis() as u64,
            "replayed the ledger tail into the cells"
        );
        Ok(())
    }
}

/// Copies the WAL back into the database beside the writer, on the other core. PASSIVE never takes
/// the write lock, so commits go on while it runs; the writer starts the WAL over once everything
/// in it is copied.
async fn checkpoint(mut conn: SqliteConnection) {
    let mut tick = tokio::time::interval(Duration::from_millis(CHECKPOINT_EVERY_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut conn)
            .await
        {
            Ok((_, log, done)) if log - done > WAL_WARN_FRAMES => {
                tracing::warn!(
                    frames = log,
                    copied = done,
                    "the WAL is growing faster than it is checkpointed"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checkpoint failed; will retry"),
        }
    }
}

const CHECKPOINT_EVERY_MS: u64 = 200;
/// WAL frames (4 KiB pages) not yet copied back that are worth a warning.
const WAL_WARN_FRAMES: i64 = 250_000;

/// The next page of event rows after position `*after` for a replay, moving `*after` past it;
/// empty at the end. `sql` selects `lsn`, takes the position as its one parameter and orders by it.
async fn replay_page(
    conn: &mut SqliteConnection,
    sql: &'static str,
    after: &mut i64,
) -> Result<Vec<SqliteRow>, StoreError> {
    let rows = sqlx::query(sql).bind(*after).fetch_all(&mut *conn).await?;
    if let Some(last) = rows.last() {
        *after = last.try_get("lsn")?;
    }
    Ok(rows)
}

/// The position, sku and location of a replayed event row.
fn slot_of(r: &SqliteRow) -> Result<(i64, Sku, Location), StoreError> {
    let sku = Sku::parse(r.try_get::<String, _>("sku")?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let loc = Location::parse(r.try_get::<String, _>("location")?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((r.try_get("lsn")?, sku, loc))
}

/// The fold-order key of a stored event row.
fn order_key_of(r: &SqliteRow) -> Result<OrderKey, StoreError> {
    Ok(OrderKey {
        position: Position {
            at_nanos: r.try_get("at_nanos")?,
            seq: r.try_get::<i64, _>("seq")? as u64,
        },
        id: EventId::parse(r.try_get::<String, _>("id")?)
            .map_err(|e| StoreError::Corrupt(format!("event id: {e}")))?,
    })
}

/// The index entry of a stored event: only effective adjustments count in a later re-base.
fn entry_of(
    lsn: i64,
    key: OrderKey,
    is_set: bool,
    effective: bool,
    base: impl Fn(State) -> Option<i64>,
) -> Entry {
    let mut deltas = [None; 5];
    if effective && !is_set {
        for s in State::ALL {
            deltas[s.index()] = base(s);
        }
    }
    Entry { lsn, key, deltas }
}

/// Writes a slice of index entries, in key order, and the table's newest position after it.
async fn write_keys(
    conn: &mut SqliteConnection,
    slice: &KeySlice,
    max_at: i64,
) -> Result<(), StoreError> {
    if slice.is_empty() {
        return Ok(());
    }
    set_meta(conn, "keys_max_at", max_at).await?;
    let rows: Vec<(&Sku, &Location, &Entry)> = slice
        .iter()
        .flat_map(|(sku, slots)| {
            slots
                .iter()
                .flat_map(move |(loc, v)| v.iter().map(move |e| (sku, loc, e)))
        })
        .collect();
    for chunk in rows.chunks(2000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO event_keys (sku, location, at_nanos, seq, id, lsn) ",
        );
        q.push_values(chunk, |mut b, (sku, loc, e)| {
            b.push_bind(sku.as_str())
                .push_bind(loc.as_str())
                .push_bind(e.key.position.at_nanos)
                .push_bind(e.key.position.seq as i64)
                .push_bind(e.key.id.as_str())
                .push_bind(e.lsn);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Rows a shutdown flush writes per transaction, and the most a group commit writes beside its events.
const FLUSH_SLICE: usize = 20_000;
/// Rows an idle moment writes per transaction: a request that arrives meanwhile waits for the
/// slice, so it is a few milliseconds of work, not the hundred a shutdown slice takes.
const IDLE_SLICE: usize = 2_000;

async fn lookup_ids(
    conn: &mut SqliteConnection,
    ids: &[&str],
) -> Result<HashMap<String, Fingerprint>, StoreError> {
    let mut seen = HashMap::new();
    for chunk in ids.chunks(500) {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT id, fingerprint FROM events WHERE id IN (");
        let mut sep = q.separated(", ");
        for id in chunk {
            sep.push_bind(id.to_string());
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await? {
            let id: String = row.try_get(0)?;
            let fp: Vec<u8> = row.try_get(1)?;
            let fp: [u8; 32] = fp
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("fingerprint of `{id}`")))?;
            seen.insert(id, Fingerprint(fp));
        }
    }
    Ok(seen)
}

fn cell_from_row(row: &SqliteRow) -> Result<(usize, Cell), StoreError> {
    let state: i64 = row.try_get("state")?;
    let value: i64 = row.try_get("value")?;
    let set_nanos: Option<i64> = row.try_get("set_nanos")?;
    let set_seq: Option<i64> = row.try_get("set_seq")?;
    let set_id: Option<String> = row.try_get("set_id")?;
    let set = match (set_nanos, set_seq, set_id) {
        (Some(n), Some(s), Some(id)) => Some(OrderKey {
            position: Position {
                at_nanos: n,
                seq: s as u64,
            },
            id: EventId::parse(id).map_err(|e| StoreError::Corrupt(format!("set id: {e}")))?,
        }),
        _ => None,
    };
    let i = usize::try_from(state)
        .ok()
        .filter(|i| *i < 5)
        .ok_or_else(|| StoreError::Corrupt(format!("state index {state}")))?;
    Ok((i, Cell { value, set }))
}

/// Every stored location of each sku, with the position each row is written as of.
async fn load_skus(
    conn: &mut SqliteConnection,
    skus: &[&Sku],
) -> Result<Vec<(Sku, SkuCells, Vec<[i64; 5]>)>, StoreError> {
    let mut out: Vec<(Sku, SkuCells, Vec<[i64; 5]>)> = Vec::with_capacity(skus.len());
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(skus.len());
    for s in skus {
        index.insert(s.as_str(), out.len());
        out.push(((*s).clone(), SkuCells::default(), Vec::new()));
    }
    for chunk in skus.chunks(500) {
        // One JSON parameter keeps the statement text constant, so its prepared form is reused.
        let list = serde_json::to_string(&chunk.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT c.sku, c.location, c.state, c.value, c.set_nanos, c.set_seq, c.set_id, c.lsn \
             FROM json_each(?) AS j CROSS JOIN cells AS c ON c.sku = j.value",
        )
        .bind(list)
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let sku: String = row.try_get("sku")?;
            let loc: String = row.try_get("location")?;
            let lsn: i64 = row.try_get("lsn")?;
            let (i, cell) = cell_from_row(&row)?;
            let Some(&at) = index.get(sku.as_str()) else {
                continue;
            };
            let (_, cells, lsns) = &mut out[at];
            let k = match cells.slots.iter().position(|s| s.loc.as_str() == loc) {
                Some(k) => k,
                None => {
                    cells.slots.push(Slot::clean(
                        Location::parse(loc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    ));
                    lsns.push([0; 5]);
                    cells.slots.len() - 1
                }
            };
            cells.slots[k].cells[i] = cell;
            lsns[k][i] = lsn;
        }
    }
    Ok(out)
}

/// The sum of effective adjust deltas for one state positioned after `k`: those already stored
/// (before position `before`, when replaying) plus those decided earlier in this (uncommitted,
/// unwritten) group.
#[allow(clippy::too_many_arguments)]
async fn sum_after(
    conn: &mut SqliteConnection,
    keys: &std::sync::RwLock<KeyTail>,
    pending: Option<&Pending<'_>>,
    sku: &Sku,
    loc: &Location,
    state: State,
    k: &OrderKey,
    before: Option<i64>,
) -> Result<i64, StoreError> {
    let col = state.as_str();
    // The tail before the table (see `keys.rs`); the writer is the only one that changes either.
    let (held, ask) = {
        let t = keys.read().unwrap_or_else(|p| p.into_inner());
        let held = t.sum_after(sku, loc, state, k, before.unwrap_or(i64::MAX));
        (held, t.table_may_hold_after(k))
    };
    let sql = format!(
        "SELECT COALESCE(SUM(e.{col}), 0) FROM event_keys x JOIN events e ON e.lsn = x.lsn \
         WHERE x.sku = ? AND x.location = ? \
         AND (x.at_nanos > ? OR (x.at_nanos = ? AND (x.seq > ? OR (x.seq = ? AND x.id > ?)))) \
         AND x.lsn < ? AND e.kind = 'adjust' AND e.effective = 1 AND e.{col} IS NOT NULL"
    );
    let stored: i64 = if !ask {
        0
    } else {
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(sku.to_string())
            .bind(loc.to_string())
            .bind(k.position.at_nanos)
            .bind(k.position.at_nanos)
            .bind(k.position.seq as i64)
            .bind(k.position.seq as i64)
            .bind(k.id.to_string())
            .bind(before.unwrap_or(i64::MAX))
            .fetch_one(&mut *conn)
            .await?
    };
    let unflushed: i64 = pending
        .map(|p| p.events.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|r| r.effective && !r.p.event.change.is_set())
        .filter(|r| &r.p.event.sku == sku && &r.p.event.location == loc)
        .filter(|r| &r.p.event.order_key() > k)
        .filter_map(|r| r.p.base.get(state))
        .fold(0i64, |a, d| a.saturating_add(d));
    Ok(stored.saturating_add(held).saturating_add(unflushed))
}

/// Inserts the group's events. Returns false, having inserted part of them, when an event id was
/// already stored (the caller rolls back).
async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[EventRow<'_>],
) -> Result<bool, StoreError> {
    let mut inserted = 0u64;
    for chunk in events.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (lsn, id, fingerprint, source, sku, location, at_nanos, seq, kind, \
             on_hand, committed, reserved, incoming, unavailable, uom, reason, ref, \
             received_nanos, outcome, effective, detail) ",
        );
        q.push_values(chunk, |mut b, r| {
            let e = &r.p.event;
            // Borrowed, not copied: the rows outlive the statement.
            b.push_bind(r.lsn)
                .push_bind(e.id.as_str())
                .push_bind(&r.p.fingerprint.0[..])
                .push_bind(e.source.as_str())
                .push_bind(e.sku.as_str())
                .push_bind(e.location.as_str())
                .push_bind(e.position.at_nanos)
                .push_bind(e.position.seq as i64)
                .push_bind(e.change.kind());
            for s in State::ALL {
                b.push_bind(r.p.base.get(s));
            }
            b.push_bind(e.uom.as_ref().map(|u| u.as_str()))
                .push_bind(e.reason.as_deref())
                .push_bind(e.reference.as_deref())
                .push_bind(r.received)
                .push_bind(r.outcome.as_str())
                .push_bind(r.effective)
                .push_bind(r.detail.as_deref());
        });
        q.push(" ON CONFLICT (id) DO NOTHING");
        inserted += q.build().execute(&mut *conn).await?.rows_affected();
    }
    Ok(inserted == events.len() as u64)
}

/// The stored outbox rows of these skus of one channel.
pub(crate) async fn load_marks(
    conn: &mut SqliteConnection,
    channel: &str,
    skus: &[&Sku],
) -> Result<Vec<(Sku, Mark)>, StoreError> {
    let mut out = Vec::new();
    for chunk in skus.chunks(500) {
        let list = serde_json::to_string(&chunk.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT o.sku, o.version, o.lsn, o.dirty, o.changed_nanos, o.atp, o.source, \
             o.occurred_nanos, o.received_nanos FROM json_each(?) AS j \
             CROSS JOIN outbox AS o ON o.channel = ? AND o.sku = j.value",
        )
        .bind(list)
        .bind(channel)
        .fetch_all(&mut *conn)
        .await?;
        for r in rows {
            let sku = Sku::parse(r.try_get::<String, _>(0)?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push((
                sku,
                Mark {
                    version: r.try_get(1)?,
                    lsn: r.try_get(2)?,
                    dirty: r.try_get::<i64, _>(3)? != 0,
                    changed_nanos: r.try_get(4)?,
                    atp: r.try_get(5)?,
                    source: r.try_get(6)?,
                    occurred_nanos: r.try_get(7)?,
                    received_nanos: r.try_get(8)?,
                    first_lsn: 0,
                },
            ));
        }
    }
    Ok(out)
}

/// Writes a slice of outbox rows held in memory.
async fn write_marks(
    conn: &mut SqliteConnection,
    slice: &[(String, Sku, Mark)],
) -> Result<(), StoreError> {
    for chunk in slice.chunks(2000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO outbox (channel, sku, version, lsn, dirty, changed_nanos, atp, source, \
             occurred_nanos, received_nanos) ",
        );
        q.push_values(chunk, |mut b, (c, s, m)| {
            b.push_bind(c.as_str())
                .push_bind(s.as_str())
                .push_bind(m.version)
                .push_bind(m.lsn)
                .push_bind(i64::from(m.dirty))
                .push_bind(m.changed_nanos)
                .push_bind(m.atp)
                .push_bind(m.source.as_deref())
                .push_bind(m.occurred_nanos)
                .push_bind(m.received_nanos);
        });
        q.push(
            " ON CONFLICT (channel, sku) DO UPDATE SET version = excluded.version, \
             lsn = excluded.lsn, dirty = excluded.dirty, changed_nanos = excluded.changed_nanos, \
             atp = excluded.atp, source = excluded.source, \
             occurred_nanos = excluded.occurred_nanos, received_nanos = excluded.received_nanos",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes a slice of waiting cells, as of ledger position `lsn`.
async fn write_cells(
    conn: &mut SqliteConnection,
    slice: &FlushRows,
    lsn: i64,
) -> Result<(), StoreError> {
    let rows: Vec<(&Sku, &Location, usize, &Cell)> = slice
        .iter()
        .flat_map(|(sku, slots)| {
            slots.iter().flat_map(move |(loc, mask, cells)| {
                cells
                    .iter()
                    .enumerate()
                    .filter(move |(i, _)| mask & (1 << i) != 0)
                    .map(move |(i, cell)| (sku, loc, i, cell))
            })
        })
        .collect();
    for chunk in rows.chunks(2000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO cells (sku, location, state, value, set_nanos, set_seq, set_id, lsn) ",
        );
        q.push_values(chunk, |mut b, (sku, loc, i, cell)| {
            b.push_bind(sku.as_str())
                .push_bind(loc.as_str())
                .push_bind(*i as i64)
                .push_bind(cell.value)
                .push_bind(cell.set.as_ref().map(|k| k.position.at_nanos))
                .push_bind(cell.set.as_ref().map(|k| k.position.seq as i64))
                .push_bind(cell.set.as_ref().map(|k| k.id.to_string()))
                .push_bind(lsn);
        });
        q.push(
            " ON CONFLICT (sku, location, state) DO UPDATE SET value = excluded.value, \
             set_nanos = excluded.set_nanos, set_seq = excluded.set_seq, set_id = excluded.set_id, \
             lsn = excluded.lsn",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// A value stored in `meta`, if one is.
async fn meta_value(conn: &mut SqliteConnection, key: &str) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?)
}

/// A position stored in `meta`; 0 (the start of the ledger) when none is.
async fn get_meta(conn: &mut SqliteConnection, key: &str) -> Result<i64, StoreError> {
    Ok(meta_value(conn, key).await?.unwrap_or(0))
}

/// Several positions in one statement (none: no statement).
async fn set_metas(conn: &mut SqliteConnection, values: &[(&str, i64)]) -> Result<(), StoreError> {
    if values.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO meta (key, value) ");
    q.push_values(values, |mut b, (k, v)| {
        b.push_bind(*k).push_bind(*v);
    });
    q.push(" ON CONFLICT (key) DO UPDATE SET value = excluded.value");
    q.build().execute(&mut *conn).await?;
    Ok(())
}

async fn set_meta(conn: &mut SqliteConnection, key: &str, lsn: i64) -> Result<(), StoreError> {
    set_metas(conn, &[(key, lsn)]).await
}

async fn insert_incidents(
    conn: &mut SqliteConnection,
    incidents: &[Incident],
) -> Result<(), StoreError> {
    for chunk in incidents.chunks(2000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO incidents (kind, sku, location, system, event_id, detail, at_nanos) ",
        );
        q.push_values(chunk, |mut b, i| {
            b.push_bind(i.kind.clone())
                .push_bind(i.sku.clone())
                .push_bind(i.location.clone())
                .push_bind(i.system.clone())
                .push_bind(i.event_id.clone())
                .push_bind(i.detail.clone())
                .push_bind(nanos(i.at));
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

fn levels_of(rows: &[SqliteRow]) -> Result<Vec<(String, String, Levels)>, StoreError> {
    let mut out: Vec<(String, String, Levels)> = Vec::new();
    for row in rows {
        let sku: String = row.try_get("sku")?;
        let loc: String = row.try_get("location")?;
        let state: i64 = row.try_get("state")?;
        let value: i64 = row.try_get("value")?;
        let st = usize::try_from(state)
            .ok()
            .and_then(|i| State::ALL.get(i).copied())
            .ok_or_else(|| StoreError::Corrupt(format!("state index {state}")))?;
        match out.last_mut() {
            Some((s, l, lv)) if *s == sku && *l == loc => lv.set(st, value),
            _ => {
                let mut lv = Levels::default();
                lv.set(st, value);
                out.push((sku, loc, lv));
            }
        }
    }
    Ok(out)
}

/// Overlays unwritten levels on stored ones: the overlay is newer wherever it has a location.
fn merge_levels(out: &mut Vec<LocationLevels>, fresh: &[(Location, Levels)]) {
    for (loc, lv) in fresh {
        match out.iter_mut().find(|x| &x.location == loc) {
            Some(x) => x.levels = *lv,
            None => out.push(LocationLevels {
                location: loc.clone(),
                levels: *lv,
            }),
        }
    }
    out.sort_by(|a, b| a.location.cmp(&b.location));
}

impl SqliteStore {
    /// The overlay's levels of these skus (read before the table; see `cells::Overlay`).
    pub(crate) fn overlay_of(&self, skus: &[Sku]) -> HashMap<Sku, Vec<(Location, Levels)>> {
        let ov = self.overlay.read().unwrap_or_else(|p| p.into_inner());
        skus.iter()
            .filter_map(|s| ov.get(s).map(|v| (s.clone(), v.clone())))
            .collect()
    }
}

fn to_location_levels(loc: String, levels: Levels) -> Result<LocationLevels, StoreError> {
    Ok(LocationLevels {
        location: Location::parse(loc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        levels,
    })
}

impl Store for SqliteStore {
    fn queue_depth(&self) -> Option<usize> {
        Some(self.jobs.max_capacity() - self.jobs.capacity())
    }

    fn apply(
        &self,
        received_at: DateTime<Utc>,
        batch: Vec<Incoming>,
    ) -> BoxFuture<'_, Result<Vec<Receipt>, StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.jobs
                .try_send(Job::Apply(Request {
                    received_at,
                    batch,
                    reply,
                }))
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                    mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
                })?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn inventory<'a>(
        &'a self,
        sku: &'a Sku,
    ) -> BoxFuture<'a, Result<Option<Vec<LocationLevels>>, StoreError>> {
        Box::pin(async move {
            // The overlay first, then the table (see `cells::Overlay`).
            let fresh = self.overlay_of(std::slice::from_ref(sku));
            let rows = sqlx::query(
                "SELECT sku, location, state, value FROM cells WHERE sku = ? ORDER BY location, state",
            )
            .bind(sku.to_string())
            .fetch_all(&self.read)
            .await?;
            let mut out: Vec<LocationLevels> = levels_of(&rows)?
                .into_iter()
                .map(|(_, l, lv)| to_location_levels(l, lv))
                .collect::<Result<_, _>>()?;
            if let Some(locs) = fresh.get(sku) {
                merge_levels(&mut out, locs);
            }
            // Locations known only from events that changed nothing (an override held back, a
            // stale count) still show, at zero: the sku has been seen there.
            // The index's tail before its table (see `keys.rs`).
            let mut seen: Vec<String> = self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .of_sku(sku)
                .map(|(l, _)| l.to_string())
                .collect();
            seen.extend(
                sqlx::query_scalar::<_, String>(
                    "SELECT DISTINCT location FROM event_keys WHERE sku = ?",
                )
                .bind(sku.to_string())
                .fetch_all(&self.read)
                .await?,
            );
            seen.sort();
            seen.dedup();
            if out.is_empty() && seen.is_empty() {
                return Ok(None);
            }
            for l in seen {
                if !out.iter().any(|x| x.location.as_str() == l) {
                    out.push(to_location_levels(l, Levels::default())?);
                }
            }
            out.sort_by(|a, b| a.location.cmp(&b.location));
            Ok(Some(out))
        })
    }

    fn inventory_page<'a>(
        &'a self,
        after: Option<&'a Sku>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SkuLevels>, StoreError>> {
        Box::pin(async move {
            let limit = limit.max(1);
            // The overlay's first skus after `after`, then the table's: the page is the first
            // `limit` of both.
            let fresh: BTreeMap<Sku, Vec<(Location, Levels)>> = {
                let ov = self.overlay.read().unwrap_or_else(|p| p.into_inner());
                ov.after(after)
                    .take(limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            let mut tx = self.read.begin().await?;
            let stored: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT sku FROM cells WHERE sku > ? ORDER BY sku LIMIT ?",
            )
            .bind(after.map_or_else(String::new, |s| s.to_string()))
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?;
            let mut skus: Vec<String> = stored;
            skus.extend(fresh.keys().map(|k| k.to_string()));
            skus.sort_unstable();
            skus.dedup();
            skus.truncate(limit);
            let list =
                serde_json::to_string(&skus).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let rows = sqlx::query(
                "SELECT c.sku, c.location, c.state, c.value FROM json_each(?) AS j \
                 CROSS JOIN cells AS c ON c.sku = j.value ORDER BY c.sku, c.location, c.state",
            )
            .bind(list)
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            let mut by_sku: HashMap<String, Vec<LocationLevels>> = HashMap::new();
            for (sku, loc, lv) in levels_of(&rows)? {
                by_sku
                    .entry(sku)
                    .or_default()
                    .push(to_location_levels(loc, lv)?);
            }
            let mut out: Vec<SkuLevels> = Vec::with_capacity(skus.len());
            for s in skus {
                let mut locs = by_sku.remove(&s).unwrap_or_default();
                let sku = Sku::parse(s).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if let Some(f) = fresh.get(&sku) {
                    merge_levels(&mut locs, f);
                }
                out.push((sku, locs));
            }
            Ok(out)
        })
    }

    fn history<'a>(
        &'a self,
        sku: &'a Sku,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<HistoryEntry>, StoreError>> {
        Box::pin(async move {
            // The newest `limit` of the index's tail, read before its table (see `keys.rs`).
            let mut held: Vec<(OrderKey, i64)> = self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .of_sku(sku)
                .flat_map(|(_, v)| v.iter().map(|e| (e.key.clone(), e.lsn)))
                .collect();
            held.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            held.truncate(limit);
            let mut rows = sqlx::query(
                "SELECT e.* FROM event_keys x JOIN events e ON e.lsn = x.lsn WHERE x.sku = ? \
                 ORDER BY x.at_nanos DESC, x.seq DESC, x.id DESC LIMIT ?",
            )
            .bind(sku.to_string())
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
            if !held.is_empty() {
                let lsns = serde_json::to_string(&held.iter().map(|(_, l)| *l).collect::<Vec<_>>())
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                rows.extend(
                    sqlx::query(
                        "SELECT e.* FROM json_each(?) AS j CROSS JOIN events AS e ON e.lsn = j.value",
                    )
                    .bind(lsns)
                    .fetch_all(&self.read)
                    .await?,
                );
            }
            let mut keyed = rows
                .iter()
                .map(|r| {
                    Ok((
                        order_key_of(r)?,
                        r.try_get::<i64, _>("lsn")?,
                        history_row(r)?,
                    ))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            // An entry written while this read ran is in both halves.
            keyed.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            keyed.dedup_by_key(|(_, lsn, _)| *lsn);
            keyed.truncate(limit);
            Ok(keyed.into_iter().rev().map(|(_, _, h)| h).collect())
        })
    }

    fn incidents<'a>(
        &'a self,
        f: &'a IncidentFilter,
    ) -> BoxFuture<'a, Result<Vec<Incident>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT * FROM incidents WHERE (?1 IS NULL OR kind = ?1) AND (?2 IS NULL OR sku = ?2) \
                 AND (?3 IS NULL OR system = ?3) ORDER BY id DESC LIMIT ?4",
            )
            .bind(f.kind.clone())
            .bind(f.sku.clone())
            .bind(f.system.clone())
            .bind(f.limit.max(1) as i64)
            .fetch_all(&self.read)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Incident {
                        kind: r.try_get("kind")?,
                        sku: r.try_get("sku")?,
                        location: r.try_get("location")?,
                        system: r.try_get("system")?,
                        event_id: r.try_get("event_id")?,
                        detail: r.try_get("detail")?,
                        at: from_nanos(r.try_get("at_nanos")?),
                    })
                })
                .collect()
        })
    }

    fn record_incident<'a>(
        &'a self,
        incident: &'a Incident,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            // Outside the event path: a short write on the side connection, taken in turn with
            // the ledger writer (the gate), so neither waits on SQLite's busy polling.
            let _turn = self.gate.clone().lock_owned().await;
            let mut conn = self.side().await?.acquire().await?;
            insert_incidents(&mut conn, std::slice::from_ref(incident)).await
        })
    }

    fn save_audit<'a>(&'a self, a: &'a AuditRecord) -> BoxFuture<'a, Result<i64, StoreError>> {
        Box::pin(async move {
            let handoffs = serde_json::to_string(&a.handoffs)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let _turn = self.gate.clone().lock_owned().await;
            let mut conn = self.side().await?.acquire().await?;
            let r = sqlx::query(
                "INSERT INTO audits (at_nanos, skus_compared, drifting, handoffs, report) \
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(nanos(a.at))
            .bind(a.skus_compared)
            .bind(a.drifting)
            .bind(handoffs)
            .bind(a.report_json.clone())
            .execute(&mut *conn)
            .await;
            Ok(r?.last_insert_rowid())
        })
    }

    fn audits_since(
        &self,
        since: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move {
            let rows =
                sqlx::query("SELECT * FROM audits WHERE at_nanos >= ? ORDER BY at_nanos, id")
                    .bind(nanos(since))
                    .fetch_all(&self.read)
                    .await?;
            rows.iter().map(audit_row).collect()
        })
    }

    fn sku_version<'a>(&'a self, sku: &'a Sku) -> BoxFuture<'a, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            // The index's tail before its table (see `keys.rs`).
            let tail: Vec<i64> = self
                .keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .of_sku(sku)
                .flat_map(|(_, v)| v.iter().map(|e| e.lsn))
                .collect();
            let tail =
                serde_json::to_string(&tail).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let v: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(lsn) FROM events WHERE lsn IN \
                 (SELECT lsn FROM event_keys WHERE sku = ? UNION SELECT value FROM json_each(?)) \
                 AND effective = 1 AND outcome IN ('applied', 'override')",
            )
            .bind(sku.to_string())
            .bind(tail)
            .fetch_one(&self.read)
            .await?;
            Ok(v)
        })
    }

    fn audits_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredAudit>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT * FROM audits WHERE id < ? ORDER BY id DESC LIMIT ?")
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit.min(i64::MAX as usize) as i64)
                .fetch_all(&self.read)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(StoredAudit {
                        id: r.try_get("id")?,
                        record: audit_row(r)?,
                    })
                })
                .collect()
        })
    }

    fn audit(&self, id: i64) -> BoxFuture<'_, Result<Option<StoredAudit>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM audits WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
            row.map(|r| {
                Ok(StoredAudit {
                    id,
                    record: audit_row(&r)?,
                })
            })
            .transpose()
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.jobs.is_closed() {
                return Err(StoreError::Closed);
            }
            sqlx::query("SELECT 1").execute(&self.read).await?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // Write the waiting cells, so the next start has nothing to replay.
            let (reply, done) = oneshot::channel();
            if self.jobs.send(Job::Flush(reply)).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(30), done).await;
            }
            let handle = self.checkpointer.lock().ok().and_then(|mut h| h.take());
            if let Some(h) = handle {
                h.abort();
                let _ = h.await;
            }
            let handle = self.writer.lock().ok().and_then(|mut h| h.take());
            if let Some(h) = handle {
                // The writer stops once every sender is gone; ours is the last one only if the
                // server has dropped its clones, so bound the wait.
                h.abort();
                let _ = h.await;
            }
            self.read.close().await;
        })
    }
}

fn audit_row(r: &SqliteRow) -> Result<AuditRecord, StoreError> {
    let h: String = r.try_get("handoffs")?;
    Ok(AuditRecord {
        at: from_nanos(r.try_get("at_nanos")?),
        skus_compared: r.try_get("skus_compared")?,
        drifting: r.try_get("drifting")?,
        handoffs: serde_json::from_str(&h)
            .map_err(|e| StoreError::Corrupt(format!("audit handoffs: {e}")))?,
        report_json: r.try_get("report")?,
    })
}

fn history_row(r: &SqliteRow) -> Result<HistoryEntry, StoreError> {
    let mut quantities = Vec::new();
    for s in State::ALL {
        let v: Option<i64> = r.try_get(s.as_str())?;
        if let Some(v) = v {
            quantities.push((s.as_str().to_owned(), v));
        }
    }
    let outcome: String = r.try_get("outcome")?;
    let at: i64 = r.try_get("at_nanos")?;
    let seq: i64 = r.try_get("seq")?;
    Ok(HistoryEntry {
        id: r.try_get("id")?,
        source: r.try_get("source")?,
        location: r.try_get("location")?,
        occurred_at: Position {
            at_nanos: at,
            seq: seq as u64,
        }
        .occurred_at_rfc3339(),
        seq: seq as u64,
        received_at: from_nanos(r.try_get("received_nanos")?),
        outcome: outcome.parse().map_err(StoreError::Corrupt)?,
        kind: r.try_get("kind")?,
        quantities,
        uom: r.try_get("uom")?,
        reason: r.try_get("reason")?,
        reference: r.try_get("ref")?,
        detail: r.try_get("detail")?,
        lsn: r.try_get("lsn")?,
        effective: r.try_get::<i64, _>("effective")? != 0,
    })
}
