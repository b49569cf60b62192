//! The report as people and programs read it: a terminal table (summary first, readable at 80
//! columns), CSV (every row), and a self-contained HTML page with inline SVG charts (no external
//! scripts, fonts or styles, so it can be mailed or archived as one file).

use crate::report::{Report, Row};
use crate::svg;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Rows shown in the terminal table; the CSV, JSON and HTML outputs carry every row.
pub const TABLE_ROWS: usize = 40;
/// Rows listed in the HTML page's table (its charts cover all rows).
const HTML_ROWS: usize = 2_000;

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('~');
        out
    }
}

/// Rows by cause, in the order of §13.
pub fn causes(report: &Report) -> Vec<(&'static str, u64)> {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &report.rows {
        *counts.entry(r.cause.as_str()).or_default() += 1;
    }
    crate::Cause::ALL
        .iter()
        .map(|c| c.as_str())
        .filter_map(|c| counts.get(c).map(|n| (c, *n)))
        .collect()
}

/// The rows with the largest `|delta|`, largest first (ties by sku, location).
pub fn top_rows(report: &Report, n: usize) -> Vec<&Row> {
    let mut rows: Vec<&Row> = report.rows.iter().collect();
    rows.sort_by(|a, b| {
        b.delta
            .unsigned_abs()
            .cmp(&a.delta.unsigned_abs())
            .then_with(|| (&a.sku, &a.location).cmp(&(&b.sku, &b.location)))
    });
    rows.truncate(n);
    rows
}

/// The terminal table.
pub fn table(report: &Report) -> String {
    let mut o = String::new();
    let at = report.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let _ = writeln!(o, "drift audit at {at}");
    let verdict = if report.drifting == 0 {
        "nothing over threshold".to_owned()
    } else {
        format!("{} over threshold", report.drifting)
    };
    let _ = writeln!(
        o,
        "compared {} sku/locations: {verdict}",
        report.skus_compared
    );
    if report.not_counted > 0 {
        let _ = writeln!(
            o,
            "{} sku/locations not in the baseline (not judged at the count)",
            report.not_counted
        );
    }
    for a in &report.absent {
        let _ = writeln!(
            o,
            "{}: {} sku/locations missing (counted as 0)",
            cut(&a.system, 24),
            a.keys
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<24} {:>12} {:>14}",
        "hand-off", "drifting", "abs units"
    );
    for h in &report.handoffs {
        let _ = writeln!(
            o,
            "{:<24} {:>12} {:>14}",
            cut(&h.handoff, 24),
            h.drifting_skus,
            h.abs_units
        );
    }
    let c = causes(report);
    if !c.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "{:<24} {:>12}", "probable cause", "rows");
        for (cause, n) in c {
            let _ = writeln!(o, "{cause:<24} {n:>12}");
        }
    }
    if report.rows.is_empty() {
        return o;
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<16} {:<8} {:<13} {:<20} {:>8} {:>8}",
        "sku", "location", "hand-off", "cause", "delta", "shown"
    );
    let top = top_rows(report, TABLE_ROWS);
    for r in &top {
        let system = r.handoff.rsplit("->").next().unwrap_or("");
        let shown = r
            .values
            .get(system)
            .map_or_else(|| "-".to_owned(), |v| v.to_string());
        let loc = if r.location.is_empty() {
            "(all)"
        } else {
            &r.location
        };
        let _ = writeln!(
            o,
            "{:<16} {:<8} {:<13} {:<20} {:>+8} {:>8}",
            cut(&r.sku, 16),
            cut(loc, 8),
            cut(&r.handoff, 13),
            cut(&r.cause, 20),
            r.delta,
            cut(&shown, 8)
        );
    }
    if report.rows.len() > top.len() {
        let _ = writeln!(
            o,
            "... {} more rows (largest shown first); --format csv or json lists all",
            report.rows.len() - top.len()
        );
    }
    o
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) || s.starts_with(['=', '+', '-', '@']) {
        // Quoted, and a leading formula character neutralised so a spreadsheet does not run it.
        let s = if s.starts_with(['=', '+', '-', '@']) {
            format!("'{s}")
        } else {
            s.to_owned()
        };
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Every row as CSV: `sku,location,handoff,cause,delta,baseline`, then each system's value and
/// expected value (`<system>`, `expected_<system>`), empty where there is none, then `also` (the
/// second cause, empty when there is none; last so that the columns before keep their places).
pub fn csv(report: &Report) -> String {
    let mut o = String::new();
    let systems: Vec<String> = report
        .rows
        .first()
        .map(|r| r.values.0.iter().map(|(s, _)| s.clone()).collect())
        .unwrap_or_default();
    o.push_str("sku,location,handoff,cause,delta,baseline");
    for s in &systems {
        let _ = write!(o, ",{},expected_{}", csv_field(s), csv_field(s));
    }
    o.push_str(",also\n");
    let num = |v: Option<i64>| v.map_or_else(String::new, |v| v.to_string());
    for r in &report.rows {
        let _ = write!(
            o,
            "{},{},{},{},{},{}",
            csv_field(&r.sku),
            csv_field(&r.location),
            r.handoff,
            r.cause,
            r.delta,
            num(r.baseline)
        );
        for s in &systems {
            let _ = write!(o, ",{},{}", num(r.values.get(s)), num(r.expected.get(s)));
        }
        let _ = writeln!(o, ",{}", r.also.as_deref().unwrap_or(""));
    }
    o
}

pub(crate) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

pub(crate) const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:2em}table{border-collapse:collapse;font-size:.9em}\
td,th{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#1a7f37}.bad{color:#b42318}svg text{font-family:inherit;font-size:12px}";

/// The self-contained HTML page.
pub fn html(report: &Report) -> String {
    let mut o = String::new();
    let at = report.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Drift audit {}</title><style>{STYLE}</style></head><body>",
        esc(&at)
    );
    let _ = write!(o, "<h1>Drift audit at {}</h1>", esc(&at));
    let (class, verdict) = if report.drifting == 0 {
        ("ok", "nothing over threshold".to_owned())
    } else {
        ("bad", format!("{} over threshold", report.drifting))
    };
    let _ = write!(
        o,
        "<p>Compared {} sku/locations: <strong class=\"{class}\">{verdict}</strong>.",
        report.skus_compared
    );
    if report.not_counted > 0 {
        let _ = write!(
            o,
            " {} sku/locations were not in the baseline.",
            report.not_counted
        );
    }
    for a in &report.absent {
        let _ = write!(
            o,
            " {}: {} sku/locations missing from its snapshot.",
            esc(&a.system),
            a.keys
        );
    }
    o.push_str("</p>");

    o.push_str("<h2>Drift per hand-off</h2>");
    let bars: Vec<(String, f64, String)> = report
        .handoffs
        .iter()
        .map(|h| {
            (
                h.handoff.clone(),
                h.drifting_skus as f64,
                format!("{} skus, {} units", h.drifting_skus, h.abs_units),
            )
        })
        .collect();
    o.push_str(&svg::bars(&bars, "#b42318"));
    let c = causes(report);
    if !c.is_empty() {
        o.push_str("<h2>Probable causes</h2>");
        let bars: Vec<(String, f64, String)> = c
            .iter()
            .map(|(c, n)| ((*c).to_owned(), *n as f64, n.to_string()))
            .collect();
        o.push_str(&svg::bars(&bars, "#7a5af8"));
    }
    let top = top_rows(report, 20);
    if !top.is_empty() {
        o.push_str("<h2>Top skus by units off</h2>");
        let bars: Vec<(String, f64, String)> = top
            .iter()
            .map(|r| {
                let label = if r.location.is_empty() {
                    r.sku.clone()
                } else {
                    format!("{} @ {}", r.sku, r.location)
                };
                (
                    label,
                    r.delta.unsigned_abs() as f64,
                    format!("{:+}", r.delta),
                )
            })
            .collect();
        o.push_str(&svg::bars(&bars, "#175cd3"));

        o.push_str("<h2>Rows over threshold</h2><table><tr><th>sku</th><th>location</th><th>hand-off</th><th>cause</th><th class=\"n\">delta</th><th class=\"n\">baseline</th>");
        let systems: Vec<String> = report.rows[0]
            .values
            .0
            .iter()
            .map(|(s, _)| s.clone())
            .collect();
        for s in &systems {
            let _ = write!(
                o,
                "<th class=\"n\">{0}</th><th class=\"n\">expected {0}</th>",
                esc(s)
            );
        }
        o.push_str("</tr>");
        let num = |v: Option<i64>| v.map_or_else(|| "&ndash;".to_owned(), |v| v.to_string());
        for r in report.rows.iter().take(HTML_ROWS) {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{:+}</td><td class=\"n\">{}</td>",
                esc(&r.sku),
                if r.location.is_empty() {
                    "(all)".to_owned()
                } else {
                    esc(&r.location)
                },
                esc(&r.handoff),
                match &r.also {
                    Some(a) => format!("{} <small>(also {})</small>", esc(&r.cause), esc(a)),
                    None => esc(&r.cause),
                },
                r.delta,
                num(r.baseline)
            );
            for s in &systems {
                let _ = write!(
                    o,
                    "<td class=\"n\">{}</td><td class=\"n\">{}</td>",
                    num(r.values.get(s)),
                    num(r.expected.get(s))
                );
            }
            o.push_str("</tr>");
        }
        o.push_str("</table>");
        if report.rows.len() > HTML_ROWS {
            let _ = write!(
                o,
                "<p>{} more rows: the JSON or CSV output lists them all.</p>",
                report.rows.len() - HTML_ROWS
            );
        }
    }
    o.push_str("</body></html>\n");
    o
}
