//! The writer task: it owns the only write connection, takes everything that queued while the
//! previous commit was on disk as one group, and commits it in one transaction (group commit). A
//! group runs as named phases (see [`Writer::try_group`]); between groups, and when idle, the
//! writer writes behind a slice of what it holds in memory (cells, outbox rows, index entries).

use super::behind::{SliceBudget, Watermark, WriteBehind};
use super::cells::{CellCache, FlushRows, Overlay, set_levels};
use super::keys::{KeyTail, entry_of};
use super::marks::{Change, Mark, Marks};
use super::sql::*;
use super::sweep::Slices;
use super::*;
use crate::rows::{checkpoint_incident, incident_of, rejected};
use crate::{Incident, Incoming, Receipt, StoreError};
use chrono::Utc;
use driftless_core::checkpoint;
use driftless_core::{
    Cell, ChannelSpec, Effect, Fingerprint, Levels, Location, Outcome, Prepared, Rules, Sku, State,
};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use std::collections::HashMap;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub(super) struct Writer {
    pub(super) conn: SqliteConnection,
    pub(super) held: Held,
}

/// Everything the writer holds besides its connection, so a group's phases can borrow it while
/// the group's transaction borrows the connection.
pub(super) struct Held {
    pub(super) rules: Rules,
    pub(super) channels: Vec<ChannelSpec>,
    pub(super) cache: CellCache,
    pub(super) overlay: std::sync::Arc<Overlay>,
    pub(super) marks: std::sync::Arc<std::sync::Mutex<Marks>>,
    pub(super) keys: std::sync::Arc<std::sync::RwLock<KeyTail>>,
    /// The position the next stored event gets.
    pub(super) next_lsn: i64,
    pub(super) opts: SqliteOptions,
    pub(super) gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    pub(super) changes: crate::outbox::OutboxSignal,
    /// Groups left that look their ids up before deciding. Normally a group decides first and
    /// lets the unique index tell it whether any id was already stored (one lookup query fewer per
    /// group); when one was, the group is redone with lookups, and so are the next few, because
    /// redeliveries come in storms.
    pub(super) lookup_groups: u32,
    /// The watermarks as last committed, so a group writes only those that moved (a small group
    /// usually moves none, and each is a statement).
    pub(super) stored_meta: FastMap<&'static str, Watermark>,
    /// A large committed group's overlay and outbox changes being installed beside the next
    /// group's work, on a thread of their own (see [`Published`]); awaited before anything that
    /// reads or writes them.
    pub(super) installing: Option<JoinHandle<()>>,
}

/// Groups that look ids up after a group found an already-stored id.
pub(super) const LOOKUP_AFTER_DUPLICATE: u32 = 64;

/// Events in a group from which on its index entries, and then its overlay and outbox changes,
/// are added on threads of their own (a thread costs tens of microseconds; a small group's
/// bookkeeping takes less).
pub(super) const PARALLEL_TAIL_EVENTS: usize = 256;

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
pub(super) struct Published {
    /// Only changed slots go into the overlay (a sku's other locations are in the table already),
    /// so a change costs one slot's levels, not a copy of every location of its sku.
    pub(super) levels: Vec<(Sku, Location, Levels)>,
    pub(super) written: Vec<Sku>,
    /// Per marked `(channel, sku)`: the table's row when this group marks it first, and the change.
    pub(super) marks: Vec<(driftless_core::SystemId, Sku, Option<Mark>, Change)>,
}

impl Published {
    pub(super) fn install(
        self,
        overlay: &Overlay,
        marks: &std::sync::Mutex<Marks>,
        changes: &crate::outbox::OutboxSignal,
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
        let mut floor = crate::outbox::WAKE_ONLY;
        {
            // Outside the write gate, unlike the other changes to the marks (see `marks.rs`): a
            // mark commutes with a dispatcher's acknowledgement or re-dirtying.
            let mut m = marks.lock().unwrap_or_else(|p| p.into_inner());
            for (channel, sku, stored, change) in self.marks {
                floor = floor.min(change.now_nanos);
                m.mark(channel.as_str(), &sku, stored, change);
            }
        }
        changes.marked(floor);
    }
}

pub(super) type Replies = Vec<(
    oneshot::Sender<Result<Vec<Receipt>, StoreError>>,
    Vec<Receipt>,
)>;

/// What readers and the fan-out are to see of a group once it commits (see [`Published`]), read
/// from the writer's cache after the group decided.
pub(super) fn capture(
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
pub(super) async fn settle(installing: &mut Option<JoinHandle<()>>) {
    if let Some(h) = installing.take()
        && let Err(e) = h.await
    {
        tracing::error!(error = %e, "installing a group's changes failed");
    }
}

/// Rows a group commit writes, gathered while deciding and written at the end with multi-row
/// statements (one statement per thousand rows instead of one per row).
#[derive(Default)]
pub(super) struct Pending<'a> {
    /// Added through [`Pending::push_event`], which keeps `adjusts` with them.
    pub(super) events: Vec<EventRow<'a>>,
    /// Per slot, the group's effective adjustments (indices into `events`): what a count re-bases
    /// over without walking every event of the group, which made a group of counts quadratic in
    /// its size (most of a loaded writer's time with thousands of counts a group).
    pub(super) adjusts: FastMap<(&'a Sku, &'a Location), Vec<usize>>,
    /// Slots changed by this group, with a bit per state that changed.
    pub(super) cells: FastMap<(&'a Sku, &'a Location), u8>,
    /// Marked `(channel index, sku)`: the first and newest marking events and how many.
    pub(super) outbox: FastMap<(usize, &'a Sku), (i64, i64, i64)>,
    /// The newest applied event per sku in this group: `(source, occurred, received)`, for the
    /// integration matrix's latencies.
    pub(super) samples: FastMap<&'a Sku, (&'a str, i64, i64)>,
    pub(super) incidents: Vec<Incident>,
}

impl<'a> Pending<'a> {
    pub(super) fn push_event(&mut self, row: EventRow<'a>) {
        let e = &row.p.event;
        if row.effective && !e.change.is_set() {
            self.adjusts
                .entry((&e.sku, &e.location))
                .or_default()
                .push(self.events.len());
        }
        self.events.push(row);
    }

    /// The group's effective adjustments of one slot so far. (One lifetime for all three: a
    /// `Pending` is covariant, so a caller's shorter borrows narrow it.)
    pub(super) fn adjusts_of(
        &'a self,
        sku: &'a Sku,
        loc: &'a Location,
    ) -> impl Iterator<Item = &'a EventRow<'a>> + 'a {
        self.adjusts
            .get(&(sku, loc))
            .into_iter()
            .flatten()
            .filter_map(|i| self.events.get(*i))
    }
}

pub(super) struct EventRow<'a> {
    pub(super) lsn: i64,
    pub(super) p: &'a Prepared,
    pub(super) received: i64,
    pub(super) outcome: Outcome,
    pub(super) effective: bool,
    /// Whether it holds its `(source, id)` (see `Decision::claims_id`).
    pub(super) claims: bool,
    pub(super) detail: Option<String>,
}

impl Writer {
    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut idle = false;
        loop {
            // While cells, outbox rows or index entries wait to be written, an idle moment writes
            // them all (a group still being installed brings outbox rows).
            let waiting = self.held.installing.is_some() || self.held.holds_any();
            let first = if waiting {
                // Once idle, one slice at a time, looking for new work between slices.
                let wait = if idle {
                    Duration::from_millis(1)
                } else {
                    self.held.opts.idle_flush
                };
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(j) => j,
                    Err(_) => {
                        self.flush_slice(SliceBudget(IDLE_SLICE)).await;
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
                    settle(&mut self.held.installing).await;
                    if self.held.opts.flush_on_exit {
                        self.flush_all().await;
                    }
                    let _ = reply.send(());
                    continue;
                }
                None => {
                    settle(&mut self.held.installing).await;
                    if self.held.opts.flush_on_exit {
                        self.flush_all().await;
                    }
                    return;
                }
            };
            let mut jobs = vec![first];
            let mut n = jobs[0].batch.len();
            let mut flush_after: Option<oneshot::Sender<()>> = None;
            // Take everything that queued during the previous commit, up to the group limit.
            while n < self.held.opts.max_group_events {
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
            let lookup = self.held.lookup_groups > 0;
            self.held.lookup_groups = self.held.lookup_groups.saturating_sub(1);
            let mut result = self.commit_group(&jobs, lookup).await;
            if matches!(result, Ok(None)) {
                // An id in the group was already stored: the optimistic decisions are void.
                self.held.lookup_groups = LOOKUP_AFTER_DUPLICATE;
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
                        self.held.overlay.clone(),
                        self.held.marks.clone(),
                        self.held.changes.clone(),
                    );
                    let install = move || {
                        published.install(&overlay, &marks, &changes);
                        for (reply, r) in replies {
                            let _ = reply.send(Ok(r));
                        }
                    };
                    if n >= PARALLEL_TAIL_EVENTS {
                        self.held.installing = Some(tokio::task::spawn_blocking(install));
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
            self.write_marks_left_behind().await;
            if let Some(reply) = flush_after {
                settle(&mut self.held.installing).await;
                if self.held.opts.flush_on_exit {
                    self.flush_all().await;
                }
                let _ = reply.send(());
            }
        }
    }

    /// Decides and writes one group in one transaction. With `lookup` false, ids are assumed new
    /// and the insert checks it: `Ok(None)` means one was not, and nothing was written. Whatever
    /// does not commit leaves the cached cells as they were.
    pub(super) async fn commit_group(
        &mut self,
        jobs: &[Request],
        lookup: bool,
    ) -> Result<Option<(Vec<Vec<Receipt>>, Published)>, StoreError> {
        let r = self.try_group(jobs, lookup).await;
        if matches!(r, Ok(Some(_))) {
            self.held.cache.commit_group();
        } else {
            self.held.cache.rollback_group();
        }
        if r.is_err() {
            // A failed commit may still have reached the disk: write every watermark next time.
            self.held.stored_meta.clear();
        }
        r
    }

    /// One group commit, as its phases: load what the group needs, decide it, store its events,
    /// write a slice of what waits behind, commit (reading what readers are to see while the
    /// commit syncs), and account for what the commit wrote. With `lookup` false, ids are assumed
    /// new and the insert checks it: `Ok(None)` means one was not, and nothing was written.
    pub(super) async fn try_group(
        &mut self,
        jobs: &[Request],
        lookup: bool,
    ) -> Result<Option<(Vec<Vec<Receipt>>, Published)>, StoreError> {
        let held = &mut self.held;
        let mut laps = Laps::start();
        held.cache.evict_clean(held.opts.max_cached_slots);
        // IMMEDIATE: take the write lock up front, so a fan-out write between this transaction's
        // first read and first write makes it wait instead of failing with a stale snapshot.
        let gate = held.gate.clone();
        let _turn = gate.lock().await;
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await?;
        // Apart from the load: the checkpointer sometimes holds the turn (see `wal.rs`).
        laps.lap("turn");
        let seen = held.load_group(&mut tx, jobs, lookup).await?;
        laps.lap("load");
        let decided = held.decide_group(&mut tx, jobs, seen).await?;
        laps.lap("decide");
        if !store_events(&mut tx, &decided.pending).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        laps.lap("events");
        // The previous group's marks and overlay first: what follows reads the marks and takes
        // slices.
        settle(&mut held.installing).await;
        let first_marks = held.load_first_marks(&mut tx, &decided.pending).await?;
        laps.lap("marks");
        let slices = held.write_behind_or_skip(&mut tx, &decided).await?;
        laps.lap("slices");
        let published = held.commit(tx, &decided, &slices, first_marks).await?;
        laps.lap("commit");
        held.account(&slices, decided.next_lsn);
        laps.lap("after_commit");
        tracing::debug!(
            phases = %laps,
            cells = slices.cells.len(),
            outbox = slices.marks.len(),
            keys = KeyTail::slice_len(&slices.keys),
            "group phases"
        );
        Ok(Some((decided.receipts, published)))
    }
}

/// Rows a shutdown flush writes per transaction, and the most a group commit writes beside its events.
pub(super) const FLUSH_SLICE: usize = 20_000;
/// Rows an idle moment writes per transaction: a request that arrives meanwhile waits for the
/// slice, so it is a few milliseconds of work, not the hundred a shutdown slice takes.
pub(super) const IDLE_SLICE: usize = 2_000;

/// A group's decisions: the receipts per request, the rows to write, and the position the next
/// group starts at.
pub(super) struct Decided<'a> {
    pub(super) receipts: Vec<Vec<Receipt>>,
    pub(super) pending: Pending<'a>,
    pub(super) next_lsn: i64,
}

/// How long each phase of a group took, for the debug log.
pub(super) struct Laps {
    at: std::time::Instant,
    laps: Vec<(&'static str, Duration)>,
}

impl Laps {
    pub(super) fn start() -> Laps {
        Laps {
            at: std::time::Instant::now(),
            laps: Vec::with_capacity(8),
        }
    }

    pub(super) fn lap(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((phase, now - self.at));
        self.at = now;
    }
}

impl std::fmt::Display for Laps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (phase, d)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{phase}={:.3}ms", d.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

/// Inserts a group's events and incidents; false when an event id was already stored (the
/// caller rolls back).
async fn store_events(
    tx: &mut SqliteConnection,
    pending: &Pending<'_>,
) -> Result<bool, StoreError> {
    if !insert_events(tx, &pending.events).await? {
        return Ok(false);
    }
    insert_incidents(tx, &pending.incidents).await?;
    Ok(true)
}

impl Held {
    /// Phase 1: the ids already stored (when looking up) and the skus the cache lacks. Returns the
    /// ids this group starts from, borrowed from the requests.
    async fn load_group<'a>(
        &mut self,
        tx: &mut SqliteConnection,
        jobs: &'a [Request],
        lookup: bool,
    ) -> Result<FastMap<Identity<'a>, Fingerprint>, StoreError> {
        let mut ids: Vec<Identity<'a>> = Vec::new();
        let mut skus: FastSet<&Sku> = FastSet::default();
        for j in jobs {
            for item in &j.batch {
                if let Incoming::Event(p) = item {
                    ids.push((p.event.source.as_str(), p.event.id.as_str()));
                    skus.insert(&p.event.sku);
                }
            }
        }
        let mut seen: FastMap<Identity<'a>, Fingerprint> =
            FastMap::with_capacity_and_hasher(ids.len(), Default::default());
        if lookup {
            let stored = lookup_ids(tx, &ids).await?;
            for (source, id) in &ids {
                if let Some(f) = stored.get(&(source.to_string(), id.to_string())) {
                    seen.insert((source, id), *f);
                }
            }
        }
        let missing: Vec<&Sku> = skus
            .into_iter()
            .filter(|k| !self.cache.contains(k))
            .collect();
        for (sku, cells, _) in load_skus(tx, &missing).await? {
            self.cache.insert_loaded(sku, cells);
        }
        Ok(seen)
    }

    /// Phase 2: decides every event of the group in order against the cached cells, changing
    /// them, and gathers the rows to write.
    async fn decide_group<'a>(
        &mut self,
        tx: &mut SqliteConnection,
        jobs: &'a [Request],
        mut seen: FastMap<Identity<'a>, Fingerprint>,
    ) -> Result<Decided<'a>, StoreError> {
        let mut lsn = self.next_lsn;
        let mut pending = Pending::default();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            let received = nanos(job.received_at);
            let mut receipts = Vec::with_capacity(job.batch.len());
            for item in &job.batch {
                let p = match item {
                    Incoming::Rejected { event, reason } => {
                        let (incident, receipt) = rejected(event, reason, job.received_at);
                        pending.incidents.push(incident);
                        receipts.push(receipt);
                        continue;
                    }
                    Incoming::Event(p) => p,
                };
                let ev = &p.event;
                let prior = seen.get(&(ev.source.as_str(), ev.id.as_str())).copied();
                let cells = self.cache.cells_mut(&ev.sku, &ev.location);
                let mut d = self.rules.decide(p, prior, cells);
                // The consistency rules judge the cells as the effects leave them; what a set
                // swallows is looked up before the effects re-base the cells.
                let checks = &self.rules.checkpoints;
                let judged = if checks.any() && !d.effects.is_empty() {
                    let swallowed =
                        super::checks::swallowed(tx, &self.keys, &pending, checks, p, &d, cells)
                            .await?;
                    Some((cells.clone(), swallowed))
                } else {
                    None
                };
                let later = Later {
                    keys: &self.keys,
                    pending: Some(&pending),
                    before: None,
                };
                let mut mask =
                    apply_effects(tx, cells, &d.effects, &later, &ev.sku, &ev.location).await?;
                let mut findings = Vec::new();
                if let Some((before, swallowed)) = judged {
                    findings = checks.judge(p, &d, &before, cells, &swallowed);
                    if let Some(f) = checkpoint::rejection(&findings) {
                        // Refused: the cells go back as they were and the id stays free.
                        *cells = before;
                        checkpoint::reject(&mut d, f);
                        mask = 0;
                    }
                }
                if mask != 0 {
                    // Effects imply the event is stored, at `lsn`.
                    self.cache.mark_dirty(&ev.sku, &ev.location, mask, lsn);
                    *pending.cells.entry((&ev.sku, &ev.location)).or_default() |= mask;
                }
                // Every event that counts marks the outbox, even an accepted override that
                // changed nothing: a crash replay can then count versions from the stored outcome.
                if d.outcome.marks_outbox(d.effective) {
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
                // A rule that refused the event is its incident (of the rule's kind, so one
                // query finds every negative stock whether warned or refused).
                let refused_by_rule = checkpoint::rejection(&findings).is_some();
                if d.outcome.raises_incident() && !refused_by_rule {
                    pending.incidents.push(incident_of(
                        ev,
                        d.outcome,
                        d.detail.clone().unwrap_or_default(),
                        job.received_at,
                    ));
                }
                for f in &findings {
                    pending
                        .incidents
                        .push(checkpoint_incident(ev, f, job.received_at));
                }
                if d.claims_id {
                    seen.insert((ev.source.as_str(), ev.id.as_str()), p.fingerprint);
                }
                if d.outcome.is_stored() {
                    pending.push_event(EventRow {
                        lsn,
                        p,
                        received,
                        outcome: d.outcome,
                        effective: d.effective,
                        claims: d.claims_id,
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
        Ok(Decided {
            receipts: out,
            pending,
            next_lsn: lsn,
        })
    }

    /// Phase 4: outbox rows are written behind too (see `marks.rs`): the stored rows this group
    /// marks for the first time, so versions continue from them.
    async fn load_first_marks(
        &self,
        tx: &mut SqliteConnection,
        pending: &Pending<'_>,
    ) -> Result<HashMap<(usize, Sku), Mark>, StoreError> {
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
            for (sku, m) in load_marks(tx, self.channels[i].id.as_str(), &skus).await? {
                stored.insert((i, sku), m);
            }
        }
        Ok(stored)
    }

    /// Phase 6: commits. While SQLite syncs the commit, the writer reads what readers and the
    /// fan-out are to see of the group (the cache no longer changes until the next group) and,
    /// for a large group, a thread of its own adds the group's index entries, on the core SQLite's
    /// thread leaves idle while it waits for the disk. Only the writer reads the index tail, so
    /// entries added before the commit is known are seen by nobody; should it fail, they are
    /// taken back.
    async fn commit(
        &self,
        tx: sqlx::Transaction<'_, sqlx::Sqlite>,
        decided: &Decided<'_>,
        slices: &Slices,
        first_marks: HashMap<(usize, Sku), Mark>,
    ) -> Result<Published, StoreError> {
        let pending = &decided.pending;
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
            capture(cache, channels, pending, &slices.cells, first_marks)
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
        Ok(published)
    }

    /// Phase 7: what the commit made durable: the next position, and the slices that are now in
    /// their tables with their watermarks.
    fn account(&mut self, slices: &Slices, next_lsn: i64) {
        self.next_lsn = next_lsn;
        self.written(slices);
    }
}

/// Where a re-base finds the effective adjustments positioned after its new base: the index
/// (tail and table), stored before position `before` when replaying, and those decided earlier in
/// the group being decided.
pub(super) struct Later<'k, 'p, 'a> {
    pub(super) keys: &'k std::sync::RwLock<KeyTail>,
    pub(super) pending: Option<&'p Pending<'a>>,
    pub(super) before: Option<i64>,
}

/// Applies an event's effects to its cells ([`Effect::apply`], shared with the core's
/// `MemoryLedger`), for deciding and for replay alike; returns a bit per changed state.
pub(super) async fn apply_effects(
    conn: &mut SqliteConnection,
    cells: &mut [Cell; 5],
    effects: &[(State, Effect)],
    later: &Later<'_, '_, '_>,
    sku: &Sku,
    loc: &Location,
) -> Result<u8, StoreError> {
    let mut mask = 0u8;
    for (state, effect) in effects {
        let sum = match effect {
            Effect::Add(_) => 0,
            Effect::Rebase { key, .. } => {
                sum_after(
                    conn,
                    later.keys,
                    later.pending,
                    sku,
                    loc,
                    *state,
                    key,
                    later.before,
                )
                .await?
            }
        };
        effect.apply(&mut cells[state.index()], sum);
        mask |= 1 << state.index();
    }
    Ok(mask)
}
