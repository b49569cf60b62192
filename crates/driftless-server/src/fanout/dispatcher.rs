//! The per-channel dispatcher: it holds the channel's lease, follows the durable outbox with a
//! cursor, and starts pushes of the latest quantities within the channel's slots, rate limit and
//! pauses.

use super::record::record_loop;
use super::{FanoutOptions, LEASE_RETRY, batches};
use chrono::{DateTime, Utc};
use driftless_config::ChannelConfig;
use driftless_connectors::{Connector, Failure, Push, PushOutcome};
use driftless_core::Sku;
use driftless_store::Store;
use driftless_store::outbox::{
    ChannelLease, FROM_THE_START, OutboxRow, PushRecord, Scan, ScanFrom, WAKE_ONLY,
};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{Semaphore, mpsc, watch};

/// Resolves when a held lease is lost; never without one.
async fn lease_lost(lease: &mut Option<ChannelLease>) {
    match lease {
        Some(l) => l.lost().await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Unsettled {
    pub(super) batches: u32,
    pub(super) acked: Option<(i64, i64)>,
}

pub(super) struct Done {
    pub(super) row: OutboxRow,
    /// The version and quantity pushed (a pinned push repeats an older pair).
    pub(super) version: i64,
    pub(super) quantity: i64,
    pub(super) outcome: PushOutcome,
    pub(super) at: DateTime<Utc>,
}

pub(super) struct Dispatcher {
    pub(super) cfg: ChannelConfig,
    pub(super) store: Arc<dyn Store>,
    conn: Arc<dyn Connector>,
    pub(super) opts: Arc<FanoutOptions>,
    pub(super) sla: Duration,
    cursor: (i64, Option<Sku>),
    pub(super) inflight: HashSet<Sku>,
    /// Skus seen dirty while a push of them was in flight...
    skipped: HashSet<Sku>,
    /// ...to be read again once it completed.
    recheck: HashSet<Sku>,
    /// Retries by due time (nanoseconds), and the due time of each sku.
    retry_queue: BTreeSet<(i64, Sku)>,
    retry_at: HashMap<Sku, i64>,
    /// Consecutive compare failures per sku, so a channel that always refuses cannot loop us.
    pub(super) cas_streak: HashMap<Sku, u32>,
    /// Per sku throttled since its last other answer: since when, and how many times.
    pub(super) throttled: HashMap<Sku, (Instant, u32)>,
    pub(super) paused_until: Option<Instant>,
    tokens: f64,
    tokens_at: Instant,
    sem: Arc<Semaphore>,
    concurrency: usize,
    rate: Option<u32>,
    /// Pushes per request (1: the contract's single shape).
    batch_size: usize,
    /// One message per request: the results of all its pushes.
    done_tx: mpsc::Sender<Vec<Done>>,
    done_rx: mpsc::Receiver<Vec<Done>>,
    /// Skus whose results are on their way to the store, with how many batches are and the
    /// newest acknowledgement among them `(version, quantity)`. An acknowledged sku may be pushed
    /// again at once (its next compare value is known here); any other result waits until stored.
    pub(super) unsettled: HashMap<Sku, Unsettled>,
    pub(super) records_tx: Option<mpsc::Sender<(Vec<PushRecord>, Vec<Sku>)>>,
    /// Where push results are counted for `/metrics` (left out by tests that build a dispatcher).
    pub(super) metrics: Option<Arc<crate::metrics::Metrics>>,
}

fn now_nanos() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl Dispatcher {
    pub(super) fn new(
        cfg: ChannelConfig,
        store: Arc<dyn Store>,
        conn: Arc<dyn Connector>,
        opts: &Arc<FanoutOptions>,
        sla: Duration,
    ) -> Dispatcher {
        // The channel's own limits win over the hub-wide defaults.
        let concurrency = cfg
            .concurrency
            .map_or(opts.concurrency, |c| c as usize)
            .clamp(1, 1024);
        let rate = cfg.rate_limit.or(opts.rate_per_second);
        let cfg_batch = cfg.batch_size;
        let (done_tx, done_rx) = mpsc::channel(concurrency * 2);
        Dispatcher {
            cfg,
            store,
            conn,
            opts: opts.clone(),
            sla,
            cursor: (i64::MIN, None),
            inflight: HashSet::new(),
            skipped: HashSet::new(),
            recheck: HashSet::new(),
            retry_queue: BTreeSet::new(),
            retry_at: HashMap::new(),
            cas_streak: HashMap::new(),
            throttled: HashMap::new(),
            paused_until: None,
            tokens: 0.0,
            tokens_at: Instant::now(),
            sem: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            rate,
            batch_size: (cfg_batch as usize).max(1),
            done_tx,
            done_rx,
            unsettled: HashMap::new(),
            records_tx: None,
            metrics: None,
        }
    }

    pub(super) fn id(&self) -> &str {
        self.cfg.spec.id.as_str()
    }

    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Results are written by a recorder task so that waiting for the ledger's write lock never
        // holds up the next pushes.
        let (records_tx, records_rx) = mpsc::channel(64);
        // Unbounded but bounded in practice by the pushes in flight: each message names skus
        // that were pushed.
        let (settled_tx, mut settled_rx) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_loop(
            self.store.clone(),
            self.metrics.clone(),
            self.id().to_owned(),
            records_rx,
            settled_tx,
        ));
        self.records_tx = Some(records_tx);
        let mut last_rescan = Instant::now();
        let mut last_sweep = Instant::now();
        let mut last_maintain = Instant::now();
        let mut changes = self.store.outbox_changes();
        // A store that stopped telling (closing) leaves the poll interval.
        let mut changes_open = true;
        // The right to push this channel: one process at a time among every hub on the ledger.
        let mut lease: Option<ChannelLease> = None;
        let mut lease_try = Instant::now();
        loop {
            let mut done = Vec::new();
            while let Ok(d) = self.done_rx.try_recv() {
                done.extend(d);
            }
            if !done.is_empty() {
                self.settle(done).await;
            }
            if *stop.borrow() {
                break;
            }
            if !self.hold_lease(&mut lease, &mut lease_try).await {
                // Another process pushes this channel; results of pushes this one started
                // before it lost the lease are still recorded.
                tokio::select! {
                    _ = stop.changed() => {}
                    Some(m) = settled_rx.recv() => self.settled(m),
                    Some(d) = self.done_rx.recv() => self.settle(d).await,
                    _ = tokio::time::sleep_until(lease_try.into()) => {}
                }
                continue;
            }
            if last_rescan.elapsed() >= self.opts.rescan_every {
                self.cursor = (i64::MIN, None);
                last_rescan = Instant::now();
            }
            if last_sweep.elapsed() >= self.opts.sweep_every {
                self.sweep().await;
                last_sweep = Instant::now();
            }
            if last_maintain.elapsed() >= Duration::from_secs(60) {
                if let Err(e) = self.store.outbox_maintain(self.id()).await {
                    tracing::warn!(channel = self.id(), error = %e, "trimming the push log failed");
                }
                last_maintain = Instant::now();
            }
            while let Ok(m) = settled_rx.try_recv() {
                self.settled(m);
            }
            // Taken before reading: a commit from here on wakes the wait below, so a change that
            // lands during the scan is not left for the safety timer.
            loop {
                match changes.try_recv() {
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Closed) => {
                        changes_open = false;
                        break;
                    }
                    // A receiver that fell behind may have missed any floor.
                    r => self.rewind(r.unwrap_or(FROM_THE_START)),
                }
            }
            let busy = self.dispatch().await;
            let wait = if busy {
                Duration::ZERO
            } else {
                self.idle_wait()
            };
            tokio::select! {
                _ = stop.changed() => {}
                Some(m) = settled_rx.recv() => self.settled(m),
                d = self.done_rx.recv() => {
                    if let Some(d) = d {
                        // Record everything that finished meanwhile in the same transaction.
                        let mut done = d;
                        while let Ok(x) = self.done_rx.try_recv() {
                            done.extend(x);
                        }
                        self.settle(done).await;
                    }
                }
                r = changes.recv(), if changes_open => match r {
                    Err(RecvError::Closed) => changes_open = false,
                    r => self.rewind(r.unwrap_or(FROM_THE_START)),
                },
                _ = lease_lost(&mut lease) => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Let in-flight pushes finish and record them: an unrecorded acknowledgement would only
        // cause an idempotent re-push after restart, but recording it is cheaper.
        let all = self.concurrency as u32;
        let _ = self.sem.acquire_many(all).await;
        let mut done = Vec::new();
        while let Ok(d) = self.done_rx.try_recv() {
            done.extend(d);
        }
        self.settle(done).await;
        self.records_tx = None;
        let _ = recorder.await;
    }

    /// Whether this process may push the channel now: keeps a held lease, notices a lost one
    /// (and stops pushing at once), and asks for it again every [`LEASE_RETRY`] while another
    /// process holds it. A lease taken (again) starts the cursor over: the other process may
    /// have left rows dirty anywhere.
    async fn hold_lease(&mut self, lease: &mut Option<ChannelLease>, next: &mut Instant) -> bool {
        if lease.as_ref().is_some_and(ChannelLease::is_held) {
            return true;
        }
        if lease.take().is_some() {
            tracing::warn!(
                channel = self.id(),
                "lost this channel's lease; another hub may push it now"
            );
        }
        if Instant::now() < *next {
            return false;
        }
        *next = Instant::now() + LEASE_RETRY;
        match self.store.channel_lease(self.id()).await {
            Ok(Some(l)) => {
                tracing::info!(channel = self.id(), "this hub pushes the channel");
                self.cursor = (i64::MIN, None);
                *lease = Some(l);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(channel = self.id(), error = %e, "cannot ask for the channel's lease; retrying");
                false
            }
        }
    }

    fn settled(&mut self, (skus, again): (Vec<Sku>, Vec<Sku>)) {
        for s in skus {
            if let Some(u) = self.unsettled.get_mut(&s) {
                u.batches = u.batches.saturating_sub(1);
                if u.batches == 0 {
                    self.unsettled.remove(&s);
                }
            }
            if self.skipped.remove(&s) {
                self.recheck.insert(s);
            }
        }
        self.recheck.extend(again);
    }

    /// A committed write may have made rows dirty at `floor` or later (see
    /// [`driftless_store::outbox::OutboxSignal`]): a cursor already past it reads from there
    /// again, or such a row would wait for the next full rescan.
    fn rewind(&mut self, floor: i64) {
        if floor != WAKE_ONLY && (floor, None) < self.cursor {
            self.cursor = (floor, None);
        }
    }

    fn free(&self) -> usize {
        self.sem.available_permits()
    }

    /// How long to sleep when nothing was started: until the poll interval, or, with a slot free,
    /// sooner when the rate limit has a request again (it may be all that held the round back) or
    /// a retry comes due (a finishing push wakes the loop anyway); but not before a pause or the
    /// rate limit would let anything go.
    fn idle_wait(&self) -> Duration {
        let mut wait = self.opts.poll;
        if self.free() > 0 {
            if let Some(t) = self.token_wait() {
                wait = wait.min(t);
            }
            if let Some((due, _)) = self.retry_queue.first() {
                let ns = due.saturating_sub(now_nanos()).max(0);
                wait = wait.min(Duration::from_nanos(ns.unsigned_abs()));
            }
        }
        if let Some(p) = self.paused_until {
            wait = wait.max(p.saturating_duration_since(Instant::now()));
        }
        if let Some(t) = self.token_wait() {
            wait = wait.max(t);
        }
        // Never a busy loop, whatever the clocks say.
        wait.max(Duration::from_millis(1))
    }

    /// The rate limit (requests a second) and the requests it has to spend now, refilled since
    /// the last spend up to a one-second burst; `None` without a limit.
    fn budget(&self) -> Option<(f64, f64)> {
        let rate = f64::from(self.rate.filter(|r| *r > 0)?);
        let have = (self.tokens + self.tokens_at.elapsed().as_secs_f64() * rate).min(rate);
        Some((rate, have))
    }

    /// Time until the rate limit has a request to spend, if it has none now.
    fn token_wait(&self) -> Option<Duration> {
        let (rate, have) = self.budget()?;
        (have < 1.0).then(|| Duration::from_secs_f64((1.0 - have) / rate))
    }

    fn due_retries(&mut self, now: i64, limit: usize) -> Vec<Sku> {
        let mut due = Vec::new();
        while due.len() < limit {
            match self.retry_queue.first() {
                Some((t, _)) if *t <= now => {
                    if let Some((_, s)) = self.retry_queue.pop_first() {
                        self.retry_at.remove(&s);
                        due.push(s);
                    }
                }
                _ => break,
            }
        }
        due
    }

    pub(super) fn retry(&mut self, sku: Sku, at: i64) {
        if let Some(old) = self.retry_at.insert(sku.clone(), at) {
            self.retry_queue.remove(&(old, sku.clone()));
        }
        self.retry_queue.insert((at, sku));
    }

    /// Starts as many requests as slots, rate limit and pause allow. `true` if it started any.
    /// Reads only as many rows as the free slots can carry (`batch_size` each): a row read ahead
    /// would go stale while newer versions arrive.
    async fn dispatch(&mut self) -> bool {
        if let Some(p) = self.paused_until {
            if Instant::now() < p {
                return false;
            }
            self.paused_until = None;
        }
        // Requests that can start now: free slots within the rate limit's budget. Rows are read
        // only for those; a row read and not started would go to the retry queue behind the
        // others, and the line's order would be lost to a rotation.
        let free = self.free();
        let starts = self
            .budget()
            .map_or(free, |(_, have)| free.min(have.max(0.0) as usize));
        if starts == 0 {
            return false;
        }
        let now = now_nanos();
        let capacity = starts
            .saturating_mul(self.batch_size)
            .min(driftless_store::outbox::MAX_SCAN);
        // Due retries and rechecks first: they are the oldest changes.
        // Bounded by one scan; the rest waits for the next round.
        let mut targeted: Vec<Sku> = self.recheck.drain().collect();
        if targeted.len() > driftless_store::outbox::MAX_SCAN {
            self.recheck
                .extend(targeted.split_off(driftless_store::outbox::MAX_SCAN));
        }
        let room = driftless_store::outbox::MAX_SCAN - targeted.len();
        targeted.extend(self.due_retries(now, capacity.min(room)));
        let mut rows = Vec::new();
        if !targeted.is_empty() {
            let n = targeted.len();
            rows.extend(self.scan(ScanFrom::Skus(targeted), n).await);
        }
        let scanned = self
            .scan(
                ScanFrom::After(self.cursor.0, self.cursor.1.clone()),
                capacity,
            )
            .await;
        if let Some(last) = scanned.last() {
            self.cursor = (last.changed_nanos, Some(last.sku.clone()));
        }
        rows.extend(scanned);
        // A sku read twice keeps its later reading: the cursor scan runs after the targeted one,
        // and dropping its newer version would lose it behind the cursor.
        let mut last: HashMap<Sku, usize> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            last.insert(r.sku.clone(), i);
        }
        let rows: Vec<OutboxRow> = rows
            .into_iter()
            .enumerate()
            .filter(|(i, r)| last.get(&r.sku) == Some(i))
            .map(|(_, r)| r)
            .collect();
        let mut ready = Vec::new();
        for mut row in rows {
            if self.inflight.contains(&row.sku) {
                self.recheck_later(row.sku);
                continue;
            }
            match self.unsettled.get(&row.sku) {
                None => {}
                Some(Unsettled { acked: None, .. }) => {
                    self.recheck_later(row.sku);
                    continue;
                }
                Some(Unsettled {
                    acked: Some((v, q)),
                    ..
                }) => {
                    if row.version <= *v {
                        // Already delivered; the store will clean the row.
                        self.recheck_later(row.sku);
                        continue;
                    }
                    // The row still shows the state before that acknowledgement.
                    row.basis = Some(*q);
                    row.pinned = None;
                    row.attempts = 0;
                    row.next_attempt_nanos = 0;
                    row.dead_version = None;
                }
            }
            if !row.dirty || row.held || row.dead_version == Some(row.version) {
                continue;
            }
            if row.next_attempt_nanos > now {
                self.retry(row.sku.clone(), row.next_attempt_nanos);
                continue;
            }
            ready.push(row);
        }
        let mut started = false;
        for batch in batches(ready, self.batch_size) {
            // Out of rate budget or slots: due again at once, read again next round.
            if !self.take_token() {
                for row in batch {
                    self.retry(row.sku, now);
                }
                continue;
            }
            let Ok(permit) = self.sem.clone().try_acquire_owned() else {
                for row in batch {
                    self.retry(row.sku, now);
                }
                continue;
            };
            started = true;
            self.start(batch, permit);
        }
        started
    }

    fn recheck_later(&mut self, sku: Sku) {
        self.skipped.insert(sku);
    }

    fn take_token(&mut self) -> bool {
        let Some((_, have)) = self.budget() else {
            return true;
        };
        self.tokens_at = Instant::now();
        self.tokens = have;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    async fn scan(&self, from: ScanFrom, limit: usize) -> Vec<OutboxRow> {
        let scan = Scan {
            channel: self.id().to_owned(),
            locations: self.cfg.spec.locations.clone(),
            from,
            limit,
        };
        match self.store.outbox_scan(&scan).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(channel = self.id(), error = %e, "reading the outbox failed");
                Vec::new()
            }
        }
    }

    /// Sends one request: a single push, or a batch of pushes of distinct skus.
    fn start(&mut self, rows: Vec<OutboxRow>, permit: tokio::sync::OwnedSemaphorePermit) {
        let mut pushes = Vec::with_capacity(rows.len());
        let mut sent = Vec::with_capacity(rows.len());
        for row in rows {
            let latest = self.cfg.spec.quantity(&row.sku, row.atp);
            // A push in doubt is repeated exactly (same key) before anything newer goes out.
            let (version, quantity) = row.pinned.unwrap_or((row.version, latest));
            pushes.push(Push {
                channel: self.id().to_owned(),
                sku: row.sku.to_string(),
                quantity,
                compare: row.basis,
                idempotency_key: driftless_connectors::idempotency_key(
                    self.id(),
                    row.sku.as_str(),
                    version,
                    quantity,
                    row.basis,
                ),
            });
            self.inflight.insert(row.sku.clone());
            sent.push((row, version, quantity));
        }
        let conn = self.conn.clone();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let mut outcomes = conn.push_batch(&pushes).await;
            let at = Utc::now();
            // A connector owes one outcome per push; one that answered fewer may still have
            // applied them, so the missing ones are in doubt.
            outcomes.resize(
                pushes.len(),
                PushOutcome::Failed(Failure::retry("the connector gave no outcome")),
            );
            let done = sent
                .into_iter()
                .zip(outcomes)
                .map(|((row, version, quantity), outcome)| Done {
                    row,
                    version,
                    quantity,
                    outcome,
                    at,
                })
                .collect();
            // The permit is released after the results are queued, so `stop` waiting for every
            // permit also waits for every result.
            let _ = tx.send(done).await;
            drop(permit);
        });
    }
}
