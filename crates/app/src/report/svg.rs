//! Plots as inline SVG, drawn here so that a report needs no plotting library, no script and
//! no network: line charts (linear or log x) and horizontal bar charts. Output is well-formed
//! XML, so the report is also checkable by any XML parser.

use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// Text for XML: & < > " ' escaped.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => o.push(c),
        }
    }
    o
}

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Tick label: short and readable over many magnitudes.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A line chart of `series` (points with non-finite coordinates, or x ≤ 0 on a log axis, are
/// left out). Each series is one `<polyline>` with a `data-series` attribute naming it.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> String {
    let fx = |x: f64| if log_x { x.log10() } else { x };
    let pts: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0))
                .map(|&(x, y)| (fx(x), y))
                .collect()
        })
        .collect();
    let all: Vec<&(f64, f64)> = pts.iter().flatten().collect();
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
        escape(title)
    );
    let _ = write!(
        o,
        r#"<text x="{}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        LEFT,
        escape(title)
    );
    if all.is_empty() {
        let _ = write!(
            o,
            r#"<text x="{LEFT}" y="{}" font-size="12">no data</text></svg>"#,
            H / 2.0
        );
        return o;
    }
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &&(x, y) in &all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * ph;
    // Axes, grid and ticks.
    let _ = write!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#eee"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            LEFT + pw,
            sy(y),
            sy(y),
            LEFT - 4.0,
            sy(y) + 3.0,
            tick(y)
        );
    }
    // x ticks: five even ones, or on a log axis the powers of ten (every k-th, at most 8).
    let xticks: Vec<f64> = if log_x {
        let (lo, hi) = (x0.ceil() as i32, x1.floor() as i32);
        let step = ((hi - lo) / 7 + 1).max(1) as usize;
        (lo..=hi).step_by(step).map(f64::from).collect()
    } else {
        (0..=4).map(|i| x0 + (x1 - x0) * i as f64 / 4.0).collect()
    };
    for x in xticks {
        let label = if log_x { tick(10f64.powf(x)) } else { tick(x) };
        let _ = write!(
            o,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            sx(x),
            TOP + ph + 14.0,
            label
        );
    }
    let _ = write!(
        o,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}{}</text>"#,
        LEFT + pw / 2.0,
        H - 8.0,
        escape(x_label),
        if log_x { " (log scale)" } else { "" }
    );
    let _ = write!(
        o,
        r#"<text x="12" y="{}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {})">{}</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0,
        escape(y_label)
    );
    for (i, (s, p)) in series.iter().zip(&pts).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let coords: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            o,
            r#"<polyline data-series="{}" data-points="{}" fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            escape(&s.name),
            p.len(),
            coords.join(" ")
        );
        // A sparse series (validations, a single point) shows where its measurements are.
        if p.len() <= 40 {
            for &(x, y) in p {
                let _ = write!(
                    o,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="{color}"/>"#,
                    sx(x),
                    sy(y),
                    if p.len() == 1 { 3 } else { 2 }
                );
            }
        }
        let _ = write!(
            o,
            r#"<text x="{}" y="{}" font-size="11" fill="{color}" text-anchor="end">{}</text>"#,
            LEFT + pw - 6.0,
            TOP + 14.0 + 13.0 * i as f64,
            escape(&s.name)
        );
    }
    o.push_str("</svg>");
    o
}

/// Horizontal bars, one per (label, value), with the value printed by `fmt`.
pub fn bar_chart(title: &str, bars: &[(String, f64)], fmt: impl Fn(f64) -> String) -> String {
    let row = 22.0;
    let h = TOP + 8.0 + row * bars.len().max(1) as f64;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    // Wide enough for the longest label at about 6.5 px a character (11 px sans-serif).
    let longest = bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(0);
    let label_w = (longest as f64 * 6.5 + 12.0).max(110.0);
    let pw = W - label_w - 120.0;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img" aria-label="{}">"#,
        escape(title)
    );
    let _ = write!(
        o,
        r#"<text x="8" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = TOP + 4.0 + row * i as f64;
        let w = if max > 0.0 { pw * v / max } else { 0.0 };
        let _ = write!(
            o,
            r#"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text><rect data-bar="{}" data-value="{v}" x="{label_w}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="11">{}</text>"#,
            label_w - 6.0,
            y + 13.0,
            escape(label),
            escape(label),
            row - 6.0,
            COLORS[i % COLORS.len()],
            label_w + w + 6.0,
            y + 13.0,
            escape(&fmt(*v))
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_carry_their_series_and_escape_text() {
        let s = line_chart(
            "loss <&>",
            "tokens",
            "nats",
            &[
                Series {
                    name: "train".into(),
                    points: vec![(1.0, 3.0), (2.0, 2.5), (f64::NAN, 1.0)],
                },
                Series {
                    name: "val \"x\"".into(),
                    points: vec![(0.0, 2.7)],
                },
            ],
            true,
        );
        assert!(s.contains(r#"data-series="train" data-points="2""#), "{s}");
        // x = 0 cannot sit on a log axis: the series is drawn empty, not at -infinity.
        assert!(
            s.contains(r#"data-series="val &quot;x&quot;" data-points="0""#),
            "{s}"
        );
        assert!(s.contains("loss &lt;&amp;&gt;") && !s.contains("NaN") && !s.contains("inf"));
        let b = bar_chart(
            "cost",
            &[("pretrain".into(), 2.0), ("sft".into(), 1.0)],
            |v| format!("${v}"),
        );
        assert!(
            b.contains(r#"data-bar="sft" data-value="1""#) && b.contains("$2"),
            "{b}"
        );
        assert!(line_chart("t", "x", "y", &[], false).contains("no data"));
    }
}
