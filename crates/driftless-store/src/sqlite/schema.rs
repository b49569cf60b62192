//! The tables. Quantities are integers in base units; times are integer nanoseconds since the Unix
//! epoch (UTC), so that they compare as numbers in every backend.
//!
//! - `events`: the append-only ledger. One row per stored event (applied, stale, covered,
//!   override), `lsn` its position in decision order; `claims` says whether it holds its
//!   `(source, id)` (an override policy did not apply does not). Quantities are in base units;
//!   `factor` is how many base units one unit sent (`uom`) was, so history shows what was sent. `effective` marks rows whose deltas
//!   count in a later re-base.
//! - `event_keys`: the events of each `(sku, location)` in fold order, for history and re-bases.
//!   Written behind (see `keys.rs`); `meta.keys_watermark` is the position up to which every event
//!   has its entry, `meta.keys_max_at` the newest `at_nanos` the table holds.
//! - `key_slices`: the slices of `event_keys` written after its watermark, each with the skus it
//!   swept and its newest position, so a replay knows which entries are written (see
//!   `keyslices.rs`); `meta.key_slices_from` is the newest position a version that kept no
//!   records may have indexed.
//! - `cells`: the folded value of each `(sku, location, state)` and the key of the `set` it is based
//!   on, as of ledger position `lsn`. A cache of the fold over `events`, written behind (see
//!   `cells.rs`); `meta.cells_watermark` is the position up to which every change is written.
//! - `outbox`: `(channel, sku)` pairs whose quantity may have changed, with a version that grows on
//!   every change and the channel's ATP at that version (plus the newest applied event, for the
//!   integration matrix). Written behind the events (see `marks.rs`); `lsn` is the newest event
//!   the version counts and `meta.outbox_watermark` the position up to which every mark is written.
//! - `incidents`: overrides, conflicts, stale and covered events, rejections, channel incidents.
//! - `audits`: every drift audit, for trends.

/// The ledger table.
const EVENTS: &str = "CREATE TABLE IF NOT EXISTS events (
        lsn INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        source TEXT NOT NULL,
        sku TEXT NOT NULL,
        location TEXT NOT NULL,
        at_nanos INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        on_hand INTEGER,
        committed INTEGER,
        reserved INTEGER,
        incoming INTEGER,
        unavailable INTEGER,
        uom TEXT,
        reason TEXT,
        ref TEXT,
        received_nanos INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        effective INTEGER NOT NULL,
        detail TEXT,
        factor INTEGER,
        claims INTEGER NOT NULL DEFAULT 1
    )";

/// The record of the index's slices (see `keyslices.rs`); `upto` first, so the records the
/// watermark has passed go in one range.
pub const KEY_SLICES: &str = "CREATE TABLE IF NOT EXISTS key_slices (
        upto INTEGER NOT NULL,
        first TEXT NOT NULL,
        last TEXT NOT NULL,
        PRIMARY KEY (upto, first, last)
    ) WITHOUT ROWID";

/// SQLite schema, applied at open; every statement is idempotent.
pub const SQLITE: &[&str] = &[
    EVENTS,
    // An event's identity is `(source, id)`: two systems may use the same id, and an event that
    // does not claim it (an override policy did not apply) is kept without taking it.
    "CREATE UNIQUE INDEX IF NOT EXISTS events_by_source_id ON events (source, id) WHERE claims = 1",
    // The few that do not claim it, for `GET /v1/events/{source}/{id}`.
    "CREATE INDEX IF NOT EXISTS events_unclaimed ON events (source, id) WHERE claims = 0",
    // The per-cell index is a table written behind (see `keys.rs`); an earlier version kept it as
    // an index on `events`, which every insert had to update.
    "DROP INDEX IF EXISTS events_by_cell",
    "CREATE TABLE IF NOT EXISTS event_keys (
        sku TEXT NOT NULL,
        location TEXT NOT NULL,
        at_nanos INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        id TEXT NOT NULL,
        lsn INTEGER NOT NULL,
        PRIMARY KEY (sku, location, at_nanos, seq, id, lsn)
    ) WITHOUT ROWID",
    KEY_SLICES,
    "CREATE TABLE IF NOT EXISTS cells (
        sku TEXT NOT NULL,
        location TEXT NOT NULL,
        state INTEGER NOT NULL,
        value INTEGER NOT NULL,
        set_nanos INTEGER,
        set_seq INTEGER,
        set_id TEXT,
        lsn INTEGER NOT NULL,
        PRIMARY KEY (sku, location, state)
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS outbox (
        channel TEXT NOT NULL,
        sku TEXT NOT NULL,
        version INTEGER NOT NULL,
        lsn INTEGER NOT NULL,
        dirty INTEGER NOT NULL,
        changed_nanos INTEGER NOT NULL,
        atp INTEGER NOT NULL,
        source TEXT,
        occurred_nanos INTEGER,
        received_nanos INTEGER,
        PRIMARY KEY (channel, sku)
    ) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS incidents (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        sku TEXT,
        location TEXT,
        system TEXT,
        event_id TEXT,
        detail TEXT NOT NULL,
        at_nanos INTEGER NOT NULL,
        actor TEXT
    )",
    "CREATE INDEX IF NOT EXISTS incidents_by_kind ON incidents (kind, id)",
    "CREATE INDEX IF NOT EXISTS incidents_by_sku ON incidents (sku, id)",
    "CREATE TABLE IF NOT EXISTS audits (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_nanos INTEGER NOT NULL,
        skus_compared INTEGER NOT NULL,
        drifting INTEGER NOT NULL,
        handoffs TEXT NOT NULL,
        report TEXT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS audits_by_time ON audits (at_nanos)",
    // Fan-out (see `outbox.rs`): the dispatcher's cursor over dirty rows.
    "CREATE INDEX IF NOT EXISTS outbox_scan ON outbox (channel, dirty, changed_nanos, sku)",
    // Per (channel, sku): the last acknowledged push and the compare basis, retry state, dead
    // letters, hold, and the channel's own reports for override detection.
    "CREATE TABLE IF NOT EXISTS channel_skus (
        channel TEXT NOT NULL,
        sku TEXT NOT NULL,
        acked_quantity INTEGER,
        acked_version INTEGER,
        acked_nanos INTEGER,
        basis INTEGER,
        pinned_version INTEGER,
        pinned_quantity INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_nanos INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_error_nanos INTEGER,
        dead_version INTEGER,
        held INTEGER NOT NULL DEFAULT 0,
        observed_quantity INTEGER,
        observed_nanos INTEGER,
        observed_actor TEXT,
        diverged_nanos INTEGER,
        PRIMARY KEY (channel, sku)
    ) WITHOUT ROWID",
    // The dispatcher's sweep for divergences that outlived the SLA, every second: without it,
    // a read of every row of the channel.
    "CREATE INDEX IF NOT EXISTS channel_skus_diverged ON channel_skus (channel, diverged_nanos) \
     WHERE diverged_nanos IS NOT NULL",
    // Acknowledged pushes with the times the integration matrix measures; trimmed per channel.
    "CREATE TABLE IF NOT EXISTS push_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        sku TEXT NOT NULL,
        version INTEGER NOT NULL,
        quantity INTEGER NOT NULL,
        source TEXT,
        occurred_nanos INTEGER,
        received_nanos INTEGER,
        changed_nanos INTEGER NOT NULL,
        acked_nanos INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS push_log_by_channel ON push_log (channel, id)",
    super::checkpoints::TABLE,
];

/// Events of an earlier version: no `factor` (base units per unit sent, `NULL` for the base unit),
/// so their history shows base units.
pub const SQLITE_MIGRATE_FACTOR: &str = "ALTER TABLE events ADD COLUMN factor INTEGER";

/// Incidents of an earlier version: no `actor` column, channel overrides stored with the actor
/// in `system` as `channel:actor`.
pub const SQLITE_MIGRATE_INCIDENT_ACTORS: &[&str] = &[
    "ALTER TABLE incidents ADD COLUMN actor TEXT",
    "UPDATE incidents SET actor = substr(system, instr(system, ':') + 1), \
     system = substr(system, 1, instr(system, ':') - 1) \
     WHERE kind = 'channel_override' AND actor IS NULL AND instr(system, ':') > 0",
];

/// Brings a ledger of an earlier version to this schema, before [`SQLITE`] runs: where event ids
/// were one deployment-wide namespace (`events.id` unique), the table is rebuilt with `(source,
/// id)` unique instead, and the per-cell index (whose key could not tell two sources' ids apart)
/// is dropped with its watermark and its slices' records, so the next open rebuilds it from the
/// ledger.
pub const SQLITE_MIGRATE_SOURCE_IDS: &[&str] = &[
    "ALTER TABLE events RENAME TO events_v1",
    EVENTS,
    "INSERT INTO events SELECT *, 1 FROM events_v1",
    // The rows of overrides policy did not apply, which claimed their ids then and do not now.
    "UPDATE events SET claims = 0 WHERE outcome = 'override' AND effective = 0",
    "DROP TABLE events_v1",
    "DROP TABLE IF EXISTS event_keys",
    // Its slices' records go with it, in the same transaction: none may outlive the entries.
    "DROP TABLE IF EXISTS key_slices",
    "DELETE FROM meta WHERE key IN ('keys_watermark', 'keys_max_at', 'key_slices_from')",
];
