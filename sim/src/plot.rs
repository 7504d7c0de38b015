//! SVG plots of a report: SLO attainment vs load, and TTFT CDFs per class.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

use super::class::NUM_CLASSES;
use super::metrics::RunSummary;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type PlotResult = Result<(), Box<dyn Error>>;

/// Distinct policies in first-seen order.
fn policies(runs: &[RunSummary]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs {
        if !out.contains(&r.policy) {
            out.push(r.policy.clone());
        }
    }
    out
}

/// `slo_attainment.svg`: one panel per class, attainment vs load, a line per policy.
pub fn slo_attainment(path: &Path, runs: &[RunSummary]) -> PlotResult {
    let root = SVGBackend::new(path, (1260, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let loads: Vec<f64> = runs.iter().map(|r| r.load).collect();
    let lo = loads.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let pad = (hi - lo) * 0.05;
    let pols = policies(runs);
    for (ci, area) in root.split_evenly((1, NUM_CLASSES)).iter().enumerate() {
        let Some(first) = runs.first().and_then(|r| r.classes.get(ci)) else {
            continue;
        };
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{}  ({})", first.name, first.slo),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo - pad)..(hi + pad), 0.0..1.05)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("load multiplier")
            .y_desc("SLO attainment")
            .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
            .draw()?;
        for (pi, p) in pols.iter().enumerate() {
            let color = COLORS[pi % COLORS.len()];
            let pts: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| &r.policy == p)
                .filter_map(|r| {
                    r.classes
                        .get(ci)
                        .and_then(|c| c.slo_attainment)
                        .map(|a| (r.load, a))
                })
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(p.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(
                pts.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// At most `max` points of the empirical CDF of `sorted`.
fn cdf_points(sorted: &[f64], max: usize) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(max).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted[i], (i + 1) as f64 / n as f64))
        .collect();
    pts.push((sorted[n - 1], 1.0));
    pts
}

/// `ttft_cdf_load<k>.svg`: one panel per class, TTFT CDF (log x) for each policy at `load`.
pub fn ttft_cdf(path: &Path, runs: &[RunSummary], load: f64) -> PlotResult {
    let root = SVGBackend::new(path, (1260, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let at: Vec<&RunSummary> = runs.iter().filter(|r| r.load == load).collect();
    let pols = policies(runs);
    for (ci, area) in root.split_evenly((1, NUM_CLASSES)).iter().enumerate() {
        let Some(first) = at.first().and_then(|r| r.classes.get(ci)) else {
            continue;
        };
        let all = at
            .iter()
            .filter_map(|r| r.classes.get(ci))
            .flat_map(|c| c.ttft_sorted.iter().copied());
        let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
        for v in all {
            if v > 0.0 {
                lo = lo.min(v);
            }
            hi = hi.max(v);
        }
        if !lo.is_finite() || hi <= lo {
            lo = 0.01;
            hi = 10.0;
        }
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} TTFT CDF, load {load}", first.name),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo * 0.8..hi * 1.25).log_scale(), 0.0..1.02)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc("TTFT (s, log scale)")
            .y_desc("fraction of requests")
            .draw()?;
        for (pi, p) in pols.iter().enumerate() {
            let color = COLORS[pi % COLORS.len()];
            let Some(c) = at
                .iter()
                .find(|r| &r.policy == p)
                .and_then(|r| r.classes.get(ci))
            else {
                continue;
            };
            let pts: Vec<(f64, f64)> = cdf_points(&c.ttft_sorted, 400)
                .into_iter()
                .map(|(x, y)| (x.max(lo), y))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                .label(p.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
