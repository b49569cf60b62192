//! Prometheus text exposition at `GET /metrics`: the hub's own counters and histograms (plain
//! atomics, updated on the request and push paths), plus gauges read from the store when scraped
//! (writer queue, channel backlogs, hop latencies from the integration matrix, drift from the last
//! stored audit). Hand-written: a few families do not justify a metrics framework and its compile
//! time.
//!
//! Labels are bounded: outcome and result are fixed sets; sources, channels, hops and hand-offs
//! come from the configuration or an audit, and sources seen on the wire are capped at
//! [`MAX_SOURCES`] (the rest count as `other`). Never a sku.

use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use driftless_core::Outcome;
use driftless_store::outbox::{AckedPush, FailedPush, PushRecord, RefusedPush};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a `POST /v1/events` was refused before any event was decided.
pub const REFUSALS: [&str; 6] = [
    "invalid_request",
    "unauthorized",
    "forbidden",
    "payload_too_large",
    "overloaded",
    "internal",
];

/// Distinct `source` label values kept before the rest count as `other`.
pub const MAX_SOURCES: usize = 64;

/// Upper bounds (seconds) of the ingest latency histogram: receipt to durable answer.
pub const INGEST_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Upper bounds (seconds) of the push latency histogram: receipt of the change to the channel's
/// acknowledgement.
pub const PUSH_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// What became of a push attempt.
/// `rebased`: the channel showed another value (a compare failure or an observation) and the hub
/// took it as the new compare value; `refused`: a compare-and-set the channel refused, counted as
/// a failed attempt (the first one in a row also counts as `rebased`).
pub const PUSH_RESULTS: [&str; 5] = ["acked", "failed", "dead_letter", "rebased", "refused"];

/// A cumulative histogram over fixed bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum:.6}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// One channel's push counters.
#[derive(Debug)]
struct ChannelPushes {
    results: [u64; PUSH_RESULTS.len()],
    latency: Histogram,
}

/// Counters shared by the handlers and the fan-out.
#[derive(Debug)]
pub struct Metrics {
    outcomes: [AtomicU64; 7],
    by_source: Mutex<BTreeMap<(String, usize), u64>>,
    requests: AtomicU64,
    refused: [AtomicU64; REFUSALS.len()],
    ingest: Histogram,
    pushes: Mutex<BTreeMap<String, ChannelPushes>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            outcomes: Default::default(),
            by_source: Mutex::default(),
            requests: AtomicU64::new(0),
            refused: Default::default(),
            ingest: Histogram::new(&INGEST_BUCKETS),
            pushes: Mutex::default(),
        }
    }
}

fn outcome_index(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0)
}

/// A label value with the characters the text format escapes escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn outcome(&self, o: Outcome) {
        self.outcomes[outcome_index(o)].fetch_add(1, Ordering::Relaxed);
    }

    /// One decided event with the system that sent it.
    pub fn outcome_from(&self, o: Outcome, source: &str) {
        self.outcome(o);
        let mut m = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        let i = outcome_index(o);
        let known = m.keys().any(|(s, _)| s == source);
        let distinct = || {
            let mut n: Vec<&String> = m.keys().map(|(s, _)| s).collect();
            n.dedup();
            n.len()
        };
        let label = if known || distinct() < MAX_SOURCES {
            source.to_owned()
        } else {
            "other".to_owned()
        };
        *m.entry((label, i)).or_default() += 1;
    }

    /// One accepted request and the time it took to be durable.
    pub fn request(&self, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.ingest.observe(elapsed);
    }

    pub fn refused(&self, code: &str) {
        if let Some(i) = REFUSALS.iter().position(|c| *c == code) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Push results of one channel as the fan-out records them.
    pub fn pushes(&self, channel: &str, records: &[PushRecord]) {
        let mut m = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        let c = m
            .entry(channel.to_owned())
            .or_insert_with(|| ChannelPushes {
                results: [0; PUSH_RESULTS.len()],
                latency: Histogram::new(&PUSH_BUCKETS),
            });
        for r in records {
            let result = match r {
                PushRecord::Acked(AckedPush { sample, .. }) => {
                    let from = sample.received_nanos.unwrap_or(sample.changed_nanos);
                    let nanos = sample.acked_nanos.saturating_sub(from).max(0);
                    c.latency.observe(Duration::from_nanos(nanos as u64));
                    0
                }
                PushRecord::Failed(FailedPush { dead: None, .. }) => 1,
                PushRecord::Failed(FailedPush { dead: Some(_), .. }) => 2,
                PushRecord::Rebased(_) => 3,
                PushRecord::Refused(RefusedPush { dead: Some(_), .. }) => 2,
                PushRecord::Refused(RefusedPush { dead: None, .. }) => 4,
            };
            c.results[result] += 1;
        }
    }

    /// The counters kept in memory, in the text format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        family(
            &mut s,
            "driftless_events_total",
            "counter",
            "Events decided, by outcome.",
        );
        for (o, c) in Outcome::ALL.iter().zip(&self.outcomes) {
            let _ = writeln!(
                s,
                "driftless_events_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                c.load(Ordering::Relaxed)
            );
        }
        family(
            &mut s,
            "driftless_source_events_total",
            "counter",
            "Events decided, by sending system and outcome.",
        );
        for ((src, i), n) in self
            .by_source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                s,
                "driftless_source_events_total{{source=\"{}\",outcome=\"{}\"}} {n}",
                escape(src),
                Outcome::ALL[*i].as_str()
            );
        }
        family(
            &mut s,
            "driftless_event_requests_total",
            "counter",
            "Event requests answered after their events were durable.",
        );
        let _ = writeln!(
            s,
            "driftless_event_requests_total {}",
            self.requests.load(Ordering::Relaxed)
        );
        family(
            &mut s,
            "driftless_ingest_seconds",
            "histogram",
            "Time from receipt of an event request to its durable answer.",
        );
        self.ingest.render(&mut s, "driftless_ingest_seconds", "");
        family(
            &mut s,
            "driftless_event_requests_refused_total",
            "counter",
            "Event requests refused whole, by error code.",
        );
        for (code, c) in REFUSALS.iter().zip(&self.refused) {
            let _ = writeln!(
                s,
                "driftless_event_requests_refused_total{{code=\"{code}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let pushes = self.pushes.lock().unwrap_or_else(|p| p.into_inner());
        family(
            &mut s,
            "driftless_pushes_total",
            "counter",
            "Push attempts to channels, by channel and result.",
        );
        for (ch, c) in pushes.iter() {
            for (r, n) in PUSH_RESULTS.iter().zip(c.results) {
                let _ = writeln!(
                    s,
                    "driftless_pushes_total{{channel=\"{}\",result=\"{r}\"}} {n}",
                    escape(ch)
                );
            }
        }
        family(
            &mut s,
            "driftless_push_seconds",
            "histogram",
            "Acknowledged pushes: from receipt of the change to the channel's acknowledgement.",
        );
        for (ch, c) in pushes.iter() {
            c.latency.render(
                &mut s,
                "driftless_push_seconds",
                &format!("channel=\"{}\"", escape(ch)),
            );
        }
        s
    }
}

fn family(s: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

/// `GET /metrics`: the counters, then the gauges read from the store now. A store read that fails
/// leaves its families out (and is logged) rather than failing the scrape.
pub async fn handler(State(st): State<AppState>) -> impl IntoResponse {
    let mut s = st.metrics.render();
    gauges(&st, &mut s).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s,
    )
}

async fn gauges(st: &AppState, s: &mut String) {
    if let Some(depth) = st.store.queue_depth() {
        family(
            s,
            "driftless_writer_queue_depth",
            "gauge",
            "Requests waiting for the ledger writer.",
        );
        let _ = writeln!(s, "driftless_writer_queue_depth {depth}");
    }
    channel_gauges(st, s).await;
    match crate::channels::matrix(&st.settings, st.store.as_ref()).await {
        Ok(m) => hop_gauges(&m, s),
        Err(e) => tracing::warn!(error = %e, "metrics: matrix not read"),
    }
    match st.store.audits_page(None, 1).await {
        Ok(list) => {
            if let Some(a) = list.first() {
                audit_gauges(&a.record, s);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: last audit not read"),
    }
}

async fn channel_gauges(st: &AppState, s: &mut String) {
    let mut rows = Vec::new();
    for c in &st.settings.channels {
        let id = c.spec.id.as_str();
        match st.store.channel_status(id).await {
            Ok(cs) => rows.push((
                escape(id),
                [
                    cs.pending,
                    cs.errors.len() as i64,
                    cs.dead_letters.len() as i64,
                    cs.held.len() as i64,
                ],
            )),
            Err(e) => tracing::warn!(channel = id, error = %e, "metrics: channel not read"),
        }
    }
    let names = [
        (
            "driftless_channel_pending",
            "Changes not yet acknowledged by the channel.",
        ),
        (
            "driftless_channel_errors",
            "Skus whose last push failed, waiting to retry.",
        ),
        (
            "driftless_channel_dead_letters",
            "Skus whose pushes gave up.",
        ),
        (
            "driftless_channel_held",
            "Skus held (not pushed) after a channel override.",
        ),
    ];
    for (i, (name, help)) in names.iter().enumerate() {
        family(s, name, "gauge", help);
        for (id, v) in &rows {
            let _ = writeln!(s, "{name}{{channel=\"{id}\"}} {}", v[i]);
        }
    }
}

fn hop_gauges(m: &crate::matrix::Matrix, s: &mut String) {
    family(
        s,
        "driftless_hop_latency_seconds",
        "gauge",
        "Measured hop latencies over the recent samples, by hop, measure and quantile.",
    );
    for h in &m.hops {
        let hop = format!("from=\"{}\",to=\"{}\"", escape(&h.from), escape(&h.to));
        for (measure, q) in [
            ("source_lag", &h.source_lag),
            ("push", &h.push),
            ("end_to_end", &h.end_to_end),
        ] {
            if let Some(q) = q {
                for (quantile, ms) in [("0.5", q.p50), ("0.95", q.p95), ("0.99", q.p99)] {
                    let _ = writeln!(
                        s,
                        "driftless_hop_latency_seconds{{{hop},measure=\"{measure}\",quantile=\"{quantile}\"}} {}",
                        ms / 1e3
                    );
                }
            }
        }
    }
    family(
        s,
        "driftless_hop_sla_seconds",
        "gauge",
        "The latency SLA documented for a hop.",
    );
    for h in &m.hops {
        if let Some(ms) = h.sla_ms {
            let _ = writeln!(
                s,
                "driftless_hop_sla_seconds{{from=\"{}\",to=\"{}\"}} {}",
                escape(&h.from),
                escape(&h.to),
                ms / 1e3
            );
        }
    }
    family(
        s,
        "driftless_hop_within_sla",
        "gauge",
        "1 when a hop's measured p99 is within its SLA, 0 when over.",
    );
    for h in &m.hops {
        if let Some(ok) = h.within_sla {
            let _ = writeln!(
                s,
                "driftless_hop_within_sla{{from=\"{}\",to=\"{}\"}} {}",
                escape(&h.from),
                escape(&h.to),
                u8::from(ok)
            );
        }
    }
}

fn audit_gauges(a: &driftless_store::AuditRecord, s: &mut String) {
    family(
        s,
        "driftless_audit_timestamp_seconds",
        "gauge",
        "When the last stored audit's snapshots were taken.",
    );
    let _ = writeln!(
        s,
        "driftless_audit_timestamp_seconds {}",
        a.at.timestamp_millis() as f64 / 1e3
    );
    family(
        s,
        "driftless_audit_skus_compared",
        "gauge",
        "Skus the last audit compared.",
    );
    let _ = writeln!(s, "driftless_audit_skus_compared {}", a.skus_compared);
    family(
        s,
        "driftless_audit_drifting_skus",
        "gauge",
        "Skus over the threshold in the last audit.",
    );
    let _ = writeln!(s, "driftless_audit_drifting_skus {}", a.drifting);
    family(
        s,
        "driftless_drift_skus",
        "gauge",
        "Drifting skus per hand-off in the last audit.",
    );
    for (h, n, _) in &a.handoffs {
        let _ = writeln!(s, "driftless_drift_skus{{handoff=\"{}\"}} {n}", escape(h));
    }
    family(
        s,
        "driftless_drift_abs_units",
        "gauge",
        "Absolute units of drift per hand-off in the last audit.",
    );
    for (h, _, u) in &a.handoffs {
        let _ = writeln!(
            s,
            "driftless_drift_abs_units{{handoff=\"{}\"}} {u}",
            escape(h)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.outcome_from(Outcome::Applied, "wms");
        m.outcome_from(Outcome::Applied, "wms");
        m.outcome(Outcome::Stale);
        m.refused("forbidden");
        m.request(Duration::from_millis(1500));
        m.request(Duration::from_micros(700));
        let text = m.render();
        assert!(text.contains("driftless_events_total{outcome=\"applied\"} 2\n"));
        assert!(text.contains("driftless_events_total{outcome=\"stale\"} 1\n"));
        assert!(
            text.contains("driftless_source_events_total{source=\"wms\",outcome=\"applied\"} 2\n")
        );
        assert!(text.contains("driftless_event_requests_refused_total{code=\"forbidden\"} 1\n"));
        assert!(
            text.contains("driftless_ingest_seconds_bucket{le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("driftless_ingest_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("driftless_ingest_seconds_sum 1.500700\n"));
    }

    #[test]
    fn pushes_count_by_channel_and_result_with_their_latency() {
        use driftless_store::outbox::PushSample;
        let m = Metrics::default();
        let sample = PushSample {
            channel: "shop".into(),
            source: Some(driftless_core::SystemId::parse("wms").unwrap()),
            occurred_nanos: Some(0),
            received_nanos: Some(1_000_000_000),
            changed_nanos: 1_000_000_000,
            acked_nanos: 1_200_000_000,
        };
        let acked = PushRecord::Acked(AckedPush {
            sku: driftless_core::Sku::parse("A").unwrap(),
            version: 1,
            quantity: 3,
            at: chrono::Utc::now(),
            sample,
        });
        let failed = PushRecord::Failed(FailedPush {
            sku: driftless_core::Sku::parse("B").unwrap(),
            version: 1,
            pinned: None,
            attempts: 1,
            next_attempt: chrono::Utc::now(),
            error: "503".into(),
            dead: None,
        });
        m.pushes("shop", &[acked.clone(), acked, failed]);
        let text = m.render();
        assert!(
            text.contains("driftless_pushes_total{channel=\"shop\",result=\"acked\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("driftless_pushes_total{channel=\"shop\",result=\"failed\"} 1\n"));
        assert!(text.contains("driftless_push_seconds_bucket{channel=\"shop\",le=\"0.25\"} 2\n"));
        assert!(text.contains("driftless_push_seconds_bucket{channel=\"shop\",le=\"0.1\"} 0\n"));
    }

    #[test]
    fn sources_beyond_the_cap_count_as_other() {
        let m = Metrics::default();
        for i in 0..MAX_SOURCES + 5 {
            m.outcome_from(Outcome::Rejected, &format!("s{i}"));
        }
        let text = m.render();
        assert!(
            text.contains("source=\"other\",outcome=\"rejected\"} 5\n"),
            "{text}"
        );
    }
}
