//! The integration matrix: every documented hop with what the hub measured on it (source lag,
//! push latency, end-to-end, as p50/p95/p99) against its SLA, plus the hops the hub saw that no
//! configuration documents. Pure given the samples, so the API and the CLI render the same thing.
//!
//! What the hub can measure: for a hop `from -> to` where `to` is one of its channels, each
//! acknowledged push carries the newest applied event of the sku (its source, occurred and received
//! times), so source lag is `received - occurred`, push latency `acknowledged - received` and
//! end-to-end `acknowledged - occurred`. For a hop that does not end at a channel, only the source's
//! lag into the hub is known.

use driftless_config::{Settings, Trigger};
use driftless_store::outbox::PushSample;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantiles {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Quantiles {
    /// Nearest-rank percentiles of nanosecond samples; `None` without samples.
    pub fn of(mut nanos: Vec<i64>) -> Option<Quantiles> {
        if nanos.is_empty() {
            return None;
        }
        nanos.sort_unstable();
        let at = |p: f64| {
            let rank = ((p * nanos.len() as f64).ceil() as usize).clamp(1, nanos.len());
            nanos[rank - 1].max(0) as f64 / 1e6
        };
        Some(Quantiles {
            n: nanos.len(),
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        })
    }

    fn json(q: &Option<Quantiles>) -> Value {
        match q {
            Some(q) => json!({"n": q.n, "p50_ms": q.p50, "p95_ms": q.p95, "p99_ms": q.p99}),
            None => Value::Null,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HopRow {
    pub from: String,
    pub to: String,
    pub documented: bool,
    pub trigger: Option<String>,
    pub schedule: Option<String>,
    pub sla_ms: Option<f64>,
    pub bidirectional: bool,
    pub transform: Option<String>,
    pub source_lag: Option<Quantiles>,
    pub push: Option<Quantiles>,
    pub end_to_end: Option<Quantiles>,
    /// `Some(false)` when the measured p99 exceeds the SLA.
    pub within_sla: Option<bool>,
    pub flags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Matrix {
    pub hops: Vec<HopRow>,
    /// Each hand-off's live checkpoint (DESIGN §7a), from the systems' observations.
    pub checkpoints: Vec<Checkpoint>,
}

/// One hand-off's checkpoint: what its system last reported and how much of it drifts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checkpoint {
    pub handoff: String,
    pub system: String,
    pub last_observation: Option<chrono::DateTime<chrono::Utc>>,
    /// Keys (sku, location, state) observed.
    pub keys: usize,
    /// Keys over the thresholds now.
    pub drifting: usize,
    /// Keys with an open `handoff_drift` incident.
    pub open: usize,
}

/// Sums the checkpoint rows per hand-off, in hand-off order.
pub fn checkpoints_of(rows: &[driftless_store::CheckpointRow]) -> Vec<Checkpoint> {
    let mut by: std::collections::BTreeMap<(String, String), Checkpoint> = Default::default();
    for r in rows {
        let c = by
            .entry((r.handoff.clone(), r.system.to_string()))
            .or_insert_with(|| Checkpoint {
                handoff: r.handoff.clone(),
                system: r.system.to_string(),
                ..Checkpoint::default()
            });
        c.keys += 1;
        c.drifting += usize::from(r.diverged_since.is_some());
        c.open += usize::from(r.open);
        c.last_observation = c.last_observation.max(Some(r.observed_at));
    }
    by.into_values().collect()
}

fn checkpoint_json(c: &Checkpoint) -> Value {
    json!({
        "handoff": c.handoff, "system": c.system,
        "last_observation": c.last_observation
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "keys_observed": c.keys, "keys_drifting": c.drifting, "open_incidents": c.open,
    })
}

fn trigger_name(t: Trigger) -> &'static str {
    match t {
        Trigger::Event => "event",
        Trigger::Poll => "poll",
        Trigger::Batch => "batch",
    }
}

struct Measured {
    lag: Vec<i64>,
    push: Vec<i64>,
    e2e: Vec<i64>,
}

pub fn compute(s: &Settings, samples: &[PushSample], lags: &HashMap<String, Vec<i64>>) -> Matrix {
    let channels: BTreeSet<&str> = s.channels.iter().map(|c| c.spec.id.as_str()).collect();
    // (source, channel) -> measurements.
    let mut by_pair: HashMap<(String, String), Measured> = HashMap::new();
    for p in samples {
        let Some(src) = &p.source else { continue };
        let m = by_pair
            .entry((src.to_string(), p.channel.clone()))
            .or_insert(Measured {
                lag: vec![],
                push: vec![],
                e2e: vec![],
            });
        if let (Some(o), Some(r)) = (p.occurred_nanos, p.received_nanos) {
            m.lag.push(r.saturating_sub(o));
            m.e2e.push(p.acked_nanos.saturating_sub(o));
        }
        if let Some(r) = p.received_nanos {
            m.push.push(p.acked_nanos.saturating_sub(r));
        }
    }
    let mut rows = Vec::new();
    let mut documented: BTreeSet<(String, String)> = BTreeSet::new();
    for h in &s.hops {
        let (from, to) = (h.from.to_string(), h.to.to_string());
        documented.insert((from.clone(), to.clone()));
        let mut row = HopRow {
            from: from.clone(),
            to: to.clone(),
            documented: true,
            trigger: Some(trigger_name(h.trigger).to_owned()),
            schedule: h.schedule.clone(),
            sla_ms: Some(h.latency_sla.as_secs_f64() * 1e3),
            bidirectional: h.bidirectional,
            transform: h.transform.clone(),
            source_lag: None,
            push: None,
            end_to_end: None,
            within_sla: None,
            flags: vec![],
        };
        if let Some(m) = by_pair.get(&(from.clone(), to.clone())) {
            row.source_lag = Quantiles::of(m.lag.clone());
            row.push = Quantiles::of(m.push.clone());
            row.end_to_end = Quantiles::of(m.e2e.clone());
        } else if !channels.contains(to.as_str()) {
            row.source_lag = lags.get(&from).and_then(|l| Quantiles::of(l.clone()));
            if row.source_lag.is_some() {
                row.flags
                    .push("partial: only the source's lag into the hub is measured".into());
            }
        }
        if row.source_lag.is_none() && row.end_to_end.is_none() {
            row.flags.push("not observed by the hub".into());
        }
        let worst = row.end_to_end.or(row.source_lag).map(|q| q.p99);
        row.within_sla = worst.zip(row.sla_ms).map(|(w, sla)| w <= sla);
        if row.within_sla == Some(false) {
            row.flags.push("over SLA".into());
        }
        if h.bidirectional {
            row.flags
                .push("bidirectional: two writers on one quantity invite drift".into());
        }
        rows.push(row);
    }
    // Paths the hub saw that no hop documents.
    let mut extra: Vec<(&(String, String), &Measured)> = by_pair
        .iter()
        .filter(|(k, _)| !documented.contains(*k))
        .collect();
    extra.sort_by(|a, b| a.0.cmp(b.0));
    for ((from, to), m) in extra {
        rows.push(undocumented(
            from,
            to,
            Quantiles::of(m.lag.clone()),
            Quantiles::of(m.push.clone()),
            Quantiles::of(m.e2e.clone()),
        ));
    }
    let named: BTreeSet<&str> = s
        .hops
        .iter()
        .flat_map(|h| [h.from.as_str(), h.to.as_str()])
        .collect();
    let mut sources: Vec<&String> = lags.keys().collect();
    sources.sort();
    for src in sources {
        let seen_on_channel = by_pair.keys().any(|(f, _)| f == src);
        if !named.contains(src.as_str()) && !seen_on_channel {
            let lag = lags.get(src).and_then(|l| Quantiles::of(l.clone()));
            rows.push(undocumented(src, "hub", lag, None, None));
        }
    }
    Matrix {
        hops: rows,
        checkpoints: vec![],
    }
}

fn undocumented(
    from: &str,
    to: &str,
    lag: Option<Quantiles>,
    push: Option<Quantiles>,
    e2e: Option<Quantiles>,
) -> HopRow {
    HopRow {
        from: from.to_owned(),
        to: to.to_owned(),
        documented: false,
        trigger: None,
        schedule: None,
        sla_ms: None,
        bidirectional: false,
        transform: None,
        source_lag: lag,
        push,
        end_to_end: e2e,
        within_sla: None,
        flags: vec!["undocumented: events flow here but no [[hops]] entry names it".into()],
    }
}

pub fn to_json(m: &Matrix) -> Value {
    let hops: Vec<Value> = m
        .hops
        .iter()
        .map(|h| {
            json!({
                "from": h.from, "to": h.to, "documented": h.documented,
                "trigger": h.trigger, "schedule": h.schedule, "latency_sla_ms": h.sla_ms,
                "direction": if h.bidirectional { "bidirectional" } else { "one-way" },
                "transform": h.transform,
                "source_lag": Quantiles::json(&h.source_lag),
                "push_latency": Quantiles::json(&h.push),
                "end_to_end": Quantiles::json(&h.end_to_end),
                "within_sla": h.within_sla,
                "flags": h.flags,
                "checkpoint": m.checkpoints.iter()
                    .find(|c| c.handoff == format!("{}->{}", h.from, h.to))
                    .map(checkpoint_json),
            })
        })
        .collect();
    let checkpoints: Vec<Value> = m.checkpoints.iter().map(checkpoint_json).collect();
    json!({"hops": hops, "checkpoints": checkpoints})
}

fn ms(q: &Option<Quantiles>, f: fn(&Quantiles) -> f64) -> String {
    q.as_ref().map_or_else(|| "-".into(), |q| human(f(q)))
}

/// Milliseconds in the unit a person reads fastest.
pub fn human(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else if ms < 120_000.0 {
        format!("{:.1}s", ms / 1e3)
    } else if ms < 7_200_000.0 {
        format!("{:.1}m", ms / 6e4)
    } else {
        format!("{:.1}h", ms / 3.6e6)
    }
}

/// A fixed-width terminal table.
pub fn to_table(m: &Matrix) -> String {
    let header = [
        "hop", "trigger", "sla", "lag p50", "lag p99", "push p50", "push p99", "e2e p50",
        "e2e p95", "e2e p99", "ok", "flags",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for h in &m.hops {
        rows.push(vec![
            format!("{} -> {}", h.from, h.to),
            h.trigger.clone().unwrap_or_else(|| "?".into()),
            h.sla_ms.map_or_else(|| "-".into(), human),
            ms(&h.source_lag, |q| q.p50),
            ms(&h.source_lag, |q| q.p99),
            ms(&h.push, |q| q.p50),
            ms(&h.push, |q| q.p99),
            ms(&h.end_to_end, |q| q.p50),
            ms(&h.end_to_end, |q| q.p95),
            ms(&h.end_to_end, |q| q.p99),
            match h.within_sla {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
            h.flags.join("; "),
        ]);
    }
    let cols = header.len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if !m.checkpoints.is_empty() {
        out.push_str(
            "\ncheckpoint           system  last observation          keys  drifting  open\n",
        );
        for c in &m.checkpoints {
            let _ = writeln!(
                out,
                "{:<20} {:<7} {:<25} {:>5} {:>9} {:>5}",
                c.handoff,
                c.system,
                c.last_observation.map_or_else(
                    || "-".into(),
                    |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                c.keys,
                c.drifting,
                c.open
            );
        }
    }
    out
}

fn dot_id(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// A Graphviz drawing: systems as nodes, hops as edges labelled with trigger, SLA and measured p99;
/// red over SLA, dashed undocumented, both arrowheads for bidirectional.
pub fn to_dot(m: &Matrix) -> String {
    let mut out = String::from(
        "digraph driftless {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n  edge [fontname=\"Helvetica\", fontsize=10];\n",
    );
    let nodes: BTreeSet<&str> = m
        .hops
        .iter()
        .flat_map(|h| [h.from.as_str(), h.to.as_str()])
        .collect();
    for n in nodes {
        let _ = writeln!(out, "  {};", dot_id(n));
    }
    for h in &m.hops {
        let mut label = h.trigger.clone().unwrap_or_else(|| "undocumented".into());
        if let Some(sla) = h.sla_ms {
            let _ = write!(label, "\nSLA {}", human(sla));
        }
        if let Some(q) = h.end_to_end.or(h.source_lag) {
            let _ = write!(label, "\np99 {}", human(q.p99));
        }
        let mut attrs = vec![format!("label={}", dot_id(&label))];
        if h.within_sla == Some(false) {
            attrs.push("color=red, fontcolor=red".into());
        }
        if !h.documented {
            attrs.push("style=dashed, color=orange".into());
        }
        if h.bidirectional {
            attrs.push("dir=both".into());
        }
        let _ = writeln!(
            out,
            "  {} -> {} [{}];",
            dot_id(&h.from),
            dot_id(&h.to),
            attrs.join(", ")
        );
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_core::SystemId;

    #[test]
    fn nearest_rank() {
        let q = Quantiles::of((1..=100).map(|i| i * 1_000_000).collect()).unwrap();
        assert_eq!((q.p50, q.p95, q.p99, q.n), (50.0, 95.0, 99.0, 100));
        assert!(Quantiles::of(vec![]).is_none());
    }

    #[test]
    fn documented_undocumented_and_bidirectional() {
        let s = Settings::parse(
            "t.toml",
            r#"
[[systems]]
id = "wms"
role = "wms"
[[systems]]
id = "erp"
role = "erp"
[[systems]]
id = "shop"
role = "storefront"
[[channels]]
id = "shop"
locations = ["DC1"]
[[hops]]
from = "wms"
to = "shop"
trigger = "event"
latency_sla = "1s"
[[hops]]
from = "erp"
to = "wms"
trigger = "batch"
latency_sla = "4h"
direction = "bidirectional"
"#,
        )
        .unwrap();
        let sample = |src: &str, lag_ms: i64, total_ms: i64| PushSample {
            channel: "shop".into(),
            source: Some(SystemId::parse(src).unwrap()),
            occurred_nanos: Some(0),
            received_nanos: Some(lag_ms * 1_000_000),
            changed_nanos: lag_ms * 1_000_000,
            acked_nanos: total_ms * 1_000_000,
        };
        let samples = vec![sample("wms", 10, 2_000), sample("erp", 5, 50)];
        let mut lags = HashMap::new();
        lags.insert("wms".to_string(), vec![10_000_000]);
        lags.insert("pos".to_string(), vec![1_000_000]);
        let m = compute(&s, &samples, &lags);
        let wms = &m.hops[0];
        assert_eq!(wms.within_sla, Some(false));
        assert_eq!(wms.end_to_end.unwrap().p99, 2000.0);
        assert!(
            m.hops[1]
                .flags
                .iter()
                .any(|f| f.starts_with("bidirectional"))
        );
        assert!(
            m.hops
                .iter()
                .any(|h| h.from == "erp" && h.to == "shop" && !h.documented)
        );
        assert!(m.hops.iter().any(|h| h.from == "pos" && !h.documented));
        let dot = to_dot(&m);
        assert!(dot.contains("\"wms\" -> \"shop\"") && dot.contains("color=red"));
        assert!(to_table(&m).contains("wms -> shop"));
    }
}
