//! Crash recovery: on open, what a crash left unwritten (index entries, cells, outbox rows) is
//! read back from the ledger tail after each kind's watermark, skipping what a row already holds.
//! Replay uses the stored outcome and `effective` flag, never the configuration.

use super::keys::entry_of;
use super::marks::{Change, Mark};
use super::sql::*;
use super::writer::*;
use super::*;
use crate::StoreError;
use chrono::Utc;
use driftless_core::{Location, Outcome, Sku, State, StateMap, effects_of};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use std::collections::{HashMap, HashSet};

impl Writer {
    /// Reads back into the tail (`keys.rs`) every event after the watermark whose index entry a
    /// crash left unwritten; a data directory of an earlier version, without `event_keys`, gets
    /// its whole index this way.
    pub(super) async fn recover_keys(&mut self, last: i64) -> Result<(), StoreError> {
        // The table's newest position; a table written before it was kept is read once.
        let max_at = match meta_value(&mut self.conn, "keys_max_at").await? {
            Some(v) => v,
            None => sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(at_nanos) FROM event_keys")
                .fetch_one(&mut self.conn)
                .await?
                .unwrap_or(i64::MIN),
        };
        self.held
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set_written_max_at(max_at);
        let watermark = get_meta(&mut self.conn, "keys_watermark").await?;
        if last <= watermark {
            return Ok(());
        }
        let mut after = watermark;
        let mut n = 0u64;
        loop {
            let rows = replay_page(
                &mut self.conn,
                "SELECT lsn, id, sku, location, at_nanos, seq, kind, effective, on_hand, committed, \
                 reserved, incoming, unavailable FROM events e WHERE lsn > ? AND NOT EXISTS \
                 (SELECT 1 FROM event_keys x WHERE x.sku = e.sku AND x.location = e.location \
                 AND x.at_nanos = e.at_nanos AND x.seq = e.seq AND x.id = e.id AND x.lsn = e.lsn) \
                 ORDER BY lsn LIMIT 10000",
                &mut after,
            )
            .await?;
            if rows.is_empty() {
                break;
            }
            let mut keys = self.held.keys.write().unwrap_or_else(|p| p.into_inner());
            for r in &rows {
                let (lsn, sku, loc) = slot_of(r)?;
                let key = order_key_of(r)?;
                let is_set = r.try_get::<String, _>("kind")? == "set";
                let effective = r.try_get::<i64, _>("effective")? != 0;
                let mut base = [None; 5];
                for s in State::ALL {
                    base[s.index()] = r.try_get::<Option<i64>, _>(s.as_str())?;
                }
                keys.push(
                    &sku,
                    &loc,
                    entry_of(lsn, key, is_set, effective, |s| base[s.index()]),
                );
                n += 1;
            }
        }
        tracing::info!(events = n, "read the ledger tail back into the index");
        Ok(())
    }

    /// Brings what a crash left unwritten up to the ledger (cells first: the outbox rows' quantities
    /// come from them), then writes it all, so serving starts with nothing waiting.
    pub(super) async fn recover(&mut self) -> Result<(), StoreError> {
        self.read_tail().await?;
        self.flush_all().await;
        Ok(())
    }

    /// Reads what the ledger tail holds that the tables do not (index entries, cells, outbox
    /// rows) into memory, writing nothing: recovery's first half, and all a reader does.
    pub(super) async fn read_tail(&mut self) -> Result<(), StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(lsn), 0) FROM events")
            .fetch_one(&mut self.conn)
            .await?;
        self.held.next_lsn = last + 1;
        // The index first: replaying the cells re-bases counts over it.
        self.recover_keys(last).await?;
        self.recover_cells(last).await?;
        self.recover_marks(last).await?;
        Ok(())
    }

    /// Rebuilds the outbox rows a crash left unwritten: each applied event after the watermark
    /// that a stored row does not count yet (`outbox.lsn`) adds a version, as it did when it was
    /// decided; the quantity is the channel's ATP now (the cells are recovered first).
    pub(super) async fn recover_marks(&mut self, last: i64) -> Result<(), StoreError> {
        let watermark = get_meta(&mut self.conn, "outbox_watermark").await?;
        if last <= watermark || self.held.channels.is_empty() {
            return Ok(());
        }
        // Per (channel index, sku): newest marking event, how many, newest applied sample.
        type Acc = (i64, i64, Option<(String, i64, i64)>);
        let mut acc: HashMap<(usize, Sku), Acc> = HashMap::new();
        let mut stored: HashMap<(usize, Sku), Option<Mark>> = HashMap::new();
        let mut after = watermark;
        loop {
            let rows = replay_page(
                &mut self.conn,
                "SELECT lsn, source, sku, location, at_nanos, received_nanos, outcome, effective \
                 FROM events WHERE lsn > ? AND effective = 1 ORDER BY lsn LIMIT 10000",
                &mut after,
            )
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                // Which stored outcomes mark the outbox is the core's rule, as when deciding.
                let outcome: Outcome = r
                    .try_get::<String, _>("outcome")?
                    .parse()
                    .map_err(StoreError::Corrupt)?;
                if !outcome.marks_outbox(r.try_get::<i64, _>("effective")? != 0) {
                    continue;
                }
                let (lsn, sku, loc) = slot_of(r)?;
                for i in 0..self.held.channels.len() {
                    if !self.held.channels[i].feeds_from(&loc) {
                        continue;
                    }
                    let key = (i, sku.clone());
                    if !stored.contains_key(&key) {
                        let m =
                            load_marks(&mut self.conn, self.held.channels[i].id.as_str(), &[&sku])
                                .await?
                                .pop()
                                .map(|(_, m)| m);
                        stored.insert(key.clone(), m);
                    }
                    if stored[&key].as_ref().is_some_and(|m| m.lsn >= lsn) {
                        continue;
                    }
                    let a = acc.entry(key).or_default();
                    a.0 = lsn;
                    a.1 += 1;
                    if outcome == Outcome::Applied {
                        a.2 = Some((
                            r.try_get("source")?,
                            r.try_get("at_nanos")?,
                            r.try_get("received_nanos")?,
                        ));
                    }
                }
            }
        }
        let missing: Vec<Sku> = acc
            .keys()
            .map(|(_, s)| s.clone())
            .filter(|s| !self.held.cache.contains(s))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let refs: Vec<&Sku> = missing.iter().collect();
        for (sku, cells, _) in load_skus(&mut self.conn, &refs).await? {
            self.held.cache.insert_loaded(sku, cells);
        }
        let now = nanos(Utc::now());
        let n = acc.len();
        let mut marks = self.held.marks.lock().unwrap_or_else(|p| p.into_inner());
        for ((i, sku), (lsn, events, sample)) in acc {
            let c = &self.held.channels[i];
            let prior = stored.remove(&(i, sku.clone())).flatten();
            marks.mark(
                c.id.as_str(),
                &sku,
                prior,
                Change {
                    first: lsn - events + 1,
                    lsn,
                    events,
                    now_nanos: now,
                    atp: self.held.cache.channel_atp(&sku, c),
                    sample,
                },
            );
        }
        tracing::info!(rows = n, "replayed the ledger tail into the outbox");
        Ok(())
    }

    /// Rebuilds the cells a crash left unwritten: replays, in decision order, the effective events
    /// after the watermark, skipping per row what the row already holds. The stored outcome and
    /// `effective` flag are used, not the configuration, which may have changed since.
    pub(super) async fn recover_cells(&mut self, last: i64) -> Result<(), StoreError> {
        let watermark = get_meta(&mut self.conn, "cells_watermark").await?;
        if last <= watermark {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut row_lsns: HashMap<(Sku, Location), [i64; 5]> = HashMap::new();
        let mut after = watermark;
        let mut replayed = 0u64;
        loop {
            let rows = replay_page(
                &mut self.conn,
                "SELECT lsn, id, sku, location, at_nanos, seq, kind, on_hand, committed, reserved, \
                 incoming, unavailable FROM events WHERE lsn > ? AND effective = 1 \
                 ORDER BY lsn LIMIT 10000",
                &mut after,
            )
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let (lsn, sku, loc) = slot_of(r)?;
                if !self.held.cache.contains(&sku) {
                    for (s, cells, lsns) in load_skus(&mut self.conn, &[&sku]).await? {
                        for (slot, l) in cells.slots.iter().zip(lsns) {
                            row_lsns.insert((s.clone(), slot.loc.clone()), l);
                        }
                        self.held.cache.insert_loaded(s, cells);
                    }
                }
                let key = order_key_of(r)?;
                let held = row_lsns
                    .get(&(sku.clone(), loc.clone()))
                    .copied()
                    .unwrap_or([0; 5]);
                let mut base = StateMap::new();
                for s in State::ALL {
                    if let Some(q) = r.try_get::<Option<i64>, _>(s.as_str())?
                        && held[s.index()] < lsn
                    {
                        base.insert(s, q);
                    }
                }
                let is_set = r.try_get::<String, _>("kind")? == "set";
                let cells = self.held.cache.cells_mut(&sku, &loc);
                let effects = effects_of(is_set, &key, &base, cells);
                let later = Later {
                    keys: &self.held.keys,
                    pending: None,
                    before: Some(lsn),
                };
                let mask =
                    apply_effects(&mut self.conn, cells, &effects, &later, &sku, &loc).await?;
                if mask != 0 {
                    self.held.cache.mark_dirty(&sku, &loc, mask, lsn);
                }
                replayed += 1;
            }
            self.held.cache.commit_group();
        }
        tracing::info!(
            events = replayed,
            ms = started.elapsed().as_millis() as u64,
            "replayed the ledger tail into the cells"
        );
        Ok(())
    }
}

/// The next page of event rows after position `*after` for a replay, moving `*after` past it;
/// empty at the end. `sql` selects `lsn`, takes the position as its one parameter and orders by it.
pub(super) async fn replay_page(
    conn: &mut SqliteConnection,
    sql: &'static str,
    after: &mut i64,
) -> Result<Vec<SqliteRow>, StoreError> {
    let rows = sqlx::query(sql).bind(*after).fetch_all(&mut *conn).await?;
    if let Some(last) = rows.last() {
        *after = last.try_get("lsn")?;
    }
    Ok(rows)
}

/// The position, sku and location of a replayed event row.
pub(super) fn slot_of(r: &SqliteRow) -> Result<(i64, Sku, Location), StoreError> {
    let sku = Sku::parse(r.try_get::<String, _>("sku")?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let loc = Location::parse(r.try_get::<String, _>("location")?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok((r.try_get("lsn")?, sku, loc))
}
