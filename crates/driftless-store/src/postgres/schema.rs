//! The PostgreSQL tables, as numbered migrations embedded in the binary and applied on start (see
//! [`migrate`]). Quantities are integers in base units; times are integer nanoseconds since the Unix
//! epoch (UTC), as in the SQLite backend, so both compare the same way. Text keys that the ledger
//! orders by (`sku`, `location`, `id`) use the `"C"` collation: byte order, as the core's
//! `OrderKey` and the paging contract compare them, whatever the database's locale.
//!
//! - `events`: the append-only ledger, one row per stored event; `lsn` from a sequence (unique,
//!   growing per process, not a commit order: several hubs take numbers at once). `claims` says
//!   whether the row holds its `(source, id)`: the partial unique index is what makes a
//!   redelivery to another hub process a `duplicate`.
//! - `slots`: one row per `(sku, location)` with stored events: the row lock its events are
//!   decided under (see `writes/`), and the locations a sku has been seen at.
//! - `cells`: the folded value of each `(sku, location, state)` and the key of the `set` it is
//!   based on. Changed in the event's transaction, never written behind: several appliers share
//!   them.
//! - `outbox`: `(channel, sku)` rows marked dirty with a growing version and the channel's ATP at
//!   that version, in the events' transaction. `channel_skus`, `push_log`: as in SQLite.
//! - `incidents`, `audits`: as in SQLite.
//! - `checkpoints` (migration 2): each system's newest observation per key and how it was judged.

use crate::StoreError;
use sqlx::PgConnection;

/// Serialises migrations of hubs starting together (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6472_6966_746c_6573; // "driftles"

/// The migrations, in order; the index + 1 is the version stored in `schema_migrations`. Never
/// edit a shipped one: add the next.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE SEQUENCE events_lsn CACHE 1000;
CREATE TABLE events (
    lsn BIGINT PRIMARY KEY DEFAULT nextval('events_lsn'),
    id TEXT COLLATE "C" NOT NULL,
    fingerprint BYTEA NOT NULL,
    source TEXT COLLATE "C" NOT NULL,
    sku TEXT COLLATE "C" NOT NULL,
    location TEXT COLLATE "C" NOT NULL,
    at_nanos BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    on_hand BIGINT,
    committed BIGINT,
    reserved BIGINT,
    incoming BIGINT,
    unavailable BIGINT,
    uom TEXT,
    reason TEXT,
    ref TEXT,
    received_nanos BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    effective BOOLEAN NOT NULL,
    detail TEXT,
    factor BIGINT,
    claims BOOLEAN NOT NULL
);
CREATE UNIQUE INDEX events_by_source_id ON events (source, id) WHERE claims;
CREATE INDEX events_unclaimed ON events (source, id) WHERE NOT claims;
-- The per-cell index: re-bases sum the effective deltas after a set's key.
CREATE INDEX events_by_cell ON events (sku, location, at_nanos, seq, id);
-- History and the sku's version, across its locations, newest first.
CREATE INDEX events_by_sku ON events (sku, at_nanos, seq, id);
CREATE INDEX events_by_source ON events (source, lsn) WHERE outcome = 'applied';

-- One row per (sku, location) an event was stored for: the lock its events are decided under.
CREATE TABLE slots (
    sku TEXT COLLATE "C" NOT NULL,
    location TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (sku, location)
);
CREATE TABLE cells (
    sku TEXT COLLATE "C" NOT NULL,
    location TEXT COLLATE "C" NOT NULL,
    state SMALLINT NOT NULL,
    value BIGINT NOT NULL,
    set_nanos BIGINT,
    set_seq BIGINT,
    set_id TEXT COLLATE "C",
    PRIMARY KEY (sku, location, state)
);

CREATE TABLE outbox (
    channel TEXT COLLATE "C" NOT NULL,
    sku TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    dirty BOOLEAN NOT NULL,
    changed_nanos BIGINT NOT NULL,
    atp BIGINT NOT NULL,
    source TEXT,
    occurred_nanos BIGINT,
    received_nanos BIGINT,
    PRIMARY KEY (channel, sku)
);
CREATE INDEX outbox_scan ON outbox (channel, changed_nanos, sku) WHERE dirty;

CREATE TABLE channel_skus (
    channel TEXT COLLATE "C" NOT NULL,
    sku TEXT COLLATE "C" NOT NULL,
    acked_quantity BIGINT,
    acked_version BIGINT,
    acked_nanos BIGINT,
    basis BIGINT,
    pinned_version BIGINT,
    pinned_quantity BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_nanos BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_nanos BIGINT,
    dead_version BIGINT,
    held BOOLEAN NOT NULL DEFAULT FALSE,
    observed_quantity BIGINT,
    observed_nanos BIGINT,
    observed_actor TEXT,
    diverged_nanos BIGINT,
    PRIMARY KEY (channel, sku)
);

CREATE TABLE push_log (
    id BIGSERIAL PRIMARY KEY,
    channel TEXT NOT NULL,
    sku TEXT NOT NULL,
    version BIGINT NOT NULL,
    quantity BIGINT NOT NULL,
    source TEXT,
    occurred_nanos BIGINT,
    received_nanos BIGINT,
    changed_nanos BIGINT NOT NULL,
    acked_nanos BIGINT NOT NULL
);
CREATE INDEX push_log_by_channel ON push_log (channel, id);

CREATE TABLE incidents (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    sku TEXT,
    location TEXT,
    system TEXT,
    event_id TEXT,
    detail TEXT NOT NULL,
    at_nanos BIGINT NOT NULL,
    actor TEXT
);
CREATE INDEX incidents_by_kind ON incidents (kind, id);
CREATE INDEX incidents_by_sku ON incidents (sku, id);

CREATE TABLE audits (
    id BIGSERIAL PRIMARY KEY,
    at_nanos BIGINT NOT NULL,
    skus_compared BIGINT NOT NULL,
    drifting BIGINT NOT NULL,
    handoffs TEXT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX audits_by_time ON audits (at_nanos);
"#,
    r#"
-- The live checkpoints (DESIGN 7a): one row per (system, sku, location, state) with the newest
-- observation and how it was judged.
CREATE TABLE checkpoints (
    system TEXT COLLATE "C" NOT NULL,
    sku TEXT COLLATE "C" NOT NULL,
    location TEXT COLLATE "C" NOT NULL,
    state TEXT COLLATE "C" NOT NULL,
    quantity BIGINT NOT NULL,
    observed_nanos BIGINT NOT NULL,
    expected BIGINT NOT NULL,
    diverged_nanos BIGINT,
    open BOOLEAN NOT NULL,
    handoff TEXT NOT NULL,
    cause TEXT NOT NULL,
    PRIMARY KEY (system, sku, location, state)
);
"#,
    r#"
-- Room on every page of cells for the next version of its rows: a cell changes with nearly every
-- group that touches it, and only its key is indexed, so the new version stays on its page (a
-- heap-only update) without a new entry in the key's index.
ALTER TABLE cells SET (fillfactor = 50);
"#,
    r#"
-- The dispatcher's sweep for divergences that outlived the SLA runs every second; without this it
-- reads every row of the channel.
CREATE INDEX channel_skus_diverged ON channel_skus (channel, diverged_nanos)
    WHERE diverged_nanos IS NOT NULL;
"#,
];

/// Applies the migrations this database has not seen, in one transaction (PostgreSQL's DDL is
/// transactional: a failed start leaves the schema as it was), under an
/// advisory lock so that hubs starting together apply each once. Returns how many ran.
pub async fn migrate(conn: &mut PgConnection) -> Result<usize, StoreError> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, \
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await?;
    let done: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await?;
    let done = usize::try_from(done.unwrap_or(0)).unwrap_or(0);
    if done > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "the database is at schema version {done}, newer than this build knows ({}); \
             run the newer driftless",
            MIGRATIONS.len()
        )));
    }
    let mut ran = 0;
    for (i, m) in MIGRATIONS.iter().enumerate().skip(done) {
        // A migration is several statements: the simple protocol runs them as one script.
        sqlx::raw_sql(sqlx::AssertSqlSafe(*m))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO schema_migrations (version) VALUES ($1)")
            .bind((i + 1) as i64)
            .execute(&mut *tx)
            .await?;
        ran += 1;
    }
    tx.commit().await?;
    Ok(ran)
}
