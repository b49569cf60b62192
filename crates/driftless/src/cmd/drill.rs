//! `driftless simulate --evaluate --checkpoints --seeds A..B`: the checkpoint drill
//! (`driftless_sim::checkpoints`) per seed, scored against its ground truth: hand-off and cause of
//! every `handoff_drift` incident, how soon after the drift began it was raised, incidents on keys
//! that were not drifting, and the consistency rules' findings. Exit status 0 when every seed meets
//! the goals (DESIGN §7a; `DrillScore::met`), 1 otherwise.

use driftless_sim::checkpoints::{DrillParams, DrillScore, drill, render_scores};
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
        print!("{}", render_scores(&scores, met));
    }
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
