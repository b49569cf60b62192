//! The SQL the writer and the readers share: multi-row inserts of events, cells, outbox rows and
//! index entries, the loads of cached skus and stored outbox rows, the watermarks in `meta`, and
//! the decoding of stored rows.

use super::cells::{FlushRows, SkuCells, Slot};
use super::keys::{Entry, KeySlice, KeyTail};
use super::keyslices::SliceRecord;
use super::marks::Mark;
use super::writer::*;
use super::*;
use crate::rows::{cell_of, sent_factor, system_and_actor};
use crate::{Incident, StoreError};
use driftless_core::{Cell, EventId, Fingerprint, Location, OrderKey, Position, Sku, State};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, Sqlite};
use std::borrow::Cow;
use std::collections::HashMap;

/// The fold-order key of a stored event row.
pub(super) fn order_key_of(r: &SqliteRow) -> Result<OrderKey, StoreError> {
    Ok(OrderKey {
        position: Position {
            at_nanos: r.try_get("at_nanos")?,
            seq: r.try_get::<i64, _>("seq")? as u64,
        },
        id: EventId::parse(r.try_get::<String, _>("id")?)
            .map_err(|e| StoreError::Corrupt(format!("event id: {e}")))?,
    })
}

/// Writes a slice of index entries, in key order, the table's newest position after it, and the
/// slice's record.
pub(super) async fn write_keys(
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
        // An entry is a function of its event, so one already in the table is the same entry
        // (a slice retried after a commit whose outcome was unknown).
        q.push(" ON CONFLICT DO NOTHING");
        q.build().execute(&mut *conn).await?;
    }
    record_key_slice(conn, slice).await
}

/// Records a slice of the index in the transaction that writes it, and drops the records the
/// stored watermark has passed (see `keyslices.rs`).
async fn record_key_slice(conn: &mut SqliteConnection, slice: &KeySlice) -> Result<(), StoreError> {
    let Some(r) = SliceRecord::of(slice) else {
        return Ok(());
    };
    sqlx::query("INSERT OR IGNORE INTO key_slices (upto, first, last) VALUES (?1, ?2, ?3)")
        .bind(r.upto)
        .bind(r.first.as_str())
        .bind(r.last.as_str())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM key_slices WHERE upto <= (SELECT value FROM meta WHERE key = ?1)")
        .bind(<KeyTail as super::sweep::Behind>::WATERMARK)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What is known of the index after its watermark without asking `event_keys`: the recorded
/// slices after `watermark`, and the newest position a version that kept no records may have
/// indexed (everything, for a ledger whose writer kept none).
pub(super) async fn load_key_slices(
    conn: &mut SqliteConnection,
    watermark: i64,
) -> Result<(Vec<SliceRecord>, i64), StoreError> {
    if !table_exists(conn, "key_slices").await? {
        return Ok((Vec::new(), i64::MAX));
    }
    let from = meta_value(conn, KEY_SLICES_FROM).await?.unwrap_or(i64::MAX);
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT upto, first, last FROM key_slices WHERE upto > ?1")
            .bind(watermark)
            .fetch_all(&mut *conn)
            .await?;
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("key_slices: {e}"));
    let records = rows
        .into_iter()
        .map(|(upto, first, last)| {
            Ok(SliceRecord {
                first: Sku::parse(first).map_err(|e| corrupt(&e))?,
                last: Sku::parse(last).map_err(|e| corrupt(&e))?,
                upto,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok((records, from))
}

/// The `meta` key of the newest position a version that kept no slice records may have indexed.
pub(super) const KEY_SLICES_FROM: &str = "key_slices_from";

pub(super) async fn lookup_ids(
    conn: &mut SqliteConnection,
    ids: &[Identity<'_>],
) -> Result<HashMap<(String, String), Fingerprint>, StoreError> {
    let mut seen = HashMap::new();
    for chunk in ids.chunks(400) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT source, id, fingerprint FROM events WHERE claims = 1 AND (source, id) IN (VALUES ",
        );
        let mut sep = q.separated(", ");
        for (source, id) in chunk {
            sep.push("(");
            sep.push_bind_unseparated(*source);
            sep.push_unseparated(", ");
            sep.push_bind_unseparated(*id);
            sep.push_unseparated(")");
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await? {
            let source: String = row.try_get(0)?;
            let id: String = row.try_get(1)?;
            let fp: Vec<u8> = row.try_get(2)?;
            let fp: [u8; 32] = fp
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("fingerprint of `{source}`/`{id}`")))?;
            seen.insert((source, id), Fingerprint(fp));
        }
    }
    Ok(seen)
}

/// An event's identity, `(source, id)`, borrowed from its request.
pub(super) type Identity<'a> = (&'a str, &'a str);

/// A stored cell row's columns, as `load_skus` reads them: sku, location, state, value, the
/// `set`'s key and the row's position. The text is borrowed from the chunk's JSON unless it holds
/// an escape, so decoding a row allocates nothing.
#[derive(serde::Deserialize)]
struct CellRow<'a>(
    #[serde(borrow)] Cow<'a, str>,
    #[serde(borrow)] Cow<'a, str>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    #[serde(borrow)] Option<Cow<'a, str>>,
    i64,
);

/// Every stored location of each sku, with the position each row is written as of.
///
/// Each chunk comes back as one JSON text, for the reason `tail.rs` gives: sqlx hands rows one at
/// a time from SQLite's thread to the runtime, and a group loading the skus it has not cached
/// reads tens of thousands of rows. The chunk's skus are asked in key order, so the lookups walk
/// the table's B-tree in its own order, and the rows come back grouped by sku and by location.
pub(super) async fn load_skus(
    conn: &mut SqliteConnection,
    skus: &[&Sku],
) -> Result<Vec<(Sku, SkuCells, Vec<[i64; 5]>)>, StoreError> {
    let mut sorted = skus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(Sku, SkuCells, Vec<[i64; 5]>)> = sorted
        .iter()
        .map(|s| ((*s).clone(), SkuCells::default(), Vec::new()))
        .collect();
    let mut first = 0;
    for chunk in sorted.chunks(500) {
        // One JSON parameter keeps the statement text constant, so its prepared form is reused.
        let list = serde_json::to_string(&chunk.iter().map(|s| s.as_str()).collect::<Vec<_>>())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let json: Option<String> = sqlx::query_scalar(
            "SELECT json_group_array(json_array(c.sku, c.location, c.state, c.value, \
             c.set_nanos, c.set_seq, c.set_id, c.lsn)) \
             FROM json_each(?) AS j CROSS JOIN cells AS c ON c.sku = j.value",
        )
        .bind(list)
        .fetch_one(&mut *conn)
        .await?;
        let rows: Vec<CellRow<'_>> = serde_json::from_str(json.as_deref().unwrap_or("[]"))
            .map_err(|e| StoreError::Corrupt(format!("cells: {e}")))?;
        fill_chunk(&mut out[first..first + chunk.len()], rows)?;
        first += chunk.len();
    }
    Ok(out)
}

/// Puts one chunk's rows into its skus (`out`, in key order). The rows come grouped by sku and by
/// location, so a row's sku is the previous row's or found by a binary search over `out`, and its
/// location is the last one added unless it is new.
fn fill_chunk(
    out: &mut [(Sku, SkuCells, Vec<[i64; 5]>)],
    rows: Vec<CellRow<'_>>,
) -> Result<(), StoreError> {
    let mut at = 0;
    for CellRow(sku, loc, state, value, set_nanos, set_seq, set_id, lsn) in rows {
        let (i, cell) = cell_of(state, value, (set_nanos, set_seq, set_id.as_deref()))?;
        // A sku the chunk did not ask for cannot come from the query's join; it is skipped.
        if out.get(at).is_none_or(|(s, _, _)| s.as_str() != sku) {
            match out.binary_search_by(|(s, _, _)| s.as_str().cmp(&sku)) {
                Ok(k) => at = k,
                Err(_) => continue,
            }
        }
        let (_, cells, lsns) = &mut out[at];
        let k = match cells.slots.iter().rposition(|s| s.loc.as_str() == loc) {
            Some(k) => k,
            None => {
                cells.slots.push(Slot::clean(
                    Location::parse(&*loc).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ));
                lsns.push([0; 5]);
                cells.slots.len() - 1
            }
        };
        cells.slots[k].cells[i] = cell;
        lsns[k][i] = lsn;
    }
    Ok(())
}

/// The sum of effective adjust deltas for one state positioned after `k`: those already stored
/// (before position `before`, when replaying) plus those decided earlier in this (uncommitted,
/// unwritten) group.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sum_after(
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
        .into_iter()
        .flat_map(|p| p.adjusts_of(sku, loc))
        .filter(|r| &r.p.event.order_key() > k)
        .filter_map(|r| r.p.base.get(state))
        .fold(0i64, |a, d| a.saturating_add(d));
    Ok(stored.saturating_add(held).saturating_add(unflushed))
}

/// Inserts the group's events. Returns false, having inserted part of them, when an event id was
/// already stored (the caller rolls back).
pub(super) async fn insert_events(
    conn: &mut SqliteConnection,
    events: &[EventRow<'_>],
) -> Result<bool, StoreError> {
    let mut inserted = 0u64;
    for chunk in events.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (lsn, id, fingerprint, source, sku, location, at_nanos, seq, kind, \
             on_hand, committed, reserved, incoming, unavailable, uom, reason, ref, \
             received_nanos, outcome, effective, detail, factor, claims) ",
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
                .push_bind(r.detail.as_deref())
                .push_bind(sent_factor(r.p))
                .push_bind(r.claims);
        });
        q.push(" ON CONFLICT (source, id) WHERE claims = 1 DO NOTHING");
        inserted += q.build().execute(&mut *conn).await?.rows_affected();
    }
    Ok(inserted == events.len() as u64)
}

/// The stored outbox rows of these skus of one channel.
pub(super) async fn load_marks(
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
pub(super) async fn write_marks(
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
pub(super) async fn write_cells(
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
pub(super) async fn meta_value(
    conn: &mut SqliteConnection,
    key: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?)
}

/// A position stored in `meta`; 0 (the start of the ledger) when none is.
pub(super) async fn get_meta(conn: &mut SqliteConnection, key: &str) -> Result<i64, StoreError> {
    Ok(meta_value(conn, key).await?.unwrap_or(0))
}

/// Several positions in one statement (none: no statement).
pub(super) async fn set_metas(
    conn: &mut SqliteConnection,
    values: &[(&str, i64)],
) -> Result<(), StoreError> {
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

pub(super) async fn set_meta(
    conn: &mut SqliteConnection,
    key: &str,
    lsn: i64,
) -> Result<(), StoreError> {
    set_metas(conn, &[(key, lsn)]).await
}

pub(super) async fn insert_incidents(
    conn: &mut SqliteConnection,
    incidents: &[Incident],
) -> Result<(), StoreError> {
    for chunk in incidents.chunks(2000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO incidents (kind, sku, location, system, actor, event_id, detail, \
             at_nanos) ",
        );
        q.push_values(chunk, |mut b, i| {
            let (system, actor) = system_and_actor(i);
            b.push_bind(i.kind.clone())
                .push_bind(i.sku.as_ref().map(|s| s.to_string()))
                .push_bind(i.location.as_ref().map(|l| l.to_string()))
                .push_bind(system)
                .push_bind(actor)
                .push_bind(i.event_id.clone())
                .push_bind(i.detail.clone())
                .push_bind(nanos(i.at));
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out_of(skus: &[&str]) -> Vec<(Sku, SkuCells, Vec<[i64; 5]>)> {
        skus.iter()
            .map(|s| (Sku::parse(*s).unwrap(), SkuCells::default(), Vec::new()))
            .collect()
    }

    #[test]
    fn a_chunks_rows_land_in_their_skus_and_locations() {
        // The second sku needs escapes in JSON, so its text is not borrowed; the last row comes
        // out of order and the one before names a sku the chunk did not ask for.
        let json = r#"[
            ["A-1","L1",0,5,null,null,null,7],
            ["A-1","L1",1,2,null,null,null,8],
            ["A-1","L2",0,3,10,1,"e-9",9],
            ["B\"\\2","L1",0,4,null,null,null,3],
            ["ZZ","L1",0,1,null,null,null,1],
            ["A-1","L3",4,6,null,null,null,2]
        ]"#;
        let rows: Vec<CellRow<'_>> = serde_json::from_str(json).unwrap();
        let mut out = out_of(&["A-1", "B\"\\2"]);
        fill_chunk(&mut out, rows).unwrap();
        let (_, a, a_lsns) = &out[0];
        let locs: Vec<&str> = a.slots.iter().map(|s| s.loc.as_str()).collect();
        assert_eq!(locs, ["L1", "L2", "L3"]);
        assert_eq!(
            (a.slots[0].cells[0].value, a.slots[0].cells[1].value),
            (5, 2)
        );
        assert_eq!(a_lsns[0], [7, 8, 0, 0, 0]);
        let set = a.slots[1].cells[0].set.as_ref().unwrap();
        assert_eq!((set.id.as_str(), set.position.at_nanos), ("e-9", 10));
        assert_eq!(a.slots[2].cells[4].value, 6);
        let (b, cells, _) = &out[1];
        assert_eq!(b.as_str(), "B\"\\2");
        assert_eq!(cells.slots[0].cells[0].value, 4);
    }

    #[test]
    fn a_corrupt_state_index_is_an_error_not_a_panic() {
        let rows: Vec<CellRow<'_>> =
            serde_json::from_str(r#"[["A-1","L1",9,5,null,null,null,7]]"#).unwrap();
        let mut out = out_of(&["A-1"]);
        assert!(matches!(
            fill_chunk(&mut out, rows),
            Err(StoreError::Corrupt(_))
        ));
    }
}
