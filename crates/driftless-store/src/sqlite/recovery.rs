//! Crash recovery: on open, what a crash left unwritten (index entries, cells, outbox rows) is
//! read back from the ledger tail after each kind's watermark, skipping what a row already holds.
//! Replay uses the stored outcome and `effective` flag, never the configuration.
//!
//! The tail is read once, in pages, for the three kinds together, and what a page needs from the
//! tables (the stored cells of its skus, the stored outbox rows) is loaded for the whole page in
//! a few statements before it is applied: a statement per event made the replay cost ~150 µs an
//! event. What is read back is held in memory exactly as the writer held it before the crash
//! (dirty cells, outbox rows, index entries, each with the position of its first unwritten
//! change), and written behind as usual, so opening writes nothing and a second crash replays
//! from the same watermarks.

use super::cells::CellCache;
use super::keys::{KeyTail, entry_of};
use super::keyslices::Written;
use super::marks::{Change, Mark, Marks};
use super::sql::*;
use super::sweep::read_watermark;
use super::tail::{Known, Page, Tail, TailEvent};
use super::writer::*;
use super::*;
use crate::StoreError;
use chrono::Utc;
use driftless_core::{Location, Outcome, Sku, State, StateMap, effects_of};
use sqlx::sqlite::SqliteConnection;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Up to which position each kind is in its table (`meta`).
#[derive(Debug, Clone, Copy)]
struct Watermarks {
    keys: i64,
    cells: i64,
    outbox: i64,
}

impl Watermarks {
    async fn read(conn: &mut SqliteConnection) -> Result<Watermarks, StoreError> {
        Ok(Watermarks {
            keys: read_watermark::<KeyTail>(conn).await?.0,
            cells: read_watermark::<CellCache>(conn).await?.0,
            outbox: read_watermark::<Marks>(conn).await?.0,
        })
    }

    /// Where the replay starts: the kind furthest behind.
    fn oldest(&self) -> i64 {
        self.keys.min(self.cells).min(self.outbox)
    }
}

impl Held {
    /// Whether more is held than the writer ever holds (twice its bounds: a group may add to
    /// what waits before its slice is written).
    fn beyond_bounds(&self) -> bool {
        let (slots, unindexed) = (self.opts.max_dirty_slots, self.opts.max_unindexed_events);
        let keys = self.keys.read().map_or(0, |k| k.len());
        let marks = self.marks.lock().map_or(0, |m| m.len());
        self.cache.dirty_slots() > 2 * slots || marks > 2 * slots || keys > 2 * unindexed
    }
}

/// Where the replay's time went, for its log line: asking the index table which entries it
/// holds, SQLite reading the pages, decoding them, loading the stored rows they touch, applying
/// them.
#[derive(Default)]
struct ReplayClock {
    probe: Duration,
    read: Duration,
    decode: Duration,
    load: Duration,
    apply: Duration,
}

/// A `(channel index, sku)` outbox row.
type MarkKey = (usize, Sku);

/// The marking events the replay counted for one outbox row.
struct Counted {
    first: i64,
    newest: i64,
    events: i64,
    /// The newest applied event: `(source, occurred, received)`.
    sample: Option<(String, i64, i64)>,
}

/// What the replay gathers for the outbox rows: what it counted per row, and the stored row each
/// starts from.
#[derive(Default)]
struct MarksReplay {
    acc: HashMap<MarkKey, Counted>,
    stored: HashMap<MarkKey, Option<Mark>>,
}

impl Writer {
    /// Brings what a crash left unwritten up to the ledger and holds it as the writer held it
    /// before the crash, visible to readers; nothing is written, so the open does not wait for
    /// the disk (the write-behind bounds keep the held rows as few as before).
    pub(super) async fn recover(&mut self) -> Result<(), StoreError> {
        self.read_tail().await?;
        self.held.publish_held_cells();
        if self.held.beyond_bounds() {
            // Not what a crash of this writer leaves (an earlier version's data directory, whose
            // whole index is read back): written now rather than held.
            self.flush_all().await;
        }
        Ok(())
    }

    /// Reads what the ledger tail holds that the tables do not (index entries, cells, outbox
    /// rows) into memory, writing nothing: all of recovery, and all a reader does.
    pub(super) async fn read_tail(&mut self) -> Result<(), StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(lsn), 0) FROM events")
            .fetch_one(&mut self.conn)
            .await?;
        self.held.next_lsn = last + 1;
        self.read_keys_written_max_at().await?;
        let from = Watermarks::read(&mut self.conn).await?;
        if last <= from.oldest() {
            return Ok(());
        }
        let started = Instant::now();
        let (records, ask_upto) = load_key_slices(&mut self.conn, from.keys).await?;
        let slice_records = records.len();
        let known = Known {
            watermark: from.keys,
            written: Written::new(&records),
            ask_upto,
        };
        let mut tail = Tail::new(from.oldest(), last, known);
        let mut marks = MarksReplay::default();
        // The position each stored cell row is written as of, for the skus the replay loaded.
        let mut row_lsns: HashMap<(Sku, Location), [i64; 5]> = HashMap::new();
        let mut replayed = 0usize;
        let mut clock = ReplayClock::default();
        loop {
            let Some(Page {
                events: page,
                read,
                decode,
                probe,
            }) = tail.next(&mut self.conn).await?
            else {
                break;
            };
            clock.probe += probe;
            (clock.read, clock.decode) = (clock.read + read, clock.decode + decode);
            let t = Instant::now();
            self.load_page_cells(&page, from.cells, &mut row_lsns)
                .await?;
            self.load_page_marks(&page, from.outbox, &mut marks).await?;
            clock.load += t.elapsed();
            let t = Instant::now();
            for ev in &page {
                // The index first: the cells re-base counts over it (only over entries before
                // the event, so pushing in position order is enough).
                if ev.lsn > from.keys && !ev.indexed {
                    self.replay_key(ev);
                }
                if ev.lsn > from.cells && ev.effective {
                    self.replay_cells(ev, &row_lsns).await?;
                }
                if ev.lsn > from.outbox && ev.effective && ev.marks_outbox() {
                    self.replay_marks(ev, &mut marks);
                }
            }
            clock.apply += t.elapsed();
            replayed += page.len();
        }
        let rows = self.mark_replayed(marks).await?;
        tracing::info!(
            events = replayed,
            keys_tail = last - from.keys,
            cells_tail = last - from.cells,
            outbox_tail = last - from.outbox,
            cells = self.held.cache.dirty_slots(),
            outbox = rows,
            slice_records,
            ms = started.elapsed().as_millis() as u64,
            probe_ms = clock.probe.as_millis() as u64,
            read_ms = clock.read.as_millis() as u64,
            decode_ms = clock.decode.as_millis() as u64,
            load_ms = clock.load.as_millis() as u64,
            apply_ms = clock.apply.as_millis() as u64,
            "replayed the ledger tail"
        );
        Ok(())
    }

    /// The index table's newest position (see `keys.rs`); a table written before it was kept is
    /// read once.
    async fn read_keys_written_max_at(&mut self) -> Result<(), StoreError> {
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
        Ok(())
    }

    /// Loads, in one go, the stored cells of the skus a page replays that are not cached yet.
    async fn load_page_cells(
        &mut self,
        page: &[TailEvent],
        watermark: i64,
        row_lsns: &mut HashMap<(Sku, Location), [i64; 5]>,
    ) -> Result<(), StoreError> {
        let missing: HashSet<&Sku> = page
            .iter()
            .filter(|e| e.lsn > watermark && e.effective && !self.held.cache.contains(&e.sku))
            .map(|e| &e.sku)
            .collect();
        let missing: Vec<&Sku> = missing.into_iter().collect();
        for (sku, cells, lsns) in load_skus(&mut self.conn, &missing).await? {
            for (slot, l) in cells.slots.iter().zip(lsns) {
                row_lsns.insert((sku.clone(), slot.loc.clone()), l);
            }
            self.held.cache.insert_loaded(sku, cells);
        }
        Ok(())
    }

    /// Loads, per channel in one go, the stored outbox rows a page's marking events start from.
    async fn load_page_marks(
        &mut self,
        page: &[TailEvent],
        watermark: i64,
        marks: &mut MarksReplay,
    ) -> Result<(), StoreError> {
        for (i, channel) in self.held.channels.iter().enumerate() {
            let missing: HashSet<&Sku> = page
                .iter()
                .filter(|e| e.lsn > watermark && e.effective && e.marks_outbox())
                .filter(|e| channel.feeds_from(&e.loc))
                .filter(|e| !marks.stored.contains_key(&(i, e.sku.clone())))
                .map(|e| &e.sku)
                .collect();
            if missing.is_empty() {
                continue;
            }
            let missing: Vec<&Sku> = missing.into_iter().collect();
            let found = load_marks(&mut self.conn, channel.id.as_str(), &missing).await?;
            for sku in missing {
                marks.stored.insert((i, sku.clone()), None);
            }
            for (sku, m) in found {
                marks.stored.insert((i, sku), Some(m));
            }
        }
        Ok(())
    }

    /// An event's index entry, back into the tail.
    fn replay_key(&self, ev: &TailEvent) {
        let entry = entry_of(ev.lsn, ev.key.clone(), ev.is_set, ev.effective, |s| {
            ev.base[s.index()]
        });
        self.held
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(&ev.sku, &ev.loc, entry);
    }

    /// An effective event's effects, applied again to its cells, in decision order, skipping the
    /// states whose stored row already holds it.
    async fn replay_cells(
        &mut self,
        ev: &TailEvent,
        row_lsns: &HashMap<(Sku, Location), [i64; 5]>,
    ) -> Result<(), StoreError> {
        let held = row_lsns
            .get(&(ev.sku.clone(), ev.loc.clone()))
            .copied()
            .unwrap_or([0; 5]);
        let mut base = StateMap::new();
        for s in State::ALL {
            if let Some(q) = ev.base[s.index()]
                && held[s.index()] < ev.lsn
            {
                base.insert(s, q);
            }
        }
        let cells = self.held.cache.replay_cells_mut(&ev.sku, &ev.loc);
        let effects = effects_of(ev.is_set, &ev.key, &base, cells);
        let later = Later {
            keys: &self.held.keys,
            pending: None,
            before: Some(ev.lsn),
        };
        let mask = apply_effects(&mut self.conn, cells, &effects, &later, &ev.sku, &ev.loc).await?;
        if mask != 0 {
            self.held.cache.mark_dirty(&ev.sku, &ev.loc, mask, ev.lsn);
        }
        Ok(())
    }

    /// A marking event, counted for each channel that sells from its location unless the stored
    /// row already counts it (`outbox.lsn`).
    fn replay_marks(&self, ev: &TailEvent, marks: &mut MarksReplay) {
        for (i, channel) in self.held.channels.iter().enumerate() {
            if !channel.feeds_from(&ev.loc) {
                continue;
            }
            let key = (i, ev.sku.clone());
            if marks
                .stored
                .get(&key)
                .is_some_and(|m| m.as_ref().is_some_and(|m| m.lsn >= ev.lsn))
            {
                continue;
            }
            let a = marks.acc.entry(key).or_insert(Counted {
                first: ev.lsn,
                newest: ev.lsn,
                events: 0,
                sample: None,
            });
            a.newest = ev.lsn;
            a.events += 1;
            if ev.outcome == Outcome::Applied {
                a.sample = Some((
                    ev.source.clone(),
                    ev.key.position.at_nanos,
                    ev.received_nanos,
                ));
            }
        }
    }

    /// Holds the outbox rows the replay counted: each replayed event adds a version, as it did
    /// when it was decided; the quantity is the channel's ATP now (the cells are replayed
    /// first). Returns how many rows.
    async fn mark_replayed(&mut self, replay: MarksReplay) -> Result<usize, StoreError> {
        let MarksReplay { acc, mut stored } = replay;
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
        for ((i, sku), counted) in acc {
            let c = &self.held.channels[i];
            let prior = stored.remove(&(i, sku.clone())).flatten();
            marks.mark(
                c.id.as_str(),
                &sku,
                prior,
                Change {
                    first: counted.first,
                    lsn: counted.newest,
                    events: counted.events,
                    now_nanos: now,
                    atp: self.held.cache.channel_atp(&sku, c),
                    sample: counted.sample,
                },
            );
        }
        Ok(n)
    }
}
