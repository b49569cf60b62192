//! Prometheus text exposition of the hub's own counters at `GET /metrics`. Plain atomics and a
//! hand-written exposition: a handful of counters does not justify a metrics framework.

use driftless_core::Outcome;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    outcomes: [AtomicU64; 7],
    requests: AtomicU64,
    refused: [AtomicU64; REFUSALS.len()],
    ingest_seconds: AtomicU64,
}

/// Why a `POST /v1/events` was refused before any event was decided.
pub const REFUSALS: [&str; 6] = [
    "invalid_request",
    "unauthorized",
    "forbidden",
    "payload_too_large",
    "overloaded",
    "internal",
];

impl Metrics {
    pub fn outcome(&self, o: Outcome) {
        let i = Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0);
        self.outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// One accepted request and the time it took to be durable.
    pub fn request(&self, elapsed: std::time::Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.ingest_seconds
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn refused(&self, code: &str) {
        if let Some(i) = REFUSALS.iter().position(|c| *c == code) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# HELP driftless_events_total Events decided, by outcome."
        );
        let _ = writeln!(s, "# TYPE driftless_events_total counter");
        for (o, c) in Outcome::ALL.iter().zip(&self.outcomes) {
            let _ = writeln!(
                s,
                "driftless_events_total{{outcome=\"{}\"}} {}",
                o.as_str(),
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            s,
            "# HELP driftless_event_requests_total Event requests answered after their events were durable."
        );
        let _ = writeln!(s, "# TYPE driftless_event_requests_total counter");
        let _ = writeln!(
            s,
            "driftless_event_requests_total {}",
            self.requests.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            s,
            "# HELP driftless_event_request_seconds_total Time from receipt to durable answer, summed."
        );
        let _ = writeln!(s, "# TYPE driftless_event_request_seconds_total counter");
        let _ = writeln!(
            s,
            "driftless_event_request_seconds_total {:.6}",
            self.ingest_seconds.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "# HELP driftless_event_requests_refused_total Event requests refused whole, by error code."
        );
        let _ = writeln!(s, "# TYPE driftless_event_requests_refused_total counter");
        for (code, c) in REFUSALS.iter().zip(&self.refused) {
            let _ = writeln!(
                s,
                "driftless_event_requests_refused_total{{code=\"{code}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters() {
        let m = Metrics::default();
        m.outcome(Outcome::Applied);
        m.outcome(Outcome::Applied);
        m.outcome(Outcome::Stale);
        m.refused("forbidden");
        m.request(std::time::Duration::from_millis(1500));
        let text = m.render();
        assert!(text.contains("driftless_events_total{outcome=\"applied\"} 2\n"));
        assert!(text.contains("driftless_events_total{outcome=\"stale\"} 1\n"));
        assert!(text.contains("driftless_event_requests_refused_total{code=\"forbidden\"} 1\n"));
        assert!(text.contains("driftless_event_request_seconds_total 1.500000\n"));
    }
}
