//! The ledger's storage seam: the traits [`Store`] and [`Outbox`] and the values that cross them,
//! with an embedded SQLite implementation and a PostgreSQL one. The domain decision for
//! every event comes from [`driftless_core::Rules::decide`]; a store only keeps ids, cells, stored
//! deltas, the outbox and the incident log, and makes each batch durable before it answers.
//!
//! # Layout
//! - this module: the [`Store`] trait and the values that cross it.
//! - [`outbox`]: the [`Outbox`] trait (fan-out's half) and its values.
//! - [`views`]: the hub's view written out as audit snapshot files, over the traits.
//! - [`sqlite`]: embedded SQLite, a module tree of its own; no neutral module imports it.
//! - [`postgres`]: PostgreSQL for several hub processes on one database, likewise.

pub mod outbox;
pub mod postgres;
mod rows;
pub mod sqlite;
pub mod views;

use chrono::{DateTime, Utc};
use driftless_core::{Event, EventId, Levels, Location, Outcome, Prepared, Sku, SystemId};
use std::future::Future;
use std::pin::Pin;

pub use outbox::Outbox;
pub use postgres::{PgOptions, PgStore};
pub use sqlite::SqliteStore;
pub use sqlite::schema;

/// The live levels of some skus: each sku's locations that hold a cell.
pub type LiveLevels = std::collections::HashMap<Sku, Vec<(Location, Levels)>>;

/// A boxed future, so the trait can be used as `Arc<dyn Store>` and the backend chosen at start-up.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The one error type of this boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("the ledger is overloaded; retry later")]
    Overloaded,
    #[error("the ledger is shutting down")]
    Closed,
    /// A write to a ledger opened only to read it.
    #[error("the ledger is open read-only")]
    ReadOnly,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A group commit failed and was rolled back; nothing of the request was stored. The cause
    /// (shared by every request of the group) is in the message.
    #[error("the ledger write failed and was rolled back: {0}")]
    WriteFailed(String),
    /// The database does not answer (a lost connection, a server restarting). Nothing of the
    /// request is acknowledged; the caller may retry once it answers again (HTTP 503).
    #[error("the ledger's database is unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    /// A pool closed under a read is the store shutting down (the server answers 503 with
    /// Retry-After), not a database failure.
    fn from(e: sqlx::Error) -> StoreError {
        match e {
            sqlx::Error::PoolClosed => StoreError::Closed,
            e => StoreError::Database(e),
        }
    }
}

/// One event handed to the store, already validated against the configuration.
#[derive(Debug, Clone)]
pub enum Incoming {
    Event(Box<Prepared>),
    /// Failed a configuration check (unknown unit, ...): recorded as a `rejected` incident.
    Rejected {
        event: Box<Event>,
        reason: String,
    },
}

/// The outcome the store decided, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub outcome: Outcome,
    pub detail: Option<String>,
}

/// A sku at one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationLevels {
    pub location: Location,
    pub levels: Levels,
}

/// One sku with every location it has.
pub type SkuLevels = (Sku, Vec<LocationLevels>);

/// One ledger entry in a sku's history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub id: String,
    pub sku: Sku,
    pub source: SystemId,
    pub location: Location,
    pub occurred_at: String,
    pub seq: u64,
    pub received_at: DateTime<Utc>,
    pub outcome: Outcome,
    /// `adjust` or `set`.
    pub kind: String,
    /// Quantities in base units, `(state, value)`.
    pub quantities: Vec<(String, i64)>,
    /// The same quantities in the unit they were sent in (`uom`).
    pub sent: Vec<(String, i64)>,
    pub uom: Option<String>,
    pub reason: Option<String>,
    pub reference: Option<String>,
    pub detail: Option<String>,
    /// The entry's ledger position.
    pub lsn: i64,
    /// Whether the entry counts in the fold (applied, or an override accepted by policy; a stale
    /// or covered entry counts but changed nothing when it came).
    pub effective: bool,
}

/// Kinds of incident.
pub const INCIDENT_KINDS: [&str; 12] = [
    "override",
    "conflict",
    "stale",
    "covered",
    "rejected",
    "channel_override",
    "dead_letter",
    "handoff_drift",
    "negative_stock",
    "overcommitted",
    "jump",
    "cross_source_cover",
];

/// Something an operator may need to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub kind: String,
    pub sku: Option<Sku>,
    pub location: Option<Location>,
    /// The system that caused it; a channel override written as `channel:actor` by an earlier
    /// fan-out names its actor here too (see [`Incident::actor`]), so this is not a [`SystemId`].
    pub system: Option<String>,
    /// Who, within `system`, made the change, when the system says (a channel override's
    /// actor); kept apart so that `system` filters find it.
    pub actor: Option<String>,
    pub event_id: Option<String>,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// Filter for [`Store::incidents`]; `None` matches anything.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    pub kind: Option<String>,
    pub sku: Option<String>,
    pub system: Option<String>,
    pub limit: usize,
}

/// A stored drift audit: the summary that trends need, plus the whole report as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// When the snapshots were taken.
    pub at: DateTime<Utc>,
    pub skus_compared: i64,
    pub drifting: i64,
    /// `(handoff, drifting_skus, abs_units)`.
    pub handoffs: Vec<(String, i64, i64)>,
    pub report_json: String,
}

/// A stored audit with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAudit {
    pub id: i64,
    pub record: AuditRecord,
}

/// One key of a live checkpoint (DESIGN §7a): what one system last reported it shows for a sku,
/// at a location and state (or at channel level: `location` empty, `state` `"channel"`), and how
/// that was judged. The judging is the audit's (`driftless_audit::checkpoint`); a store keeps the
/// row and refuses to let an older observation replace a newer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    pub system: SystemId,
    pub sku: Sku,
    /// Empty at channel level.
    pub location: String,
    pub state: String,
    pub quantity: i64,
    pub observed_at: DateTime<Utc>,
    /// What the system was expected to show then.
    pub expected: i64,
    /// Since when it has been over the thresholds; `None`: in line.
    pub diverged_since: Option<DateTime<Utc>>,
    /// Whether a `handoff_drift` incident is open for the key.
    pub open: bool,
    pub handoff: String,
    pub cause: String,
}

/// Which checkpoint rows to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointFilter {
    pub system: Option<String>,
    /// Only keys over the thresholds now (diverged or open).
    pub drifting: bool,
    /// Rows after this `(system, sku, location, state)`, in that order.
    pub after: Option<(String, String, String, String)>,
    pub limit: usize,
}

/// The storage seam. Fan-out's half is [`Outbox`].
pub trait Store: Outbox + Send + Sync + 'static {
    /// Decides and stores a batch in order, in one transaction; returns once it is durable.
    fn apply(
        &self,
        received_at: DateTime<Utc>,
        batch: Vec<Incoming>,
    ) -> BoxFuture<'_, Result<Vec<Receipt>, StoreError>>;

    /// Every location of one sku; `None` if the sku was never seen.
    fn inventory<'a>(
        &'a self,
        sku: &'a Sku,
    ) -> BoxFuture<'a, Result<Option<Vec<LocationLevels>>, StoreError>>;

    /// Skus after `after` in byte order, at most `limit`.
    fn inventory_page<'a>(
        &'a self,
        after: Option<&'a Sku>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<SkuLevels>, StoreError>>;

    /// The newest `limit` ledger entries of a sku, oldest first.
    fn history<'a>(
        &'a self,
        sku: &'a Sku,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<HistoryEntry>, StoreError>>;

    /// One stored event by its identity (`GET /v1/events/{source}/{id}`): the event that holds
    /// the `(source, id)`, else the newest stored under it without claiming it (an override
    /// policy did not apply); `None` if none is stored.
    fn event<'a>(
        &'a self,
        source: &'a SystemId,
        id: &'a EventId,
    ) -> BoxFuture<'a, Result<Option<HistoryEntry>, StoreError>>;

    fn incidents<'a>(
        &'a self,
        filter: &'a IncidentFilter,
    ) -> BoxFuture<'a, Result<Vec<Incident>, StoreError>>;

    /// Records an incident raised outside the event path (fan-out, observations).
    fn record_incident<'a>(
        &'a self,
        incident: &'a Incident,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn save_audit<'a>(&'a self, audit: &'a AuditRecord) -> BoxFuture<'a, Result<i64, StoreError>>;

    /// Audits taken at or after `since`, oldest first.
    fn audits_since(
        &self,
        since: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<AuditRecord>, StoreError>>;

    /// The sku's version: how many of its entries changed a cell (an applied entry, or an override
    /// accepted by policy); `None` if nothing ever changed it. The same count as
    /// [`driftless_core::AsOf::version`] folded over its whole history; it grows by one with each
    /// change, in whatever order several processes commit.
    fn sku_version<'a>(&'a self, sku: &'a Sku) -> BoxFuture<'a, Result<Option<i64>, StoreError>>;

    /// Stored audits, newest first, with an id below `before` (all when `None`), at most `limit`.
    fn audits_page(
        &self,
        before: Option<i64>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<StoredAudit>, StoreError>>;

    /// One stored audit by id.
    fn audit(&self, id: i64) -> BoxFuture<'_, Result<Option<StoredAudit>, StoreError>>;

    /// Requests waiting for the ledger writer, when the backend has such a queue.
    fn queue_depth(&self) -> Option<usize> {
        None
    }

    /// Whether the database answers.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Flushes and stops background work.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// The stored checkpoint rows of these `(system, sku, location, state)` keys (those that
    /// exist), for judging new observations against.
    fn checkpoint_rows<'a>(
        &'a self,
        keys: &'a [(String, String, String, String)],
    ) -> BoxFuture<'a, Result<Vec<CheckpointRow>, StoreError>>;

    /// The live levels of these skus, every location each holds in a cell (an unseen sku is
    /// absent), for judging one request's observations with one read.
    fn checkpoint_levels<'a>(
        &'a self,
        skus: &'a [Sku],
    ) -> BoxFuture<'a, Result<LiveLevels, StoreError>> {
        Box::pin(async move {
            let mut out = LiveLevels::with_capacity(skus.len());
            for s in skus {
                if let Some(l) = self.inventory(s).await? {
                    let l = l.into_iter().map(|x| (x.location, x.levels)).collect();
                    out.insert(s.clone(), l);
                }
            }
            Ok(out)
        })
    }

    /// Stores judged checkpoint rows and the incidents they raised, in one transaction. A row
    /// whose `observed_at` is not newer than the stored one for its key changes nothing (nor do
    /// its incidents: they go with rows stored). Returns how many rows were stored.
    fn save_checkpoints<'a>(
        &'a self,
        rows: &'a [(CheckpointRow, Option<Incident>)],
    ) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Checkpoint rows in key order (`audit --live`, the matrix, the overdue sweep).
    fn checkpoints<'a>(
        &'a self,
        filter: &'a CheckpointFilter,
    ) -> BoxFuture<'a, Result<Vec<CheckpointRow>, StoreError>>;
}
