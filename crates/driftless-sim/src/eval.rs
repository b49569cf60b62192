//! Precision and recall of an audit against the ground truth: of hand-off attribution, and of the
//! cause, overall and per cause. Independent of the auditor crate: it compares rows.

use crate::truth::TruthRow;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One row an auditor reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub sku: String,
    pub location: String,
    pub handoff: String,
    pub cause: String,
}

/// Precision = right / reported, recall = right / true. An empty denominator scores 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Score {
    pub right: u64,
    pub reported: u64,
    pub truth: u64,
    pub precision: f64,
    pub recall: f64,
}

impl Score {
    /// The score of `right` out of `reported` rows and `truth` true rows.
    pub fn new(right: u64, reported: u64, truth: u64) -> Score {
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        Score {
            right,
            reported,
            truth,
            precision: ratio(right, reported),
            recall: ratio(right, truth),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// The right key at the right hand-off.
    pub handoff: Score,
    /// The right key, hand-off and cause.
    pub cause: Score,
    /// The right key and hand-off, and a cause that contributed over the threshold (differs from
    /// `cause` only where defects compound on one key).
    pub cause_contributing: Score,
    pub per_cause: BTreeMap<String, Score>,
    /// Rows where the auditor disagreed, for inspection: (sku, location, truth, reported).
    pub mistakes: Vec<Mistake>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mistake {
    pub sku: String,
    pub location: String,
    /// `handoff/cause`, or empty when absent on that side.
    pub truth: String,
    pub reported: String,
}

pub fn evaluate(truth: &[TruthRow], reported: &[Reported]) -> Evaluation {
    let t: HashMap<(&str, &str), &TruthRow> = truth
        .iter()
        .map(|r| ((r.sku.as_str(), r.location.as_str()), r))
        .collect();
    let r: HashMap<(&str, &str), &Reported> = reported
        .iter()
        .map(|r| ((r.sku.as_str(), r.location.as_str()), r))
        .collect();
    let mut hand_right = 0;
    let mut cause_right = 0;
    let mut contributing_right = 0;
    let mut per: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for row in truth {
        per.entry(row.cause.clone()).or_default().2 += 1;
    }
    let mut mistakes = Vec::new();
    for row in reported {
        per.entry(row.cause.clone()).or_default().1 += 1;
        let key = (row.sku.as_str(), row.location.as_str());
        match t.get(&key) {
            Some(tr) if tr.handoff == row.handoff => {
                hand_right += 1;
                if tr.contributing.contains(&row.cause) || tr.cause == row.cause {
                    contributing_right += 1;
                }
                if tr.cause == row.cause {
                    cause_right += 1;
                    per.entry(row.cause.clone()).or_default().0 += 1;
                    continue;
                }
                mistakes.push(Mistake {
                    sku: row.sku.clone(),
                    location: row.location.clone(),
                    truth: format!("{}/{}", tr.handoff, tr.cause),
                    reported: format!("{}/{}", row.handoff, row.cause),
                });
            }
            other => mistakes.push(Mistake {
                sku: row.sku.clone(),
                location: row.location.clone(),
                truth: other.map_or(String::new(), |tr| format!("{}/{}", tr.handoff, tr.cause)),
                reported: format!("{}/{}", row.handoff, row.cause),
            }),
        }
    }
    for row in truth {
        if !r.contains_key(&(row.sku.as_str(), row.location.as_str())) {
            mistakes.push(Mistake {
                sku: row.sku.clone(),
                location: row.location.clone(),
                truth: format!("{}/{}", row.handoff, row.cause),
                reported: String::new(),
            });
        }
    }
    mistakes.sort_by(|a, b| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)));
    Evaluation {
        handoff: Score::new(hand_right, reported.len() as u64, truth.len() as u64),
        cause: Score::new(cause_right, reported.len() as u64, truth.len() as u64),
        cause_contributing: Score::new(
            contributing_right,
            reported.len() as u64,
            truth.len() as u64,
        ),
        per_cause: per
            .into_iter()
            .map(|(c, (right, rep, tru))| (c, Score::new(right, rep, tru)))
            .collect(),
        mistakes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sku: &str, loc: &str, h: &str, c: &str) -> TruthRow {
        TruthRow {
            sku: sku.into(),
            location: loc.into(),
            handoff: h.into(),
            cause: c.into(),
            delta: 5,
            contributing: vec![c.into()],
        }
    }
    fn r(sku: &str, loc: &str, h: &str, c: &str) -> Reported {
        Reported {
            sku: sku.into(),
            location: loc.into(),
            handoff: h.into(),
            cause: c.into(),
        }
    }

    #[test]
    fn scores_hand_off_and_cause_separately() {
        let truth = [
            t("A", "DC1", "wms->erp", "sync_lag"),
            t("B", "", "erp->shop", "manual_override"),
            t("C", "DC1", "physical->wms", "count_variance"),
        ];
        let rep = [
            r("A", "DC1", "wms->erp", "uom_mismatch"),
            r("B", "", "erp->shop", "manual_override"),
            r("D", "DC2", "wms->erp", "sync_lag"),
        ];
        let e = evaluate(&truth, &rep);
        assert_eq!(
            (e.handoff.right, e.handoff.reported, e.handoff.truth),
            (2, 3, 3)
        );
        assert_eq!(e.cause.right, 1);
        assert_eq!(e.per_cause["sync_lag"].recall, 0.0);
        assert_eq!(e.per_cause["manual_override"].precision, 1.0);
        assert_eq!(e.per_cause["uom_mismatch"].precision, 0.0);
        assert_eq!(e.mistakes.len(), 3);
        let perfect = evaluate(&truth[..1], &[r("A", "DC1", "wms->erp", "sync_lag")]);
        assert_eq!(perfect.cause.precision, 1.0);
        assert_eq!(perfect.cause.recall, 1.0);
    }
}
