//! The run's chart as one SVG: requests per second, latency (p50 and p99) and tickets sold over
//! time, one panel each, sharing the time axis. Plain SVG: any browser opens it, docs embed it.

use std::fmt::Write as _;

/// One series of a panel: its name, colour and values (one per point of the time axis; `None` for
/// no sample).
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub values: &'a [Option<f64>],
}

pub struct Panel<'a> {
    pub title: &'a str,
    pub unit: &'a str,
    pub series: Vec<Series<'a>>,
}

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 170.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 45.0;

/// Draws the panels under a title, over `points` points of the time axis, `step` seconds apart.
pub fn svg(title: &str, points: usize, step: usize, panels: &[Panel<'_>]) -> String {
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + GAP) + 10.0;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\" font-weight=\"bold\">{}</text>",
        escape(title)
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |i: usize| LEFT + plot_w * i as f64 / points.max(1) as f64;
    for (p, panel) in panels.iter().enumerate() {
        let y0 = TOP + p as f64 * (PANEL_HEIGHT + GAP) + 18.0;
        let top = panel
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .fold(0.0f64, |a, &b| a.max(b))
            .max(1e-9);
        let scale = nice(top);
        let y = |v: f64| y0 + PANEL_HEIGHT - PANEL_HEIGHT * (v / scale).min(1.0);
        let _ = write!(
            out,
            "<text x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>\
             <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/>\
             <line x1=\"{LEFT}\" y1=\"{y0:.1}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#999\"/>",
            y0 - 6.0,
            escape(panel.title),
            y0 + PANEL_HEIGHT,
            WIDTH - RIGHT,
            y0 + PANEL_HEIGHT,
            y0 + PANEL_HEIGHT,
        );
        for k in 0..=4 {
            let v = scale * f64::from(k) / 4.0;
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{} {}</text>\
                 <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
                LEFT - 6.0,
                y(v) + 4.0,
                short(v),
                escape(panel.unit),
                y(v),
                WIDTH - RIGHT,
                y(v),
            );
        }
        for i in (0..=points).step_by((points / 10).max(1)) {
            let t = i * step.max(1);
            let label = if points * step >= 1200 { format!("{} min", t / 60) } else { format!("{t} s") };
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{label}</text>",
                x(i),
                y0 + PANEL_HEIGHT + 15.0
            );
        }
        let mut legend_x = WIDTH - RIGHT;
        for s in panel.series.iter().rev() {
            legend_x -= 12.0 + 7.0 * s.name.len() as f64;
            let _ = write!(
                out,
                "<rect x=\"{legend_x:.1}\" y=\"{:.1}\" width=\"9\" height=\"9\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                y0 - 15.0,
                s.colour,
                legend_x + 12.0,
                y0 - 6.0,
                escape(s.name)
            );
            let mut path = String::new();
            let mut pen_down = false;
            for (i, v) in s.values.iter().enumerate() {
                match v {
                    Some(v) => {
                        let _ = write!(path, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, x(i), y(*v));
                        pen_down = true;
                    }
                    None => pen_down = false,
                }
            }
            if !path.is_empty() {
                let _ = write!(
                    out,
                    "<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"/>",
                    path.trim_end(),
                    s.colour
                );
            }
        }
    }
    out.push_str("</svg>\n");
    out
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `v`.
fn nice(v: f64) -> f64 {
    let exp = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * exp).find(|&c| c >= v).unwrap_or(10.0 * exp)
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        let k = v / 1000.0;
        if k == k.trunc() {
            format!("{k:.0}k")
        } else {
            format!("{k:.1}k")
        }
    } else if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_round_and_gaps_break_the_line() {
        assert_eq!(nice(7.0), 10.0);
        assert_eq!(nice(130.0), 200.0);
        assert_eq!(nice(0.3), 0.5);
        assert_eq!(
            (short(37_500.0), short(50_000.0), short(3_750.0), short(12.5)),
            ("37.5k".into(), "50k".into(), "3750".into(), "12.5".into())
        );
        let values = [Some(1.0), None, Some(3.0), Some(2.0)];
        let s = svg(
            "t <run>",
            4,
            1,
            &[Panel {
                title: "rps",
                unit: "/s",
                series: vec![Series { name: "all", colour: "#00f", values: &values }],
            }],
        );
        assert!(s.starts_with("<svg") && s.contains("t &lt;run&gt;"));
        assert_eq!(s.matches(" M").count() + s.matches("\"M").count(), 2, "two runs of points: {s}");
    }
}
