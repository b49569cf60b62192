//! PostgreSQL, for several hub processes on one database. Nothing is held in memory between
//! requests: each group of events is decided and stored in one transaction, its cells changed
//! under row locks taken in a fixed order, so any number of appliers in any number of processes
//! may run at once and the ledger stays the fold of the set of events it holds.
//!
//! # Layout
//! - this module: the store's handle, its options, opening it (schema, appliers, the listener
//!   that turns other processes' outbox changes into [`crate::Outbox::outbox_changes`]).
//! - `schema`: the tables, as migrations applied on start.
//! - `writes`: the appliers and the group transaction, as named phases (`writes/statements.rs`:
//!   each phase's SQL).
//! - `reads`: the [`crate::Store`] face.
//! - `records`: incidents and audits, the rows both faces write.
//! - `outbox`: the [`crate::Outbox`] face, with the per-channel lease.
//! - `checkpoints`: the live checkpoints' rows; `checks`: what the consistency rules look up.
//! - `errors`: which database errors are worth retrying, and which mean "unavailable".
//! - `server`: the server settings an acknowledgement depends on, checked on open.

mod checkpoints;
mod checks;
mod errors;
mod outbox;
mod reads;
mod records;
pub mod schema;
mod server;
mod writes;

use crate::outbox::{FROM_THE_START, OutboxSignal};
use crate::{Incoming, Receipt, StoreError};
use chrono::{DateTime, TimeZone, Utc};
use driftless_core::{ChannelSpec, Rules};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub(crate) use errors::db;
pub use server::ServerSettings;

/// Knobs with production defaults; tests and benchmarks may change them.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (appliers, reads, fan-out; leases take their own).
    pub max_connections: u32,
    /// Tasks that commit groups at once. More than one lets requests for different skus commit
    /// side by side; each takes everything queued when it starts (group commit).
    pub appliers: usize,
    /// Requests queued for the appliers before `apply` answers [`StoreError::Overloaded`].
    pub max_pending: usize,
    /// Most events one group transaction takes.
    pub max_group_events: usize,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            appliers: 4,
            max_pending: 1024,
            max_group_events: 20_000,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

pub(crate) struct Request {
    received_at: DateTime<Utc>,
    batch: Vec<Incoming>,
    reply: oneshot::Sender<Result<Vec<Receipt>, StoreError>>,
}

/// The PostgreSQL store.
pub struct PgStore {
    pub(crate) pool: PgPool,
    jobs: mpsc::Sender<Request>,
    /// Told after a commit that marked outbox rows dirty, here or (through `LISTEN`) in another
    /// process (see [`crate::Outbox::outbox_changes`]).
    pub(crate) changes: OutboxSignal,
    /// This process's name in the notices it sends (see [`Notice`]).
    pub(crate) me: String,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Where leases take their own connection (see `outbox/lease.rs`).
    pub(crate) connect: PgConnectOptions,
    /// The durability settings as the hub's connections have them.
    settings: ServerSettings,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

pub(crate) fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

pub(crate) fn from_nanos(n: i64) -> DateTime<Utc> {
    Utc.timestamp_nanos(n)
}

/// The `NOTIFY` channel a commit that marked outbox rows signals on.
pub(crate) const OUTBOX_NOTIFY: &str = "driftless_outbox";

impl PgStore {
    /// Connects to `url`, applies the migrations this database lacks, and starts the appliers.
    pub async fn open(
        url: &str,
        rules: Rules,
        channels: Vec<ChannelSpec>,
    ) -> Result<PgStore, StoreError> {
        Self::open_with(url, rules, channels, PgOptions::default()).await
    }

    pub async fn open_with(
        url: &str,
        rules: Rules,
        channels: Vec<ChannelSpec>,
        opts: PgOptions,
    ) -> Result<PgStore, StoreError> {
        let connect = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Database(sqlx::Error::Configuration(
                format!("database_url: {e}").into(),
            ))
        })?;
        let (pool, connect, settings) = connect_durably(connect, &opts).await?;
        for w in settings.warnings() {
            tracing::warn!("{w}");
        }
        {
            let mut conn = pool.acquire().await.map_err(db)?;
            let ran = schema::migrate(&mut conn).await?;
            if ran > 0 {
                tracing::info!(migrations = ran, "PostgreSQL schema brought up to date");
            }
        }
        let (tx, rx) = mpsc::channel(opts.max_pending.max(1));
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let changes = OutboxSignal::new();
        let me = process_name();
        let rules = Arc::new(rules);
        let channels = Arc::new(channels);
        let mut tasks = Vec::new();
        for _ in 0..opts.appliers.max(1) {
            let applier = writes::Applier {
                pool: pool.clone(),
                rules: rules.clone(),
                channels: channels.clone(),
                changes: changes.clone(),
                me: me.clone(),
                max_group_events: opts.max_group_events.max(1),
            };
            tasks.push(tokio::spawn(applier.run(rx.clone())));
        }
        tasks.push(tokio::spawn(listen(
            connect.clone(),
            changes.clone(),
            me.clone(),
        )));
        Ok(PgStore {
            pool,
            jobs: tx,
            changes,
            me,
            tasks: Mutex::new(tasks),
            connect,
            settings,
        })
    }

    /// The durability settings as this store's connections have them (see [`ServerSettings`]).
    pub fn server_settings(&self) -> &ServerSettings {
        &self.settings
    }

    pub(crate) async fn stop(&self) {
        let tasks: Vec<JoinHandle<()>> = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        self.pool.close().await;
    }

    pub(crate) fn enqueue(&self, req: Request) -> Result<(), StoreError> {
        self.jobs.try_send(req).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })
    }

    pub(crate) fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }
}

/// The pool, and the settings its connections have. When the server, the database or the role
/// turns `synchronous_commit` off, the hub's connections set it `on` for themselves (a session
/// setting any role may change), so that an acknowledgement still waits for the WAL flush; the
/// pool is opened again with that option, and the options returned carry it to the leases'
/// connections.
async fn connect_durably(
    connect: PgConnectOptions,
    opts: &PgOptions,
) -> Result<(PgPool, PgConnectOptions, ServerSettings), StoreError> {
    let pool = open_pool(&connect, opts).await?;
    let settings = server::read(&mut *pool.acquire().await.map_err(db)?).await?;
    if !settings.commits_unflushed() {
        return Ok((pool, connect, settings));
    }
    tracing::warn!(
        "synchronous_commit is off for this database or role; the hub sets it on for its own \
         connections, so that an acknowledged event is flushed"
    );
    pool.close().await;
    let connect = connect.options([("synchronous_commit", "on")]);
    let pool = open_pool(&connect, opts).await?;
    let settings = server::read(&mut *pool.acquire().await.map_err(db)?).await?;
    Ok((pool, connect, settings))
}

/// The pool reconnects by itself: a connection that fails is dropped and the next acquire opens
/// a new one; `test_before_acquire` keeps a connection cut by the server (`pg_terminate_backend`,
/// a restart) from being handed out.
async fn open_pool(connect: &PgConnectOptions, opts: &PgOptions) -> Result<PgPool, StoreError> {
    PgPoolOptions::new()
        .max_connections(opts.max_connections.max(2))
        .acquire_timeout(opts.acquire_timeout)
        .test_before_acquire(true)
        .connect_with(connect.clone())
        .await
        .map_err(db)
}

/// The payload of the `NOTIFY` that a commit of outbox marks sends: the marks' floor (see
/// [`OutboxSignal`]) and the process that sent it.
#[derive(Debug, PartialEq)]
pub(crate) struct Notice<'a> {
    pub floor: i64,
    pub from: &'a str,
}

impl<'a> Notice<'a> {
    pub(crate) fn payload(floor: i64, from: &str) -> String {
        format!("{floor} {from}")
    }

    fn parse(payload: &'a str) -> Option<Notice<'a>> {
        let (floor, from) = payload.split_once(' ')?;
        Some(Notice {
            floor: floor.parse().ok()?,
            from,
        })
    }
}

/// Tells every hub's listener, when the transaction commits, that it marked outbox rows from
/// `floor` on (see [`Notice`]).
pub(crate) async fn notify_marked(
    tx: &mut sqlx::PgConnection,
    floor: i64,
    me: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(OUTBOX_NOTIFY)
        .bind(Notice::payload(floor, me))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A name for this process among the hubs on one database, so its listener can tell its own
/// notifications from the others'.
fn process_name() -> String {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("{}-{nanos:x}", std::process::id())
}

/// Tells this process's dispatchers where another process committed outbox marks (the payload
/// of its `NOTIFY` is the marks' floor): the dispatcher of a channel runs in one process only,
/// while every process applies events. Reconnects on its own; after a reconnect the dispatchers
/// read from the start, since notifications sent meanwhile are lost.
async fn listen(connect: PgConnectOptions, changes: OutboxSignal, me: String) {
    // A pool of one, which the listener uses only to reconnect.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(connect);
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "outbox listener: cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(OUTBOX_NOTIFY).await {
            tracing::debug!(error = %e, "outbox listener: LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        changes.marked(FROM_THE_START);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match Notice::parse(n.payload()) {
                    // This process told its own dispatchers already, when it committed.
                    Some(Notice { from, .. }) if from == me => {}
                    Some(Notice { floor, .. }) => changes.marked(floor),
                    // Not a notice this hub writes: the marks could be anywhere.
                    None => changes.marked(FROM_THE_START),
                },
                // The connection was lost: notifications may have been missed.
                Ok(None) => changes.marked(FROM_THE_START),
                Err(e) => {
                    tracing::debug!(error = %e, "outbox listener lost its connection");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
