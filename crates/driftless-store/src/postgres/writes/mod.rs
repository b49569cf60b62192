//! The appliers: each takes every request queued when it starts (group commit) and decides and
//! stores them in one transaction, as named phases (see [`Applier::try_group`]):
//!
//! 1. lock the group's `(sku, location)` slots, in key order (the fixed order that keeps
//!    appliers of several processes from deadlocking each other over cells);
//! 2. read their cells and the stored fingerprints of the group's `(source, id)`s, after the
//!    locks, so everything committed before is seen;
//! 3. decide every event in request order with the core's `Rules::decide`, re-basing late sets
//!    over the cell's stored events (the `events_by_cell` index) and the group's own;
//! 4. store the events (the partial unique index on `(source, id)` claims ids; an id another
//!    process claimed meanwhile voids the group's decisions, which are taken again), the changed
//!    cells, the outbox marks (their rows locked after the slots, again in key order, and the
//!    channel's ATP read after that lock) and the incidents;
//! 5. commit, and say so to the other processes' dispatchers (`NOTIFY`).
//!
//! A serialization failure, a deadlock or a connection lost before the commit runs the group
//! again; a connection lost during the commit leaves its fate unknown, so the requests are
//! answered with an error and nothing is claimed: a client's retry finds its events stored
//! (`duplicate`) or not.
//!
//! This module holds the applier, the group's retries and the decision; `statements.rs` the SQL
//! of each phase.

mod copy;
mod statements;

use super::errors::{db, retryable, unreachable};
use super::records::insert_incidents;
use super::{Request, nanos, notify_marked};
use crate::outbox::OutboxSignal;
use crate::rows::{checkpoint_incident, incident_of, rejected};
use crate::{Incident, Incoming, Receipt, StoreError};
use chrono::Utc;
use driftless_core::checkpoint::{self, Swallowed};
use driftless_core::{
    Cell, ChannelSpec, Effect, Fingerprint, Location, OrderKey, Outcome, Prepared, Rules, Sku,
    State,
};
use sqlx::postgres::PgPool;
use sqlx::{Acquire, PgConnection};
use statements::{
    drop_unused_slots, insert_events, load_cells, lock_slots, lookup_ids, mark_outbox, sum_after,
    write_cells,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Times a group is run again after deadlocks, serialization failures or ids claimed meanwhile.
const MAX_CONTENDED: u32 = 50;
/// Times a group is run again after its connection was lost before the commit (a connection cut
/// by the server: the pool opens a new one).
const MAX_UNREACHABLE: u32 = 2;

pub(super) struct Applier {
    pub(super) pool: PgPool,
    pub(super) rules: Arc<Rules>,
    pub(super) channels: Arc<Vec<ChannelSpec>>,
    pub(super) changes: OutboxSignal,
    /// This process's name in the notices its commits send.
    pub(super) me: String,
    pub(super) max_group_events: usize,
}

/// Why a group attempt stopped.
enum Failure {
    /// Run it again (a deadlock, a serialization failure, a lost connection before the commit).
    Again(sqlx::Error),
    Fatal(StoreError),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        if retryable(&e) || unreachable(&e) {
            Failure::Again(e)
        } else {
            Failure::Fatal(db(e))
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Fatal(e)
    }
}

/// What a committed group answers: receipts per request, and the floor of its outbox marks if
/// it marked any.
type Committed = (Vec<Vec<Receipt>>, Option<i64>);

type Slot = (Sku, Location);

/// Marked `(channel, sku)` rows: how many marking events, and the newest applied event's
/// `(source, occurred, received)` for the integration matrix.
type Marks = BTreeMap<(String, Sku), (i64, Option<(String, i64, i64)>)>;

/// An event row to store.
struct EventRow<'a> {
    p: &'a Prepared,
    received: i64,
    outcome: Outcome,
    effective: bool,
    claims: bool,
    detail: Option<String>,
}

/// What deciding a group produced.
#[derive(Default)]
struct Decided<'a> {
    receipts: Vec<Vec<Receipt>>,
    events: Vec<EventRow<'a>>,
    /// Slots whose cells changed, with a bit per changed state.
    changed: BTreeMap<Slot, u8>,
    marks: Marks,
    incidents: Vec<Incident>,
}

impl Applier {
    pub(super) async fn run(self, rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Request>>>) {
        loop {
            let jobs = {
                let mut rx = rx.lock().await;
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut n = first.batch.len();
                let mut jobs = vec![first];
                while n < self.max_group_events {
                    match rx.try_recv() {
                        Ok(j) => {
                            n += j.batch.len();
                            jobs.push(j);
                        }
                        Err(_) => break,
                    }
                }
                jobs
            };
            match self.commit(&jobs).await {
                Ok((receipts, marked)) => {
                    if let Some(floor) = marked {
                        self.changes.marked(floor);
                    }
                    for (j, r) in jobs.into_iter().zip(receipts) {
                        let _ = j.reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "group commit failed");
                    for j in jobs {
                        let _ = j.reply.send(Err(answer(&e)));
                    }
                }
            }
        }
    }

    /// Runs the group until it commits, is refused, or has been tried enough.
    async fn commit(&self, jobs: &[Request]) -> Result<Committed, StoreError> {
        let (mut contended, mut lost) = (0u32, 0u32);
        loop {
            let why = match self.try_group(jobs).await {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => "an event id was claimed by another writer meanwhile".to_owned(),
                Err(Failure::Fatal(e)) => return Err(e),
                // The pool already waited its `acquire_timeout` for a connection: answer now
                // (503), the client retries once the database answers again.
                Err(Failure::Again(e @ sqlx::Error::PoolTimedOut)) => {
                    return Err(StoreError::Unavailable(e.to_string()));
                }
                Err(Failure::Again(e)) => {
                    if unreachable(&e) {
                        lost += 1;
                        if lost > MAX_UNREACHABLE {
                            return Err(StoreError::Unavailable(e.to_string()));
                        }
                        tracing::warn!(error = %e, "the database connection was lost; running the group again");
                        e.to_string()
                    } else {
                        e.to_string()
                    }
                }
            };
            contended += 1;
            if contended > MAX_CONTENDED {
                return Err(StoreError::WriteFailed(format!(
                    "gave up after {MAX_CONTENDED} attempts: {why}"
                )));
            }
            tracing::debug!(attempt = contended, why, "running the group again");
            tokio::time::sleep(backoff(contended)).await;
        }
    }

    /// One attempt at the group, as its phases. `Ok(None)`: an id was claimed by another
    /// process between the lookup and the insert; nothing was stored.
    async fn try_group(&self, jobs: &[Request]) -> Result<Option<Committed>, Failure> {
        let mut clock = Phases::start();
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        clock.lap(Phase::Begin);
        let prepared: Vec<&Prepared> = jobs
            .iter()
            .flat_map(|j| j.batch.iter())
            .filter_map(|i| match i {
                Incoming::Event(p) => Some(p.as_ref()),
                Incoming::Rejected { .. } => None,
            })
            .collect();
        let slots: BTreeSet<Slot> = prepared
            .iter()
            .map(|p| (p.event.sku.clone(), p.event.location.clone()))
            .collect();
        let fresh = lock_slots(&mut tx, &slots).await?;
        clock.lap(Phase::Lock);
        let mut cells = load_cells(&mut tx, &slots).await?;
        let mut seen = lookup_ids(&mut tx, &prepared).await?;
        clock.lap(Phase::Read);
        let decided = self.decide(&mut tx, jobs, &mut cells, &mut seen).await?;
        clock.lap(Phase::Decide);
        if !insert_events(&mut tx, &decided.events).await? {
            return Ok(None);
        }
        clock.lap(Phase::Events);
        write_cells(&mut tx, &cells, &decided.changed).await?;
        drop_unused_slots(&mut tx, &fresh, &decided.events).await?;
        clock.lap(Phase::Cells);
        let marked = if decided.marks.is_empty() {
            None
        } else {
            Some(mark_outbox(&mut tx, &self.channels, &decided.marks, &cells, &slots).await?)
        };
        clock.lap(Phase::Outbox);
        insert_incidents(&mut tx, &decided.incidents)
            .await
            .map_err(Failure::from)?;
        if let Some(floor) = marked {
            notify_marked(&mut tx, floor, &self.me).await?;
        }
        if let Err(e) = tx.commit().await {
            // Sent, maybe applied: only a reply from the server says it was not.
            return Err(Failure::Fatal(if unreachable(&e) {
                StoreError::Unavailable(format!("the commit's fate is unknown: {e}"))
            } else {
                db(e)
            }));
        }
        clock.lap(Phase::Commit);
        clock.log(prepared.len(), slots.len());
        Ok(Some((decided.receipts, marked)))
    }

    /// Phase 3: every event of the group in request order, through the core's decision.
    async fn decide<'a>(
        &self,
        tx: &mut PgConnection,
        jobs: &'a [Request],
        cells: &mut HashMap<Slot, [Cell; 5]>,
        seen: &mut HashMap<(String, String), Fingerprint>,
    ) -> Result<Decided<'a>, Failure> {
        let mut out = Decided::default();
        for job in jobs {
            let received = nanos(job.received_at);
            let mut receipts = Vec::with_capacity(job.batch.len());
            for item in &job.batch {
                let p = match item {
                    Incoming::Rejected { event, reason } => {
                        let (incident, receipt) = rejected(event, reason, job.received_at);
                        out.incidents.push(incident);
                        receipts.push(receipt);
                        continue;
                    }
                    Incoming::Event(p) => p.as_ref(),
                };
                let ev = &p.event;
                let identity = (ev.source.to_string(), ev.id.to_string());
                let prior = seen.get(&identity).copied();
                let slot = (ev.sku.clone(), ev.location.clone());
                let mut slot_cells = cells.get(&slot).cloned().unwrap_or_default();
                let mut d = self.rules.decide(p, prior, &slot_cells);
                // The consistency rules judge the cells as the effects leave them; what a set
                // swallows is looked up before the effects re-base the cells.
                let checks = &self.rules.checkpoints;
                let judged = if checks.any() && !d.effects.is_empty() {
                    // Only a re-basing set can swallow deltas: adds skip the group scan.
                    let rebases = d
                        .effects
                        .iter()
                        .any(|(_, e)| matches!(e, Effect::Rebase { .. }));
                    let group = if rebases {
                        group_deltas(&out.events, &slot)
                    } else {
                        Vec::new()
                    };
                    let swallowed =
                        super::checks::swallowed(tx, checks, p, &d, &slot_cells, &group).await?;
                    Some((slot_cells.clone(), swallowed))
                } else {
                    None
                };
                let mut mask = 0u8;
                for (state, effect) in &d.effects {
                    let later = match effect {
                        Effect::Add(_) => 0,
                        Effect::Rebase { key, .. } => {
                            let stored = sum_after(tx, &slot, *state, key).await?;
                            stored.saturating_add(group_sum_after(&out.events, &slot, *state, key))
                        }
                    };
                    effect.apply(&mut slot_cells[state.index()], later);
                    mask |= 1 << state.index();
                }
                let mut findings = Vec::new();
                if let Some((before, swallowed)) = judged {
                    findings = checks.judge(p, &d, &before, &slot_cells, &swallowed);
                    if let Some(f) = checkpoint::rejection(&findings) {
                        // Refused: the cells stay as they were and the id stays free.
                        slot_cells = before;
                        checkpoint::reject(&mut d, f);
                        mask = 0;
                    }
                }
                if mask != 0 {
                    *out.changed.entry(slot.clone()).or_default() |= mask;
                }
                cells.insert(slot, slot_cells);
                if d.outcome.marks_outbox(d.effective) {
                    let sample = (d.outcome == Outcome::Applied)
                        .then(|| (ev.source.to_string(), ev.position.at_nanos, received));
                    for c in self.channels.iter().filter(|c| c.feeds_from(&ev.location)) {
                        let m = out
                            .marks
                            .entry((c.id.to_string(), ev.sku.clone()))
                            .or_insert((0, None));
                        m.0 += 1;
                        if sample.is_some() {
                            m.1.clone_from(&sample);
                        }
                    }
                }
                // A rule that refused the event is its incident (of the rule's kind, as in
                // SQLite).
                if d.outcome.raises_incident() && checkpoint::rejection(&findings).is_none() {
                    out.incidents.push(incident_of(
                        ev,
                        d.outcome,
                        d.detail.clone().unwrap_or_default(),
                        job.received_at,
                    ));
                }
                for f in &findings {
                    out.incidents
                        .push(checkpoint_incident(ev, f, job.received_at));
                }
                if d.claims_id {
                    seen.insert(identity, p.fingerprint);
                }
                if d.outcome.is_stored() {
                    out.events.push(EventRow {
                        p,
                        received,
                        outcome: d.outcome,
                        effective: d.effective,
                        claims: d.claims_id,
                        detail: d.detail.clone(),
                    });
                }
                receipts.push(Receipt {
                    outcome: d.outcome,
                    detail: d.detail,
                });
            }
            out.receipts.push(receipts);
        }
        Ok(out)
    }
}

/// The effective deltas of `slot` decided earlier in the group, per state, for the consistency
/// rules (a `set` swallowing them).
fn group_deltas(events: &[EventRow<'_>], (sku, loc): &Slot) -> Vec<Swallowed> {
    events
        .iter()
        .filter(|r| r.effective && !r.p.event.change.is_set())
        .filter(|r| r.p.event.sku == *sku && r.p.event.location == *loc)
        .flat_map(|r| {
            State::ALL.into_iter().filter_map(move |state| {
                r.p.base.get(state).map(|delta| Swallowed {
                    source: r.p.event.source.clone(),
                    key: r.p.event.order_key(),
                    state,
                    delta,
                })
            })
        })
        .collect()
}

/// The error each request of a failed group gets: the cause, shared.
fn answer(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Overloaded => StoreError::Overloaded,
        StoreError::Closed => StoreError::Closed,
        other => StoreError::WriteFailed(other.to_string()),
    }
}

/// A short, jittered pause before running a contended group again, so two appliers that
/// deadlocked do not meet again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let base = 2u64 << attempt.min(6);
    let jitter = u64::from(Utc::now().timestamp_subsec_nanos()) % base.max(1);
    Duration::from_millis(base / 2 + jitter)
}

/// The phases of a group transaction, timed for the `debug` log (`driftless_store=debug`): where
/// a group's time goes, to tune by measurement.
#[derive(Clone, Copy)]
enum Phase {
    Begin,
    Lock,
    Read,
    Decide,
    Events,
    Cells,
    Outbox,
    Commit,
}

struct Phases {
    last: std::time::Instant,
    micros: [u64; 8],
}

impl Phases {
    fn start() -> Phases {
        Phases {
            last: std::time::Instant::now(),
            micros: [0; 8],
        }
    }

    fn lap(&mut self, p: Phase) {
        let now = std::time::Instant::now();
        self.micros[p as usize] = now.duration_since(self.last).as_micros() as u64;
        self.last = now;
    }

    fn log(&self, events: usize, slots: usize) {
        let [begin, lock, read, decide, insert, cells, outbox, commit] = self.micros;
        tracing::debug!(
            events,
            slots,
            begin,
            lock,
            read,
            decide,
            insert,
            cells,
            outbox,
            commit,
            "group committed (phase times in µs)"
        );
    }
}

/// The same for the group's own events decided before, not yet stored.
fn group_sum_after(events: &[EventRow<'_>], (sku, loc): &Slot, state: State, k: &OrderKey) -> i64 {
    events
        .iter()
        .filter(|r| r.effective && !r.p.event.change.is_set())
        .filter(|r| &r.p.event.sku == sku && &r.p.event.location == loc)
        .filter(|r| &r.p.event.order_key() > k)
        .filter_map(|r| r.p.base.get(state))
        .fold(0i64, |a, d| a.saturating_add(d))
}
