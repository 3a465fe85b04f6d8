//! Server-rendered SVG charts (no script): a line chart for burndown and burnup, grouped bars
//! for velocity. Pure functions; colours are SVG presentation attributes, so the images work
//! under a `default-src 'self'` CSP both inline and through `<img>`.

use std::fmt::Write;

pub const WIDTH: f64 = 640.0;
pub const HEIGHT: f64 = 320.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 32.0;
const BOTTOM: f64 = 64.0;
const PALETTE: [&str; 4] = ["#2563eb", "#16a34a", "#9ca3af", "#dc2626"];

/// One line (or bar group member); `None` values are gaps (days still ahead).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
    /// Dashed line (the ideal burndown).
    pub dashed: bool,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_labels: Vec<String>,
    pub series: Vec<Series>,
    pub y_label: String,
}

/// XML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The smallest "nice" number (1, 2, 5 × 10^k) at or above `v`, at least 1.
pub fn nice_max(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_num(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

struct Frame {
    n: usize,
    max: f64,
}

impl Frame {
    fn plot_w() -> f64 {
        WIDTH - LEFT - RIGHT
    }
    fn plot_h() -> f64 {
        HEIGHT - TOP - BOTTOM
    }
    /// x of point `i` of `n` (line charts: first at the left edge, last at the right).
    fn x(&self, i: usize) -> f64 {
        if self.n <= 1 {
            LEFT + Self::plot_w() / 2.0
        } else {
            LEFT + Self::plot_w() * i as f64 / (self.n - 1) as f64
        }
    }
    fn y(&self, v: f64) -> f64 {
        TOP + Self::plot_h() * (1.0 - v / self.max)
    }
}

fn open(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" aria-label=\"{t}\" class=\"chart\">\
         <title>{t}</title>\
         <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>\
         <text x=\"{cx}\" y=\"20\" text-anchor=\"middle\" font-family=\"sans-serif\" \
         font-size=\"14\" font-weight=\"bold\" fill=\"#111827\">{t}</text>",
        t = esc(title),
        cx = WIDTH / 2.0
    );
}

/// Axes, horizontal grid lines with y tick labels, and x labels (thinned to about 10).
fn axes(out: &mut String, f: &Frame, x_labels: &[String], bars: bool, y_label: &str) {
    let bottom = TOP + Frame::plot_h();
    for k in 0..=4 {
        let v = f.max * k as f64 / 4.0;
        let y = f.y(v);
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{x2}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/>\
             <text class=\"y-tick\" x=\"{tx}\" y=\"{ty:.1}\" text-anchor=\"end\" font-family=\"sans-serif\" \
             font-size=\"11\" fill=\"#374151\">{label}</text>",
            x2 = WIDTH - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            label = fmt_num(v)
        );
    }
    let _ = write!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"#374151\"/>\
         <line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{x2}\" y2=\"{bottom}\" stroke=\"#374151\"/>\
         <text x=\"12\" y=\"{my:.1}\" transform=\"rotate(-90 12 {my:.1})\" text-anchor=\"middle\" \
         font-family=\"sans-serif\" font-size=\"11\" fill=\"#374151\">{yl}</text>",
        x2 = WIDTH - RIGHT,
        my = TOP + Frame::plot_h() / 2.0,
        yl = esc(y_label)
    );
    let n = x_labels.len();
    let step = n.div_ceil(10).max(1);
    for (i, l) in x_labels.iter().enumerate() {
        if i % step != 0 && i + 1 != n {
            continue;
        }
        let x = if bars {
            LEFT + Frame::plot_w() * (i as f64 + 0.5) / n.max(1) as f64
        } else {
            f.x(i)
        };
        let _ = write!(
            out,
            "<text class=\"x-tick\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
             font-size=\"11\" fill=\"#374151\">{l}</text>",
            y = bottom + 16.0,
            l = esc(l)
        );
    }
}

fn legend(out: &mut String, series: &[Series]) {
    let mut x = LEFT;
    let y = HEIGHT - 14.0;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            out,
            "<g class=\"legend\"><rect x=\"{x:.1}\" y=\"{ry:.1}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\
             <text x=\"{tx:.1}\" y=\"{y:.1}\" font-family=\"sans-serif\" font-size=\"12\" fill=\"#111827\">{name}</text></g>",
            ry = y - 10.0,
            tx = x + 16.0,
            name = esc(&s.name)
        );
        x += 32.0 + 7.0 * s.name.chars().count() as f64;
    }
}

fn data_max(series: &[Series]) -> f64 {
    series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b))
}

/// The points of a series as `x,y` pairs, split at gaps, one string per run.
fn runs(f: &Frame, values: &[Option<f64>]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => cur.push(format!("{:.1},{:.1}", f.x(i), f.y(*v))),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur).join(" ")),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur.join(" "));
    }
    out
}

/// A line chart: one polyline per series, with a point marker on each value.
pub fn line_chart(c: &Chart) -> String {
    let f = Frame {
        n: c.x_labels
            .len()
            .max(c.series.iter().map(|s| s.values.len()).max().unwrap_or(0)),
        max: nice_max(data_max(&c.series)),
    };
    let mut out = String::new();
    open(&mut out, &c.title);
    axes(&mut out, &f, &c.x_labels, false, &c.y_label);
    if f.n == 0
        || c.series
            .iter()
            .all(|s| s.values.iter().all(Option::is_none))
    {
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"12\" \
             fill=\"#6b7280\">No data yet</text>",
            x = WIDTH / 2.0,
            y = HEIGHT / 2.0
        );
    }
    for (i, s) in c.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dash = if s.dashed {
            " stroke-dasharray=\"6 4\""
        } else {
            ""
        };
        for pts in runs(&f, &s.values) {
            let _ = write!(
                out,
                "<polyline class=\"series\" data-series=\"{name}\" points=\"{pts}\" fill=\"none\" \
                 stroke=\"{color}\" stroke-width=\"2\"{dash}/>",
                name = esc(&s.name)
            );
        }
    }
    legend(&mut out, &c.series);
    out.push_str("</svg>");
    out
}

/// Grouped bars: for each x label one bar per series.
pub fn bar_chart(c: &Chart) -> String {
    let n = c.x_labels.len();
    let f = Frame {
        n,
        max: nice_max(data_max(&c.series)),
    };
    let mut out = String::new();
    open(&mut out, &c.title);
    axes(&mut out, &f, &c.x_labels, true, &c.y_label);
    if n == 0 {
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" font-family=\"sans-serif\" font-size=\"12\" \
             fill=\"#6b7280\">No completed sprints yet</text>",
            x = WIDTH / 2.0,
            y = HEIGHT / 2.0
        );
    }
    let group = Frame::plot_w() / n.max(1) as f64;
    let k = c.series.len().max(1) as f64;
    let bar = (group * 0.8 / k).min(40.0);
    for i in 0..n {
        let gx = LEFT + group * i as f64 + (group - bar * k) / 2.0;
        for (j, s) in c.series.iter().enumerate() {
            let Some(Some(v)) = s.values.get(i) else {
                continue;
            };
            let y = f.y(*v);
            let _ = write!(
                out,
                "<rect class=\"bar\" data-series=\"{name}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" \
                 height=\"{h:.1}\" fill=\"{color}\"><title>{name}: {val}</title></rect>",
                name = esc(&s.name),
                x = gx + bar * j as f64,
                h = TOP + Frame::plot_h() - y,
                color = PALETTE[j % PALETTE.len()],
                val = fmt_num(*v)
            );
        }
    }
    legend(&mut out, &c.series);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "Burndown <S&1>".into(),
            x_labels: vec!["11-01".into(), "11-02".into(), "11-03".into()],
            series: vec![
                Series {
                    name: "Remaining".into(),
                    values: vec![Some(10.0), Some(5.0), None],
                    dashed: false,
                },
                Series {
                    name: "Ideal".into(),
                    values: vec![Some(10.0), Some(5.0), Some(0.0)],
                    dashed: true,
                },
            ],
            y_label: "points".into(),
        }
    }

    fn attr<'a>(svg: &'a str, after: &str, name: &str) -> &'a str {
        let at = svg.find(after).expect(after);
        let rest = &svg[at..];
        let start = rest.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        let end = rest[start..].find('"').unwrap();
        &rest[start..start + end]
    }

    #[test]
    fn polyline_points_follow_the_data() {
        let svg = line_chart(&chart());
        // Max 10: y(10) is the top of the plot, y(0) its bottom; x runs edge to edge.
        let pts = attr(&svg, "data-series=\"Remaining\"", "points");
        assert_eq!(pts, "48.0,32.0 336.0,144.0");
        let ideal = attr(&svg, "data-series=\"Ideal\"", "points");
        assert_eq!(ideal, "48.0,32.0 336.0,144.0 624.0,256.0");
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn axes_legend_and_title_are_present_and_escaped() {
        let svg = line_chart(&chart());
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("<title>Burndown &lt;S&amp;1&gt;</title>"));
        assert!(!svg.contains("<S&1>"));
        for tick in [">0<", ">2.5<", ">5<", ">7.5<", ">10<", ">11-01<", ">11-03<"] {
            assert!(svg.contains(tick), "{tick} missing");
        }
        assert!(svg.contains(">Remaining</text></g>") && svg.contains(">Ideal</text></g>"));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn bars_scale_to_the_data() {
        let svg = bar_chart(&Chart {
            title: "Velocity".into(),
            x_labels: vec!["S1".into(), "S2".into()],
            series: vec![
                Series {
                    name: "Committed".into(),
                    values: vec![Some(20.0), Some(10.0)],
                    dashed: false,
                },
                Series {
                    name: "Completed".into(),
                    values: vec![Some(15.0), Some(10.0)],
                    dashed: false,
                },
            ],
            y_label: "points".into(),
        });
        assert_eq!(svg.matches("class=\"bar\"").count(), 4);
        // The 20-point bar fills the plot height (224); the 10-point one half of it.
        assert!(svg.contains("height=\"224.0\""));
        assert!(svg.contains("height=\"112.0\""));
        assert!(svg.contains("<title>Completed: 15</title>"));
    }

    #[test]
    fn nice_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(13.0), 20.0);
        assert_eq!(nice_max(41.0), 50.0);
    }
}
