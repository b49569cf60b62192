//! Embedded SQLite. One writer task owns the only write connection: SQLite has a single writer
//! anyway, and owning it lets the writer keep the hot cells in memory and commit many requests in
//! one transaction (group commit: one fsync for everything that queued while the previous commit
//! was on disk). Readers use a separate pool; WAL mode lets them run beside the writer.

use crate::schema;
use crate::{
    AuditRecord, BoxFuture, HistoryEntry, Incident, IncidentFilter, Incoming, LocationLevels,
    Receipt, SkuLevels, Store, StoreError,
};
use chrono::{DateTime, TimeZone, Utc};
use driftless_core::{
    Cell, ChannelSpec, Effect, EventId, Fingerprint, Levels, Location, OrderKey, Outcome, Position,
    Prepared, Rules, Sku, State,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, QueryBuilder, Row, Sqlite};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
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
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_pending: 1024,
            max_group_events: 20_000,
            max_cached_slots: 500_000,
            fsync: true,
        }
    }
}

struct Job {
    received_at: DateTime<Utc>,
    batch: Vec<Incoming>,
    reply: oneshot::Sender<Result<Vec<Receipt>, StoreError>>,
}

/// The embedded store.
pub struct SqliteStore {
    jobs: mpsc::Sender<Job>,
    pub(crate) read: SqlitePool,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Fan-out's write connection (`outbox.rs`), opened on first use.
    pub(crate) side: tokio::sync::OnceCell<SqlitePool>,
    /// Held by every writer of the process for the length of its transaction: waiting here is a
    /// queue, where SQLite's busy handler would sleep and poll.
    pub(crate) gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Bumped by the writer after a commit that marked outbox rows dirty (see
    /// [`crate::Outbox::outbox_changes`]).
    pub(crate) changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
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
            // 256 MiB of page cache and checkpoints every ~40 MiB of WAL: random-key inserts into
            // the cell and index B-trees dirty many pages per commit, and rereading them from the
            // OS on every group costs more than the memory.
            .pragma("cache_size", "-262144")
            .pragma("wal_autocheckpoint", "10000")
            .pragma("temp_store", "memory");
        let mut conn = base.clone().connect().await?;
        for stmt in schema::SQLITE {
            sqlx::query(*stmt).execute(&mut conn).await?;
        }
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(base.read_only(true))
            .await?;
        let (tx, rx) = mpsc::channel(opts.max_pending);
        let gate = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let changes = std::sync::Arc::new(tokio::sync::watch::Sender::new(0u64));
        let writer = Writer {
            changes: changes.clone(),
            conn,
            rules,
            channels,
            cache: HashMap::new(),
            opts,
            gate: gate.clone(),
            lookup_groups: 0,
        };
        let handle = tokio::spawn(writer.run(rx));
        Ok(SqliteStore {
            jobs: tx,
            read,
            writer: Mutex::new(Some(handle)),
            side: tokio::sync::OnceCell::new(),
            gate,
            changes,
        })
    }
}

struct Writer {
    conn: SqliteConnection,
    rules: Rules,
    channels: Vec<ChannelSpec>,
    cache: HashMap<(Sku, Location), [Cell; 5]>,
    opts: SqliteOptions,
    gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    changes: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
    /// Groups left that look their ids up before deciding. Normally a group decides first and
    /// lets the primary key tell it whether any id was already stored (one lookup query fewer per
    /// group); when one was, the group is redone with lookups, and so are the next few, because
    /// redeliveries come in storms.
    lookup_groups: u32,
}

/// Groups that look ids up after a group found an already-stored id.
const LOOKUP_AFTER_DUPLICATE: u32 = 64;

/// Rows a group commit writes, gathered while deciding and written at the end with multi-row
/// statements (one statement per thousand rows instead of one per row).
#[derive(Default)]
struct Pending {
    events: Vec<EventRow>,
    /// Slots written by this group, with a bit per state that changed.
    cells: HashMap<(Sku, Location), u8>,
    outbox: HashSet<(String, Sku)>,
    incidents: Vec<Incident>,
}

struct EventRow {
    p: Prepared,
    received: i64,
    outcome: Outcome,
    effective: bool,
    detail: Option<String>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(first) = rx.recv().await {
            let mut jobs = vec![first];
            let mut n = jobs[0].batch.len();
            // Take everything that queued during the previous commit, up to the group limit.
            while n < self.opts.max_group_events {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.batch.len();
                        jobs.push(j);
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
                self.cache.clear();
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
                Ok(receipts) => {
                    for (job, r) in jobs.into_iter().zip(receipts) {
                        let _ = job.reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    // The cache may hold decisions of the rolled-back transaction.
                    self.cache.clear();
                    tracing::error!(error = %e, "group commit failed");
                    let msg = e.to_string();
                    for job in jobs {
                        let _ = job.reply.send(Err(StoreError::WriteFailed(msg.clone())));
                    }
                }
            }
        }
    }

    /// Decides and writes one group in one transaction. With `lookup` false, ids are assumed new
    /// and the insert checks it: `Ok(None)` means one was not, and nothing was written.
    async fn commit_group(
        &mut self,
        jobs: &[Job],
        lookup: bool,
    ) -> Result<Option<Vec<Vec<Receipt>>>, StoreError> {
        let mut ids: Vec<&str> = Vec::new();
        let mut slots: HashSet<(Sku, Location)> = HashSet::new();
        for j in jobs {
            for item in &j.batch {
                if let Incoming::Event(p) = item {
                    ids.push(p.event.id.as_str());
                    slots.insert((p.event.sku.clone(), p.event.location.clone()));
                }
            }
        }
        if self.cache.len() + slots.len() > self.opts.max_cached_slots {
            self.cache.clear();
        }
        // IMMEDIATE: take the write lock up front, so a fan-out write between this transaction's
        // first read and first write makes it wait instead of failing with a stale snapshot.
        let gate = self.gate.clone();
        let _turn = gate.lock().await;
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        let mut seen = if lookup {
            lookup_ids(&mut tx, &ids).await?
        } else {
            HashMap::new()
        };
        let missing: Vec<(Sku, Location)> = slots
            .into_iter()
            .filter(|k| !self.cache.contains_key(k))
            .collect();
        load_cells(&mut tx, &missing, &mut self.cache).await?;

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
                let key = (ev.sku.clone(), ev.location.clone());
                let cells = self.cache.entry(key.clone()).or_default();
                let prior = seen.get(ev.id.as_str()).copied();
                let d = self.rules.decide(p, prior, cells);
                for (state, effect) in &d.effects {
                    let cell = &mut cells[state.index()];
                    match effect {
                        Effect::Add(delta) => cell.value = cell.value.saturating_add(*delta),
                        Effect::Rebase { key: k, value } => {
                            let later =
                                sum_after(&mut tx, &pending, &ev.sku, &ev.location, *state, k)
                                    .await?;
                            *cell = Cell {
                                value: value.saturating_add(later),
                                set: Some(k.clone()),
                            };
                        }
                    }
                }
                if !d.effects.is_empty() {
                    let mask = pending.cells.entry(key).or_default();
                    for (state, _) in &d.effects {
                        *mask |= 1 << state.index();
                    }
                    for c in self.channels.iter().filter(|c| c.feeds_from(&ev.location)) {
                        pending.outbox.insert((c.id.to_string(), ev.sku.clone()));
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
                    seen.insert(ev.id.to_string(), p.fingerprint);
                    pending.events.push(EventRow {
                        p: (**p).clone(),
                        received,
                        outcome: d.outcome,
                        effective: d.effective,
                        detail: d.detail.clone(),
                    });
                }
                receipts.push(Receipt {
                    outcome: d.outcome,
                    detail: d.detail,
                });
            }
            out.push(receipts);
        }
        if !flush(&mut tx, &pending, &self.cache).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        tx.commit().await?;
        if !pending.outbox.is_empty() {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(Some(out))
    }
}

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

async fn load_cells(
    conn: &mut SqliteConnection,
    keys: &[(Sku, Location)],
    cache: &mut HashMap<(Sku, Location), [Cell; 5]>,
) -> Result<(), StoreError> {
    for chunk in keys.chunks(400) {
        for k in chunk {
            cache.insert(k.clone(), Default::default());
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT sku, location, state, value, set_nanos, set_seq, set_id FROM cells \
             WHERE (sku, location) IN (VALUES ",
        );
        let mut sep = q.separated(", ");
        for (s, l) in chunk {
            sep.push("(");
            sep.push_bind_unseparated(s.to_string());
            sep.push_unseparated(", ");
            sep.push_bind_unseparated(l.to_string());
            sep.push_unseparated(")");
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await? {
            let sku: String = row.try_get("sku")?;
            let loc: String = row.try_get("location")?;
            let (i, cell) = cell_from_row(&row)?;
            let key = (
                Sku::parse(sku).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                Location::parse(loc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            );
            if let Some(slot) = cache.get_mut(&key) {
                slot[i] = cell;
            }
        }
    }
    Ok(())
}

/// The sum of effective adjust deltas for one state positioned after `k`: those already stored
/// plus those decided earlier in this (uncommitted, unflushed) group.
async fn sum_after(
    conn: &mut SqliteConnection,
    pending: &Pending,
    sku: &Sku,
    loc: &Location,
    state: State,
    k: &OrderKey,
) -> Result<i64, StoreError> {
    let col = state.as_str();
    let sql = format!(
        "SELECT COALESCE(SUM({col}), 0) FROM events WHERE sku = ? AND location = ? \
         AND kind = 'adjust' AND effective = 1 AND {col} IS NOT NULL \
         AND (at_nanos > ? OR (at_nanos = ? AND (seq > ? OR (seq = ? AND id > ?))))"
    );
    let stored: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(sku.to_string())
        .bind(loc.to_string())
        .bind(k.position.at_nanos)
        .bind(k.position.at_nanos)
        .bind(k.position.seq as i64)
        .bind(k.position.seq as i64)
        .bind(k.id.to_string())
        .fetch_one(&mut *conn)
        .await?;
    let unflushed: i64 = pending
        .events
        .iter()
        .filter(|r| r.effective && !r.p.event.change.is_set())
        .filter(|r| &r.p.event.sku == sku && &r.p.event.location == loc)
        .filter(|r| &r.p.event.order_key() > k)
        .filter_map(|r| r.p.base.get(state))
        .fold(0i64, |a, d| a.saturating_add(d));
    Ok(stored.saturating_add(unflushed))
}

/// Writes the group's rows. Returns false, having written part of them, when an event id was
/// already stored (the caller rolls back).
async fn flush(
    conn: &mut SqliteConnection,
    pending: &Pending,
    cache: &HashMap<(Sku, Location), [Cell; 5]>,
) -> Result<bool, StoreError> {
    let mut inserted = 0u64;
    for chunk in pending.events.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (id, fingerprint, source, sku, location, at_nanos, seq, kind, \
             on_hand, committed, reserved, incoming, unavailable, uom, reason, ref, \
             received_nanos, outcome, effective, detail) ",
        );
        q.push_values(chunk, |mut b, r| {
            let e = &r.p.event;
            b.push_bind(e.id.to_string())
                .push_bind(r.p.fingerprint.0.to_vec())
                .push_bind(e.source.to_string())
                .push_bind(e.sku.to_string())
                .push_bind(e.location.to_string())
                .push_bind(e.position.at_nanos)
                .push_bind(e.position.seq as i64)
                .push_bind(e.change.kind());
            for s in State::ALL {
                b.push_bind(r.p.base.get(s));
            }
            b.push_bind(e.uom.as_ref().map(|u| u.to_string()))
                .push_bind(e.reason.clone())
                .push_bind(e.reference.clone())
                .push_bind(r.received)
                .push_bind(r.outcome.as_str())
                .push_bind(r.effective)
                .push_bind(r.detail.clone());
        });
        q.push(" ON CONFLICT (id) DO NOTHING");
        inserted += q.build().execute(&mut *conn).await?.rows_affected();
    }
    if inserted != pending.events.len() as u64 {
        return Ok(false);
    }
    let cells: Vec<(&(Sku, Location), usize, &Cell)> = pending
        .cells
        .iter()
        .filter_map(|(k, mask)| cache.get(k).map(|c| (k, *mask, c)))
        .flat_map(|(k, mask, c)| {
            c.iter()
                .enumerate()
                .filter(move |(i, _)| mask & (1 << i) != 0)
                .map(move |(i, cell)| (k, i, cell))
        })
        .collect();
    for chunk in cells.chunks(2000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO cells (sku, location, state, value, set_nanos, set_seq, set_id) ",
        );
        q.push_values(chunk, |mut b, ((sku, loc), i, cell)| {
            b.push_bind(sku.to_string())
                .push_bind(loc.to_string())
                .push_bind(*i as i64)
                .push_bind(cell.value)
                .push_bind(cell.set.as_ref().map(|k| k.position.at_nanos))
                .push_bind(cell.set.as_ref().map(|k| k.position.seq as i64))
                .push_bind(cell.set.as_ref().map(|k| k.id.to_string()));
        });
        q.push(
            " ON CONFLICT (sku, location, state) DO UPDATE SET value = excluded.value, \
             set_nanos = excluded.set_nanos, set_seq = excluded.set_seq, set_id = excluded.set_id",
        );
        q.build().execute(&mut *conn).await?;
    }
    let now = nanos(Utc::now());
    let outbox: Vec<&(String, Sku)> = pending.outbox.iter().collect();
    for chunk in outbox.chunks(3000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO outbox (channel, sku, version, dirty, changed_nanos) ",
        );
        q.push_values(chunk, |mut b, (c, s)| {
            b.push_bind(c.clone())
                .push_bind(s.to_string())
                .push_bind(1i64)
                .push_bind(1i64)
                .push_bind(now);
        });
        q.push(
            " ON CONFLICT (channel, sku) DO UPDATE SET version = outbox.version + 1, dirty = 1, \
             changed_nanos = excluded.changed_nanos",
        );
        q.build().execute(&mut *conn).await?;
    }
    insert_incidents(conn, &pending.incidents).await?;
    Ok(true)
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

fn to_location_levels(loc: String, levels: Levels) -> Result<LocationLevels, StoreError> {
    Ok(LocationLevels {
        location: Location::parse(loc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        levels,
    })
}

impl Store for SqliteStore {
    fn apply(
        &self,
        received_at: DateTime<Utc>,
        batch: Vec<Incoming>,
    ) -> BoxFuture<'_, Result<Vec<Receipt>, StoreError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            self.jobs
                .try_send(Job {
                    received_at,
                    batch,
                    reply,
                })
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
            // Locations known only from events that changed nothing (an override held back, a
            // stale count) still show, at zero: the sku has been seen there.
            let seen: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT location FROM events WHERE sku = ? ORDER BY location",
            )
            .bind(sku.to_string())
            .fetch_all(&self.read)
            .await?;
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
            let rows = sqlx::query(
                "SELECT sku, location, state, value FROM cells WHERE sku IN \
                 (SELECT DISTINCT sku FROM cells WHERE sku > ? ORDER BY sku LIMIT ?) \
                 ORDER BY sku, location, state",
            )
            .bind(after.map_or_else(String::new, |s| s.to_string()))
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
            let mut out: Vec<SkuLevels> = Vec::new();
            for (sku, loc, lv) in levels_of(&rows)? {
                let ll = to_location_levels(loc, lv)?;
                match out.last_mut() {
                    Some((s, v)) if s.as_str() == sku => v.push(ll),
                    _ => out.push((
                        Sku::parse(sku).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        vec![ll],
                    )),
                }
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
            let rows = sqlx::query(
                "SELECT * FROM events WHERE sku = ? ORDER BY at_nanos DESC, seq DESC, id DESC LIMIT ?",
            )
            .bind(sku.to_string())
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
            let mut out = rows
                .iter()
                .map(history_row)
                .collect::<Result<Vec<_>, _>>()?;
            out.reverse();
            Ok(out)
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
            rows.iter()
                .map(|r| {
                    let h: String = r.try_get("handoffs")?;
                    Ok(AuditRecord {
                        at: from_nanos(r.try_get("at_nanos")?),
                        skus_compared: r.try_get("skus_compared")?,
                        drifting: r.try_get("drifting")?,
                        handoffs: serde_json::from_str(&h)
                            .map_err(|e| StoreError::Corrupt(format!("audit handoffs: {e}")))?,
                        report_json: r.try_get("report")?,
                    })
                })
                .collect()
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
    })
}
