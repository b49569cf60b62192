//! Fan-out: one dispatcher task per channel, started with the server and stopped before the store
//! closes. A dispatcher follows the durable outbox with a cursor, pushes the *latest* quantity of
//! each dirty sku through the channel's connector (so a burst of changes to one sku becomes one
//! push), and records every result in the store; nothing about a push lives only in memory, so a
//! restart resumes where the last one stopped.
//!
//! A dispatcher sleeps until the store says a commit marked outbox rows dirty (or recorded push
//! results), a push finishes, a retry comes due, or the poll interval passes (a safety net: the
//! wake-up is a hint, the outbox rows are the truth). With `batch_size` above 1 the rows ready at
//! a wake-up go out in requests of up to that many pushes; a batch never waits to fill, so it
//! adds no latency, and batches grow by themselves when the channel is busy. Every push of a batch
//! keeps its own key, compare value and outcome.
//!
//! Per push: the compare value is what the hub last saw acknowledged (or what a compare failure
//! reported), the idempotency key is derived from `(channel, sku, version, quantity, compare)` so a
//! retry after a lost answer is recognised by the channel. Failures (transport errors, 5xx, other
//! 4xx, repeated compare failures) back off exponentially with jitter, and `max_attempts` of them
//! (or one answer that says the request itself is wrong) move the sku to the dead-letter list
//! until replayed or superseded by a newer version. Throttling (429, 503 with `Retry-After`,
//! Shopify's `THROTTLED`) pauses the whole channel as long as it was told and spends no attempt;
//! only `throttle_budget` bounds it. A compare failure, or an observation that differs from the last acknowledged push for
//! longer than the hop's SLA, is a `channel_override` incident and the channel's `on_override`
//! applies: `overwrite` pushes again against the observed value, `hold` stops pushing the sku.
//!
//! With several hubs on one ledger, a dispatcher pushes only while its process holds the
//! channel's lease ([`driftless_store::Outbox::channel_lease`]); the others ask again every
//! [`LEASE_RETRY`], so when the holder dies another takes over within seconds, and the one that
//! loses its lease stops pushing at once. One pusher per channel keeps compare-and-set order and
//! coalescing as they are with one hub.

use crate::AppState;
use chrono::{DateTime, Utc};
use driftless_config::{ChannelConfig, OnOverride, Settings};
use driftless_connectors::{ClientOptions, Connector, Endpoint, Failure, Push, PushOutcome};
use driftless_core::{ChannelSpec, Sku};
use driftless_store::outbox::{ChannelLease, OutboxRow, PushRecord, PushSample, Scan, ScanFrom};
use driftless_store::{Incident, Store};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

/// How often a hub that does not push a channel asks whether it may (another hub died).
const LEASE_RETRY: Duration = Duration::from_millis(1500);

/// Resolves when a held lease is lost; never without one.
async fn lease_lost(lease: &mut Option<ChannelLease>) {
    match lease {
        Some(l) => l.lost().await,
        None => std::future::pending().await,
    }
}

/// Reads a secret by environment variable name.
pub type EnvFn = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Knobs with production defaults; tests and the benchmark shorten them.
#[derive(Clone)]
pub struct FanoutOptions {
    /// Longest a dispatcher waits for a wake-up before it looks at the outbox anyway. Dispatchers
    /// wake on the store's change counter, so this only bounds the cost of a missed hint.
    pub poll: Duration,
    /// First retry delay; doubles per attempt up to `max_backoff`, with jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a push may be throttled (HTTP 429, 503 with `Retry-After`, Shopify's
    /// `THROTTLED`) before it goes to the dead-letter list. Throttling spends no attempts: the
    /// channel is up and said when to come back; this only bounds a channel that never lets a
    /// push through. Default 30 minutes, counted from the first throttle since the push last got
    /// another answer (in memory: a restart starts it again).
    pub throttle_budget: Duration,
    /// Requests in flight per channel, unless the channel sets `concurrency`.
    pub concurrency: usize,
    /// Requests started per second per channel unless the channel sets `rate_limit`; `None` for no
    /// limit.
    pub rate_per_second: Option<u32>,
    /// How often observations are checked against the SLA.
    pub sweep_every: Duration,
    /// Divergence tolerated when no hop to the channel states an SLA.
    pub default_sla: Duration,
    /// Full rescans of the outbox, a safety net behind the cursor.
    pub rescan_every: Duration,
    pub client: ClientOptions,
    /// Where connector secrets come from (the process environment by default).
    pub env: EnvFn,
    /// `false` leaves dispatchers off (tests of the HTTP surface alone).
    pub enabled: bool,
}

impl Default for FanoutOptions {
    fn default() -> Self {
        FanoutOptions {
            poll: Duration::from_millis(100),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            throttle_budget: Duration::from_secs(30 * 60),
            concurrency: 32,
            rate_per_second: None,
            sweep_every: Duration::from_secs(1),
            default_sla: Duration::from_secs(300),
            rescan_every: Duration::from_secs(30),
            client: ClientOptions::default(),
            env: Arc::new(|k| std::env::var(k).ok()),
            enabled: true,
        }
    }
}

impl std::fmt::Debug for FanoutOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutOptions")
            .field("poll", &self.poll)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// The running dispatchers.
#[derive(Debug)]
pub struct Fanout {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fanout {
    /// Starts one dispatcher per channel with a connector. A channel whose connector cannot be
    /// built (a missing secret) is reported and left out; the rest run.
    pub fn start(state: &AppState) -> (Fanout, Vec<String>) {
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut errors = Vec::new();
        let opts = state.fanout.clone();
        if !opts.enabled {
            return (Fanout { stop, tasks }, errors);
        }
        for c in &state.settings.channels {
            let env = opts.env.clone();
            let endpoint =
                match driftless_connectors::build(c, &state.settings, &opts.client, &move |k| {
                    env(k)
                }) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(error = %e, "channel not started");
                        errors.push(e.to_string());
                        continue;
                    }
                };
            let sla = sla_for(&state.settings, c.spec.id.as_str()).unwrap_or(opts.default_sla);
            match endpoint {
                Endpoint::None => {}
                Endpoint::Push(conn) => {
                    let mut d = Dispatcher::new(c.clone(), state.store.clone(), conn, &opts, sla);
                    d.metrics = Some(state.metrics.clone());
                    tasks.push(tokio::spawn(d.run(rx.clone())));
                }
                Endpoint::Snapshot(sink) => {
                    tasks.push(tokio::spawn(snapshot_loop(
                        c.spec.clone(),
                        state.store.clone(),
                        sink,
                        rx.clone(),
                    )));
                }
            }
        }
        (Fanout { stop, tasks }, errors)
    }

    /// Stops every dispatcher: in-flight pushes finish (bounded by the connector timeout) and their
    /// results are recorded before this returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Writes push results in batches, retrying until they are stored (losing one would lose an
/// attempt count or a dead letter; repeating one is harmless: every write is an upsert), then tells
/// the dispatcher which skus are settled.
async fn record_loop(
    store: Arc<dyn Store>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    channel: String,
    mut rx: mpsc::Receiver<(Vec<PushRecord>, Vec<Sku>)>,
    settled: mpsc::UnboundedSender<(Vec<Sku>, Vec<Sku>)>,
) {
    while let Some((mut records, mut skus)) = rx.recv().await {
        while records.len() < 4000 {
            match rx.try_recv() {
                Ok((r, s)) => {
                    records.extend(r);
                    skus.extend(s);
                }
                Err(_) => break,
            }
        }
        if let Some(m) = &metrics {
            m.pushes(&channel, &records);
        }
        let mut delay = Duration::from_millis(10);
        let again = loop {
            match store.outbox_record(&channel, &records).await {
                Ok(again) => break again,
                Err(e) => {
                    tracing::warn!(channel = %channel, error = %e, "recording push results failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        };
        let _ = settled.send((skus, again));
    }
}

/// The tightest SLA of the hops that end at this channel.
pub fn sla_for(s: &Settings, channel: &str) -> Option<Duration> {
    s.hops
        .iter()
        .filter(|h| h.to.as_str() == channel)
        .map(|h| h.latency_sla)
        .min()
}

/// Splits the ready rows into requests of at most `max` pushes, as even as possible (250 rows at
/// 100 become 84 + 83 + 83, not 100 + 100 + 50), so that no request waits on an oversized one.
fn batches<T>(rows: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let n = rows.len();
    if n == 0 {
        return Vec::new();
    }
    let k = n.div_ceil(max.max(1));
    let (base, extra) = (n / k, n % k);
    let mut it = rows.into_iter();
    (0..k)
        .map(|i| it.by_ref().take(base + usize::from(i < extra)).collect())
        .collect()
}

/// Exponential backoff with "equal jitter": half the delay is fixed (so retries do spread out),
/// half random (so a fleet of failed pushes does not retry in lockstep).
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(max);
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

#[derive(Debug, Clone, Copy)]
struct Unsettled {
    batches: u32,
    acked: Option<(i64, i64)>,
}

struct Done {
    row: OutboxRow,
    /// The version and quantity pushed (a pinned push repeats an older pair).
    version: i64,
    quantity: i64,
    outcome: PushOutcome,
    at: DateTime<Utc>,
}

struct Dispatcher {
    cfg: ChannelConfig,
    store: Arc<dyn Store>,
    conn: Arc<dyn Connector>,
    opts: Arc<FanoutOptions>,
    sla: Duration,
    cursor: (i64, Option<Sku>),
    inflight: HashSet<Sku>,
    /// Skus seen dirty while a push of them was in flight...
    skipped: HashSet<Sku>,
    /// ...to be read again once it completed.
    recheck: HashSet<Sku>,
    /// Retries by due time (nanoseconds), and the due time of each sku.
    retry_queue: BTreeSet<(i64, Sku)>,
    retry_at: HashMap<Sku, i64>,
    /// Consecutive compare failures per sku, so a channel that always refuses cannot loop us.
    cas_streak: HashMap<Sku, u32>,
    /// Per sku throttled since its last other answer: since when, and how many times.
    throttled: HashMap<Sku, (Instant, u32)>,
    paused_until: Option<Instant>,
    /// The last round had free slots and read nothing, for want of the rate limit's budget: the
    /// next one is due when the budget is.
    rate_bound: bool,
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
    unsettled: HashMap<Sku, Unsettled>,
    records_tx: Option<mpsc::Sender<(Vec<PushRecord>, Vec<Sku>)>>,
    /// Where push results are counted for `/metrics` (left out by tests that build a dispatcher).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

fn now_nanos() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl Dispatcher {
    fn new(
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
            rate_bound: false,
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

    fn id(&self) -> &str {
        self.cfg.spec.id.as_str()
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
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
        // A store that stopped counting (closing) leaves the poll interval.
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
            // Seen before reading: a commit from here on wakes the wait below, so a change that
            // lands during the scan is not left for the safety timer.
            changes.borrow_and_update();
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
                r = changes.changed(), if changes_open => changes_open = r.is_ok(),
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

    fn free(&self) -> usize {
        self.sem.available_permits()
    }

    /// How long to sleep when nothing was started: until the poll interval, or sooner if a retry
    /// comes due and a slot is free or the rate limit was all that held the round back (a
    /// finishing push wakes the loop anyway), but not before a pause or the rate limit would let
    /// anything go.
    fn idle_wait(&self) -> Duration {
        let mut wait = self.opts.poll;
        if self.rate_bound
            && let Some(t) = self.token_wait()
        {
            wait = wait.min(t);
        }
        if self.free() > 0
            && let Some((due, _)) = self.retry_queue.first()
        {
            let ns = due.saturating_sub(now_nanos()).max(0);
            wait = wait.min(Duration::from_nanos(ns.unsigned_abs()));
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

    /// Whole requests the rate limit lets go now; `None` without a limit.
    fn tokens_now(&self) -> Option<usize> {
        let rate = f64::from(self.rate.filter(|r| *r > 0)?);
        let have = (self.tokens + self.tokens_at.elapsed().as_secs_f64() * rate).min(rate);
        Some(have.max(0.0) as usize)
    }

    /// Time until the rate limit has a request to spend, if it has none now.
    fn token_wait(&self) -> Option<Duration> {
        let rate = f64::from(self.rate.filter(|r| *r > 0)?);
        let have = (self.tokens + self.tokens_at.elapsed().as_secs_f64() * rate).min(rate);
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

    fn retry(&mut self, sku: Sku, at: i64) {
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
        let starts = self.tokens_now().map_or(free, |t| free.min(t));
        self.rate_bound = free > 0 && starts == 0;
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
        let Some(rate) = self.rate.filter(|r| *r > 0) else {
            return true;
        };
        let rate = f64::from(rate);
        let el = self.tokens_at.elapsed().as_secs_f64();
        self.tokens_at = Instant::now();
        // A one-second burst at most.
        self.tokens = (self.tokens + el * rate).min(rate);
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

    /// Records a batch of results in one transaction and updates the in-memory schedule.
    async fn settle(&mut self, done: Vec<Done>) {
        let mut records = Vec::with_capacity(done.len());
        let mut skus = Vec::with_capacity(done.len());
        let mut acks: Vec<Option<(i64, i64)>> = Vec::with_capacity(done.len());
        let channel = self.id().to_owned();
        for d in done {
            acks.push(matches!(d.outcome, PushOutcome::Acked).then_some((d.version, d.quantity)));
            let sku = d.row.sku.clone();
            self.inflight.remove(&sku);
            if !matches!(d.outcome, PushOutcome::RetryAfter(_)) {
                self.throttled.remove(&sku);
            }
            match d.outcome.clone() {
                PushOutcome::Acked => {
                    self.cas_streak.remove(&sku);
                    records.push(PushRecord::Acked {
                        sku: sku.clone(),
                        version: d.version,
                        quantity: d.quantity,
                        at: d.at,
                        sample: PushSample {
                            channel: channel.clone(),
                            source: d.row.source.clone(),
                            occurred_nanos: d.row.occurred_nanos,
                            received_nanos: d.row.received_nanos,
                            changed_nanos: d.row.changed_nanos,
                            acked_nanos: d.at.timestamp_nanos_opt().unwrap_or(i64::MAX),
                        },
                    });
                }
                PushOutcome::CompareFailed { current, actor } => {
                    records.extend(self.compare_failed(&d, current, actor.as_deref()));
                }
                PushOutcome::RetryAfter(told) => records.push(self.throttle(&d, told)),
                PushOutcome::Failed(f) => {
                    // A timeout, a dropped connection or a 5xx may have been applied: pin it.
                    let pin = if f.in_doubt {
                        Some((d.version, d.quantity))
                    } else {
                        d.row.pinned
                    };
                    records.push(self.failed(&d, f.message, f.retryable, pin));
                }
            }
            skus.push(sku);
        }
        if records.is_empty() {
            return;
        }
        for (s, ack) in skus.iter().zip(&acks) {
            let u = self.unsettled.entry(s.clone()).or_insert(Unsettled {
                batches: 0,
                acked: None,
            });
            u.batches += 1;
            // A later non-acknowledgement (a failure after an ack) must wait to be stored.
            u.acked = match (ack, u.acked) {
                (Some(a), Some(b)) if b.0 > a.0 => Some(b),
                (Some(a), _) => Some(*a),
                (None, _) => None,
            };
        }
        if let Some(tx) = &self.records_tx
            && tx.send((records, skus)).await.is_err()
        {
            tracing::error!(channel = %channel, "the recorder stopped; push results not recorded");
        }
    }

    fn failed(
        &mut self,
        d: &Done,
        message: String,
        retryable: bool,
        pinned: Option<(i64, i64)>,
    ) -> PushRecord {
        let row = &d.row;
        let attempts = row.attempts.saturating_add(1);
        let dead = !retryable || attempts >= self.cfg.max_attempts;
        let wait = backoff(attempts, self.opts.base_backoff, self.opts.max_backoff);
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if !dead {
            self.retry(
                row.sku.clone(),
                next.timestamp_nanos_opt().unwrap_or(i64::MAX),
            );
        }
        let incident = dead.then(|| self.dead_letter(&row.sku, d.version, attempts, &message));
        PushRecord::Failed {
            sku: row.sku.clone(),
            version: row.version,
            pinned,
            attempts,
            next_attempt: next,
            error: message,
            dead: incident,
        }
    }

    /// The channel throttled the push (it refused before applying: nothing new is in doubt). It
    /// waits as told, or with backoff when the channel named no wait (or `0`, which would otherwise
    /// hammer it), pausing the whole channel, and spends no attempt; once the push has been
    /// throttled for longer than `throttle_budget` it goes to the dead-letter list.
    fn throttle(&mut self, d: &Done, told: Duration) -> PushRecord {
        let sku = &d.row.sku;
        let now = Instant::now();
        let (since, times) = {
            let t = self.throttled.entry(sku.clone()).or_insert((now, 0));
            t.1 = t.1.saturating_add(1);
            *t
        };
        let spent = now.saturating_duration_since(since);
        let budget = self.opts.throttle_budget;
        if spent >= budget {
            self.throttled.remove(sku);
            let msg = format!(
                "the channel throttled it {times} times over {:.1}s, longer than the {:.1}s budget",
                spent.as_secs_f64(),
                budget.as_secs_f64()
            );
            return self.failed(d, msg, false, d.row.pinned);
        }
        let wait = if told.is_zero() {
            backoff(times, self.opts.base_backoff, self.opts.max_backoff)
        } else {
            told
        }
        .min(budget - spent);
        let until = now + wait;
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        self.retry(sku.clone(), next.timestamp_nanos_opt().unwrap_or(i64::MAX));
        PushRecord::Failed {
            sku: sku.clone(),
            version: d.row.version,
            pinned: d.row.pinned,
            // Throttling spends no attempt.
            attempts: d.row.attempts,
            next_attempt: next,
            error: format!(
                "throttled by the channel ({times} time(s) in {:.1}s); retrying in {}ms",
                spent.as_secs_f64(),
                wait.as_millis()
            ),
            dead: None,
        }
    }

    /// A compare failure. The first of a streak is an override: an incident, the channel's
    /// `on_override` policy, and (overwrite) a push again at once against the value the channel
    /// reported. Every compare failure counts as a failed attempt, and one that continues a streak
    /// (no acknowledgement since the last, and `attempts` not reset by a replay) moves the compare
    /// value without a new incident, backs off and dead-letters after `max_attempts`: a channel
    /// that refuses every compare, even against the value it reported, must not loop for ever.
    fn compare_failed(
        &mut self,
        d: &Done,
        current: Option<i64>,
        actor: Option<&str>,
    ) -> Vec<PushRecord> {
        let sku = d.row.sku.clone();
        let channel = self.id().to_owned();
        let attempts = d.row.attempts.saturating_add(1);
        let streak = self.cas_streak.entry(sku.clone()).or_default();
        // After a restart the streak is unknown: the next refusal is taken as the first again,
        // but `attempts` was stored, so the one after it still dead-letters.
        let first = *streak == 0 || d.row.attempts == 0;
        *streak = if first { 1 } else { streak.saturating_add(1) };
        let streak = *streak;
        let show =
            |v: Option<i64>| v.map_or_else(|| "an unknown value".to_owned(), |v| v.to_string());
        if first {
            let hold = self.cfg.on_override == OnOverride::Hold;
            let incident = override_incident(
                &channel,
                &sku,
                d.row.basis,
                current,
                actor,
                d.quantity,
                hold,
                "the channel refused the compare-and-set",
                d.at,
            );
            return vec![
                PushRecord::Rebased {
                    sku: sku.clone(),
                    basis: current,
                    hold,
                    incident,
                },
                // Counts the refusal; due at once, as the policy says.
                PushRecord::Refused {
                    sku,
                    version: d.row.version,
                    basis: current,
                    attempts,
                    next_attempt: d.at,
                    error: format!(
                        "the channel refused the compare-and-set; it shows {}",
                        show(current)
                    ),
                    dead: None,
                },
            ];
        }
        let message = format!(
            "the channel refused the compare-and-set {streak} times in a row (it shows {}, \
             compared against {})",
            show(current),
            show(d.row.basis)
        );
        let dead = attempts >= self.cfg.max_attempts;
        let wait = backoff(attempts, self.opts.base_backoff, self.opts.max_backoff);
        let next = Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
        if dead {
            self.cas_streak.remove(&sku);
        } else {
            self.retry(sku.clone(), next.timestamp_nanos_opt().unwrap_or(i64::MAX));
        }
        let dead = dead.then(|| self.dead_letter(&sku, d.version, attempts, &message));
        vec![PushRecord::Refused {
            sku,
            version: d.row.version,
            basis: current,
            attempts,
            next_attempt: next,
            error: message,
            dead,
        }]
    }

    /// The incident of a push that gave up.
    fn dead_letter(&self, sku: &Sku, version: i64, attempts: u32, message: &str) -> Incident {
        Incident {
            kind: "dead_letter".into(),
            sku: Some(sku.clone()),
            location: None,
            system: Some(self.id().to_owned()),
            actor: None,
            event_id: None,
            detail: format!(
                "push of version {version} to channel `{}` gave up after {attempts} attempt(s): \
                 {message}; POST /v1/channels/{}/replay to retry",
                self.id(),
                self.id()
            ),
            at: Utc::now(),
        }
    }

    /// Observations that differ from the last acknowledged push for longer than the SLA.
    async fn sweep(&mut self) {
        let before = Utc::now() - chrono::Duration::from_std(self.sla).unwrap_or_default();
        let list = match self.store.divergences(self.id(), before, 500).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(channel = self.id(), error = %e, "reading observations failed");
                return;
            }
        };
        if list.is_empty() {
            return;
        }
        let hold = self.cfg.on_override == OnOverride::Hold;
        let channel = self.id().to_owned();
        let records: Vec<PushRecord> = list
            .into_iter()
            .map(|d| {
                let why = format!(
                    "the channel has reported {} since {} (longer than the {}s SLA)",
                    d.observed,
                    d.since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    self.sla.as_secs_f64()
                );
                PushRecord::Rebased {
                    sku: d.sku.clone(),
                    basis: Some(d.observed),
                    hold,
                    incident: override_incident(
                        &channel,
                        &d.sku,
                        d.acked_quantity,
                        Some(d.observed),
                        d.actor.as_deref(),
                        d.acked_quantity.unwrap_or(0),
                        hold,
                        &why,
                        d.since,
                    ),
                }
            })
            .collect();
        if let Err(e) = self.store.outbox_record(&channel, &records).await.map(drop) {
            tracing::warn!(channel = %channel, error = %e, "recording overrides failed");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn override_incident(
    channel: &str,
    sku: &Sku,
    expected: Option<i64>,
    current: Option<i64>,
    actor: Option<&str>,
    pushing: i64,
    hold: bool,
    why: &str,
    at: DateTime<Utc>,
) -> Incident {
    let show = |v: Option<i64>| v.map_or_else(|| "an unknown value".to_owned(), |v| v.to_string());
    let delta = match (expected, current) {
        (Some(e), Some(c)) => format!(" ({:+})", c - e),
        _ => String::new(),
    };
    let policy = if hold {
        "policy hold: the hub stops pushing this sku until POST /v1/channels/{id}/replay".to_owned()
    } else {
        format!(
            "policy overwrite: the hub pushes {pushing} again with {} as the compare value",
            show(current)
        )
    };
    Incident {
        kind: "channel_override".into(),
        sku: Some(sku.clone()),
        location: None,
        system: Some(actor.map_or_else(|| channel.to_owned(), |a| format!("{channel}:{a}"))),
        actor: None,
        event_id: None,
        detail: format!(
            "channel `{channel}` shows {} where the hub last had {} acknowledged{delta}; changed by {}; {why}; {}",
            show(current),
            show(expected),
            actor.unwrap_or("someone unknown"),
            policy.replace("{id}", channel),
        ),
        at,
    }
}

/// The file connector: on its schedule, write every sku's channel quantity and mark the outbox rows
/// read before the snapshot clean (a change after that read stays dirty for the next one).
async fn snapshot_loop(
    spec: ChannelSpec,
    store: Arc<dyn Store>,
    sink: driftless_connectors::file::FileSink,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = snapshot_once(&spec, store.as_ref(), &sink).await {
            tracing::warn!(channel = spec.id.as_str(), error = %e, "writing the snapshot failed");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(sink.every) => {}
        }
    }
}

pub async fn snapshot_once(
    spec: &ChannelSpec,
    store: &dyn Store,
    sink: &driftless_connectors::file::FileSink,
) -> Result<usize, SnapshotError> {
    let channel = spec.id.as_str().to_owned();
    // 1. What is dirty now (bounded pages).
    let mut dirty = Vec::new();
    let mut cursor = (i64::MIN, None);
    loop {
        let page = store
            .outbox_scan(&Scan {
                channel: channel.clone(),
                locations: spec.locations.clone(),
                from: ScanFrom::After(cursor.0, cursor.1.clone()),
                limit: driftless_store::outbox::MAX_SCAN,
            })
            .await?;
        let Some(last) = page.last() else { break };
        cursor = (last.changed_nanos, Some(last.sku.clone()));
        let n = page.len();
        dirty.extend(page);
        if n < driftless_store::outbox::MAX_SCAN {
            break;
        }
    }
    // 2. Every sku's quantity, after that read.
    let mut rows = Vec::new();
    let mut after: Option<Sku> = None;
    loop {
        let page = store.inventory_page(after.as_ref(), 1000).await?;
        let n = page.len();
        for (sku, locs) in page {
            let atp: i64 = locs
                .iter()
                .filter(|l| spec.feeds_from(&l.location))
                .map(|l| l.levels.available())
                .fold(0, i64::saturating_add);
            rows.push((sku.to_string(), spec.quantity(&sku, atp)));
            after = Some(sku);
        }
        if n < 1000 {
            break;
        }
    }
    let bytes = driftless_connectors::file::transform::csv(&rows);
    let path = sink.clone();
    tokio::task::spawn_blocking(move || path.write(&bytes))
        .await
        .map_err(|e| SnapshotError::Write(e.to_string()))?
        .map_err(|e| SnapshotError::Write(format!("{}: {e}", sink.path.display())))?;
    // 3. Those rows are now delivered.
    let at = Utc::now();
    let acked: Vec<PushRecord> = dirty
        .into_iter()
        .map(|r| {
            let q = spec.quantity(&r.sku, r.atp);
            PushRecord::Acked {
                sample: PushSample {
                    channel: channel.clone(),
                    source: r.source.clone(),
                    occurred_nanos: r.occurred_nanos,
                    received_nanos: r.received_nanos,
                    changed_nanos: r.changed_nanos,
                    acked_nanos: at.timestamp_nanos_opt().unwrap_or(i64::MAX),
                },
                sku: r.sku,
                version: r.version,
                quantity: q,
                at,
            }
        })
        .collect();
    for chunk in acked.chunks(2000) {
        store.outbox_record(&channel, chunk).await?;
    }
    Ok(rows.len())
}

/// Why a snapshot was not written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] driftless_store::StoreError),
    #[error("{0}")]
    Write(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..100 {
            let d1 = backoff(1, base, max);
            assert!(d1 >= Duration::from_millis(50) && d1 <= base);
            let d4 = backoff(4, base, max);
            assert!(d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(800));
            let d30 = backoff(30, base, max);
            assert!(d30 >= Duration::from_secs(1) && d30 <= max);
        }
    }

    #[test]
    fn batches_are_even_and_bounded() {
        let sizes = |n: usize, max: usize| -> Vec<usize> {
            let b = batches((0..n).collect::<Vec<_>>(), max);
            // Nothing lost, nothing reordered.
            assert_eq!(b.concat(), (0..n).collect::<Vec<_>>());
            b.iter().map(Vec::len).collect()
        };
        assert_eq!(sizes(0, 100), Vec::<usize>::new());
        assert_eq!(sizes(5, 1), vec![1; 5]);
        assert_eq!(sizes(7, 100), vec![7]);
        assert_eq!(sizes(100, 100), vec![100]);
        assert_eq!(sizes(250, 100), vec![84, 83, 83]);
        assert_eq!(sizes(2000, 500), vec![500; 4]);
    }

    #[test]
    fn override_detail_says_who_when_how_much() {
        let i = override_incident(
            "shop",
            &Sku::parse("TEE").unwrap(),
            Some(10),
            Some(7),
            Some("ann"),
            12,
            false,
            "the channel refused the compare-and-set",
            Utc::now(),
        );
        assert_eq!(i.kind, "channel_override");
        assert!(i.detail.contains("shows 7") && i.detail.contains("(-3)"));
        assert!(i.detail.contains("ann") && i.detail.contains("overwrite"));
        assert_eq!(i.system.as_deref(), Some("shop:ann"));
    }
}
