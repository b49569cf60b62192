//! Small inline SVG charts (horizontal bars, lines over time) for the HTML report and the trend
//! chart. Plain strings: no dependency, nothing fetched when the page is opened.

use crate::render::esc;
use std::fmt::Write;

/// Horizontal bars: `(label, value, caption)`.
pub fn bars(items: &[(String, f64, String)], color: &str) -> String {
    let row_h = 22.0;
    let label_w = 220.0;
    let bar_w = 420.0;
    let width = label_w + bar_w + 140.0;
    let height = row_h * items.len() as f64 + 8.0;
    let max = items.iter().map(|i| i.1).fold(0.0f64, f64::max).max(1.0);
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\">"
    );
    for (i, (label, v, caption)) in items.iter().enumerate() {
        let y = 4.0 + i as f64 * row_h;
        let w = (v / max * bar_w).max(if *v > 0.0 { 1.0 } else { 0.0 });
        let short: String = label.chars().take(32).collect();
        let _ = write!(
            o,
            "<text x=\"{x}\" y=\"{ty}\" text-anchor=\"end\">{l}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{h}\" fill=\"{color}\"/><text x=\"{cx:.1}\" y=\"{ty}\">{c}</text>",
            x = label_w - 6.0,
            ty = y + 15.0,
            l = esc(&short),
            h = row_h - 6.0,
            cx = label_w + w + 6.0,
            c = esc(caption),
        );
    }
    o.push_str("</svg>");
    o
}

/// Lines over time: `series` of `(name, points (x in 0..=1, y))`, with x-axis labels.
pub fn lines(
    series: &[(String, Vec<(f64, f64)>)],
    x_labels: &[(f64, String)],
    y_label: &str,
) -> String {
    const COLORS: [&str; 8] = [
        "#b42318", "#175cd3", "#1a7f37", "#7a5af8", "#c4320a", "#0e9384", "#4e5ba6", "#667085",
    ];
    let (w, h) = (760.0, 300.0);
    let (left, right, top, bottom) = (56.0, 180.0, 16.0, 36.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let top_value = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.0f64, f64::max);
    let max = nice_max(top_value);
    let mut o = String::new();
    let _ = write!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\"><rect width=\"{w}\" height=\"{h}\" fill=\"#fff\"/>"
    );
    let _ = write!(
        o,
        "<line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/><line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{b}\" stroke=\"#999\"/>",
        b = top + ph,
        r = left + pw
    );
    for i in 0..=4 {
        let v = (max * f64::from(i) / 4.0) as u64;
        let y = top + ph - ph * f64::from(i) / 4.0;
        let _ = write!(
            o,
            "<text x=\"{x}\" y=\"{ty:.1}\" text-anchor=\"end\" font-size=\"11\">{v}</text>",
            x = left - 4.0,
            ty = y + 4.0
        );
    }
    let _ = write!(
        o,
        "<text x=\"12\" y=\"{y}\" font-size=\"11\" transform=\"rotate(-90 12 {y})\" text-anchor=\"middle\">{l}</text>",
        y = top + ph / 2.0,
        l = esc(y_label)
    );
    for (x, label) in x_labels {
        let _ = write!(
            o,
            "<text x=\"{px:.1}\" y=\"{py}\" text-anchor=\"middle\" font-size=\"11\">{l}</text>",
            px = left + x * pw,
            py = top + ph + 18.0,
            l = esc(label)
        );
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", left + x * pw, top + ph - y / max * ph))
            .collect();
        let _ = write!(
            o,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                o,
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"2.5\" fill=\"{color}\"/>"
            );
        }
        let ly = top + 14.0 + i as f64 * 18.0;
        let _ = write!(
            o,
            "<rect x=\"{lx}\" y=\"{ry}\" width=\"12\" height=\"4\" fill=\"{color}\"/><text x=\"{tx}\" y=\"{ly}\" font-size=\"12\">{n}</text>",
            lx = left + pw + 14.0,
            ry = ly - 6.0,
            tx = left + pw + 32.0,
            n = esc(name)
        );
    }
    o.push_str("</svg>");
    o
}

/// The y-axis top: the smallest `4 x {1, 2, 5} x 10^k` at or above `v`, so the four tick
/// intervals are whole numbers.
fn nice_max(v: f64) -> f64 {
    let mut unit = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if 4.0 * m * unit >= v {
                return 4.0 * m * unit;
            }
        }
        unit *= 10.0;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn axis_tops_give_whole_ticks() {
        assert_eq!(super::nice_max(0.0), 4.0);
        assert_eq!(super::nice_max(1.0), 4.0);
        assert_eq!(super::nice_max(27.0), 40.0);
        assert_eq!(super::nice_max(41.0), 80.0);
        assert_eq!(super::nice_max(1234.0), 2000.0);
    }
}
