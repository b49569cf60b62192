//! `driftless simulate --evaluate --checkpoints --seeds A..B`: the checkpoint drill
//! (`driftless_sim::checkpoints`) per seed, scored against its ground truth: hand-off and cause of
//! every `handoff_drift` incident, how soon after the drift began it was raised, incidents on keys
//! that were not drifting, and the consistency rules' findings. Exit status 0 when every seed meets
//! the goals (DESIGN §7a; `DrillScore::met`), 1 otherwise.

use driftless_sim::checkpoints::{DrillParams, DrillScore, drill};
use std::fmt::Write;
use std::process::ExitCode;

pub fn run((first, last): (u64, u64), skus: usize, json: bool) -> anyhow::Result<ExitCode> {
    let scores: Vec<(u64, DrillScore)> = (first..=last)
        .map(|seed| {
            let p = DrillParams {
                seed,
                skus,
                ..DrillParams::default()
            };
            (seed, drill(&p))
        })
        .collect();
    let met = scores.iter().all(|(_, s)| s.met());
    if json {
        let v: Vec<serde_json::Value> = scores
            .iter()
            .map(|(seed, s)| serde_json::json!({"seed": seed, "met": s.met(), "score": s}))
            .collect();
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!("{}", render(&scores, met));
    }
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn pct(n: u64, of: u64) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.2}%", 100.0 * n as f64 / of as f64)
    }
}

fn render(scores: &[(u64, DrillScore)], met: bool) -> String {
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
