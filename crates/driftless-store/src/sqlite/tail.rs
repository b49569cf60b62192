//! Reading the ledger tail for the replay: pages of event rows after the oldest watermark, each
//! row with whether the index table holds its entry.
//!
//! A slice of the index is written in key order, so after its watermark some entries are in the
//! table and some are not. The slices' records answer that (see `keyslices.rs`). Only for
//! positions a version that kept no records may have indexed is the table asked, apart from the
//! pages, a window of positions at a time, in key order: asking row by row in position order was
//! a random descent of the index per row (see docs/performance.md, "The index's entries asked in
//! key order").

use super::keyslices::Written;
use crate::StoreError;
use driftless_core::{EventId, Location, OrderKey, Outcome, Position, Sku, State};
use sqlx::sqlite::SqliteConnection;
use std::time::{Duration, Instant};

/// Ledger positions per page of the tail.
const PAGE: i64 = 20_000;

/// Ledger positions whose index entries are asked for at once: a window sorted in key order
/// touches each index page about once; its size bounds the sort and the answer.
const WINDOW: i64 = 5 * PAGE;

/// One event row of the tail, decoded.
pub(super) struct TailEvent {
    pub lsn: i64,
    pub sku: Sku,
    pub loc: Location,
    pub key: OrderKey,
    pub source: String,
    pub received_nanos: i64,
    pub is_set: bool,
    pub effective: bool,
    pub outcome: Outcome,
    pub base: [Option<i64>; 5],
    /// Whether `event_keys` holds its entry (always, at or before the index's watermark).
    pub indexed: bool,
}

/// A tail row as the page's JSON holds it: `[[lsn, id, source, sku, location, at_nanos, seq,
/// received_nanos], is_set, outcome, effective, [on_hand, committed, reserved, incoming,
/// unavailable]]` (nested: serde reads tuples of at most 16).
type TailTuple = (
    (i64, String, String, String, String, i64, i64, i64),
    i64,
    String,
    i64,
    [Option<i64>; 5],
);

impl TailEvent {
    fn of_tuple(
        t: TailTuple,
        indexed: impl Fn(i64, &Sku) -> bool,
    ) -> Result<TailEvent, StoreError> {
        let (head, is_set, outcome, effective, quantities) = t;
        let (lsn, id, source, sku, location, at_nanos, seq, received_nanos) = head;
        // The columns in `State::ALL` order, as the statement lists them.
        let mut base = [None; 5];
        for (s, q) in State::ALL.into_iter().zip(quantities) {
            base[s.index()] = q;
        }
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
        let sku = Sku::parse(sku).map_err(|e| corrupt(&e))?;
        Ok(TailEvent {
            lsn,
            indexed: indexed(lsn, &sku),
            sku,
            loc: Location::parse(location).map_err(|e| corrupt(&e))?,
            key: OrderKey {
                position: Position {
                    at_nanos,
                    seq: seq as u64,
                },
                id: EventId::parse(id).map_err(|e| corrupt(&format!("event id: {e}")))?,
            },
            source,
            received_nanos,
            is_set: is_set != 0,
            effective: effective != 0,
            outcome: outcome.parse().map_err(StoreError::Corrupt)?,
            base,
        })
    }

    /// Whether the event marks the outbox (the core's rule, as when deciding).
    pub fn marks_outbox(&self) -> bool {
        self.outcome.marks_outbox(self.effective)
    }
}

/// A page of the tail and what reading it cost.
pub(super) struct Page {
    pub events: Vec<TailEvent>,
    /// SQLite's part: the scan and the JSON text.
    pub read: Duration,
    pub decode: Duration,
    /// Asking the index table for the entries it holds (zero for most pages: once a window, and
    /// only for positions no slice record answers).
    pub probe: Duration,
}

/// The tail to replay: the positions after `from` up to `last`, in pages of `PAGE` positions.
struct Range {
    from: i64,
    last: i64,
}

/// What is known of the index after its watermark before any page is read.
pub(super) struct Known {
    /// Every entry up to here is in the table.
    pub watermark: i64,
    /// The slices written after it.
    pub written: Written,
    /// Entries up to here may be in the table with no record saying so (written by a version
    /// that kept none): the table is asked about them.
    pub ask_upto: i64,
}

impl Known {
    fn indexed(&self, lsn: i64, sku: &Sku, asked: &[i64]) -> bool {
        lsn <= self.watermark
            || self.written.holds(sku, lsn)
            || (lsn <= self.ask_upto && asked.binary_search(&lsn).is_ok())
    }
}

impl Range {
    fn pages(&self) -> i64 {
        // `i64::div_ceil` is not stable yet.
        ((self.last - self.from).max(0) + PAGE - 1) / PAGE
    }

    /// The positions of page `k`: after `.0`, up to `.1`.
    fn bounds(&self, k: i64) -> (i64, i64) {
        let lo = self.from + k * PAGE;
        (lo, (lo + PAGE).min(self.last))
    }

    /// The event rows after `lo` up to `hi`, in position order, each with `indexed(lsn)`.
    ///
    /// The page comes back as one JSON text: sqlx hands a row at a time from SQLite's thread to
    /// the runtime (a message, a wake-up and a copy of every value each), which was most of the
    /// CPU a replayed event cost; one value per page is one message.
    async fn page(
        conn: &mut SqliteConnection,
        (lo, hi): (i64, i64),
        indexed: impl Fn(i64, &Sku) -> bool,
    ) -> Result<Page, StoreError> {
        let t = Instant::now();
        let json: Option<String> = sqlx::query_scalar(
            "SELECT json_group_array(json_array(json_array(lsn, id, source, sku, location, \
             at_nanos, seq, received_nanos), kind = 'set', outcome, effective, \
             json_array(on_hand, committed, reserved, incoming, unavailable))) \
             FROM (SELECT * FROM events WHERE lsn > ?1 AND lsn <= ?2 ORDER BY lsn)",
        )
        .bind(lo)
        .bind(hi)
        .fetch_one(&mut *conn)
        .await?;
        let read = t.elapsed();
        let t = Instant::now();
        let tuples: Vec<TailTuple> = serde_json::from_str(json.as_deref().unwrap_or("[]"))
            .map_err(|e| StoreError::Corrupt(format!("ledger tail: {e}")))?;
        let mut events = tuples
            .into_iter()
            .map(|t| TailEvent::of_tuple(t, &indexed))
            .collect::<Result<Vec<_>, _>>()?;
        // The aggregate keeps the subquery's order in SQLite; sorting an ordered page is a pass.
        events.sort_by_key(|e| e.lsn);
        Ok(Page {
            events,
            read,
            decode: t.elapsed(),
            probe: Duration::ZERO,
        })
    }
}

/// The positions after `lo` up to `hi` whose entry the index table holds, sorted. The window's
/// keys are sorted first (by sku and location, which is most of the index's key), so the
/// lookups walk the index in its own order rather than descend it at random.
async fn indexed_in(conn: &mut SqliteConnection, lo: i64, hi: i64) -> Result<Vec<i64>, StoreError> {
    let json: Option<String> = sqlx::query_scalar(
        "WITH t AS MATERIALIZED (SELECT sku, location, at_nanos, seq, id, lsn FROM events \
         WHERE lsn > ?1 AND lsn <= ?2 ORDER BY sku, location) \
         SELECT json_group_array(lsn) FROM t WHERE EXISTS (SELECT 1 FROM event_keys x \
         WHERE x.sku = t.sku AND x.location = t.location AND x.at_nanos = t.at_nanos \
         AND x.seq = t.seq AND x.id = t.id AND x.lsn = t.lsn)",
    )
    .bind(lo)
    .bind(hi)
    .fetch_one(&mut *conn)
    .await?;
    let mut lsns: Vec<i64> = serde_json::from_str(json.as_deref().unwrap_or("[]"))
        .map_err(|e| StoreError::Corrupt(format!("index entries of the ledger tail: {e}")))?;
    lsns.sort_unstable();
    Ok(lsns)
}

/// The tail's pages, in order, read on the replay's own connection: the replay sees one snapshot.
pub(super) struct Tail {
    range: Range,
    known: Known,
    next: i64,
    /// The positions after the index's watermark, up to `asked`, whose entry the table holds.
    indexed: Vec<i64>,
    asked: i64,
}

impl Tail {
    /// The tail after `from` up to `last`, with what is known of the index.
    pub fn new(from: i64, last: i64, known: Known) -> Tail {
        Tail {
            range: Range { from, last },
            next: 0,
            indexed: Vec::new(),
            asked: known.watermark,
            known,
        }
    }

    /// The next page, or `None` past the last.
    pub async fn next(&mut self, conn: &mut SqliteConnection) -> Result<Option<Page>, StoreError> {
        if self.next >= self.range.pages() {
            return Ok(None);
        }
        let (lo, hi) = self.range.bounds(self.next);
        self.next += 1;
        let mut probe = Duration::ZERO;
        let limit = self.range.last.min(self.known.ask_upto);
        if hi > self.asked && self.asked < limit {
            // A window starts at a page, so it covers its pages whole.
            let t = Instant::now();
            let end = (lo + WINDOW).min(limit);
            self.indexed = indexed_in(conn, lo.max(self.asked), end).await?;
            self.asked = end;
            probe = t.elapsed();
        }
        let (known, asked) = (&self.known, &self.indexed);
        let indexed = |lsn: i64, sku: &Sku| known.indexed(lsn, sku, asked);
        let page = Range::page(conn, (lo, hi), indexed).await?;
        Ok(Some(Page { probe, ..page }))
    }
}
