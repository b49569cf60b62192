//! The durable side of fan-out. The ledger writer marks `(channel, sku)` rows of `outbox` dirty, with
//! a growing version, in the same transaction as the events; this module is what the per-channel
//! dispatchers do with those rows: read the dirty ones (with the quantities they need, from one
//! consistent snapshot), record what each push came to (acknowledged, failed and when to retry,
//! dead-lettered, compare failure), keep channel observations for override detection, and answer
//! the channel status, replay and matrix questions.
//!
//! A row stays dirty until a push of its *current* version is acknowledged: acknowledging an older
//! version leaves it dirty, which is how bursts coalesce into one more push of the latest value, and
//! how a crash between a push and its record only causes a retry of the same idempotent push.
//!
//! Only the trait and the values that cross it live here; each backend implements it in its own
//! module tree (`sqlite/outbox/`, `postgres/outbox/`).

use crate::{BoxFuture, Incident, StoreError};
use chrono::{DateTime, Utc};
use driftless_core::{Location, Sku, SystemId};
use std::collections::HashMap;

/// Most rows one scan returns; the dispatcher pages.
pub const MAX_SCAN: usize = 2000;

/// What [`Outbox::outbox_changes`] sends when rows may have become dirty anywhere in the line
/// (a receiver that fell behind, a listener that reconnected): read it from the start.
pub const FROM_THE_START: i64 = i64::MIN;

/// What [`Outbox::outbox_changes`] sends for a write that made no row dirty (an acknowledgement
/// that cleaned rows, a hold): wake up, nothing new behind the cursor.
pub const WAKE_ONLY: i64 = i64::MAX;

/// How the writes that mark rows tell the dispatchers where to read: one message per write,
/// the earliest `changed_nanos` it could have given a row (a floor).
///
/// A row's `changed_nanos` is taken from the clock before its transaction commits, and
/// transactions commit in any order (several appliers, several processes, clocks that differ
/// between hosts), so a row can become visible behind a cursor that already passed its
/// position. The floor, sent once the write is committed, says how far back to read again.
#[derive(Debug, Clone)]
pub struct OutboxSignal(tokio::sync::broadcast::Sender<i64>);

impl OutboxSignal {
    /// Messages a dispatcher may leave unread before it has to read from the start.
    const BACKLOG: usize = 1024;

    pub fn new() -> OutboxSignal {
        OutboxSignal(tokio::sync::broadcast::Sender::new(Self::BACKLOG))
    }

    /// A committed write may have made rows dirty at `floor` or later.
    pub fn marked(&self, floor: i64) {
        // No dispatcher listening is not an error: the rows are the truth.
        let _ = self.0.send(floor);
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.0.subscribe()
    }
}

impl Default for OutboxSignal {
    fn default() -> OutboxSignal {
        OutboxSignal::new()
    }
}

/// What to read.
#[derive(Debug, Clone)]
pub enum ScanFrom {
    /// Dirty rows after a `(changed_nanos, sku)` cursor, oldest change first. No sku: every row
    /// changed at `changed_nanos` or later (a cursor before the first sku, where a scan starts).
    After(i64, Option<Sku>),
    /// These skus, dirty or not (retries coming due, rows re-read after a push).
    Skus(Vec<Sku>),
}

#[derive(Debug, Clone)]
pub struct Scan {
    pub channel: String,
    /// Whose ATP feeds the channel.
    pub locations: Vec<Location>,
    pub from: ScanFrom,
    pub limit: usize,
}

/// One `(channel, sku)` as the dispatcher needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub sku: Sku,
    pub version: i64,
    pub dirty: bool,
    pub changed_nanos: i64,
    /// Sum of ATP over the channel's locations, from the same snapshot as `version`.
    pub atp: i64,
    pub acked_quantity: Option<i64>,
    pub acked_version: Option<i64>,
    /// The value the hub believes the channel shows: the compare value of the next push.
    pub basis: Option<i64>,
    /// A push whose fate is unknown (it timed out, the connection dropped): `(version, quantity)`.
    /// It is repeated as it was, same key, until the channel answers; only then does the newest
    /// version go out, compared against a value the hub knows.
    pub pinned: Option<(i64, i64)>,
    pub attempts: u32,
    pub next_attempt_nanos: i64,
    pub held: bool,
    pub dead_version: Option<i64>,
    /// The newest applied event of the sku (for the integration matrix).
    pub source: Option<SystemId>,
    pub occurred_nanos: Option<i64>,
    pub received_nanos: Option<i64>,
}

/// A latency sample of one acknowledged push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSample {
    pub channel: String,
    pub source: Option<SystemId>,
    pub occurred_nanos: Option<i64>,
    pub received_nanos: Option<i64>,
    pub changed_nanos: i64,
    pub acked_nanos: i64,
}

/// What became of one push, to be recorded.
#[derive(Debug, Clone)]
pub enum PushRecord {
    Acked(AckedPush),
    Failed(FailedPush),
    Rebased(RebasedPush),
    Refused(RefusedPush),
}

/// The channel acknowledged the push: `quantity` is the compare value from now on, and the
/// outbox row is clean unless a newer version arrived meanwhile. `sample` goes to the push log.
#[derive(Debug, Clone)]
pub struct AckedPush {
    pub sku: Sku,
    pub version: i64,
    pub quantity: i64,
    pub at: DateTime<Utc>,
    pub sample: PushSample,
}

/// A failed attempt; `dead` moves it to the dead-letter list (with an incident). `pinned` is
/// the push to repeat as it was (`(version, quantity)`), when the channel may have applied it.
#[derive(Debug, Clone)]
pub struct FailedPush {
    pub sku: Sku,
    pub version: i64,
    pub pinned: Option<(i64, i64)>,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub error: String,
    pub dead: Option<Incident>,
}

/// The channel shows `basis`, not what the hub last pushed (a compare failure or an observation
/// that outlived the SLA). `hold` stops pushing the sku; otherwise it is pushed again at once
/// with `basis` as the compare value.
#[derive(Debug, Clone)]
pub struct RebasedPush {
    pub sku: Sku,
    pub basis: Option<i64>,
    pub hold: bool,
    pub incident: Incident,
}

/// The channel refused the compare-and-set again (no acknowledgement since the last refusal):
/// the compare value moves to what it reported, as with `Rebased` but without a new incident
/// or a change of `held`, and the refusal counts as a failed attempt, so that a channel that
/// always refuses ends on the dead-letter list (`dead`) instead of looping. Written after a
/// `Rebased` of the same sku in the same call, it sets the attempts that `Rebased` reset.
#[derive(Debug, Clone)]
pub struct RefusedPush {
    pub sku: Sku,
    pub version: i64,
    pub basis: Option<i64>,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub error: String,
    pub dead: Option<Incident>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub sku: Sku,
    pub version: i64,
    pub attempts: u32,
    pub error: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushError {
    pub sku: Sku,
    pub attempts: u32,
    pub error: String,
    pub at: DateTime<Utc>,
    pub next_attempt: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastPush {
    pub sku: Sku,
    pub quantity: i64,
    pub version: i64,
    pub at: DateTime<Utc>,
}

/// `GET /v1/channels/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStatus {
    /// Dirty rows: changes not yet acknowledged by the channel.
    pub pending: i64,
    pub held: Vec<Sku>,
    pub dead_letters: Vec<DeadLetter>,
    /// Skus whose last attempt failed and that are waiting to retry.
    pub errors: Vec<PushError>,
    pub last_push: Option<LastPush>,
}

/// What an observation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub acked_quantity: Option<i64>,
    /// Since when the channel has shown something other than the last acknowledged push.
    pub diverged_since: Option<DateTime<Utc>>,
}

/// A divergence that outlived its SLA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub sku: Sku,
    pub observed: i64,
    pub acked_quantity: Option<i64>,
    pub since: DateTime<Utc>,
    /// Who, within the channel, made the change, as the channel names it: not a registered
    /// system, so not a [`SystemId`].
    pub actor: Option<String>,
}

/// The fan-out half of the storage seam; every [`crate::Store`] is one.
pub trait Outbox: Send + Sync {
    /// Reads outbox rows with everything a push needs, from one snapshot.
    fn outbox_scan<'a>(
        &'a self,
        scan: &'a Scan,
    ) -> BoxFuture<'a, Result<Vec<OutboxRow>, StoreError>>;

    /// Records push results in one transaction. Returns the acknowledged skus that are still
    /// dirty (a newer version arrived while the push was on its way): they are due again.
    fn outbox_record<'a>(
        &'a self,
        channel: &'a str,
        records: &'a [PushRecord],
    ) -> BoxFuture<'a, Result<Vec<Sku>, StoreError>>;

    fn channel_status<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<ChannelStatus, StoreError>>;

    /// Stops pushing one sku to the channel until it is released by [`Outbox::outbox_replay`]
    /// (an operator's hold, as the `hold` override policy sets one). Holding a held sku changes
    /// nothing.
    fn outbox_hold<'a>(
        &'a self,
        channel: &'a str,
        sku: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Puts dead-lettered and held skus (one, or all of the channel) back in the queue with a fresh
    /// attempt budget; returns how many.
    fn outbox_replay<'a>(
        &'a self,
        channel: &'a str,
        sku: Option<&'a str>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Records what the channel reports it shows.
    fn observe<'a>(
        &'a self,
        channel: &'a str,
        sku: &'a str,
        quantity: i64,
        actor: Option<&'a str>,
        at: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Observed, StoreError>>;

    /// Observations that have differed from the last acknowledged push since before `before`.
    fn divergences<'a>(
        &'a self,
        channel: &'a str,
        before: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Divergence>, StoreError>>;

    /// The newest push samples of every channel, at most `limit` per channel.
    fn push_samples(&self, limit: usize) -> BoxFuture<'_, Result<Vec<PushSample>, StoreError>>;

    /// Source lag (`received - occurred`, nanoseconds) of applied events of each of `sources`
    /// (the configured systems), at most `limit` each; sources without events are left out.
    fn source_lags<'a>(
        &'a self,
        sources: &'a [String],
        limit: usize,
    ) -> BoxFuture<'a, Result<HashMap<String, Vec<i64>>, StoreError>>;

    /// Trims the push log; run now and then.
    fn outbox_maintain<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// One message after every committed write to the outbox (see [`OutboxSignal`]): the
    /// earliest `changed_nanos` it could have made dirty, [`WAKE_ONLY`] when it made none dirty,
    /// and [`FROM_THE_START`] when marks may have been missed. A dispatcher waits on it instead of
    /// polling, and reads from the floor again when its cursor is past it. A receiver that lags
    /// gets `Lagged`, to be read as [`FROM_THE_START`]. Only a hint: the rows stay the truth.
    fn outbox_changes(&self) -> tokio::sync::broadcast::Receiver<i64>;

    /// Tries to become the one dispatcher of `channel` among every process on this ledger:
    /// `Some` while this process holds the channel (until the lease is dropped or reports it
    /// was lost), `None` when another process holds it (ask again later). Compare-and-set order
    /// and coalescing need a single dispatcher per channel. A ledger only one process writes
    /// (SQLite) answers with a lease that is always held.
    fn channel_lease<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<ChannelLease>, StoreError>> {
        let _ = channel;
        Box::pin(async { Ok(Some(ChannelLease::always())) })
    }
}

/// The right to dispatch one channel (see [`Outbox::channel_lease`]). Dropping it gives it up.
#[derive(Debug)]
pub struct ChannelLease {
    /// Becomes `true` (or closes) when the lease is lost: the process must stop pushing.
    lost: tokio::sync::watch::Receiver<bool>,
    /// Kept by a lease that nothing can take away; for the others, the task that keeps the lease
    /// alive holds the sender, and letting go of this releases it.
    _keep: Option<tokio::sync::watch::Sender<bool>>,
    _release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl ChannelLease {
    /// A lease nobody else can hold (one process owns the ledger).
    pub fn always() -> ChannelLease {
        let (tx, rx) = tokio::sync::watch::channel(false);
        ChannelLease {
            lost: rx,
            _keep: Some(tx),
            _release: None,
        }
    }

    /// A lease kept by a backend's task: it sends `true` on `lost` (or drops it) when the lease
    /// is gone, and gives it up when `release` fires or is dropped.
    pub fn kept(
        lost: tokio::sync::watch::Receiver<bool>,
        release: tokio::sync::oneshot::Sender<()>,
    ) -> ChannelLease {
        ChannelLease {
            lost,
            _keep: None,
            _release: Some(release),
        }
    }

    /// Whether the lease is still held, as far as this process knows.
    pub fn is_held(&self) -> bool {
        !*self.lost.borrow() && self.lost.has_changed().is_ok()
    }

    /// Resolves once the lease is lost.
    pub async fn lost(&mut self) {
        loop {
            if *self.lost.borrow_and_update() {
                return;
            }
            if self.lost.changed().await.is_err() {
                return;
            }
        }
    }
}
