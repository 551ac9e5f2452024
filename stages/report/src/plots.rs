//! The charts, drawn with plotters into SVG strings (text stays text: sharp at any zoom, searchable,
//! and the page needs no image files). Each function draws one figure from plain numbers; what the
//! numbers are and where they came from is the caller's business (sections.rs).

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::ops::Range;

const FONT: &str = "sans-serif";
/// Tableau 10: distinguishable, and readable by most colour-blind readers.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const CAP_RED: RGBColor = RGBColor(200, 0, 0);

pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// One line of a chart; `markers` adds a dot at every point (for sparse series like val BPB).
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub markers: bool,
}

/// A labelled horizontal reference line (the byte cap, the source entropy).
pub struct HLine {
    pub label: String,
    pub y: f64,
}

/// One panel of a multi-panel line chart.
pub struct Panel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
}

/// Panels of line charts in a grid of `cols` columns.
pub fn line_panels(panels: &[Panel], cols: usize, size: (u32, u32)) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let rows = panels.len().div_ceil(cols);
        for (panel, area) in panels.iter().zip(root.split_evenly((rows, cols))) {
            line_chart(&area, panel, &[])?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// An f64 axis whose ticks sit exactly at given values (category indices, sweep points): plotters'
/// own key-point combinator does not work with f64 label formatters.
#[derive(Clone)]
struct TickedAxis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (fraction * (limit.1 - limit.0) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Thin the ticks out evenly when there are more than fit.
        let max = hint.max_num_points().max(1);
        let step = self.ticks.len().div_ceil(max).max(1);
        self.ticks.iter().step_by(step).copied().collect()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

impl ValueFormatter<f64> for TickedAxis {
    fn format(value: &f64) -> String {
        compact(*value)
    }
}

fn ticked(range: Range<f64>, ticks: Vec<f64>) -> TickedAxis {
    TickedAxis { range, ticks }
}

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = &(f64, f64)> {
    points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
}

/// A padded range around `values`, never empty.
fn span(values: impl Iterator<Item = f64>, pad: f64) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return None;
    }
    let width = if hi > lo {
        hi - lo
    } else {
        lo.abs().max(1.0) * 0.01
    };
    Some((lo - pad * width, hi + pad * width))
}

fn no_data(area: &DrawingArea<SVGBackend, Shift>, title: &str) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        format!("{title}: no data"),
        (w as i32 / 2 - 80, h as i32 / 2),
        (FONT, 16),
    ))
    .map_err(err)
}

fn line_chart(
    area: &DrawingArea<SVGBackend, Shift>,
    panel: &Panel,
    hlines: &[HLine],
) -> Result<()> {
    let all = || panel.series.iter().flat_map(|s| finite(&s.points));
    let (Some(xr), Some(yr)) = (
        span(all().map(|p| p.0), 0.02),
        span(all().map(|p| p.1).chain(hlines.iter().map(|h| h.y)), 0.08),
    ) else {
        return no_data(area, &panel.title);
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_desc)
        .y_desc(&panel.y_desc)
        .x_label_formatter(&|v| compact(*v))
        .y_label_formatter(&|v| compact(*v))
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(err)?;
    for (i, s) in panel.series.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = finite(&s.points).copied().collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
            .map_err(err)?
            .label(&s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        if s.markers {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
    }
    for h in hlines {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(xr.0, h.y), (xr.1, h.y)],
                8,
                5,
                CAP_RED.stroke_width(2),
            ))
            .map_err(err)?
            .label(&h.label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], CAP_RED.stroke_width(2)));
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Values across named categories, one line per series (the "BPB by stage" chart). `None` values
/// (not run) leave a gap.
pub fn category_lines(
    title: &str,
    categories: &[String],
    y_desc: &str,
    series: &[(String, Vec<Option<f64>>)],
    hlines: &[HLine],
    size: (u32, u32),
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let values = series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().copied())
            .chain(hlines.iter().map(|h| h.y));
        let Some(yr) = span(values, 0.12) else {
            no_data(&root, title)?;
            root.present().map_err(err)?;
            drop(root);
            return Ok(svg);
        };
        let n = categories.len();
        let x_axis = ticked(-0.5..n as f64 - 0.5, (0..n).map(|i| i as f64).collect());
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_axis, yr.0..yr.1)
            .map_err(err)?;
        let label = |v: &f64| {
            categories
                .get(v.round() as usize)
                .filter(|_| (v - v.round()).abs() < 1e-6)
                .cloned()
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&label)
            .y_label_formatter(&|v| compact(*v))
            .y_desc(y_desc)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(err)?;
        for (i, (name, values)) in series.iter().enumerate() {
            let c = color(i);
            let pts: Vec<(f64, f64)> = values
                .iter()
                .enumerate()
                .filter_map(|(x, v)| v.map(|v| (x as f64, v)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.filled())))
                .map_err(err)?;
        }
        for h in hlines {
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(-0.5, h.y), (n as f64 - 0.5, h.y)],
                    8,
                    5,
                    CAP_RED.stroke_width(2),
                ))
                .map_err(err)?
                .label(&h.label)
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], CAP_RED.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Stacked bars, one per bar label, segments by `segment_names` (the artifact by tensor group),
/// with a horizontal cap line.
pub fn stacked_bars(
    title: &str,
    bars: &[String],
    segment_names: &[String],
    values: &[Vec<f64>],
    cap: &HLine,
    y_desc: &str,
    size: (u32, u32),
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        root.titled(title, (FONT, 20)).map_err(err)?;
        // The legend gets its own column on the right: inside the plot it would cover the bars,
        // which reach nearly to the cap line.
        let (plot, legend) = root
            .margin(30, 0, 0, 0)
            .split_horizontally(size.0.saturating_sub(190));
        let largest = values
            .iter()
            .map(|v| v.iter().sum::<f64>())
            .fold(0.0, f64::max);
        if largest >= cap.y * 0.5 {
            bar_panel(
                &plot,
                "",
                bars,
                values,
                y_desc,
                largest.max(cap.y) * 1.1,
                Some(cap.y),
            )?;
        } else {
            // Far under the cap (a small model) the bars would be slivers under the line: show
            // them against the cap and, beside it, at their own scale.
            let (left, right) = plot.split_horizontally(plot.dim_in_pixel().0 / 2);
            bar_panel(
                &left,
                "against the cap",
                bars,
                values,
                y_desc,
                cap.y * 1.1,
                Some(cap.y),
            )?;
            let share = 100.0 * largest / cap.y;
            bar_panel(
                &right,
                &format!("zoomed (largest is {share:.2}% of the cap)"),
                bars,
                values,
                y_desc,
                largest * 1.2,
                None,
            )?;
        }
        legend_column(&legend, &cap.label, segment_names)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn bar_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    caption: &str,
    bars: &[String],
    values: &[Vec<f64>],
    y_desc: &str,
    top: f64,
    cap: Option<f64>,
) -> Result<()> {
    let n = bars.len();
    let x_axis = ticked(-0.5..n as f64 - 0.5, (0..n).map(|i| i as f64).collect());
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 15))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(90)
        .build_cartesian_2d(x_axis, 0.0..top)
        .map_err(err)?;
    let label = |v: &f64| {
        bars.get(v.round() as usize)
            .filter(|_| (v - v.round()).abs() < 1e-6)
            .cloned()
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&label)
        .y_label_formatter(&|v| thousands(*v))
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(err)?;
    let segments = values.first().map_or(0, Vec::len);
    for s in 0..segments {
        let c = color(s);
        chart
            .draw_series(values.iter().enumerate().map(|(b, v)| {
                let base: f64 = v[..s].iter().sum();
                Rectangle::new(
                    [(b as f64 - 0.3, base), (b as f64 + 0.3, base + v[s])],
                    c.filled(),
                )
            }))
            .map_err(err)?;
    }
    for (b, v) in values.iter().enumerate() {
        let total: f64 = v.iter().sum();
        chart
            .draw_series(std::iter::once(Text::new(
                thousands(total),
                (b as f64 - 0.25, total + top * 0.035),
                (FONT, 13),
            )))
            .map_err(err)?;
    }
    if let Some(cap) = cap {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(-0.5, cap), (n as f64 - 0.5, cap)],
                10,
                6,
                CAP_RED.stroke_width(2),
            ))
            .map_err(err)?;
    }
    Ok(())
}

/// The legend, top to bottom in reverse stacking order (as the bars read from the top).
fn legend_column(
    legend: &DrawingArea<SVGBackend, Shift>,
    cap_label: &str,
    segment_names: &[String],
) -> Result<()> {
    let text = |label: &str, y: i32| {
        legend
            .draw(&Text::new(label.to_string(), (34, y - 7), (FONT, 13)))
            .map_err(err)
    };
    let mut y = 40;
    legend
        .draw(&PathElement::new(
            vec![(6, y), (26, y)],
            CAP_RED.stroke_width(3),
        ))
        .map_err(err)?;
    text(cap_label, y)?;
    for (s, name) in segment_names.iter().enumerate().rev() {
        y += 24;
        legend
            .draw(&Rectangle::new(
                [(8, y - 7), (24, y + 7)],
                color(s).filled(),
            ))
            .map_err(err)?;
        text(name, y)?;
    }
    Ok(())
}

/// One sweep panel: a value (mean ± std over seeds) against the swept param.
pub struct SweepPanel {
    pub title: String,
    pub y_desc: String,
    /// (x, mean, std) per sweep point, x numeric or a category index.
    pub points: Vec<(f64, f64, f64)>,
    pub hline: Option<HLine>,
}

/// Sweep curves side by side. `categories` labels the x positions when the swept param is not a
/// single number (then x is the index of the sweep point).
pub fn sweep(
    x_desc: &str,
    categories: Option<&[String]>,
    panels: &[SweepPanel],
    size: (u32, u32),
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        for (panel, area) in panels
            .iter()
            .zip(root.split_evenly((1, panels.len().max(1))))
        {
            sweep_panel(&area, x_desc, categories, panel)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn sweep_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    x_desc: &str,
    categories: Option<&[String]>,
    p: &SweepPanel,
) -> Result<()> {
    let ys = p
        .points
        .iter()
        .flat_map(|&(_, m, s)| [m - s, m + s])
        .chain(p.hline.iter().map(|h| h.y));
    let (Some(xr), Some(yr)) = (span(p.points.iter().map(|q| q.0), 0.08), span(ys, 0.1)) else {
        return no_data(area, &p.title);
    };
    let keys: Vec<f64> = p.points.iter().map(|q| q.0).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, (FONT, 18))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(84)
        .build_cartesian_2d(ticked(xr.0..xr.1, keys), yr.0..yr.1)
        .map_err(err)?;
    let label = |v: &f64| match categories {
        Some(names) => names.get(v.round() as usize).cloned().unwrap_or_default(),
        None => compact(*v),
    };
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(&p.y_desc)
        .x_label_formatter(&label)
        .y_label_formatter(&|v| {
            if v.abs() >= 1e5 {
                thousands(*v)
            } else {
                compact(*v)
            }
        })
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(err)?;
    let c = color(0);
    chart
        .draw_series(LineSeries::new(
            p.points.iter().map(|q| (q.0, q.1)),
            c.stroke_width(2),
        ))
        .map_err(err)?;
    // Error bars (± std over seeds): a vertical stroke with short caps, drawn only where std > 0.
    let cap = (xr.1 - xr.0) * 0.008;
    for &(x, m, s) in p.points.iter().filter(|q| q.2 > 0.0) {
        let bar = [
            vec![(x, m - s), (x, m + s)],
            vec![(x - cap, m - s), (x + cap, m - s)],
            vec![(x - cap, m + s), (x + cap, m + s)],
        ];
        chart
            .draw_series(
                bar.into_iter()
                    .map(|path| PathElement::new(path, c.stroke_width(2))),
            )
            .map_err(err)?;
    }
    chart
        .draw_series(
            p.points
                .iter()
                .map(|&(x, m, _)| Circle::new((x, m), 5, c.filled())),
        )
        .map_err(err)?;
    if let Some(h) = &p.hline {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(xr.0, h.y), (xr.1, h.y)],
                10,
                6,
                CAP_RED.stroke_width(2),
            ))
            .map_err(err)?
            .label(&h.label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], CAP_RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Axis numbers: short, without float noise (0.30000000000000004 → 0.3).
pub fn compact(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.2e}")
    }
}

/// 15863489 → "15,863,489".
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits: Vec<char> = n.unsigned_abs().to_string().chars().collect();
    let groups: Vec<String> = digits
        .rchunks(3)
        .rev()
        .map(|g| g.iter().collect())
        .collect();
    format!("{}{}", if n < 0 { "-" } else { "" }, groups.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(thousands(15863489.0), "15,863,489");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(compact(0.30000000000000004), "0.3");
        assert_eq!(compact(1.2243657), "1.2244");
        assert_eq!(compact(2.5e-5), "2.50e-5");
    }

    #[test]
    fn charts_draw_their_data_and_labels() {
        let svg = line_panels(
            &[Panel {
                title: "train loss".into(),
                x_desc: "step".into(),
                y_desc: "nats".into(),
                series: vec![Series {
                    label: "seed 1".into(),
                    points: vec![(0.0, 6.9), (10.0, 3.0)],
                    markers: false,
                }],
            }],
            1,
            (400, 300),
        )
        .unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("seed 1") && svg.contains("polyline"),
            "{svg}"
        );
        let bars = stacked_bars(
            "bytes",
            &["a".into()],
            &["mlp".into(), "code".into()],
            &[vec![10_000_000.0, 50_000.0]],
            &HLine {
                label: "cap 16,000,000".into(),
                y: 16e6,
            },
            "bytes",
            (400, 300),
        )
        .unwrap();
        assert!(
            bars.contains("10,050,000")
                && bars.contains("cap 16,000,000")
                && bars.contains("<rect"),
            "{bars}"
        );
        let empty = category_lines(
            "bpb",
            &["x".into()],
            "bpb",
            &[("r".into(), vec![None])],
            &[],
            (300, 200),
        )
        .unwrap();
        assert!(empty.contains("no data"));
    }
}
