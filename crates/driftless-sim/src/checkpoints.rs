//! The checkpoint drill: the hub architecture with systems that report what they show, scored
//! against ground truth (DESIGN §7a). Three scenarios run together on disjoint skus:
//!
//! - **ERP replication silently stopping**: the ERP mirrors the hub's `on_hand` a minute behind
//!   and reports it every `interval_s`; for `stop_share` of the skus the mirror freezes at a
//!   random moment. Each observation is judged by the audit's live checkpoint
//!   ([`driftless_audit::checkpoint::judge`], the function the server calls). Truth: a key drifts
//!   from the first minute its frozen value is over the thresholds, if it stays over for longer
//!   than the hop's SLA; its hand-off is `wms->erp` and its cause `sync_lag` (the ERP shows an
//!   earlier value of its upstream). Scored: every truly drifting key has an incident with the
//!   right hand-off and cause, raised within the SLA plus one observation interval; no incident
//!   on a key that is not drifting.
//! - **A lagging ERP snapshot covering storefront orders**: every hour the ERP sends `set
//!   committed` stamped with its send time but built from data `erp_lag_s` old. Truth: the sets
//!   that omit a storefront order placed in between. Scored: the `cross_source_cover` findings
//!   of the core's rules (through [`MemoryLedger`]) against them.
//! - **Negative stock from out-of-order receipts**: low-stock skus whose receipts reach the hub
//!   half an hour late, after shipments picked from them. Truth: the shipments the hub applied
//!   while the receipt before them was missing, taking `on_hand` below 0. Scored: the
//!   `negative_stock` findings against them, and none on the other skus.
//!
//! Deterministic given the seed; nothing is written.

use crate::rng::Rng;
use driftless_audit::checkpoint::{self as judge, Observation, Reading, Transition, Watch};
use driftless_config::audit::Threshold;
use driftless_core::checkpoint::{Checkpoints, Rule};
use driftless_core::{
    Event, Location, MemoryLedger, Outcome, RawEvent, Rules, Sku, State, SystemId,
};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;

/// The drill's knobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillParams {
    pub seed: u64,
    /// Skus per scenario.
    pub skus: usize,
    pub hours: u32,
    /// Seconds between a system's observations.
    pub interval_s: i64,
    /// The `wms -> erp` hop's `latency_sla`, seconds.
    pub sla_s: i64,
    /// Share of the replication skus whose mirror freezes.
    pub stop_share: f64,
    /// How old the ERP's data is when it sends its `set committed`, seconds.
    pub erp_lag_s: i64,
}

impl Default for DrillParams {
    fn default() -> Self {
        DrillParams {
            seed: 1,
            skus: 200,
            hours: 24,
            interval_s: 300,
            sla_s: 900,
            stop_share: 0.3,
            erp_lag_s: 600,
        }
    }
}

/// The drill's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DrillScore {
    /// Keys truly drifting (replication stopped and over the thresholds for longer than the SLA).
    pub drifting_keys: u64,
    /// Of them, with a `handoff_drift` incident.
    pub detected: u64,
    pub right_handoff: u64,
    pub right_cause: u64,
    pub within_latency: u64,
    /// Incidents on keys that were not drifting.
    pub false_incidents: u64,
    /// The slowest detection, seconds after the drift began.
    pub max_latency_s: i64,
    pub cover_truth: u64,
    pub cover_found: u64,
    pub cover_right: u64,
    pub negative_truth: u64,
    pub negative_found: u64,
    pub negative_right: u64,
}

impl DrillScore {
    /// Whether the goals of issue 20 are met: hand-off ≥ 99% and cause ≥ 95% of the drifting
    /// keys, every one within the SLA plus one interval, no false incident; and the rules found
    /// exactly their truth.
    pub fn met(&self) -> bool {
        self.drifting_keys > 0
            && self.right_handoff as f64 >= 0.99 * self.drifting_keys as f64
            && self.right_cause as f64 >= 0.95 * self.drifting_keys as f64
            && self.within_latency == self.drifting_keys
            && self.false_incidents == 0
            && self.cover_right == self.cover_truth
            && self.cover_found == self.cover_truth
            && self.negative_right == self.negative_truth
            && self.negative_found == self.negative_truth
    }
}

const T0: i64 = 1_795_737_600; // 2026-11-27T00:00:00Z
const S: i64 = 1_000_000_000;

fn at(secs: i64) -> String {
    chrono::DateTime::from_timestamp(T0 + secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

struct Hub {
    ledger: MemoryLedger,
    loc: Location,
}

impl Hub {
    /// Applies one event; returns its outcome and the rules that held.
    fn send(
        &mut self,
        id: &str,
        source: &str,
        sku: &str,
        secs: i64,
        set: bool,
        q: &[(&str, i64)],
    ) -> (Outcome, Vec<Rule>) {
        let occurred = at(secs);
        let raw = RawEvent {
            id,
            source,
            sku,
            location: self.loc.as_str(),
            occurred_at: &occurred,
            set: set.then(|| q.to_vec()),
            adjust: (!set).then(|| q.to_vec()),
            ..RawEvent::default()
        };
        match Event::from_raw(&raw) {
            Ok(ev) => {
                let a = self.ledger.apply(ev);
                (a.outcome, a.findings.iter().map(|f| f.rule).collect())
            }
            Err(_) => (Outcome::Rejected, vec![]),
        }
    }

    fn level(&self, sku: &str, s: State) -> i64 {
        match Sku::parse(sku) {
            Ok(k) => self.ledger.levels(&k, &self.loc).get(s),
            Err(_) => 0,
        }
    }
}

/// Runs the drill.
pub fn drill(p: &DrillParams) -> DrillScore {
    let mut score = DrillScore::default();
    let systems: HashSet<SystemId> = ["wms", "erp", "shop"]
        .iter()
        .filter_map(|s| SystemId::parse(*s).ok())
        .collect();
    let rules = Rules {
        systems,
        checkpoints: Checkpoints {
            // The ERP's data is at most `erp_lag_s` old; a storefront order older than that
            // before its set is one it had.
            cover_window_nanos: p.erp_lag_s * S,
            ..Checkpoints::warn_all()
        },
        ..Rules::default()
    };
    let Ok(loc) = Location::parse("DC1") else {
        return score;
    };
    let mut hub = Hub {
        ledger: MemoryLedger::new(rules),
        loc,
    };
    let mut rng = Rng::stream(p.seed, "checkpoints");
    let end = i64::from(p.hours) * 3600;
    let threshold = Threshold { units: 2, pct: 1.0 };
    let sla = Duration::from_secs(p.sla_s.max(0) as u64);

    // Per scenario, its skus.
    let repl: Vec<String> = (0..p.skus).map(|i| format!("R-{i:04}")).collect();
    let cover: Vec<String> = (0..p.skus).map(|i| format!("C-{i:04}")).collect();
    let low: Vec<String> = (0..p.skus).map(|i| format!("N-{i:04}")).collect();
    let stops: Vec<Option<i64>> = repl
        .iter()
        .map(|_| {
            rng.chance(p.stop_share)
                .then(|| rng.range(3600, end - 3600))
        })
        .collect();
    for s in repl.iter().chain(&cover) {
        hub.send(
            &format!("count-{s}"),
            "wms",
            s,
            0,
            true,
            &[("on_hand", 100)],
        );
    }
    for s in &low {
        hub.send(&format!("count-{s}"), "wms", s, 0, true, &[("on_hand", 2)]);
    }

    // Replication: the hub's on_hand history per sku, the ERP's mirror, the checkpoint.
    let mut history: Vec<Vec<(i64, i64)>> = repl.iter().map(|_| vec![(0, 100)]).collect();
    let mut watch: Vec<Option<Watch>> = vec![None; repl.len()];
    let mut opened: Vec<Option<(i64, String, String)>> = vec![None; repl.len()];
    // Cover: storefront orders per sku (time), to know which sets swallow one.
    let mut orders: Vec<Vec<i64>> = vec![vec![]; cover.len()];
    // Late receipts: (deliver at, sku index, receipt time, qty).
    let mut late: Vec<(i64, usize, i64)> = Vec::new();
    let mut missing: Vec<u32> = vec![0; low.len()];
    let mut n = 0u64;
    let value_at = |h: &[(i64, i64)], t: i64| {
        h.iter()
            .take_while(|(x, _)| *x <= t)
            .last()
            .map_or(0, |(_, v)| *v)
    };

    for minute in 1..=(end / 60) {
        let t = minute * 60;
        // Business on the replication skus: orders shipped (on_hand down), now and then a receipt.
        for (i, s) in repl.iter().enumerate() {
            let dq = if rng.chance(0.05) {
                -1
            } else if rng.chance(0.004) {
                20
            } else {
                0
            };
            if dq != 0 {
                n += 1;
                hub.send(&format!("m-{n}"), "wms", s, t, false, &[("on_hand", dq)]);
                history[i].push((t, hub.level(s, State::OnHand)));
            }
        }
        // Storefront orders on the cover skus; the ERP's hourly snapshot from lagging data.
        for (i, s) in cover.iter().enumerate() {
            if rng.chance(0.02) {
                n += 1;
                hub.send(&format!("o-{n}"), "shop", s, t, false, &[("committed", 1)]);
                orders[i].push(t);
            }
            if t % 3600 == 0 {
                // Built from data `erp_lag_s` old: the orders since are missing from it.
                let data_at = t - p.erp_lag_s;
                let known = orders[i].iter().filter(|o| **o <= data_at).count() as i64;
                let omitted = orders[i].iter().any(|o| *o > data_at && *o < t);
                let (outcome, found) = hub.send(
                    &format!("erp-{s}-{t}"),
                    "erp",
                    s,
                    t,
                    true,
                    &[("committed", known)],
                );
                let flagged = found.contains(&Rule::CrossSourceCover);
                score.cover_truth += u64::from(omitted);
                score.cover_found += u64::from(flagged);
                score.cover_right += u64::from(flagged && omitted);
                debug_assert_eq!(outcome, Outcome::Applied);
            }
        }
        // Low-stock skus: a receipt now and then, every fourth one reaching the hub half an hour
        // late; shipments while the stock (as the warehouse knows it) allows.
        for (i, s) in low.iter().enumerate() {
            if rng.chance(0.01) {
                if rng.chance(0.25) {
                    late.push((t + 1800, i, t));
                    missing[i] += 1;
                } else {
                    n += 1;
                    hub.send(&format!("r-{n}"), "wms", s, t, false, &[("on_hand", 5)]);
                }
            }
            let physical = hub.level(s, State::OnHand) + 5 * i64::from(missing[i]);
            if physical > 0 && rng.chance(0.03) {
                n += 1;
                let before = hub.level(s, State::OnHand);
                let (_, found) =
                    hub.send(&format!("s-{n}"), "wms", s, t, false, &[("on_hand", -1)]);
                let truth = before - 1 < 0 && missing[i] > 0;
                let flagged = found.contains(&Rule::NegativeStock);
                score.negative_truth += u64::from(truth);
                score.negative_found += u64::from(flagged);
                score.negative_right += u64::from(flagged && truth);
            }
        }
        let (due, rest): (Vec<_>, Vec<_>) = late.into_iter().partition(|(d, _, _)| *d <= t);
        late = rest;
        for (_, i, when) in due {
            n += 1;
            hub.send(
                &format!("r-{n}"),
                "wms",
                &low[i],
                when,
                false,
                &[("on_hand", 5)],
            );
            missing[i] = missing[i].saturating_sub(1);
        }

        // The ERP observes its mirror every interval.
        if t % p.interval_s.max(60) != 0 {
            continue;
        }
        for (i, _) in repl.iter().enumerate() {
            let mirror_at = match stops[i] {
                Some(stop) if stop <= t => stop,
                _ => t - 60,
            };
            let shown = value_at(&history[i], mirror_at);
            let expected = value_at(&history[i], t);
            // The values the ERP was expected to show within the hop's window: its daily batch
            // window (the example's `every 24h`) before now.
            let earlier: Vec<i64> = history[i]
                .iter()
                .filter(|(x, _)| *x >= t - 86_400 && *x < t)
                .map(|(_, v)| *v)
                .chain(std::iter::once(value_at(&history[i], t - 86_400)))
                .collect();
            let reading = Reading {
                expected,
                committed: 0,
                earlier,
                factors: vec![],
            };
            let obs = Observation {
                quantity: shown,
                observed_nanos: (T0 + t) * S,
                actor: None,
            };
            if let Some((w, tr)) = judge::judge(
                watch[i].as_ref(),
                &obs,
                &reading,
                &threshold,
                "wms->erp",
                sla,
                |_| true,
            ) {
                if matches!(tr, Transition::Open(_)) && opened[i].is_none() {
                    opened[i] = Some((t, w.handoff.clone(), w.cause.clone()));
                }
                watch[i] = Some(w);
            }
        }
    }

    // Truth for the replication skus: minute by minute.
    for i in 0..repl.len() {
        let mut began = None;
        let mut drifting = false;
        // Over the thresholds for longer than the SLA, but too near the end of the run for the
        // next observation to be required: truly drifting, so an incident on it is not false,
        // and not scored either way.
        let mut late = false;
        if let Some(stop) = stops[i] {
            let frozen = value_at(&history[i], stop);
            // The hub's value changes only at its history's moments: the truth is judged per
            // segment between them (a grid of minutes from the stop would miss a drift that
            // began between two of its points and lasted just over the SLA by the end).
            let mut moments: Vec<i64> = std::iter::once(stop)
                .chain(
                    history[i]
                        .iter()
                        .map(|(x, _)| *x)
                        .filter(|x| *x > stop && *x < end),
                )
                .collect();
            moments.push(end);
            let mut since: Option<i64> = None;
            for w in moments.windows(2) {
                let (from, to) = (w[0], w[1]);
                let hub_v = value_at(&history[i], from);
                if !judge::over(&threshold, frozen - hub_v, hub_v) {
                    since = None;
                    continue;
                }
                let s0 = *since.get_or_insert(from);
                // Over on `[from, to)` between changes, and still over at the end itself: the
                // judge opens once a divergence has lasted the SLA (`outlived`), so a drift
                // lasting exactly the SLA at the end counts.
                let lasted = to - s0 > p.sla_s || (to == end && to - s0 >= p.sla_s);
                if lasted {
                    if s0 + p.sla_s + p.interval_s <= end {
                        began = Some(s0);
                        drifting = true;
                    } else {
                        late = true;
                    }
                    break;
                }
            }
        }
        match (&opened[i], drifting) {
            (Some((when, handoff, cause)), true) => {
                score.drifting_keys += 1;
                score.detected += 1;
                score.right_handoff += u64::from(handoff == "wms->erp");
                score.right_cause += u64::from(cause == "sync_lag");
                let latency = when - began.unwrap_or(*when);
                score.max_latency_s = score.max_latency_s.max(latency);
                score.within_latency += u64::from(latency <= p.sla_s + p.interval_s + 60);
            }
            (None, true) => score.drifting_keys += 1,
            (_, false) if late => {}
            (Some(_), false) => score.false_incidents += 1,
            (None, false) => {}
        }
    }
    score
}

/// `n` of `of` as a percentage, `-` when `of` is 0.
fn pct(n: u64, of: u64) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.2}%", 100.0 * n as f64 / of as f64)
    }
}

/// The text report of the drill over seeds: one line per seed, then the totals; `met` is whether
/// every seed met the goals.
pub fn render_scores(scores: &[(u64, DrillScore)], met: bool) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "seed  drifting  detected  hand-off   cause     in time   max s  false  cover    negative  goals\n",
    );
    let mut total = DrillScore::default();
    for (seed, s) in scores {
        let _ = writeln!(
            out,
            "{seed:<5} {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>6}  {:>5}  {:>3}/{:<4} {:>3}/{:<5} {}",
            s.drifting_keys,
            s.detected,
            pct(s.right_handoff, s.drifting_keys),
            pct(s.right_cause, s.drifting_keys),
            pct(s.within_latency, s.drifting_keys),
            s.max_latency_s,
            s.false_incidents,
            s.cover_right,
            s.cover_truth,
            s.negative_right,
            s.negative_truth,
            if s.met() { "met" } else { "MISSED" },
        );
        total.drifting_keys += s.drifting_keys;
        total.right_handoff += s.right_handoff;
        total.right_cause += s.right_cause;
        total.within_latency += s.within_latency;
        total.false_incidents += s.false_incidents;
        total.max_latency_s = total.max_latency_s.max(s.max_latency_s);
    }
    let _ = writeln!(
        out,
        "all: {} drifting keys, hand-off {}, cause {}, in time {}, slowest {} s, {} false incidents: goals {}",
        total.drifting_keys,
        pct(total.right_handoff, total.drifting_keys),
        pct(total.right_cause, total.drifting_keys),
        pct(total.within_latency, total.drifting_keys),
        total.max_latency_s,
        total.false_incidents,
        if met { "met" } else { "MISSED" },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drill_is_deterministic() {
        let p = DrillParams {
            skus: 20,
            hours: 6,
            ..DrillParams::default()
        };
        assert_eq!(drill(&p), drill(&p));
    }
}
