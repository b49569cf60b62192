//! The group transaction's statements, one function a phase (see the parent module for the
//! order they run in and why): each takes the open transaction, sends one statement over arrays
//! (or two, for the outbox marks of channels fed by slots the group did not lock), and reads back
//! what the next phase needs.

use super::copy::CopyRows;
use super::{EventRow, Failure, Marks, Slot};
use crate::StoreError;
use crate::postgres::errors::{claimed_meanwhile, db};
use crate::postgres::nanos;
use crate::rows::{cell_of, sent_factor};
use chrono::Utc;
use driftless_core::{
    Cell, ChannelSpec, Fingerprint, Levels, Location, OrderKey, Prepared, Sku, State,
};
use sqlx::{PgConnection, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Phase 1: takes the row lock of each slot, creating rows for new ones, in key order. Returns
/// the slots this transaction created (they are removed again if none of their events is
/// stored, so a redelivered conflict does not make a sku appear at a location).
pub(super) async fn lock_slots(
    tx: &mut PgConnection,
    slots: &BTreeSet<Slot>,
) -> Result<BTreeSet<Slot>, Failure> {
    if slots.is_empty() {
        return Ok(BTreeSet::new());
    }
    let (skus, locs): (Vec<&str>, Vec<&str>) =
        slots.iter().map(|(s, l)| (s.as_str(), l.as_str())).unzip();
    // UNNEST keeps the arrays' order, so the rows are inserted or locked in key order, by one
    // statement. `DO UPDATE ... WHERE FALSE` locks an existing row without writing a new
    // version of it (PostgreSQL locks every conflicting row of `DO UPDATE`, updated or not), and
    // `RETURNING` then names only the rows this statement inserted.
    let rows = sqlx::query(
        "INSERT INTO slots (sku, location) SELECT * FROM UNNEST($1::text[], $2::text[]) \
         ON CONFLICT (sku, location) DO UPDATE SET sku = EXCLUDED.sku WHERE FALSE \
         RETURNING sku, location",
    )
    .bind(&skus)
    .bind(&locs)
    .fetch_all(&mut *tx)
    .await?;
    let mut fresh = BTreeSet::new();
    for r in rows {
        fresh.insert(slot_of(&r)?);
    }
    Ok(fresh)
}

fn slot_of(r: &sqlx::postgres::PgRow) -> Result<Slot, StoreError> {
    let sku: String = r.try_get("sku").map_err(db)?;
    let loc: String = r.try_get("location").map_err(db)?;
    Ok((
        Sku::parse(sku).map_err(|e| StoreError::Corrupt(format!("sku: {e}")))?,
        Location::parse(loc).map_err(|e| StoreError::Corrupt(format!("location: {e}")))?,
    ))
}

/// Phase 2: the cells of the locked slots.
pub(super) async fn load_cells(
    tx: &mut PgConnection,
    slots: &BTreeSet<Slot>,
) -> Result<HashMap<Slot, [Cell; 5]>, Failure> {
    let mut out: HashMap<Slot, [Cell; 5]> = HashMap::new();
    if slots.is_empty() {
        return Ok(out);
    }
    let (skus, locs): (Vec<&str>, Vec<&str>) =
        slots.iter().map(|(s, l)| (s.as_str(), l.as_str())).unzip();
    let rows = sqlx::query(
        "SELECT c.sku, c.location, c.state, c.value, c.set_nanos, c.set_seq, c.set_id \
         FROM UNNEST($1::text[], $2::text[]) AS u(sku, location) \
         JOIN cells c ON c.sku = u.sku AND c.location = u.location",
    )
    .bind(&skus)
    .bind(&locs)
    .fetch_all(&mut *tx)
    .await?;
    for r in rows {
        let slot = slot_of(&r)?;
        let state: i16 = r.try_get("state")?;
        let set_id: Option<String> = r.try_get("set_id")?;
        let (i, cell) = cell_of(
            i64::from(state),
            r.try_get("value")?,
            (
                r.try_get("set_nanos")?,
                r.try_get("set_seq")?,
                set_id.as_deref(),
            ),
        )?;
        out.entry(slot).or_default()[i] = cell;
    }
    Ok(out)
}

/// Phase 2: the fingerprints stored under the group's `(source, id)`s that are claimed.
pub(super) async fn lookup_ids(
    tx: &mut PgConnection,
    prepared: &[&Prepared],
) -> Result<HashMap<(String, String), Fingerprint>, Failure> {
    let mut out = HashMap::new();
    if prepared.is_empty() {
        return Ok(out);
    }
    let (sources, ids): (Vec<&str>, Vec<&str>) = prepared
        .iter()
        .map(|p| (p.event.source.as_str(), p.event.id.as_str()))
        .unzip();
    let rows = sqlx::query(
        "SELECT e.source, e.id, e.fingerprint FROM UNNEST($1::text[], $2::text[]) AS u(source, id) \
         JOIN events e ON e.source = u.source AND e.id = u.id AND e.claims",
    )
    .bind(&sources)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    for r in rows {
        let f: Vec<u8> = r.try_get("fingerprint")?;
        let f: [u8; 32] = f
            .try_into()
            .map_err(|_| StoreError::Corrupt("fingerprint is not 32 bytes".into()))?;
        out.insert((r.try_get("source")?, r.try_get("id")?), Fingerprint(f));
    }
    Ok(out)
}

/// The stored effective deltas of `state` at the slot positioned after `key`, through the
/// per-cell index. The slot is locked, so no other transaction adds to them meanwhile.
pub(super) async fn sum_after(
    tx: &mut PgConnection,
    (sku, loc): &Slot,
    state: State,
    key: &OrderKey,
) -> Result<i64, Failure> {
    let col = state.as_str();
    let sql = format!(
        "SELECT COALESCE(SUM({col}), 0)::BIGINT FROM events WHERE sku = $1 AND location = $2 \
         AND (at_nanos, seq, id) > ($3, $4, $5) AND kind = 'adjust' AND effective \
         AND {col} IS NOT NULL"
    );
    let sum: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(sku.as_str())
        .bind(loc.as_str())
        .bind(key.position.at_nanos)
        .bind(key.position.seq as i64)
        .bind(key.id.as_str())
        .fetch_one(&mut *tx)
        .await?;
    Ok(sum)
}

/// Phase 4: the group's events, by `COPY` in binary. False when an id was claimed by another
/// transaction since the lookup (the statement failed: the caller rolls back and decides again).
///
/// `COPY` rather than `INSERT ... SELECT FROM UNNEST(arrays)`: the rows, their indexes and their
/// checks are the same, but the server neither takes 22 arrays apart nor runs a query per group.
/// The rows go in in the group's order, so their `lsn`s (the column's default) grow in decision
/// order. No `ON CONFLICT` (which `COPY` has not): the ids were looked up under the slot locks,
/// so a conflict is rare (another process claimed an id since, for an event of another slot),
/// and the unique violation on `events_by_source_id` says so.
pub(super) async fn insert_events(
    tx: &mut PgConnection,
    events: &[EventRow<'_>],
) -> Result<bool, Failure> {
    if events.is_empty() {
        return Ok(true);
    }
    let mut rows = CopyRows::new(events.len() * 256);
    for r in events {
        copy_row(&mut rows, r)?;
    }
    let rows = rows.finish();
    let mut copy = tx
        .copy_in_raw(
            "COPY events (id, fingerprint, source, sku, location, at_nanos, seq, kind, \
             on_hand, committed, reserved, incoming, unavailable, uom, reason, ref, \
             received_nanos, outcome, effective, detail, factor, claims) \
             FROM STDIN (FORMAT binary)",
        )
        .await?;
    // A connection that fails mid-stream commits nothing of it; dropping `copy` on the way out
    // ends the `COPY` (sqlx sends `CopyFail`).
    copy.send(rows).await?;
    match copy.finish().await {
        Ok(_) => Ok(true),
        Err(e) if claimed_meanwhile(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// One event row in the column order of [`insert_events`]' `COPY`.
fn copy_row(rows: &mut CopyRows, r: &EventRow<'_>) -> Result<(), StoreError> {
    let e = &r.p.event;
    rows.row(22);
    rows.text(Some(e.id.as_str()))?;
    rows.bytes(&r.p.fingerprint.0)?;
    rows.text(Some(e.source.as_str()))?;
    rows.text(Some(e.sku.as_str()))?;
    rows.text(Some(e.location.as_str()))?;
    rows.int8(Some(e.position.at_nanos));
    rows.int8(Some(e.position.seq as i64));
    rows.text(Some(e.change.kind()))?;
    for s in State::ALL {
        rows.int8(r.p.base.get(s));
    }
    rows.text(e.uom.as_ref().map(|u| u.as_str()))?;
    rows.text(e.reason.as_deref())?;
    rows.text(e.reference.as_deref())?;
    rows.int8(Some(r.received));
    rows.text(Some(r.outcome.as_str()))?;
    rows.bool(r.effective);
    rows.text(r.detail.as_deref())?;
    rows.int8(sent_factor(r.p));
    rows.bool(r.claims);
    Ok(())
}

/// Phase 4: the changed states of the changed slots.
pub(super) async fn write_cells(
    tx: &mut PgConnection,
    cells: &HashMap<Slot, [Cell; 5]>,
    changed: &BTreeMap<Slot, u8>,
) -> Result<(), Failure> {
    let (mut skus, mut locs, mut states, mut values) = (vec![], vec![], vec![], vec![]);
    let (mut set_nanos, mut set_seq, mut set_id) = (vec![], vec![], vec![]);
    for (slot, mask) in changed {
        let Some(c) = cells.get(slot) else { continue };
        for s in State::ALL {
            if mask & (1 << s.index()) == 0 {
                continue;
            }
            let cell = &c[s.index()];
            skus.push(slot.0.as_str());
            locs.push(slot.1.as_str());
            states.push(s.index() as i16);
            values.push(cell.value);
            set_nanos.push(cell.set.as_ref().map(|k| k.position.at_nanos));
            set_seq.push(cell.set.as_ref().map(|k| k.position.seq as i64));
            set_id.push(cell.set.as_ref().map(|k| k.id.as_str()));
        }
    }
    if skus.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO cells (sku, location, state, value, set_nanos, set_seq, set_id) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int2[], $4::int8[], $5::int8[], \
         $6::int8[], $7::text[]) \
         ON CONFLICT (sku, location, state) DO UPDATE SET value = EXCLUDED.value, \
         set_nanos = EXCLUDED.set_nanos, set_seq = EXCLUDED.set_seq, set_id = EXCLUDED.set_id",
    )
    .bind(&skus)
    .bind(&locs)
    .bind(&states)
    .bind(&values)
    .bind(&set_nanos)
    .bind(&set_seq)
    .bind(&set_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Phase 4: slots this group created for events none of which was stored (a conflict, a
/// duplicate of an event stored elsewhere) are removed, so the sku is not seen there.
pub(super) async fn drop_unused_slots(
    tx: &mut PgConnection,
    fresh: &BTreeSet<Slot>,
    events: &[EventRow<'_>],
) -> Result<(), Failure> {
    let mut unused: BTreeSet<&Slot> = fresh.iter().collect();
    for r in events {
        unused.remove(&(r.p.event.sku.clone(), r.p.event.location.clone()));
        if unused.is_empty() {
            return Ok(());
        }
    }
    let (skus, locs): (Vec<&str>, Vec<&str>) =
        unused.iter().map(|(s, l)| (s.as_str(), l.as_str())).unzip();
    sqlx::query(
        "DELETE FROM slots s USING UNNEST($1::text[], $2::text[]) AS u(sku, location) \
         WHERE s.sku = u.sku AND s.location = u.location",
    )
    .bind(&skus)
    .bind(&locs)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Phase 4: marks the `(channel, sku)` rows dirty with their versions moved on by the number of
/// marking events, locking them in key order (after the slots, always), and sets each row's ATP
/// from the cells as they are once the lock is held. Every transaction that changes a cell at a
/// channel's location holds that row's lock until it commits, so the ATP written includes every
/// change committed before, and a later one recomputes it: the newest version carries the right
/// quantity. Returns the rows' floor: no row it marked has an earlier `changed_nanos`.
///
/// When this group holds the slot lock of every location the channel feeds from (a channel fed by
/// one location, or a group with events at all of them), no other transaction can change those
/// cells before this one commits: the ATP is computed from the group's own cells and written by
/// the same statement that marks the row. Otherwise the row is marked first, and the cells of the
/// sku are read after that lock and the ATP written by a second statement.
pub(super) async fn mark_outbox(
    tx: &mut PgConnection,
    channels: &[ChannelSpec],
    marks: &Marks,
    cells: &HashMap<Slot, [Cell; 5]>,
    locked: &BTreeSet<Slot>,
) -> Result<i64, Failure> {
    let now = nanos(Utc::now());
    let (mut chans, mut skus, mut counts, mut atps) = (vec![], vec![], vec![], vec![]);
    let (mut sources, mut occurred, mut received) = (vec![], vec![], vec![]);
    let mut unlocked = Vec::new();
    for ((c, sku), (n, sample)) in marks {
        let spec = channels.iter().find(|x| x.id.as_str() == c);
        let atp = match spec {
            None => Some(0),
            Some(spec) => spec.locations.iter().try_fold(0i64, |a, l| {
                let slot = (sku.clone(), l.clone());
                locked.contains(&slot).then(|| {
                    a.saturating_add(cells.get(&slot).map_or(0, |c| levels_of(c).available()))
                })
            }),
        };
        if atp.is_none() {
            unlocked.push((c.as_str(), sku.as_str()));
        }
        chans.push(c.as_str());
        skus.push(sku.as_str());
        counts.push(*n);
        atps.push(atp.unwrap_or(0));
        sources.push(sample.as_ref().map(|s| s.0.as_str()));
        occurred.push(sample.as_ref().map(|s| s.1));
        received.push(sample.as_ref().map(|s| s.2));
    }
    sqlx::query(
        "INSERT INTO outbox (channel, sku, version, dirty, changed_nanos, atp, source, \
         occurred_nanos, received_nanos) \
         SELECT c, s, n, TRUE, $4, atp, src, occ, rec FROM UNNEST($1::text[], $2::text[], \
         $3::int8[], $5::text[], $6::int8[], $7::int8[], $8::int8[]) \
         AS u(c, s, n, src, occ, rec, atp) \
         ON CONFLICT (channel, sku) DO UPDATE SET version = outbox.version + EXCLUDED.version, \
         dirty = TRUE, changed_nanos = GREATEST(outbox.changed_nanos + 1, EXCLUDED.changed_nanos), \
         atp = EXCLUDED.atp, \
         source = COALESCE(EXCLUDED.source, outbox.source), \
         occurred_nanos = COALESCE(EXCLUDED.occurred_nanos, outbox.occurred_nanos), \
         received_nanos = COALESCE(EXCLUDED.received_nanos, outbox.received_nanos)",
    )
    .bind(&chans)
    .bind(&skus)
    .bind(&counts)
    .bind(now)
    .bind(&sources)
    .bind(&occurred)
    .bind(&received)
    .bind(&atps)
    .execute(&mut *tx)
    .await?;
    if unlocked.is_empty() {
        return Ok(now);
    }
    // The levels of every location of the other marked skus, read after the row locks.
    let distinct: BTreeSet<&str> = unlocked.iter().map(|(_, s)| *s).collect();
    let distinct: Vec<&str> = distinct.into_iter().collect();
    let rows = sqlx::query("SELECT sku, location, state, value FROM cells WHERE sku = ANY($1)")
        .bind(&distinct)
        .fetch_all(&mut *tx)
        .await?;
    let mut levels: HashMap<(String, String), Levels> = HashMap::new();
    for r in rows {
        let state: i16 = r.try_get("state")?;
        let Some(s) = usize::try_from(state).ok().and_then(|i| State::ALL.get(i)) else {
            return Err(StoreError::Corrupt(format!("state index {state}")).into());
        };
        levels
            .entry((r.try_get("sku")?, r.try_get("location")?))
            .or_default()
            .set(*s, r.try_get("value")?);
    }
    let (mut chans, mut skus, mut atps) = (vec![], vec![], vec![]);
    for (c, sku) in unlocked {
        let spec = channels.iter().find(|x| x.id.as_str() == c);
        let atp = spec.map_or(0, |spec| {
            spec.locations
                .iter()
                .filter_map(|l| levels.get(&(sku.to_owned(), l.to_string())))
                .fold(0i64, |a, lv| a.saturating_add(lv.available()))
        });
        chans.push(c);
        skus.push(sku);
        atps.push(atp);
    }
    sqlx::query(
        "UPDATE outbox o SET atp = u.atp FROM UNNEST($1::text[], $2::text[], $3::int8[]) \
         AS u(c, s, atp) WHERE o.channel = u.c AND o.sku = u.s",
    )
    .bind(&chans)
    .bind(&skus)
    .bind(&atps)
    .execute(&mut *tx)
    .await?;
    Ok(now)
}

/// A slot's levels from its cells.
fn levels_of(cells: &[Cell; 5]) -> Levels {
    let mut l = Levels::default();
    for s in State::ALL {
        l.set(s, cells[s.index()].value);
    }
    l
}
