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

mod dispatcher;
mod record;
mod settle;
mod snapshot;

use crate::AppState;
use dispatcher::Dispatcher;
use driftless_config::Settings;
use driftless_connectors::{ClientOptions, Endpoint};
use snapshot::snapshot_loop;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use snapshot::{SnapshotError, snapshot_once};

/// How often a hub that does not push a channel asks whether it may (another hub died).
const LEASE_RETRY: Duration = Duration::from_millis(1500);

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
}
