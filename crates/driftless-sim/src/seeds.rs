//! The accuracy goals of `simulate --evaluate`, and the evaluation over a range of seeds
//! (`--seeds A..B`): scores summed per scenario and architecture, every miss, and the text and
//! JSON reports. Pure: the CLI simulates, writes, audits (`files::audit_dir`) and prints.

use crate::eval::{Evaluation, Mistake, Score};
use crate::scenario::Architecture;
use std::fmt::Write;

/// Hand-off attribution goal: share of drifting keys attributed to the right hand-off.
pub const HANDOFF_GOAL: f64 = 0.99;
/// Cause goal: share of drifting keys given the right cause.
pub const CAUSE_GOAL: f64 = 0.95;
/// The goals over many seeds (`--seeds`), per scenario and architecture: with thousands of keys a
/// single run's noise is gone, so the bar is higher.
pub const SEEDS_HANDOFF_GOAL: f64 = 0.995;
pub const SEEDS_CAUSE_GOAL: f64 = 0.99;

/// Misses listed in the text output; `--format json` has all of them.
const MISSES_SHOWN: usize = 200;

/// Whether one run's evaluation meets the single-run goals (precision and recall).
pub fn met(e: &Evaluation) -> bool {
    e.handoff.recall >= HANDOFF_GOAL
        && e.handoff.precision >= HANDOFF_GOAL
        && e.cause.recall >= CAUSE_GOAL
        && e.cause.precision >= CAUSE_GOAL
}

/// The text printed under a single run's report when it missed a goal.
pub fn goal_missed_text() -> String {
    format!(
        "\ngoal missed: hand-off >= {:.0}% and cause >= {:.0}% (precision and recall)",
        HANDOFF_GOAL * 100.0,
        CAUSE_GOAL * 100.0
    )
}

/// The evaluation of one scenario and architecture over a range of seeds.
#[derive(Debug)]
pub struct SeedsRow {
    pub scenario: String,
    pub architecture: &'static str,
    pub seeds: String,
    pub handoff: Score,
    pub cause: Score,
    /// Whether both scores (the lower of precision and recall) meet the `--seeds` goals.
    pub met: bool,
    pub misses: Vec<SeedMiss>,
}

#[derive(Debug)]
pub struct SeedMiss {
    pub seed: u64,
    pub mistake: Mistake,
}

/// Sums the evaluations of one scenario and architecture, seed by seed.
#[derive(Debug, Default)]
pub struct SeedsTally {
    handoff_right: u64,
    cause_right: u64,
    reported: u64,
    truth: u64,
    misses: Vec<SeedMiss>,
}

impl SeedsTally {
    pub fn add(&mut self, seed: u64, e: Evaluation) {
        self.handoff_right += e.handoff.right;
        self.cause_right += e.cause.right;
        self.reported += e.handoff.reported;
        self.truth += e.handoff.truth;
        self.misses.extend(
            e.mistakes
                .into_iter()
                .map(|mistake| SeedMiss { seed, mistake }),
        );
    }

    /// The row of seeds `first..=last`.
    pub fn finish(self, scenario: &str, arch: Architecture, (first, last): (u64, u64)) -> SeedsRow {
        let handoff = Score::new(self.handoff_right, self.reported, self.truth);
        let cause = Score::new(self.cause_right, self.reported, self.truth);
        SeedsRow {
            scenario: scenario.to_owned(),
            architecture: arch.as_str(),
            seeds: format!("{first}..{last}"),
            met: low(&handoff) >= SEEDS_HANDOFF_GOAL && low(&cause) >= SEEDS_CAUSE_GOAL,
            handoff,
            cause,
            misses: self.misses,
        }
    }
}

impl SeedsRow {
    pub fn to_json(&self) -> serde_json::Value {
        let misses: Vec<serde_json::Value> = self
            .misses
            .iter()
            .map(|m| {
                serde_json::json!({
                    "seed": m.seed,
                    "sku": m.mistake.sku,
                    "location": m.mistake.location,
                    "truth": m.mistake.truth,
                    "reported": m.mistake.reported,
                })
            })
            .collect();
        serde_json::json!({
            "scenario": self.scenario,
            "architecture": self.architecture,
            "seeds": self.seeds,
            "handoff": self.handoff,
            "cause": self.cause,
            "met": self.met,
            "misses": misses,
        })
    }
}

fn low(s: &Score) -> f64 {
    s.precision.min(s.recall)
}

/// The text report of `--seeds`, for runs of `skus` skus over `days` days.
pub fn render(rows: &[SeedsRow], skus: u32, days: u32) -> String {
    let pct = |x: f64| format!("{:.2} %", x * 100.0);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "the auditor against the ground truth, seeds {}, {} skus, {} days \
         (accuracy: the lower of precision and recall)\n",
        rows.first().map_or("", |r| r.seeds.as_str()),
        skus,
        days
    );
    let _ = writeln!(
        o,
        "{:<20} {:<15} {:>9} {:>9} {:>9} {:>9}  goal",
        "scenario", "architecture", "true keys", "reported", "hand-off", "cause"
    );
    for r in rows {
        let _ = writeln!(
            o,
            "{:<20} {:<15} {:>9} {:>9} {:>9} {:>9}  {}",
            r.scenario,
            r.architecture,
            r.handoff.truth,
            r.handoff.reported,
            pct(low(&r.handoff)),
            pct(low(&r.cause)),
            if r.met { "met" } else { "MISSED" }
        );
    }
    let (t, rep, h, c) = rows.iter().fold((0, 0, 0, 0), |a, r| {
        (
            a.0 + r.handoff.truth,
            a.1 + r.handoff.reported,
            a.2 + r.handoff.right,
            a.3 + r.cause.right,
        )
    });
    let all_h = Score::new(h, rep, t);
    let all_c = Score::new(c, rep, t);
    let _ = writeln!(
        o,
        "{:<20} {:<15} {:>9} {:>9} {:>9} {:>9}",
        "all",
        "",
        t,
        rep,
        pct(low(&all_h)),
        pct(low(&all_c))
    );
    let _ = writeln!(
        o,
        "\ngoal per scenario and architecture: hand-off >= {:.1} %, cause >= {:.0} %",
        SEEDS_HANDOFF_GOAL * 100.0,
        SEEDS_CAUSE_GOAL * 100.0
    );
    let total: usize = rows.iter().map(|r| r.misses.len()).sum();
    if total > 0 {
        let _ = writeln!(o, "\nmisses ({total}): truth vs audit, `-` where absent");
    }
    let mut shown = 0;
    for r in rows {
        for m in &r.misses {
            if shown == MISSES_SHOWN {
                break;
            }
            shown += 1;
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_owned()
                } else {
                    s.to_owned()
                }
            };
            let _ = writeln!(
                o,
                "  {} {} seed {}: {} {}: truth {} audit {}",
                r.scenario,
                r.architecture,
                m.seed,
                m.mistake.sku,
                if m.mistake.location.is_empty() {
                    "(channel)"
                } else {
                    &m.mistake.location
                },
                dash(&m.mistake.truth),
                dash(&m.mistake.reported)
            );
        }
    }
    if total > shown {
        let _ = writeln!(o, "  ... {} more (--format json lists all)", total - shown);
    }
    o
}
