//! Drift over time from stored audits: per hand-off series, the degrading hand-off, and the
//! repair-or-rebuild reading of the seed — drift isolated to one hand-off means repair that
//! integration; drift spread across the hand-offs (or people fixing counts by hand day after day)
//! means the point-to-point design is the problem: rebuild around the hub.

use crate::render::{STYLE, esc};
use crate::svg;
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeSet;
use std::fmt::Write;

/// One stored audit, as trends see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendPoint {
    pub at: DateTime<Utc>,
    pub skus_compared: u64,
    /// `(handoff, drifting_skus, abs_units)`.
    pub handoffs: Vec<(String, u64, u64)>,
    /// Rows whose cause was `manual_override`.
    pub manual_overrides: u64,
}

impl TrendPoint {
    /// One stored audit (as a ledger keeps it: counts, per-hand-off totals and the report as
    /// JSON) as a point of the trend; a report that no longer parses counts no manual overrides.
    pub fn of_stored(
        at: DateTime<Utc>,
        skus_compared: i64,
        handoffs: &[(String, i64, i64)],
        report_json: &str,
    ) -> TrendPoint {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        TrendPoint {
            at,
            skus_compared: count(skus_compared),
            handoffs: handoffs
                .iter()
                .map(|(h, d, u)| (h.clone(), count(*d), count(*u)))
                .collect(),
            manual_overrides: serde_json::from_str::<crate::Report>(report_json).map_or(0, |r| {
                r.rows
                    .iter()
                    .filter(|x| x.cause == "manual_override")
                    .count() as u64
            }),
        }
    }
}

/// What the trend says.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// No audits in the window.
    NoData,
    /// No drift anywhere.
    Clean,
    /// Drift only at the count: a counting or shrink problem, not an integration one.
    Count,
    /// Drift concentrated at one integration hand-off: repair it.
    Repair { handoff: String, share_pct: f64 },
    /// Drift spread across hand-offs, or manual fixes most days: rebuild around the hub.
    Rebuild { reason: String },
}

/// The analysed series.
#[derive(Debug, Clone)]
pub struct Trend {
    /// Every hand-off seen, in first-seen order.
    pub handoffs: Vec<String>,
    pub points: Vec<TrendPoint>,
    /// The hand-off whose drift grows fastest, with its slope in drifting skus per day; only when
    /// the growth over the window is at least 2 skus and a quarter of its average.
    pub degrading: Option<(String, f64)>,
    pub reading: Reading,
}

/// Share of integration drift one hand-off must carry to be "isolated".
const ISOLATED: f64 = 0.8;
/// Share of audits with manual overrides that counts as "daily manual fixes".
const MANUAL_DAYS: f64 = 0.5;

fn drifting(p: &TrendPoint, h: &str) -> u64 {
    p.handoffs
        .iter()
        .find(|(n, _, _)| n == h)
        .map_or(0, |(_, d, _)| *d)
}

/// Least-squares slope of `y` over `x` (days); 0 with fewer than two distinct `x`.
fn slope(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return 0.0;
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx
}

/// Analyses audits (any order).
pub fn analyze(mut points: Vec<TrendPoint>) -> Trend {
    points.sort_by_key(|p| p.at);
    let mut handoffs: Vec<String> = Vec::new();
    for p in &points {
        for (h, _, _) in &p.handoffs {
            if !handoffs.contains(h) {
                handoffs.push(h.clone());
            }
        }
    }
    let Some(first) = points.first().map(|p| p.at) else {
        return Trend {
            handoffs,
            points,
            degrading: None,
            reading: Reading::NoData,
        };
    };
    let days = |t: DateTime<Utc>| (t - first).num_seconds() as f64 / 86_400.0;
    let span = points.last().map_or(0.0, |p| days(p.at));
    // Degrading: the fitted growth over the window is real, not noise: at least 2 skus and at
    // least a quarter of the hand-off's average.
    let degrading = handoffs
        .iter()
        .filter_map(|h| {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (days(p.at), drifting(p, h) as f64))
                .collect();
            let s = slope(&pts);
            let mean = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
            let growth = s * span;
            (s > 0.0 && growth >= 2.0 && growth >= 0.25 * mean).then(|| (h.clone(), s))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));

    let integration: Vec<&String> = handoffs
        .iter()
        .filter(|h| !h.starts_with("physical->"))
        .collect();
    let totals: Vec<(String, u64)> = integration
        .iter()
        .map(|h| ((*h).clone(), points.iter().map(|p| drifting(p, h)).sum()))
        .collect();
    let sum: u64 = totals.iter().map(|t| t.1).sum();
    let count_drift: u64 = handoffs
        .iter()
        .filter(|h| h.starts_with("physical->"))
        .map(|h| points.iter().map(|p| drifting(p, h)).sum::<u64>())
        .sum();
    let manual_audits = points.iter().filter(|p| p.manual_overrides > 0).count();
    let reading = if points.len() >= 2 && manual_audits as f64 >= MANUAL_DAYS * points.len() as f64
    {
        Reading::Rebuild {
            reason: format!(
                "manual overrides in {manual_audits} of {} audits: people are fixing counts by hand",
                points.len()
            ),
        }
    } else if sum == 0 {
        if count_drift > 0 {
            Reading::Count
        } else {
            Reading::Clean
        }
    } else {
        let (top, top_n) = totals
            .iter()
            .max_by_key(|t| t.1)
            .cloned()
            .unwrap_or_default();
        let share = top_n as f64 / sum as f64;
        let with_drift = totals.iter().filter(|t| t.1 > 0).count();
        if share >= ISOLATED || totals.len() == 1 {
            Reading::Repair {
                handoff: top,
                share_pct: share * 100.0,
            }
        } else {
            Reading::Rebuild {
                reason: format!(
                    "drift across {with_drift} of {} hand-offs; the largest carries only {:.0}%",
                    totals.len(),
                    share * 100.0
                ),
            }
        }
    };
    Trend {
        handoffs,
        points,
        degrading,
        reading,
    }
}

impl Reading {
    /// One sentence for operators.
    pub fn sentence(&self) -> String {
        match self {
            Reading::NoData => "no stored audits in this window: run `driftless audit` first".into(),
            Reading::Clean => "no drift in this window".into(),
            Reading::Count => "drift only at the physical count: a counting or shrink problem; the integrations are sound".into(),
            Reading::Repair { handoff, share_pct } => format!(
                "repair {handoff}: it carries {share_pct:.0}% of the integration drift"
            ),
            Reading::Rebuild { reason } => format!("rebuild around the hub: {reason}"),
        }
    }
}

/// The terminal text: a table of drifting skus per hand-off per audit, then the reading.
pub fn text(t: &Trend) -> String {
    let mut o = String::new();
    if t.points.is_empty() {
        let _ = writeln!(o, "{}", t.reading.sentence());
        return o;
    }
    // Hand-offs as columns, 12 wide each; dates as rows.
    let _ = write!(o, "{:<17}", "audit (UTC)");
    for h in &t.handoffs {
        let short: String = h.chars().take(13).collect();
        let _ = write!(o, " {short:>13}");
    }
    o.push('\n');
    for p in &t.points {
        let _ = write!(o, "{:<17}", p.at.format("%Y-%m-%d %H:%M"));
        for h in &t.handoffs {
            let _ = write!(o, " {:>13}", drifting(p, h));
        }
        o.push('\n');
    }
    o.push_str("(drifting sku/locations per hand-off)\n\n");
    match &t.degrading {
        Some((h, s)) => {
            let _ = writeln!(o, "degrading: {h} (+{s:.1} drifting skus per day)");
        }
        None => {
            let _ = writeln!(o, "degrading: none");
        }
    }
    let _ = writeln!(o, "reading: {}", t.reading.sentence());
    o
}

/// The chart: drifting skus per hand-off over time.
pub fn svg(t: &Trend) -> String {
    let (Some(first), Some(last)) = (t.points.first(), t.points.last()) else {
        return svg::lines(&[], &[], "drifting skus");
    };
    let span = (last.at - first.at).num_seconds().max(1) as f64;
    let x = |at: DateTime<Utc>| {
        if t.points.len() == 1 {
            0.5
        } else {
            (at - first.at).num_seconds() as f64 / span
        }
    };
    let series: Vec<(String, Vec<(f64, f64)>)> = t
        .handoffs
        .iter()
        .map(|h| {
            (
                h.clone(),
                t.points
                    .iter()
                    .map(|p| (x(p.at), drifting(p, h) as f64))
                    .collect(),
            )
        })
        .collect();
    let days: BTreeSet<String> = t
        .points
        .iter()
        .map(|p| p.at.format("%m-%d").to_string())
        .collect();
    let step = days.len().div_ceil(8).max(1);
    let labels: Vec<(f64, String)> = t
        .points
        .iter()
        .map(|p| (x(p.at), p.at.format("%m-%d").to_string()))
        .fold(Vec::<(f64, String)>::new(), |mut acc, (x, d)| {
            if !acc.iter().any(|(_, l)| *l == d) {
                acc.push((x, d));
            }
            acc
        })
        .into_iter()
        .step_by(step)
        .collect();
    svg::lines(&series, &labels, "drifting skus")
}

/// A self-contained HTML page with the chart and the reading.
pub fn html(t: &Trend) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Drift trend</title><style>{STYLE}</style></head><body><h1>Drift per hand-off</h1>"
    );
    if let (Some(a), Some(b)) = (t.points.first(), t.points.last()) {
        let _ = write!(
            o,
            "<p>{} audits from {} to {}.</p>",
            t.points.len(),
            esc(&a.at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            esc(&b.at.to_rfc3339_opts(SecondsFormat::Secs, true))
        );
    }
    o.push_str(&svg(t));
    if let Some((h, s)) = &t.degrading {
        let _ = write!(
            o,
            "<p>Degrading: <strong>{}</strong> (+{s:.1} drifting skus per day).</p>",
            esc(h)
        );
    }
    let _ = writeln!(
        o,
        "<p><strong>{}</strong></p></body></html>",
        esc(&t.reading.sentence())
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(day: i64, h: &[(&str, u64)], manual: u64) -> TrendPoint {
        TrendPoint {
            at: DateTime::from_timestamp(1_700_000_000 + day * 86_400, 0).unwrap(),
            skus_compared: 100,
            handoffs: h
                .iter()
                .map(|(n, d)| ((*n).to_owned(), *d, *d * 3))
                .collect(),
            manual_overrides: manual,
        }
    }

    #[test]
    fn isolated_drift_is_repaired() {
        let pts = (0..10)
            .map(|d| {
                p(
                    d,
                    &[
                        ("physical->wms", 1),
                        ("wms->erp", 0),
                        ("erp->shop", d as u64 * 2),
                    ],
                    0,
                )
            })
            .collect();
        let t = analyze(pts);
        assert_eq!(
            t.degrading.as_ref().map(|d| d.0.as_str()),
            Some("erp->shop")
        );
        assert!(matches!(&t.reading, Reading::Repair { handoff, .. } if handoff == "erp->shop"));
        assert!(text(&t).contains("repair erp->shop"));
        assert!(svg(&t).starts_with("<svg"));
    }

    #[test]
    fn spread_drift_or_daily_manual_fixes_mean_rebuild() {
        let pts = (0..6)
            .map(|d| p(d, &[("wms->erp", 5), ("erp->shop", 6)], 0))
            .collect();
        assert!(matches!(analyze(pts).reading, Reading::Rebuild { .. }));
        let pts = (0..6)
            .map(|d| p(d, &[("wms->erp", 0), ("erp->shop", 6)], 2))
            .collect();
        assert!(matches!(analyze(pts).reading, Reading::Rebuild { .. }));
        assert_eq!(analyze(vec![]).reading, Reading::NoData);
        let pts = (0..3)
            .map(|d| p(d, &[("physical->wms", 4), ("wms->erp", 0)], 0))
            .collect();
        assert_eq!(analyze(pts).reading, Reading::Count);
    }
}
